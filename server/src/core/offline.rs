//! Messages for users who are not signed in: stored (so that a restart keeps them) and answered
//! 202 Accepted; on the recipient's next successful REGISTER they are delivered in the order
//! they came, each with a `Date` header of its original time, and deleted once a 2xx comes back.
//! Messages older than the age limit are purged.
//!
//! A REGISTER looks in the store only for a recipient that may have messages waiting: one in
//! the store when the server started, one this front end kept a message for, or one the change
//! log named since (another front end may have kept one: the store notes every kept message
//! there, as an entry of its own that user, rule and list caches ignore). Refreshes of everyone
//! else cost no store round trip.

use super::date::sip_date_of_unix;
use super::messaging::Messaging;
use crate::config;
use crate::ops::metrics as m;
use dashmap::DashMap;
use sipfront_proto::reply;
use sipfront_proto::{HeaderName, Message, Method};
use sipfront_storage::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

pub struct Offline {
    cfg: config::Messaging,
    store: Arc<dyn Store>,
    /// AORs whose stored messages are being delivered now: one delivery at a time per user,
    /// so that two quick REGISTERs do not deliver everything twice.
    delivering: DashMap<String, ()>,
    /// Recipients that may have messages waiting (see the module's comment).
    waiting: DashMap<String, ()>,
    /// Until `waiting` is known (at start, and after missing part of the change log), every
    /// recipient may have messages waiting.
    unsure: AtomicBool,
    agent: String,
    /// How long keeping a message may take (`database.timeout_ms`): past it the sender gets 503
    /// and tries again (the row may still commit: a message kept twice, never one lost).
    timeout: Duration,
}

impl Offline {
    pub fn new(cfg: config::Messaging, store: Arc<dyn Store>, agent: String, timeout: Duration) -> Offline {
        Offline {
            timeout,
            cfg,
            store,
            delivering: DashMap::new(),
            waiting: DashMap::new(),
            unsure: AtomicBool::new(true),
            agent,
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.offline
    }

    /// Whether `aor` may have messages waiting, so that its REGISTER should look.
    pub fn may_have(&self, aor: &str) -> bool {
        self.cfg.offline && (self.unsure.load(Ordering::Relaxed) || self.waiting.contains_key(aor))
    }

    /// Learns who has messages waiting: the store's recipients, then every recipient the change
    /// log names (`changes`, subscribed before this is called, so that nothing falls in
    /// between); runs until the change log closes.
    pub async fn follow(&self, mut changes: broadcast::Receiver<Arc<str>>) {
        if !self.cfg.offline {
            return;
        }
        self.load_waiting().await;
        loop {
            match changes.recv().await {
                Ok(aor) => {
                    self.waiting.insert(aor.to_string(), ());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.unsure.store(true, Ordering::Relaxed);
                    self.load_waiting().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Reads the store's recipients into `waiting` (retrying while the store is unavailable,
    /// every REGISTER looking meanwhile).
    async fn load_waiting(&self) {
        loop {
            match self.store.offline_recipients().await {
                Ok(recipients) => {
                    for r in recipients {
                        self.waiting.insert(r, ());
                    }
                    self.unsure.store(false, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read who has offline messages; every REGISTER looks meanwhile");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }

    /// Keeps `msg` for `recipient`: 202 when stored, 480 when storage is off or the user's
    /// quota is full, 503 when the store is unavailable.
    pub async fn keep(&self, msg: &Message, recipient: &str, sender: &str) -> Message {
        if !self.cfg.offline {
            return reply::response(msg, 480, &self.agent);
        }
        let content_type = String::from_utf8_lossy(msg.content_type().unwrap_or_default()).into_owned();
        let keep =
            self.store.store_offline(recipient, sender, &content_type, msg.body(), self.cfg.offline_max_per_user);
        let kept = tokio::time::timeout(self.timeout, m::store_op("store_offline", keep))
            .await
            .unwrap_or(Err(sipfront_storage::StoreError::Timeout(self.timeout)));
        match kept {
            Ok(true) => {
                self.waiting.insert(recipient.to_string(), ());
                metrics::counter!(m::OFFLINE_MESSAGES, "event" => "stored").increment(1);
                reply::response(msg, 202, &self.agent)
            }
            Ok(false) => {
                metrics::counter!(m::OFFLINE_MESSAGES, "event" => "refused_full").increment(1);
                let mut r = reply::response(msg, 480, &self.agent);
                r.set_reason("Temporarily Unavailable (offline messages full)");
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store an offline message");
                metrics::counter!(m::STORE_ERRORS).increment(1);
                let mut r = reply::response(msg, 503, &self.agent);
                r.push_header(HeaderName::RetryAfter, "5");
                r
            }
        }
    }

    /// Delivers what is stored for `aor` to its bindings, oldest first; stops at the first one
    /// not accepted (it stays, and so does everything after it, to keep the order).
    pub async fn deliver(&self, aor: &str, messaging: &Messaging) {
        if self.delivering.insert(aor.to_string(), ()).is_some() {
            return;
        }
        let result = self.deliver_all(aor, messaging).await;
        self.delivering.remove(aor);
        if let Err(e) = result {
            tracing::warn!(aor, error = %e, "offline delivery interrupted; retried at the next REGISTER");
        }
    }

    async fn deliver_all(&self, aor: &str, messaging: &Messaging) -> Result<(), sipfront_storage::StoreError> {
        loop {
            let batch = m::store_op("offline_messages", self.store.offline_messages(aor, 50)).await?;
            if batch.is_empty() {
                // A message kept from now on puts the recipient back (here, or through the
                // change log).
                self.waiting.remove(aor);
                return Ok(());
            }
            for stored in batch {
                let Some(resp) = messaging.relay_to(aor, &message_for(&stored)).await else { return Ok(()) };
                if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
                    tracing::debug!(aor, status = resp.status(), "offline message not accepted; kept");
                    return Ok(());
                }
                m::store_op("delete_offline", self.store.delete_offline(stored.id)).await?;
                metrics::counter!(m::OFFLINE_MESSAGES, "event" => "delivered").increment(1);
            }
        }
    }

    /// Measures how full the offline store is, every 30 seconds, for the dashboard and the
    /// near-quota alert: messages kept, and recipients holding 80% or more of their quota
    /// (messages to them get 480 once it is full). Runs until dropped.
    pub async fn run_census(&self) {
        let quota = self.cfg.offline_max_per_user;
        metrics::gauge!(m::OFFLINE_QUOTA).set(f64::from(quota));
        if !self.cfg.offline {
            return;
        }
        let near = (quota.saturating_mul(4)).div_ceil(5).max(1);
        loop {
            match m::store_op("offline_stats", self.store.offline_stats(near)).await {
                Ok(stats) => {
                    metrics::gauge!(m::OFFLINE_STORED).set(stats.messages as f64);
                    metrics::gauge!(m::OFFLINE_NEAR_QUOTA).set(stats.recipients_near as f64);
                }
                Err(e) => tracing::debug!(error = %e, "offline census failed; retried later"),
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }

    /// Purges messages past the age limit, once an hour; runs until dropped.
    pub async fn run_purge(&self) {
        loop {
            let age = u64::from(self.cfg.offline_max_age_days) * 86_400;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            match self.store.purge_offline(now.saturating_sub(age) as i64).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!(m::OFFLINE_MESSAGES, "event" => "expired").increment(n);
                    tracing::info!(purged = n, "offline messages past their age limit");
                }
                Err(e) => tracing::debug!(error = %e, "offline purge failed; retried later"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// The MESSAGE that delivers a stored one: from its sender, to its recipient, dated when it
/// was received (RFC 3261 20.17).
fn message_for(stored: &sipfront_storage::OfflineMessage) -> Message {
    let mut m = Message::request(Method::Message, format!("sip:{}", stored.recipient));
    m.push_header(HeaderName::MaxForwards, "70");
    m.push_header(HeaderName::From, format!("<sip:{}>;tag={}", stored.sender, reply::new_tag()));
    m.push_header(HeaderName::To, format!("<sip:{}>", stored.recipient));
    m.push_header(HeaderName::CallId, format!("{}@offline.sipfront", reply::new_tag()));
    m.push_header(HeaderName::CSeq, "1 MESSAGE");
    m.push_header(HeaderName::Date, sip_date_of_unix(stored.received_at));
    m.push_header(HeaderName::ContentType, stored.content_type.clone());
    m.push_header(HeaderName::ContentLength, "0");
    m.set_body(stored.body.clone());
    m
}
