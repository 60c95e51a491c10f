//! The IM archive (compliance, as an OCS Archiving Server): every MESSAGE we forward is
//! recorded with its time, sender, recipient, Call-ID, content type and body. Entries go
//! through a bounded queue to one writer that stores them in batches, so the SIP path never
//! waits for the database. In critical mode a message that cannot be archived (queue full, or
//! the store failing) is refused with 503 rather than delivered unarchived.

use crate::config;
use crate::ops::metrics as m;
use crate::ops::shutdown::Shutdown;
use crate::state::expiry::ExpiryQueue;
use dashmap::DashMap;
use sipfront_proto::{Aor, Message};
use sipfront_storage::{ArchiveEntry, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Entries written in one transaction at most.
const BATCH: usize = 500;
/// How long the writer gathers entries after the first before writing them together.
const GATHER: Duration = Duration::from_millis(20);

pub struct Archive {
    cfg: config::Archive,
    /// How long a message waits for its archive row in critical mode before it is refused
    /// (`database.timeout_ms`).
    commit_wait: Duration,
    queue: mpsc::Sender<Queued>,
    /// Whether the last write succeeded.
    healthy: Arc<AtomicBool>,
    /// Last message between a pair (ordered AORs), to mark the first of a conversation.
    recent: DashMap<(String, String), Instant>,
    recent_expiry: ExpiryQueue<(String, String)>,
}

/// The writer's half, run by [`Archive::run`].
pub struct ArchiveWriter {
    store: Arc<dyn Store>,
    entries: mpsc::Receiver<Queued>,
    healthy: Arc<AtomicBool>,
    retention_days: u32,
}

/// An entry for the writer, and (critical mode) who waits for its commit.
type Queued = (ArchiveEntry, Option<tokio::sync::oneshot::Sender<()>>);

impl Archive {
    pub fn new(cfg: config::Archive, store: Arc<dyn Store>, commit_wait: Duration) -> (Archive, ArchiveWriter) {
        let (queue, entries) = mpsc::channel(cfg.queue.max(1));
        let healthy = Arc::new(AtomicBool::new(true));
        let gap = Duration::from_secs(cfg.session_gap_secs);
        let writer = ArchiveWriter { store, entries, healthy: healthy.clone(), retention_days: cfg.retention_days };
        let archive =
            Archive { cfg, commit_wait, queue, healthy, recent: DashMap::new(), recent_expiry: ExpiryQueue::new(gap) };
        (archive, writer)
    }

    /// Whether messages between these AORs are archived: archiving on, a listed domain (or
    /// every domain when none is listed), and neither user excluded.
    fn applies(&self, sender: &str, recipient: &str) -> bool {
        let listed = |aor: &str| {
            let domain = Aor::domain_of(aor);
            self.cfg.domains.is_empty() || self.cfg.domains.iter().any(|d| d == domain)
        };
        self.cfg.enabled
            && (listed(sender) || listed(recipient))
            && !self.cfg.exclude_users.iter().any(|u| u == sender || u == recipient)
    }

    fn critical(&self) -> bool {
        self.cfg.critical
    }

    /// Archives an instant message from `sender` to `recipient` where archiving applies to
    /// them; `false` when it must not be delivered: critical mode and it cannot be archived.
    /// In critical mode it returns once the row is committed, so that a message relayed is a
    /// message archived even if the process is killed the next instant.
    pub async fn keep(&self, msg: &Message, sender: &str, recipient: &str) -> bool {
        if !self.applies(sender, recipient) {
            return true;
        }
        if !self.critical() {
            self.record(msg, sender, recipient, None);
            return true;
        }
        let (committed, commit) = tokio::sync::oneshot::channel();
        if !self.record(msg, sender, recipient, Some(committed)) {
            return false;
        }
        let written = matches!(tokio::time::timeout(self.commit_wait, commit).await, Ok(Ok(())));
        if !written {
            metrics::counter!(m::ARCHIVE_ENTRIES, "result" => "refused").increment(1);
        }
        written
    }

    /// The 503 to an instant message refused in critical mode: no unarchived IM.
    pub fn unavailable(msg: &Message, agent: &str) -> Message {
        let mut r = sipfront_proto::reply::response(msg, 503, agent);
        r.set_reason("Service Unavailable (archive unavailable)");
        r.push_header(sipfront_proto::HeaderName::RetryAfter, "5");
        r
    }

    /// Queues `msg` for the archive (`committed` is told when its row is); `false` when it
    /// cannot be archived now: the queue is full, or (critical mode) the store is failing.
    pub fn record(
        &self,
        msg: &Message,
        sender: &str,
        recipient: &str,
        committed: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        if self.cfg.critical && !self.healthy.load(Ordering::Acquire) {
            metrics::counter!(m::ARCHIVE_ENTRIES, "result" => "refused").increment(1);
            return false;
        }
        let pair = if sender <= recipient {
            (sender.to_string(), recipient.to_string())
        } else {
            (recipient.to_string(), sender.to_string())
        };
        let now = Instant::now();
        let gap = Duration::from_secs(self.cfg.session_gap_secs);
        let first = match self.recent.insert(pair.clone(), now) {
            Some(last) => now.duration_since(last) > gap,
            None => true,
        };
        if first {
            self.recent_expiry.push(pair);
        }
        let entry = ArchiveEntry {
            at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            call_id: String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned(),
            content_type: String::from_utf8_lossy(msg.content_type().unwrap_or_default()).into_owned(),
            body: msg.body().to_vec(),
            first_in_session: first,
        };
        match self.queue.try_send((entry, committed)) {
            Ok(()) => {
                metrics::gauge!(m::ARCHIVE_QUEUE).set((self.cfg.queue - self.queue.capacity()) as f64);
                true
            }
            Err(_) => {
                metrics::counter!(m::ARCHIVE_ENTRIES, "result" => "dropped").increment(1);
                tracing::warn!(sender, recipient, "archive queue full: message not archived");
                false
            }
        }
    }

    /// Forgets conversations quiet for longer than the gap; runs until dropped.
    pub async fn run_sessions(&self) {
        let gap = Duration::from_secs(self.cfg.session_gap_secs);
        self.recent_expiry
            .run(|pair| {
                self.recent.remove_if(&pair, |_, last| last.elapsed() >= gap);
            })
            .await;
    }
}

impl ArchiveWriter {
    /// Writes batches as they come, retrying a failed batch (nothing queued is lost), and
    /// purges past the retention, until `stop` fires; then writes out what is queued (the
    /// server has stopped taking messages) for as long as `flush_within` allows, and returns.
    pub async fn run(mut self, mut stop: Shutdown, flush_within: Duration) {
        let purge = async {
            if self.retention_days == 0 {
                return std::future::pending().await;
            }
            loop {
                let cutoff = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .saturating_sub(u64::from(self.retention_days) * 86_400);
                match self.store.purge_archive(cutoff as i64).await {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "archive entries past retention"),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "archive purge failed; retried later"),
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        };
        let (store, healthy) = (self.store.clone(), self.healthy.clone());
        let write = async {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                // A batch under way is finished before the stop is heeded.
                let first = tokio::select! {
                    e = self.entries.recv() => match e {
                        Some(e) => e,
                        None => return,
                    },
                    _ = stop.wait() => break,
                };
                batch.push(first);
                // Gather what comes in the next moment into the same transaction: one commit
                // per message would cost more than the relaying itself.
                let deadline = tokio::time::Instant::now() + GATHER;
                while batch.len() < BATCH {
                    let room = BATCH - batch.len();
                    match tokio::time::timeout_at(deadline, self.entries.recv_many(&mut batch, room)).await {
                        Ok(n) if n > 0 => {}
                        // The time is up, or every sender is gone: write what there is.
                        _ => break,
                    }
                }
                write_batch(&*store, &healthy, &mut batch).await;
                metrics::gauge!(m::ARCHIVE_QUEUE).set(self.entries.len() as f64);
            }
            let left = self.entries.len();
            let flushed = async {
                while !self.entries.is_empty() {
                    self.entries.recv_many(&mut batch, BATCH).await;
                    write_batch(&*store, &healthy, &mut batch).await;
                }
            };
            if tokio::time::timeout(flush_within, flushed).await.is_err() {
                tracing::error!(left, "the archive queue could not be written out before the stop");
            } else {
                metrics::gauge!(m::ARCHIVE_QUEUE).set(0.0);
                tracing::info!(written = left, "archive queue written out");
            }
        };
        tokio::select! {
            _ = purge => {}
            _ = write => {}
        }
    }
}

/// Writes `batch` in one transaction, retrying until it is written (nothing queued is lost),
/// and tells whoever waits for its entries; leaves `batch` empty.
async fn write_batch(store: &dyn Store, healthy: &AtomicBool, batch: &mut Vec<Queued>) {
    let (entries, waiting): (Vec<ArchiveEntry>, Vec<_>) = batch.drain(..).unzip();
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), m::store_op("archive", store.archive(&entries))).await {
            Ok(Ok(())) => {
                metrics::histogram!(m::ARCHIVE_WRITE).record(started.elapsed().as_secs_f64());
                metrics::counter!(m::ARCHIVE_ENTRIES, "result" => "written").increment(entries.len() as u64);
                healthy.store(true, Ordering::Release);
                for tell in waiting.into_iter().flatten() {
                    let _ = tell.send(());
                }
                return;
            }
            failed => {
                if healthy.swap(false, Ordering::AcqRel) {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timeout".to_string(),
                    };
                    tracing::error!(%error, pending = entries.len(), "archive writes failing; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
