//! The pool's membership: this front end announces itself in the shared store (its id, the
//! address the other members reach it on, what it holds) with a heartbeat every
//! `pool.heartbeat_ms`, and reads the others' at the same pace. A member silent for
//! `pool.member_timeout_ms` is dead to the others; a member stopping gracefully says it is
//! leaving, and is dead to them at once. Heartbeats are stamped and aged by the database's
//! clock, so members' clocks need not agree. On a single node the pool is that node alone.
//!
//! Every AOR has one *home* among the live members, by rendezvous hashing ([`Membership::home_of`]):
//! the home keeps the AOR's bindings, publications and the subscriptions to it. The member
//! holding a client's connection is its *edge* ([`edge`]), which relays the client's requests
//! to their home and the home's requests to the client. Inter-member requests carry the pool's
//! seal ([`hop`]).

pub mod edge;
pub mod hop;

use crate::config;
use crate::ops::metrics as m;
use crate::state::bindings::Bindings;
use crate::transport::connect::Connector;
use crate::transport::Transports;
use sipfront_proto::{HeaderName, Message, Method};
use sipfront_storage::{Member, MemberSeen, Store};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A live member other than this one, as this one reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: Arc<str>,
    pub addr: SocketAddr,
}

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
    /// Where the others reach this member, when it is an address.
    my_addr: Option<SocketAddr>,
    store: Arc<dyn Store>,
    bindings: Arc<Bindings>,
    transports: Arc<Transports>,
    connector: Arc<Connector>,
    seal: hop::Seal,
    /// The seal's key is shared (`pool.secret` or `auth.secret`), not this process's own.
    keyed: bool,
    /// The other live members as last read, by id.
    peers: RwLock<Arc<Vec<Peer>>>,
    /// No other live member: everything is served here (the single-node fast path).
    alone: AtomicBool,
    /// Connections opened to this member by members it did not know yet when they said hello:
    /// found by their addresses as soon as it does.
    unknown_hellos: std::sync::Mutex<Vec<(String, crate::transport::flows::FlowId)>>,
    /// Connections to the other members, by flow: when one closes, its member is taken for
    /// dead at once (a crashed process's connections close with it) instead of after the
    /// member timeout, until a connection to it is open again.
    peer_flows: dashmap::DashMap<crate::transport::flows::FlowId, Arc<str>>,
    lost: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    /// What the store said last, to judge again when a connection is lost.
    last_seen: std::sync::Mutex<Vec<MemberSeen>>,
    /// This member is draining: it homes nothing any more.
    leaving: AtomicBool,
    /// Bumped at every change of who is home where (a member came, went, or this one leaves).
    changes: tokio::sync::watch::Sender<u64>,
}

impl Membership {
    /// This front end as `cfg` names it (`sip` is its first SIP listener, the default address).
    pub fn new(
        cfg: config::Pool,
        sip: Option<SocketAddr>,
        store: Arc<dyn Store>,
        bindings: Arc<Bindings>,
        transports: Arc<Transports>,
        connector: Arc<Connector>,
        secret: &[u8],
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
        let my_addr = me.address.parse().ok();
        if let Some(addr) = my_addr {
            connector.advertise(addr);
        }
        let random_key = super::secure_random(32);
        Membership {
            cfg,
            me,
            my_addr,
            store,
            bindings,
            transports,
            connector,
            seal: hop::Seal::new(if secret.is_empty() { &random_key } else { secret }),
            keyed: !secret.is_empty(),
            peers: RwLock::new(Arc::new(Vec::new())),
            alone: AtomicBool::new(true),
            unknown_hellos: std::sync::Mutex::new(Vec::new()),
            peer_flows: dashmap::DashMap::new(),
            lost: std::sync::Mutex::new(std::collections::HashSet::new()),
            last_seen: std::sync::Mutex::new(Vec::new()),
            leaving: AtomicBool::new(false),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// The pool's seal, for inter-member requests.
    pub fn seal(&self) -> &hop::Seal {
        &self.seal
    }

    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    /// Where the others reach this member (SIP over TCP).
    pub fn address(&self) -> &str {
        &self.me.address
    }

    /// Whether no other member is live: then every AOR's home is here.
    pub fn alone(&self) -> bool {
        self.alone.load(Ordering::Relaxed)
    }

    /// Changes of who is home where, to follow.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether this member is the home of `aor`.
    pub fn homes(&self, aor: &str) -> bool {
        (self.alone() || !self.leaving()) && self.home_of(aor).is_none()
    }

    /// Whether this member is draining.
    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// The other live members.
    pub fn peers(&self) -> Arc<Vec<Peer>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Connection `flow` comes from member `id`: it is found by that member's address from
    /// now on, or once this member learns of it.
    pub fn connection_from(&self, id: &str, flow: crate::transport::flows::FlowId) {
        // Its hello carried the pool's seal.
        self.transports.flows.mark_authenticated(flow);
        match self.peer_named(id) {
            Some(peer) => {
                self.transports.flows.alias(flow, crate::transport::Transport::Tcp, peer.addr);
                self.peer_flows.insert(flow, peer.id);
            }
            None => {
                let mut pending = self.unknown_hellos.lock().unwrap_or_else(|p| p.into_inner());
                pending.retain(|(_, f)| self.transports.flows.is_open(*f));
                if pending.len() < 64 {
                    pending.push((id.to_string(), flow));
                }
            }
        }
    }

    /// A connection closed: if it was to a member, that member is gone for now.
    pub fn flow_closed(&self, flow: crate::transport::flows::FlowId) {
        let Some((_, id)) = self.peer_flows.remove(&flow) else { return };
        tracing::info!(member = %id, "connection to pool member lost; taken for dead until it is back");
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        let last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.see(&last);
    }

    /// The live member at `addr`, if any.
    pub fn peer_at(&self, addr: SocketAddr) -> Option<Peer> {
        if self.alone() {
            return None;
        }
        self.peers().iter().find(|p| p.addr == addr).cloned()
    }

    /// The live member named `id`, if any.
    pub fn peer_named(&self, id: &str) -> Option<Peer> {
        self.peers().iter().find(|p| &*p.id == id).cloned()
    }

    /// Whether `addr` is where the others reach this member.
    pub fn is_me(&self, addr: SocketAddr) -> bool {
        self.my_addr == Some(addr)
    }

    /// The home of `aor` (`user@domain`, compared without case): `None` when it is this
    /// member. Rendezvous hashing: each member scores the AOR and the highest score wins, so
    /// a member joining or leaving moves only the AORs it wins or held.
    pub fn home_of(&self, aor: &str) -> Option<Peer> {
        if self.alone() {
            return None;
        }
        let peers = self.peers();
        // A draining member is nobody's home (unless it is alone: then it still is).
        let me = (!self.leaving()).then_some(self.me.id.as_str());
        let ids = peers.iter().map(|p| &*p.id).chain(me);
        let home = home_among(ids, aor)?;
        peers.iter().find(|p| &*p.id == home).cloned()
    }

    /// The connection to the member at `to`, opened (and introduced with a hello) if there is
    /// none yet; `None` if it cannot be reached within `within`.
    pub async fn connection_to(&self, to: SocketAddr, within: Duration) -> Option<crate::transport::flows::FlowId> {
        let (flow, new) = self.connector.flow_to(to, within).await?;
        if new {
            // Who we are first, so that the other finds this connection by our address.
            let _ = self.transports.flows.send(flow, self.hello(to));
        }
        Some(flow)
    }

    /// The first request on a connection this member opened to `to`: a sealed OPTIONS, by
    /// which the other learns whose connection it is.
    pub fn hello(&self, to: SocketAddr) -> bytes::Bytes {
        let mut msg = Message::request(Method::Options, format!("sip:{to};transport=tcp"));
        let tag = sipfront_proto::reply::new_tag();
        msg.push_header(
            HeaderName::Via,
            format!("SIP/2.0/TCP {};branch={}{tag}", self.me.address, edge::BRANCH_PREFIX),
        );
        msg.push_header(HeaderName::MaxForwards, "1");
        msg.push_header(HeaderName::From, format!("<sip:pool@{}>;tag={tag}", self.me.address));
        msg.push_header(HeaderName::To, format!("<sip:pool@{to}>"));
        msg.push_header(HeaderName::CallId, format!("hello-{tag}"));
        msg.push_header(HeaderName::CSeq, "1 OPTIONS");
        let vouch = hop::Vouch {
            member: self.me.id.clone(),
            client: None,
            identity: None,
            replay: false,
            feed: false,
            partner: None,
            group: None,
        };
        self.seal.sign(&mut msg, &vouch);
        msg.ensure_content_length();
        msg.to_bytes()
    }

    /// The live members (other than this one) in what was read from the store; connections
    /// to them are opened (or kept) so that requests for them go out at once.
    fn see(&self, seen: &[MemberSeen]) {
        let mut peers: Vec<Peer> = seen
            .iter()
            .filter(|s| s.member.id != self.me.id && MemberState::of(s, self.cfg.member_timeout_ms) == MemberState::Live)
            .filter_map(|s| match s.member.address.parse() {
                Ok(addr) => Some(Peer { id: s.member.id.as_str().into(), addr }),
                Err(_) => {
                    tracing::warn!(member = %s.member.id, address = %s.member.address, "pool member address is not IP:port; ignored");
                    None
                }
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        *self.last_seen.lock().unwrap_or_else(|p| p.into_inner()) = seen.to_vec();
        let tcp = crate::transport::Transport::Tcp;
        {
            // A member whose connection was lost counts again once one is open to it.
            let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
            for p in &peers {
                if let Some(flow) = self.transports.flows.find(tcp, p.addr) {
                    self.peer_flows.insert(flow, p.id.clone());
                    lost.remove(&p.id);
                }
            }
        }
        let reachable: Vec<Peer> = {
            let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
            peers.iter().filter(|p| !lost.contains(&p.id)).cloned().collect()
        };
        let changed = **self.peers() != reachable;
        if changed && !self.keyed && !peers.is_empty() {
            tracing::warn!("other members are live, but pool.secret and auth.secret are both empty: no member will take this one's requests; set pool.secret, the same on every member");
        }
        if changed {
            tracing::info!(peers = ?reachable.iter().map(|p| &*p.id).collect::<Vec<_>>(), "pool members changed");
        }
        // One connection per pair of members, opened by the one with the lesser id; the other
        // finds it by the address the opener listens on once a sealed request arrives on it.
        for p in peers.iter().filter(|p| *p.id > *self.me.id) {
            if let Some(flow) = self.transports.flows.find(tcp, p.addr) {
                // A keep-alive (RFC 5626 3.5.1) each beat: the connection never idles out,
                // which would look like the member's death.
                let _ = self.transports.flows.send(flow, bytes::Bytes::from_static(b"\r\n\r\n"));
                continue;
            }
            {
                let (connector, addr, within) =
                    (self.connector.clone(), p.addr, Duration::from_millis(self.cfg.heartbeat_ms));
                let (hello, transports) = (self.hello(addr), self.transports.clone());
                tokio::spawn(async move {
                    if let Some((flow, true)) = connector.flow_to(addr, within).await {
                        let _ = transports.flows.send(flow, hello);
                    }
                });
            }
        }
        {
            let mut pending = self.unknown_hellos.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|(id, flow)| match peers.iter().find(|p| *p.id == **id) {
                Some(p) => {
                    self.transports.flows.alias(*flow, crate::transport::Transport::Tcp, p.addr);
                    false
                }
                None => self.transports.flows.is_open(*flow),
            });
        }
        self.alone.store(reachable.is_empty(), Ordering::Relaxed);
        if changed {
            self.transports.flood.set_members(reachable.iter().map(|p| p.addr.ip().to_canonical()).collect());
        }
        *self.peers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(reachable);
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Beats and reads the others every `pool.heartbeat_ms`; runs until dropped. A store that
    /// does not answer is logged and tried again at the next beat: the members last read stay.
    pub async fn run(&self) {
        let every = Duration::from_millis(self.cfg.heartbeat_ms);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a store outage every member's last heartbeat is old: the view is taken again
        // only once each has had a beat's time to renew its own, lest all see all dead.
        let mut after_outage = false;
        loop {
            ticks.tick().await;
            match self.beat(every, !after_outage).await {
                Ok(()) => after_outage = false,
                Err(e) => {
                    after_outage = true;
                    tracing::warn!(error = %e, member = %self.me.id, "pool heartbeat failed; retrying");
                }
            }
        }
    }

    async fn beat(&self, within: Duration, look: bool) -> Result<(), sipfront_storage::StoreError> {
        let me = Member {
            users_homed: i64::try_from(self.bindings.aor_count()).unwrap_or(i64::MAX),
            connections: i64::try_from(self.client_connections()).unwrap_or(i64::MAX),
            ..self.me.clone()
        };
        metrics::gauge!(m::POOL_USERS_HOMED).set(me.users_homed as f64);
        let late = |_| sipfront_storage::StoreError::Timeout(within);
        if !self.leaving() {
            // Once leaving, the announcement says so until the others forget this member.
            tokio::time::timeout(within, m::store_op("heartbeat", self.store.heartbeat(&me, FORGET_AFTER_MS)))
                .await
                .map_err(late)??;
        }
        let seen = tokio::time::timeout(within, m::store_op("members", self.store.members())).await.map_err(late)??;
        if look {
            self.see(&seen);
        }
        for state in [MemberState::Live, MemberState::Leaving, MemberState::Dead] {
            let n = seen.iter().filter(|s| MemberState::of(s, self.cfg.member_timeout_ms) == state).count();
            metrics::gauge!(m::POOL_MEMBERS, "state" => state.label()).set(n as f64);
        }
        Ok(())
    }

    /// Open connections, but those to other members.
    fn client_connections(&self) -> usize {
        let tcp = crate::transport::Transport::Tcp;
        let to_members = self.peers().iter().filter(|p| self.transports.flows.find(tcp, p.addr).is_some()).count();
        self.transports.flows.count().saturating_sub(to_members)
    }

    /// Says in the store that this front end is leaving (a graceful stop): the others stop
    /// sending it anything to home, and it hands its own users to them.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        self.changes.send_modify(|n| *n += 1);
        let within = Duration::from_millis(self.cfg.heartbeat_ms);
        match tokio::time::timeout(within, self.store.leave(&self.me.id)).await {
            Ok(Ok(())) => tracing::info!(member = %self.me.id, "left the pool"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not say that this member leaves the pool"),
            Err(_) => tracing::warn!("the store did not answer: the others will see this member dead instead"),
        }
    }
}

/// The home of `aor` among the members named `ids`: the highest rendezvous score, the lesser
/// id on a tie. Every member computes the same from the same list.
pub fn home_among<'a>(ids: impl IntoIterator<Item = &'a str>, aor: &str) -> Option<&'a str> {
    ids.into_iter().max_by(|a, b| score(a, aor).cmp(&score(b, aor)).then(b.cmp(a)))
}

/// A member's rendezvous score for an AOR: a 64-bit FNV-1a over both, finished with a
/// SplitMix64 step so that close inputs score far apart. Written out, not `DefaultHasher`,
/// because every member (of any build) must compute the same.
fn score(member: &str, aor: &str) -> u64 {
    let mut h = fnv1a(member.bytes().chain(std::iter::once(0xff)).chain(aor.bytes().map(|b| b.to_ascii_lowercase())));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The 64-bit FNV-1a hash of `bytes`: the same on every member and in every build, for what
/// members must agree on (scores, branches) and what must not change between NOTIFYs.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
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
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn seen(silent_ms: i64, leaving: bool) -> MemberSeen {
        let member =
            Member { id: "fe".into(), address: "fe:5060".into(), started_at: 0, users_homed: 0, connections: 0 };
        MemberSeen { member, silent_ms, leaving }
    }

    #[test]
    fn rendezvous_spreads_aors_and_moves_few_when_a_member_joins() {
        let homes = |members: &[&'static str], aor: &str| home_among(members.iter().copied(), aor).unwrap();
        let three = ["fe1", "fe2", "fe3"];
        let four = ["fe1", "fe2", "fe3", "fe4"];
        let mut per = std::collections::HashMap::new();
        let mut moved = 0;
        for i in 0..3000 {
            let aor = format!("user{i}@example.test");
            let before = homes(&three, &aor);
            *per.entry(before).or_insert(0) += 1;
            let after = homes(&four, &aor);
            if after != before {
                assert_eq!(after, "fe4", "an AOR moves only to the new member");
                moved += 1;
            }
            assert_eq!(homes(&three, &aor.to_uppercase()), before, "AORs compare without case");
        }
        assert!(per.values().all(|&n| (800..1200).contains(&n)), "about a third each: {per:?}");
        assert!((600..900).contains(&moved), "about a quarter move to the fourth: {moved}");
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
