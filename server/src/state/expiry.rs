//! Expiry of dynamic state that lives a fixed time: completed transactions, nonces, lockouts.

use std::collections::VecDeque;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
