//! Overload control: when the server cannot keep up, new work is refused early and cheaply
//! (503 with a spread Retry-After, so that refused clients do not all return together), while
//! what finishes work already begun keeps priority: requests inside dialogs, ACK and CANCEL,
//! responses, and refreshes of registrations and publications. Two signs of overload: requests
//! waiting on something (the store, another member) beyond `server.max_pending_requests`, or
//! the runtime running late by more than `server.max_lag_ms` (its workers are all busy).

use crate::ops::metrics as m;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the runtime's lateness is measured.
const TICK: Duration = Duration::from_millis(50);
/// Ticks in a row that must run late for the lateness to count.
const SUSTAINED: usize = 3;

pub struct Overload {
    max_pending: usize,
    max_lag: Duration,
    pending: Arc<AtomicUsize>,
    /// The runtime's lateness, in microseconds: the least of the last [`SUSTAINED`] ticks, so
    /// that one stall (a page fault, a neighbour's burst) is not overload.
    lag_us: AtomicU64,
}

impl Overload {
    pub fn new(max_pending: usize, max_lag: Duration) -> Overload {
        Overload { max_pending, max_lag, pending: Arc::default(), lag_us: AtomicU64::new(0) }
    }

    /// Whether new work should be refused now.
    pub fn overloaded(&self) -> bool {
        self.pending.load(Ordering::Relaxed) >= self.max_pending
            || Duration::from_micros(self.lag_us.load(Ordering::Relaxed)) > self.max_lag
    }

    /// Requests waiting now (`sipfront_pending_requests`, read when scraped).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// `fut`, counted as pending until it ends.
    pub fn track(&self, fut: impl Future<Output = ()> + Send + 'static) -> impl Future<Output = ()> + Send + 'static {
        let pending = self.pending.clone();
        pending.fetch_add(1, Ordering::Relaxed);
        let guard = Pending(pending);
        async move {
            fut.await;
            drop(guard);
        }
    }

    /// The answer to a request refused for overload: 503, Retry-After between 5 and 15 s.
    pub fn refuse(&self, msg: &sipfront_proto::Message, agent: &str) -> sipfront_proto::Message {
        let method = msg.method().map_or("other", crate::transaction::method_label);
        metrics::counter!(m::OVERLOAD_REFUSED, "method" => method).increment(1);
        let mut r = sipfront_proto::reply::response(msg, 503, agent);
        r.set_reason("Service Unavailable (overloaded)");
        let after = 5 + sipfront_proto::random::u64() % 11;
        r.push_header(sipfront_proto::HeaderName::RetryAfter, after.to_string());
        r
    }

    /// Measures how late the runtime runs; until dropped.
    pub async fn run(&self) {
        let mut was = false;
        let mut recent = [0u64; SUSTAINED];
        for tick in 0usize.. {
            let asked = Instant::now() + TICK;
            tokio::time::sleep_until(asked).await;
            let late = Instant::now().saturating_duration_since(asked);
            recent[tick % SUSTAINED] = late.as_micros() as u64;
            self.lag_us.store(recent.iter().copied().min().unwrap_or(0), Ordering::Relaxed);
            let now = self.overloaded();
            if now != was {
                metrics::gauge!(m::OVERLOADED).set(if now { 1.0 } else { 0.0 });
                if now {
                    tracing::warn!(
                        pending = self.pending.load(Ordering::Relaxed),
                        late_ms = late.as_millis() as u64,
                        "overloaded: new requests are refused with 503"
                    );
                } else {
                    tracing::info!("no longer overloaded");
                }
                was = now;
            }
        }
    }
}

struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_work_past_the_bound_is_overload_until_it_ends() {
        let o = Overload::new(2, Duration::from_secs(1));
        let (release, wait) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let mut wait = wait.clone();
            tasks.push(tokio::spawn(o.track(async move {
                let _ = wait.wait_for(|&go| go).await;
            })));
        }
        assert!(o.overloaded());
        release.send_replace(true);
        for t in tasks {
            t.await.expect("the task ends");
        }
        assert!(!o.overloaded());
    }
}
