//! Brute-force protection. Failed authentications are counted per (user, source IP): after
//! `max_failures` within the window that pair gets 403 for `lockout_secs` without its
//! credentials being checked. An IP that fails for `max_users_per_ip` different users within
//! the window (password spraying) is locked out for every user. A lockout never touches
//! another pair.

use crate::config;
use crate::ops::metrics as m;
use crate::state::expiry::ExpiryQueue;
use dashmap::DashMap;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

type Pair = (Box<str>, IpAddr);

struct PairWindow {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

struct IpWindow {
    users: HashSet<Box<str>>,
    since: Instant,
    locked_until: Option<Instant>,
}

pub struct Lockout {
    /// Windows (pairs and addresses) remembered at most.
    max_tracked: usize,
    max_failures: u32,
    max_users: u32,
    window: Duration,
    lockout: Duration,
    pairs: DashMap<Pair, PairWindow>,
    ips: DashMap<IpAddr, IpWindow>,
    pair_windows: ExpiryQueue<Pair>,
    pair_locks: ExpiryQueue<Pair>,
    ip_windows: ExpiryQueue<IpAddr>,
    ip_locks: ExpiryQueue<IpAddr>,
}

impl Lockout {
    pub fn new(c: &config::Auth) -> Lockout {
        let window = Duration::from_secs(c.failure_window_secs);
        let lockout = Duration::from_secs(c.lockout_secs);
        Lockout {
            max_tracked: c.max_tracked_failures.max(1),
            max_failures: c.max_failures.max(1),
            max_users: c.max_users_per_ip.max(1),
            window,
            lockout,
            pairs: DashMap::new(),
            ips: DashMap::new(),
            pair_windows: ExpiryQueue::new(window),
            pair_locks: ExpiryQueue::new(lockout),
            ip_windows: ExpiryQueue::new(window),
            ip_locks: ExpiryQueue::new(lockout),
        }
    }

    /// Whether this user may try from this address now.
    pub fn is_locked(&self, aor: &str, ip: IpAddr) -> bool {
        let now = Instant::now();
        let locked = |until: Option<Instant>| until.is_some_and(|u| u > now);
        self.ips.get(&ip).is_some_and(|w| locked(w.locked_until))
            || self.pairs.get(&(Box::from(aor), ip)).is_some_and(|w| locked(w.locked_until))
    }

    /// Records a failed attempt; may start a lockout.
    pub fn failure(&self, aor: &str, ip: IpAddr) {
        let now = Instant::now();
        let key: Pair = (aor.into(), ip);
        // Full: a new pair or address is not remembered (existing windows and lockouts go on).
        // Counting takes every shard's lock, but only on a failed authentication.
        if self.pairs.len() + self.ips.len() >= self.max_tracked
            && (!self.pairs.contains_key(&key) || !self.ips.contains_key(&ip))
        {
            metrics::counter!(m::OVER_CAPACITY, "table" => "auth_failures").increment(1);
            tracing::debug!(target: "security", user = aor, %ip, "failure not counted: the lockout tables are full");
            return;
        }
        let mut lock_pair = false;
        {
            let mut w = self.pairs.entry(key.clone()).or_insert_with(|| {
                self.pair_windows.push(key.clone());
                PairWindow { failures: 0, since: now, locked_until: None }
            });
            if w.locked_until.is_none() && now.duration_since(w.since) > self.window {
                // The window passed without expiring (a push raced with it): start over.
                w.failures = 0;
                w.since = now;
                self.pair_windows.push(key.clone());
            }
            w.failures += 1;
            if w.failures >= self.max_failures && w.locked_until.is_none() {
                w.locked_until = Some(now + self.lockout);
                lock_pair = true;
            }
        }
        if lock_pair {
            self.pair_locks.push(key);
            metrics::gauge!(m::AUTH_LOCKOUTS_ACTIVE).increment(1.0);
            tracing::warn!(
                target: "security",
                user = aor, %ip, failures = self.max_failures, until = %until(self.lockout),
                "lockout: too many failed authentications for this user from this address"
            );
        }

        let mut lock_ip = false;
        {
            let mut w = self.ips.entry(ip).or_insert_with(|| {
                self.ip_windows.push(ip);
                IpWindow { users: HashSet::new(), since: now, locked_until: None }
            });
            if w.locked_until.is_none() && now.duration_since(w.since) > self.window {
                w.users.clear();
                w.since = now;
                self.ip_windows.push(ip);
            }
            if w.users.len() < self.max_users as usize {
                w.users.insert(aor.into());
            }
            if w.users.len() >= self.max_users as usize && w.locked_until.is_none() {
                w.locked_until = Some(now + self.lockout);
                lock_ip = true;
            }
        }
        if lock_ip {
            self.ip_locks.push(ip);
            metrics::gauge!(m::AUTH_LOCKOUTS_ACTIVE).increment(1.0);
            tracing::warn!(
                target: "security",
                %ip, users = self.max_users, until = %until(self.lockout),
                "lockout: address failed for too many users (password spraying); locked for every user"
            );
        }
    }

    /// A success clears the pair's count (not an IP's: spraying may include a hit).
    pub fn success(&self, aor: &str, ip: IpAddr) {
        self.pairs.remove_if(&(Box::from(aor), ip), |_, w| w.locked_until.is_none());
    }

    /// Ends windows and lockouts on time; runs until dropped.
    pub async fn run(&self) {
        let now = Instant::now;
        tokio::join!(
            self.pair_windows.run(|k| {
                self.pairs
                    .remove_if(&k, |_, w| w.locked_until.is_none() && now().duration_since(w.since) >= self.window);
            }),
            self.pair_locks.run(|k| {
                if self.pairs.remove_if(&k, |_, w| w.locked_until.is_some_and(|u| u <= now())).is_some() {
                    metrics::gauge!(m::AUTH_LOCKOUTS_ACTIVE).decrement(1.0);
                }
            }),
            self.ip_windows.run(|ip| {
                self.ips
                    .remove_if(&ip, |_, w| w.locked_until.is_none() && now().duration_since(w.since) >= self.window);
            }),
            self.ip_locks.run(|ip| {
                if self.ips.remove_if(&ip, |_, w| w.locked_until.is_some_and(|u| u <= now())).is_some() {
                    metrics::gauge!(m::AUTH_LOCKOUTS_ACTIVE).decrement(1.0);
                }
            }),
        );
    }
}

/// The wall-clock end of a lockout starting now, for the security log.
fn until(lockout: Duration) -> String {
    let end = SystemTime::now() + lockout;
    super::date::sip_date(end)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn lockout() -> Lockout {
        Lockout::new(&config::Auth { max_failures: 3, max_users_per_ip: 4, ..Default::default() })
    }

    #[tokio::test]
    async fn a_pair_locks_after_its_failures_and_nobody_else_does() {
        let l = lockout();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..2 {
            l.failure("alice@x", a);
        }
        assert!(!l.is_locked("alice@x", a));
        l.failure("alice@x", a);
        assert!(l.is_locked("alice@x", a));
        assert!(!l.is_locked("alice@x", b), "another address of the same user");
        assert!(!l.is_locked("bob@x", a), "another user from the same address");
    }

    #[tokio::test]
    async fn spraying_locks_the_address_for_everyone() {
        let l = lockout();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for u in ["u1@x", "u2@x", "u3@x"] {
            l.failure(u, ip);
        }
        assert!(!l.is_locked("carol@x", ip));
        l.failure("u4@x", ip);
        assert!(l.is_locked("carol@x", ip));
        assert!(!l.is_locked("carol@x", "192.0.2.10".parse().unwrap()));
    }

    #[tokio::test]
    async fn the_tables_hold_at_most_their_cap() {
        let l = Lockout::new(&config::Auth { max_failures: 3, max_tracked_failures: 10, ..Default::default() });
        for i in 0..100u8 {
            l.failure(&format!("u{i}@x"), IpAddr::from([192, 0, 2, i]));
        }
        assert!(l.pairs.len() + l.ips.len() <= 10, "{} + {}", l.pairs.len(), l.ips.len());
        // A pair remembered goes on counting to its lockout.
        let first = IpAddr::from([192, 0, 2, 0]);
        l.failure("u0@x", first);
        l.failure("u0@x", first);
        assert!(l.is_locked("u0@x", first));
    }

    #[tokio::test(start_paused = true)]
    async fn lockouts_end_on_time() {
        let l = std::sync::Arc::new(lockout());
        let runner = l.clone();
        tokio::spawn(async move { runner.run().await });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            l.failure("alice@x", ip);
        }
        tokio::time::sleep(Duration::from_secs(899)).await;
        assert!(l.is_locked("alice@x", ip));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!l.is_locked("alice@x", ip));
    }
}
