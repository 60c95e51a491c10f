//! Overload control: when the server cannot keep up, new work is refused early and cheaply
//! (503 with a spread Retry-After, so that refused clients do not all return together), while
//! what finishes work already begun keeps priority: requests inside dialogs, ACK and CANCEL,
//! responses, and refreshes of registrations and publications. Two signs of overload: requests
//! waiting on something (the store, another member) beyond `server.max_pending_requests`, or
//! the runtime running late by more than `server.max_lag_ms` (its workers are all busy).
//!
//! Retry-After follows the backlog: the time the waiting work should take to finish, at the
//! rate work has been finishing, or the runtime's lateness if longer. Work that took as long as
//! the store's timeout gave up rather than finished, and does not count as draining (a store
//! that answers nothing drains nothing). Refused clients are spread over twice that time
//! (between 1 and 15 s, and over at least 3 s), so that they come back once the backlog is gone
//! rather than all at once, or long after: a registration storm then converges at the pace the
//! server can serve it.

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
/// The longest Retry-After given, in seconds (a store that does not answer at all).
const MAX_RETRY_AFTER: u64 = 15;
/// Refused clients are spread over this many seconds at least, however short the backlog.
const MIN_SPREAD: u64 = 3;

pub struct Overload {
    max_pending: usize,
    max_lag: Duration,
    /// Work that took this long (the store's timeout) gave up: it is not counted as drained.
    gave_up_after: Duration,
    pending: Arc<AtomicUsize>,
    /// Pending work finished so far, for the rate at which the backlog drains.
    finished: Arc<AtomicU64>,
    /// How long the backlog should take to drain, in milliseconds (see the module's comment).
    drain_ms: AtomicU64,
    /// The runtime's lateness, in microseconds: the least of the last [`SUSTAINED`] ticks, so
    /// that one stall (a page fault, a neighbour's burst) is not overload.
    lag_us: AtomicU64,
}

impl Overload {
    pub fn new(max_pending: usize, max_lag: Duration, gave_up_after: Duration) -> Overload {
        Overload {
            max_pending,
            max_lag,
            gave_up_after,
            pending: Arc::default(),
            finished: Arc::default(),
            drain_ms: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
        }
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
        self.pending.fetch_add(1, Ordering::Relaxed);
        let guard = Pending {
            pending: self.pending.clone(),
            finished: self.finished.clone(),
            since: Instant::now(),
            gave_up_after: self.gave_up_after,
        };
        async move {
            fut.await;
            drop(guard);
        }
    }

    /// The answer to a request refused for overload: 503, with a Retry-After spread over
    /// twice the time the backlog should take to drain (see the module's comment).
    pub fn refuse(&self, msg: &sipfront_proto::Message, agent: &str) -> sipfront_proto::Message {
        let method = msg.method().map_or("other", crate::transaction::method_label);
        metrics::counter!(m::OVERLOAD_REFUSED, "method" => method).increment(1);
        let mut r = sipfront_proto::reply::response(msg, 503, agent);
        r.set_reason("Service Unavailable (overloaded)");
        let (low, high) = retry_window(Duration::from_millis(self.drain_ms.load(Ordering::Relaxed)));
        let after = low + sipfront_proto::random::u64() % (high - low + 1);
        r.push_header(sipfront_proto::HeaderName::RetryAfter, after.to_string());
        r
    }

    /// Measures how late the runtime runs; until dropped.
    pub async fn run(&self) {
        let mut was = false;
        let mut recent = [0u64; SUSTAINED];
        // Work finished per second, smoothed over about a second of ticks.
        let (mut rate, mut finished) = (0.0f64, self.finished.load(Ordering::Relaxed));
        let mut last = Instant::now();
        for tick in 0usize.. {
            let asked = Instant::now() + TICK;
            tokio::time::sleep_until(asked).await;
            let now = Instant::now();
            let late = now.saturating_duration_since(asked);
            recent[tick % SUSTAINED] = late.as_micros() as u64;
            let lag_us = recent.iter().copied().min().unwrap_or(0);
            self.lag_us.store(lag_us, Ordering::Relaxed);
            let done = self.finished.load(Ordering::Relaxed);
            let this_tick = (done - finished) as f64 / now.duration_since(last).as_secs_f64().max(1e-3);
            (finished, last) = (done, now);
            rate = 0.8 * rate + 0.2 * this_tick;
            let pending = self.pending.load(Ordering::Relaxed) as f64;
            let drain_ms = if pending == 0.0 {
                0.0
            } else if rate < 1.0 {
                f64::MAX
            } else {
                pending / rate * 1000.0
            };
            self.drain_ms.store(drain_ms.max(lag_us as f64 / 1000.0) as u64, Ordering::Relaxed);
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

/// The Retry-After range, in whole seconds, for a backlog that should drain in `drain`: up to
/// twice that (at least [`MIN_SPREAD`], at most [`MAX_RETRY_AFTER`]), from a third of it.
fn retry_window(drain: Duration) -> (u64, u64) {
    let high = (2 * drain.as_millis()).div_ceil(1000).clamp(u128::from(MIN_SPREAD), u128::from(MAX_RETRY_AFTER)) as u64;
    ((high / 3).max(1), high)
}

struct Pending {
    pending: Arc<AtomicUsize>,
    finished: Arc<AtomicU64>,
    since: Instant,
    gave_up_after: Duration,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        if self.since.elapsed() < self.gave_up_after {
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_work_past_the_bound_is_overload_until_it_ends() {
        let o = Overload::new(2, Duration::from_secs(1), Duration::from_secs(2));
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

    #[test]
    fn retry_after_follows_the_backlog() {
        assert_eq!(retry_window(Duration::ZERO), (1, 3), "spread even when the backlog is short");
        assert_eq!(retry_window(Duration::from_millis(2500)), (1, 5));
        assert_eq!(retry_window(Duration::from_secs(6)), (4, 12));
        // A store that answers nothing: the longest wait, spread as widely.
        assert_eq!(retry_window(Duration::from_millis(u64::MAX)), (5, 15));
    }
}
