//! Per-source flood protection (as Kamailio's `pike`, measured in BENCHMARKS.md): every message
//! a source sends counts against a sliding window; a source past `flood.max_requests` within
//! `flood.window_ms` is banned for `flood.ban_secs`: its datagrams are dropped unanswered, its
//! connections closed and new ones refused. A banned source is still counted, and while it stays
//! past the limit its ban runs on: it ends `flood.ban_secs` after the flood does, so a source
//! that never stops never gets another window's worth through. A source is an IPv4 address or
//! an IPv6 /64 (one host's share of a network), as the PROXY protocol names it behind a load
//! balancer. Load balancers (`transport.proxy_protocol_from`), pool members and `flood.allow`
//! are never counted.

use crate::config;
use crate::ops::metrics as m;
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;
use tokio::time::Instant;

/// A source as counted: an IPv4 address, or an IPv6 address with its last 64 bits cleared.
type Source = IpAddr;

struct Window {
    /// When the current window started.
    start: Instant,
    /// Messages in the current window, and in the one before.
    count: u32,
    previous: u32,
    banned_until: Option<Instant>,
}

pub struct FloodGuard {
    /// Messages allowed per window; 0: no limit.
    max: u32,
    window: Duration,
    ban: Duration,
    /// Sources tracked at most; beyond it new ones are not counted.
    max_sources: usize,
    allow: Vec<(IpAddr, u8)>,
    /// Pool members' addresses, as the membership last saw them.
    members: RwLock<Vec<IpAddr>>,
    windows: DashMap<Source, Window>,
}

impl FloodGuard {
    /// Fails on an `allow` entry that is not an address or a CIDR block.
    pub fn new(c: &config::Flood, balancers: &[IpAddr]) -> anyhow::Result<FloodGuard> {
        let mut allow = Vec::new();
        for entry in &c.allow {
            allow.push(
                parse_cidr(entry).ok_or_else(|| anyhow::anyhow!("flood.allow: {entry:?} is not ADDRESS[/BITS]"))?,
            );
        }
        allow.extend(balancers.iter().map(|ip| (*ip, if ip.is_ipv4() { 32 } else { 128 })));
        Ok(FloodGuard {
            max: c.max_requests,
            window: Duration::from_millis(c.window_ms.max(1)),
            ban: Duration::from_secs(c.ban_secs),
            max_sources: c.max_sources.max(1),
            allow,
            members: RwLock::default(),
            windows: DashMap::new(),
        })
    }

    /// The pool's members now (never counted).
    pub fn set_members(&self, members: Vec<IpAddr>) {
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = members;
    }

    /// Counts one message from `ip`: `false` when the source is banned (now or already).
    pub fn admit(&self, ip: IpAddr) -> bool {
        if self.max == 0 || self.exempt(ip) {
            return true;
        }
        let source = source_of(ip);
        let now = Instant::now();
        if !self.windows.contains_key(&source) && self.windows.len() >= self.max_sources {
            metrics::counter!(m::OVER_CAPACITY, "table" => "flood_sources").increment(1);
            return true;
        }
        let mut w = self.windows.entry(source).or_insert_with(|| Window {
            start: now,
            count: 0,
            previous: 0,
            banned_until: None,
        });
        let banned = w.banned_until.is_some_and(|until| until > now);
        if !banned && w.banned_until.take().is_some() {
            metrics::gauge!(m::FLOOD_BANNED).decrement(1.0);
        }
        let elapsed = now.duration_since(w.start);
        if elapsed >= self.window * 2 {
            (w.start, w.count, w.previous) = (now, 0, 0);
        } else if elapsed >= self.window {
            (w.start, w.previous, w.count) = (w.start + self.window, w.count, 0);
        }
        w.count += 1;
        // The sliding window: the previous window's count weighted by how much of it is
        // still within one window of now.
        let into = now.duration_since(w.start).as_secs_f64() / self.window.as_secs_f64();
        let rate = f64::from(w.previous) * (1.0 - into).max(0.0) + f64::from(w.count);
        let over = rate > f64::from(self.max);
        if banned {
            if over {
                w.banned_until = Some(now + self.ban);
            }
            metrics::counter!(m::FLOOD_DROPPED).increment(1);
            return false;
        }
        if !over {
            return true;
        }
        w.banned_until = Some(now + self.ban);
        drop(w);
        metrics::counter!(m::FLOOD_BANS).increment(1);
        metrics::gauge!(m::FLOOD_BANNED).increment(1.0);
        metrics::counter!(m::FLOOD_DROPPED).increment(1);
        tracing::warn!(
            target: "security",
            %source, max = self.max, window_ms = self.window.as_millis() as u64, ban_secs = self.ban.as_secs(),
            "flood: source banned"
        );
        false
    }

    /// Whether `ip`'s source is banned now (a new connection from it is refused).
    pub fn banned(&self, ip: IpAddr) -> bool {
        self.max != 0
            && !self.exempt(ip)
            && self.windows.get(&source_of(ip)).is_some_and(|w| w.banned_until.is_some_and(|u| u > Instant::now()))
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|&(net, bits)| in_block(ip, net, bits))
            || self.members.read().unwrap_or_else(|p| p.into_inner()).contains(&ip)
    }

    /// Forgets quiet sources and ended bans every window; runs until dropped.
    pub async fn run(&self) {
        if self.max == 0 {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(self.window * 2).await;
            let now = Instant::now();
            self.windows.retain(|_, w| match w.banned_until {
                Some(until) if until > now => true,
                Some(_) => {
                    metrics::gauge!(m::FLOOD_BANNED).decrement(1.0);
                    false
                }
                None => now.duration_since(w.start) < self.window * 2,
            });
        }
    }
}

/// The source an address counts as: itself (IPv4), or its /64 (IPv6).
fn source_of(ip: IpAddr) -> Source {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.trim().split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
        None => {
            let a = s.trim().parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr.to_canonical(), bits))
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn guard(max: u32, allow: &[&str]) -> FloodGuard {
        let c = config::Flood {
            max_requests: max,
            window_ms: 1000,
            ban_secs: 60,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        FloodGuard::new(&c, &["192.0.2.99".parse().unwrap()]).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_past_its_rate_is_banned_for_the_ban_and_nobody_else_is() {
        let g = guard(10, &[]);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!((0..10).all(|_| g.admit(a)));
        assert!(!g.admit(a), "the eleventh within the window");
        assert!(g.banned(a) && !g.banned(b));
        assert!(g.admit(b), "another source");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!g.admit(a), "still banned");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(g.admit(a), "the ban is over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_runs_on_while_the_source_keeps_flooding() {
        let g = guard(10, &[]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!(0..11).all(|_| g.admit(a)), "banned");
        // Twenty a second for two minutes: past the limit all along, never let through.
        for _ in 0..2400 {
            tokio::time::advance(Duration::from_millis(50)).await;
            assert!(!g.admit(a), "still flooding, still banned");
        }
        // Quiet: the ban ends a ban's length after the flood did.
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(g.banned(a));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(g.admit(a), "the ban is over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_source_under_the_rate_is_never_banned() {
        let g = guard(10, &[]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // Eight a second, one every 125 ms: never ten within any second.
        for _ in 0..800 {
            assert!(g.admit(a));
            tokio::time::advance(Duration::from_millis(125)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_by_64_and_allowed_sources_are_never_counted() {
        let g = guard(3, &["10.0.0.0/8", "2001:db8:1::/48"]);
        let one: IpAddr = "2001:db8:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:2::2".parse().unwrap();
        assert!(g.admit(one) && g.admit(one) && g.admit(same_64));
        assert!(!g.admit(same_64), "one /64, one source");
        assert!((0..100).all(|_| g.admit("10.1.2.3".parse().unwrap())), "allowed");
        assert!((0..100).all(|_| g.admit("2001:db8:1::7".parse().unwrap())), "allowed /48");
        assert!((0..100).all(|_| g.admit("192.0.2.99".parse().unwrap())), "a load balancer");
        g.set_members(vec!["192.0.2.50".parse().unwrap()]);
        assert!((0..100).all(|_| g.admit("192.0.2.50".parse().unwrap())), "a pool member");
        assert!(FloodGuard::new(&config::Flood { allow: vec!["nonsense".into()], ..Default::default() }, &[]).is_err());
    }
}
