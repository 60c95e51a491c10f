//! Open-loop rate control. Transaction `i` is due at `t0 + i / rate`, whatever happened to the
//! ones before it: a slow server gets more concurrent transactions, not fewer requests, and
//! each transaction's latency is measured from when it was *due*, so a stall is charged to every
//! transaction scheduled behind it (no coordinated omission). A closed loop ("send the next one
//! when the last one is answered") would hide exactly the stalls a load test is for.

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

/// How a phase ended.
pub struct Phase {
    /// From the first due time to the end of the last transaction (or to the stop).
    pub elapsed: Duration,
    /// Transactions started.
    pub started: u64,
    /// From the first due time to the start of the last transaction.
    pub sending: Duration,
    /// Stopped by Ctrl-C (or the caller) before every transaction ended.
    pub interrupted: bool,
}

/// Starts `count` transactions at `rate` per second, each made by `start(i, due)`, and waits
/// for them all, or until `stop` turns true (what is still open then is abandoned).
pub async fn open_loop<F, Fut>(rate: f64, count: u64, stop: &mut watch::Receiver<bool>, mut start: F) -> Phase
where
    F: FnMut(u64, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    let mut interrupted = false;
    let mut started = 0;
    let mut sending = Duration::ZERO;
    for i in 0..count {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::select! {
            _ = sleep_until(due) => {}
            _ = stopped(stop) => { interrupted = true; break; }
        }
        tasks.spawn(start(i, due));
        started += 1;
        sending = t0.elapsed();
        // Reap what has ended, so the set holds only what is in flight.
        while tasks.try_join_next().is_some() {}
    }
    if !interrupted {
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = stopped(stop) => { interrupted = true; break; }
            }
        }
    }
    tasks.abort_all();
    Phase { elapsed: t0.elapsed(), started, sending, interrupted }
}

/// Resolves once `stop` is true; never, if its sender is gone without saying so.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn schedules_at_the_rate_even_when_nothing_answers() {
        let (_tx, mut rx) = watch::channel(false);
        let begun = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let b = begun.clone();
        let phase = open_loop(100.0, 50, &mut rx, move |_, _| {
            b.fetch_add(1, Ordering::Relaxed);
            // Each transaction hangs for 10 s: an open loop does not wait for it.
            tokio::time::sleep(Duration::from_secs(10))
        })
        .await;
        assert_eq!(begun.load(Ordering::Relaxed), 50);
        assert_eq!(phase.started, 50);
        assert!(phase.sending < Duration::from_millis(500), "{:?}", phase.sending);
        assert!(t0.elapsed() >= Duration::from_secs(10));
        assert!(!phase.interrupted);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_told() {
        let (tx, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(105)).await;
            let _ = tx.send(true);
        });
        let phase = open_loop(100.0, 1000, &mut rx, |_, _| tokio::time::sleep(Duration::from_secs(60))).await;
        assert!(phase.interrupted);
        assert!((10..=12).contains(&phase.started), "{}", phase.started);
    }
}
