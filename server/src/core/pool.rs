//! The pool's membership: this front end announces itself in the shared store (its id, the
//! address the other members reach it on, what it holds) with a heartbeat every
//! `pool.heartbeat_ms`, and reads the others' at the same pace. A member silent for
//! `pool.member_timeout_ms` is dead to the others; a member stopping gracefully says it is
//! leaving, and is dead to them at once. Heartbeats are stamped and aged by the database's
//! clock, so members' clocks need not agree. On a single node the pool is that node alone.

use crate::config;
use crate::ops::metrics as m;
use crate::state::bindings::Bindings;
use crate::transport::Transports;
use sipfront_storage::{Member, MemberSeen, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the others make of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// It beat within the member timeout.
    Live,
    /// It said it is leaving (draining, or stopped).
    Leaving,
    /// Silent for longer than the member timeout.
    Dead,
}

impl MemberState {
    pub fn of(seen: &MemberSeen, member_timeout_ms: u64) -> MemberState {
        if seen.leaving {
            MemberState::Leaving
        } else if seen.silent_ms > i64::try_from(member_timeout_ms).unwrap_or(i64::MAX) {
            MemberState::Dead
        } else {
            MemberState::Live
        }
    }

    /// As `sipfront pool status` and the `state` label of `sipfront_pool_members` say it.
    pub fn label(self) -> &'static str {
        match self {
            MemberState::Live => "live",
            MemberState::Leaving => "leaving",
            MemberState::Dead => "dead",
        }
    }
}

/// Members silent for this long are deleted from the store: `pool status` shows a dead
/// member for ten minutes, then forgets it.
const FORGET_AFTER_MS: i64 = 10 * 60 * 1000;

pub struct Membership {
    cfg: config::Pool,
    me: Member,
    store: Arc<dyn Store>,
    bindings: Arc<Bindings>,
    transports: Arc<Transports>,
}

impl Membership {
    /// This front end as `cfg` names it (`sip` is its first SIP listener, the default address).
    pub fn new(
        cfg: config::Pool,
        sip: Option<SocketAddr>,
        store: Arc<dyn Store>,
        bindings: Arc<Bindings>,
        transports: Arc<Transports>,
    ) -> Membership {
        let host = host_name();
        let port = sip.map_or(5060, |a| a.port());
        let id = if cfg.member_id.is_empty() { format!("{host}:{port}") } else { cfg.member_id.clone() };
        let address = match (cfg.address.is_empty(), sip) {
            (false, _) => cfg.address.clone(),
            (true, Some(a)) if !a.ip().is_unspecified() => a.to_string(),
            (true, _) => format!("{host}:{port}"),
        };
        let started_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let me = Member {
            id,
            address,
            started_at: i64::try_from(started_at).unwrap_or(i64::MAX),
            users_homed: 0,
            connections: 0,
        };
        Membership { cfg, me, store, bindings, transports }
    }

    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// Beats and reads the others every `pool.heartbeat_ms`; runs until dropped. A store that
    /// does not answer is logged and tried again at the next beat: the members last read stay.
    pub async fn run(&self) {
        let every = Duration::from_millis(self.cfg.heartbeat_ms);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = self.beat(every).await {
                tracing::warn!(error = %e, member = %self.me.id, "pool heartbeat failed; retrying");
            }
        }
    }

    async fn beat(&self, within: Duration) -> Result<(), sipfront_storage::StoreError> {
        let me = Member {
            users_homed: i64::try_from(self.bindings.aor_count()).unwrap_or(i64::MAX),
            connections: i64::try_from(self.transports.flows.count()).unwrap_or(i64::MAX),
            ..self.me.clone()
        };
        let late = |_| sipfront_storage::StoreError::Timeout(within);
        tokio::time::timeout(within, self.store.heartbeat(&me, FORGET_AFTER_MS)).await.map_err(late)??;
        let seen = tokio::time::timeout(within, self.store.members()).await.map_err(late)??;
        for state in [MemberState::Live, MemberState::Leaving, MemberState::Dead] {
            let n = seen.iter().filter(|s| MemberState::of(s, self.cfg.member_timeout_ms) == state).count();
            metrics::gauge!(m::POOL_MEMBERS, "state" => state.label()).set(n as f64);
        }
        Ok(())
    }

    /// Says in the store that this front end is leaving (a graceful stop).
    pub async fn leave(&self) {
        let within = Duration::from_millis(self.cfg.heartbeat_ms);
        match tokio::time::timeout(within, self.store.leave(&self.me.id)).await {
            Ok(Ok(())) => tracing::info!(member = %self.me.id, "left the pool"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not say that this member leaves the pool"),
            Err(_) => tracing::warn!("the store did not answer: the others will see this member dead instead"),
        }
    }
}

/// The machine's host name, for default member ids and addresses.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(silent_ms: i64, leaving: bool) -> MemberSeen {
        let member =
            Member { id: "fe".into(), address: "fe:5060".into(), started_at: 0, users_homed: 0, connections: 0 };
        MemberSeen { member, silent_ms, leaving }
    }

    #[test]
    fn states() {
        assert_eq!(MemberState::of(&seen(0, false), 3000), MemberState::Live);
        assert_eq!(MemberState::of(&seen(3000, false), 3000), MemberState::Live);
        assert_eq!(MemberState::of(&seen(3001, false), 3000), MemberState::Dead);
        assert_eq!(MemberState::of(&seen(0, true), 3000), MemberState::Leaving);
        assert_eq!(MemberState::of(&seen(99_000, true), 3000), MemberState::Leaving);
    }
}
