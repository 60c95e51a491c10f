//! Expiry of dynamic state: [`ExpiryQueue`] for what lives a fixed time (completed
//! transactions, nonces, lockouts), [`DeadlineHeap`] for what lives as long as it asked
//! (publications, subscriptions).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Keys that expire a fixed delay after they are pushed. Because the delay is the same for
/// every key, the queue is always in deadline order: pushing and expiring are O(1), and the
/// expiry task sleeps exactly until the next deadline instead of scanning a table on a tick.
pub struct ExpiryQueue<K> {
    delay: Duration,
    queue: Mutex<VecDeque<(Instant, K)>>,
    wake: Notify,
}

impl<K> ExpiryQueue<K> {
    pub fn new(delay: Duration) -> ExpiryQueue<K> {
        ExpiryQueue { delay, queue: Mutex::new(VecDeque::new()), wake: Notify::new() }
    }

    pub fn push(&self, key: K) {
        let deadline = Instant::now() + self.delay;
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = q.is_empty();
            q.push_back((deadline, key));
            was_empty
        };
        if was_empty {
            self.wake.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `expire` for every key as its deadline passes; runs until the task is dropped.
    pub async fn run(&self, mut expire: impl FnMut(K)) {
        loop {
            let next = {
                let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.front().map(|(d, _)| *d)
            };
            match next {
                None => self.wake.notified().await,
                Some(deadline) if deadline > Instant::now() => tokio::time::sleep_until(deadline).await,
                Some(_) => {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    {
                        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                        while q.front().is_some_and(|(d, _)| *d <= now) {
                            if let Some((_, k)) = q.pop_front() {
                                due.push(k);
                            }
                        }
                    }
                    due.into_iter().for_each(&mut expire);
                }
            }
        }
    }
}

/// Keys with deadlines of their own, in a min-heap. A key whose deadline moved (a refresh) is
/// pushed again; when the old entry comes up, the `expire` callback finds the state still live
/// and leaves it, so a refresh costs one push and no search.
pub struct DeadlineHeap<K> {
    heap: Mutex<BinaryHeap<Reverse<(Instant, u64, K)>>>,
    wake: Notify,
    seq: std::sync::atomic::AtomicU64,
}

impl<K: Ord> Default for DeadlineHeap<K> {
    fn default() -> Self {
        DeadlineHeap { heap: Mutex::new(BinaryHeap::new()), wake: Notify::new(), seq: Default::default() }
    }
}

impl<K: Ord> DeadlineHeap<K> {
    pub fn push(&self, at: Instant, key: K) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let earlier = {
            let mut h = self.heap.lock().unwrap_or_else(|p| p.into_inner());
            let earlier = h.peek().is_none_or(|Reverse((next, _, _))| at < *next);
            h.push(Reverse((at, seq, key)));
            earlier
        };
        if earlier {
            self.wake.notify_one();
        }
    }

    fn next(&self) -> Option<Instant> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner()).peek().map(|Reverse((at, _, _))| *at)
    }

    /// Calls `expire` for every key as its deadline passes; runs until the task is dropped.
    pub async fn run(&self, mut expire: impl FnMut(K)) {
        loop {
            match self.next() {
                None => self.wake.notified().await,
                Some(at) if at > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Some(_) => {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    {
                        let mut h = self.heap.lock().unwrap_or_else(|p| p.into_inner());
                        while h.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                            if let Some(Reverse((_, _, k))) = h.pop() {
                                due.push(k);
                            }
                        }
                    }
                    due.into_iter().for_each(&mut expire);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn deadlines_of_their_own_expire_in_deadline_order() {
        let h = Arc::new(DeadlineHeap::default());
        let expired = Arc::new(Mutex::new(Vec::new()));
        let (h2, e2) = (h.clone(), expired.clone());
        tokio::spawn(async move { h2.run(|k| e2.lock().unwrap().push(k)).await });
        let now = Instant::now();
        h.push(now + Duration::from_secs(60), "late");
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.push(now + Duration::from_secs(10), "early");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(*expired.lock().unwrap(), vec!["early"]);
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert_eq!(*expired.lock().unwrap(), vec!["early", "late"]);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_expire_in_order_at_their_deadline() {
        let q = Arc::new(ExpiryQueue::new(Duration::from_secs(32)));
        let expired = Arc::new(Mutex::new(Vec::new()));
        let (q2, e2) = (q.clone(), expired.clone());
        tokio::spawn(async move { q2.run(|k| e2.lock().unwrap().push(k)).await });
        q.push(1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        q.push(2);
        tokio::time::sleep(Duration::from_secs(23)).await;
        assert_eq!(*expired.lock().unwrap(), vec![1]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(*expired.lock().unwrap(), vec![1, 2]);
        assert!(q.is_empty());
    }
}
