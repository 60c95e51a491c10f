//! The edge: what a member does for the clients whose connections it holds when their
//! requests belong to another member, and for that member's requests to them. It forwards
//! statelessly (RFC 3261 16.11), before any transaction, so a relayed request costs one parse
//! and one send here and its retransmissions and CANCEL take the same way:
//!
//! - a client's out-of-dialog request goes to the home of the AOR it concerns (the To of a
//!   REGISTER, the Request-URI otherwise), sealed with what this member vouches for (the
//!   client's address, and the user its connection authenticated as); a REGISTER gets a Path
//!   (RFC 3327) and a dialog-creating request a Record-Route naming this edge and the client's
//!   connection in a sealed token, so that the home reaches the client through here;
//! - a request that names such a token in its top Route goes to that client: from a member,
//!   out of dialog, only under the pool's seal; inside a dialog from either party, as the
//!   proxy's own dialog tokens do;
//! - a response to what was relayed comes back here (our Via names the leg it came from) and
//!   goes on to that leg; a 2xx to a REGISTER makes the client's connection speak for the user,
//!   as it does on a single node.

use super::hop::{self, Seal, Vouch, HEADER};
use super::{Membership, Peer};
use crate::core::proxy::route_uri;
use crate::core::proxy::token::{Leg, Tokens};
use crate::ops::metrics as m;
use crate::transaction::method_label;
use crate::transport::flows::FlowId;
use crate::transport::{Source, Target, Transport, Transports};
use dashmap::DashMap;
use sipfront_proto::reply;
use sipfront_proto::{Aor, HeaderName, Host, Message, Method, NameAddr, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The branch of every request this edge relays starts so (then a hash of the incoming branch).
pub(super) const BRANCH_PREFIX: &str = "z9hG4bKsfe";
/// The Via parameter that names, in a sealed token, the leg a relayed request came from.
const LEG_PARAM: &str = "sfl";
/// The URI parameter that marks an edge's Path entry.
pub const PATH_PARAM: &str = "sfe";
/// How long a relayed request may wait for a connection to a member.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);
/// How long a relayed request is timed, waiting for its final response: a client transaction's
/// own timeout (64*T1 with the default T1). Past it, the client has given up.
const TIMED_FOR: Duration = Duration::from_secs(32);
/// Relayed requests timed at once: at this many the unanswered ones are swept, and when they
/// are all recent, further requests go untimed until answers come.
const TIMED_MAX: usize = 100_000;
const SWEEP_AT: usize = 4096;

pub struct Edge {
    membership: Arc<Membership>,
    transports: Arc<Transports>,
    /// Seals the legs named in our Path, Record-Route and Via (a key of this process, not the
    /// proxy's: the proxy must not take an edge token for one of its dialogs).
    tokens: Tokens,
    agent: String,
    /// Each client's last REGISTER of each AOR, by the leg it came on: replayed to the AOR's
    /// new home when the pool changes, so that nobody waits for their next refresh.
    registered: DashMap<(Leg, String), Kept>,
    /// The subscriptions of our clients that another member serves, by dialog: if that
    /// member stops being the resource's home, we end them with `deactivated` in its place.
    watching: DashMap<String, Watched>,
    /// What of `registered` and `watching` came over each connection, so that its close
    /// forgets them without walking every client's entries.
    by_flow: DashMap<FlowId, FlowKeys>,
    /// Requests relayed for our clients, by the branch we gave them: when, and their method,
    /// so that the final response on its way back measures what the client waited
    /// (`sipfront_relay_duration_seconds`).
    timed: DashMap<String, (Instant, &'static str)>,
    /// Where requests for partner domains' users go in the pool: the member the operator
    /// named (`federation.edge_member`), else, like any AOR, the partner user's home.
    federation_edge: Option<FederationEdge>,
}

/// The pool's federation edge as the operator named it, and how to tell a partner's AOR.
pub struct FederationEdge {
    pub member: String,
    pub serves: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// The keys in `registered` (AORs) and `watching` (dialogs) of one connection's entries.
#[derive(Default)]
struct FlowKeys {
    registered: std::collections::HashSet<(Leg, String)>,
    watching: std::collections::HashSet<String>,
}

/// A REGISTER kept for replay.
pub struct Kept {
    pub msg: Message,
    pub source: Source,
    pub aor: String,
    /// The member it went to last (`None`: this one).
    pub home: Option<Arc<str>>,
    /// When it lapses if not refreshed.
    pub until: Instant,
}

/// A subscription dialog of one of our clients, served by another member.
struct Watched {
    leg: Leg,
    /// The member whose presence serves it.
    notifier: Arc<str>,
    /// The presentity (or list) it watches.
    resource: String,
    /// Request-URI, From, To, Call-ID and Event of the NOTIFYs, and the last CSeq.
    ruri: String,
    from: String,
    to: String,
    call_id: String,
    event: String,
    cseq: u32,
}

/// What the pool must do for a client after a change: replay its REGISTER to `home`, or
/// (`None`) to this member.
pub struct Replay {
    pub home: Option<Peer>,
    pub msg: Message,
    pub source: Source,
    pub vouch: Vouch,
}

impl Edge {
    pub fn new(
        membership: Arc<Membership>,
        transports: Arc<Transports>,
        agent: String,
        federation_edge: Option<FederationEdge>,
    ) -> Edge {
        Edge {
            federation_edge,
            membership,
            transports,
            tokens: Tokens::default(),
            agent,
            registered: DashMap::new(),
            watching: DashMap::new(),
            by_flow: DashMap::new(),
            timed: DashMap::new(),
        }
    }

    fn seal(&self) -> &Seal {
        self.membership.seal()
    }

    /// A request before any transaction: relayed (and kept), refused, or given back to be
    /// served here.
    pub fn before_transaction(&self, msg: Message, source: Source) -> Option<Message> {
        if msg.header_named(HEADER).is_some() {
            return self.sealed_request(msg, source);
        }
        if msg.method() == Some(&Method::Register) {
            self.keep(&msg, &source);
        }
        if self.membership.alone() && msg.header(HeaderName::Route).is_none() {
            return Some(msg);
        }
        self.unsealed_request(msg, source)
    }

    /// A sealed request: from another member, or a forgery.
    fn sealed_request(&self, msg: Message, source: Source) -> Option<Message> {
        let vouch = match self.seal().verify(&msg) {
            Ok(v) => v,
            Err(forged) => {
                metrics::counter!(m::POOL_HOPS_REFUSED, "reason" => forged.label()).increment(1);
                tracing::debug!(remote = %source.remote, reason = forged.label(), "forged pool hop refused");
                self.refuse(&msg, &source, 403, "Forged pool hop");
                return None;
            }
        };
        // The member's connection is found by the address it listens on from now on.
        if let Some(flow) = source.flow {
            self.membership.connection_from(&vouch.member, flow);
        }
        match self.our_route(&msg) {
            Some(leg) => {
                let mut msg = msg;
                self.pop_our_routes(&mut msg);
                hop::remove(&mut msg);
                self.to_client(msg, &source, leg);
                None
            }
            // For a service here: the core reads the seal again into the request.
            None => Some(msg),
        }
    }

    /// A request without a seal: from a client, or inside a dialog from anyone.
    fn unsealed_request(&self, mut msg: Message, source: Source) -> Option<Message> {
        let in_dialog = msg.to().is_some_and(|t| t.tag().is_some());
        if let Some(leg) = self.our_route(&msg) {
            self.pop_our_routes(&mut msg);
            if !leg.sent(&source) {
                // Toward the client the token names: only inside a dialog, as a party of it.
                if in_dialog {
                    self.to_client(msg, &source, leg);
                } else {
                    metrics::counter!(m::POOL_HOPS_REFUSED, "reason" => "unsealed").increment(1);
                    self.refuse(&msg, &source, 403, "Forged pool hop");
                }
                return None;
            }
            // From the client, onward: to the member the next hop names, or served here.
            let next = msg
                .list(HeaderName::Route)
                .next()
                .and_then(|r| NameAddr::parse(r).ok().and_then(|n| uri_addr(&n.uri)))
                .or_else(|| msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| uri_addr(&u)));
            return match next.and_then(|a| self.membership.peer_at(a)) {
                Some(peer) => {
                    self.to_member(msg, &source, peer.addr, false);
                    None
                }
                None => Some(msg),
            };
        }
        if self.membership.alone() {
            return Some(msg);
        }
        if in_dialog {
            // A dialog whose other end is a member itself (a subscription its presence
            // serves): the request goes there.
            let peer = msg
                .request_uri()
                .and_then(|u| Uri::parse(u).ok())
                .and_then(|u| uri_addr(&u))
                .and_then(|a| self.membership.peer_at(a));
            if let Some(peer) = peer {
                self.to_member(msg, &source, peer.addr, false);
                return None;
            }
            // Only the ACK of a non-2xx answer, which has no route set, goes where its INVITE
            // went; anything else in a dialog follows its Route here.
            if msg.method() != Some(&Method::Ack) || msg.header(HeaderName::Route).is_some() {
                return Some(msg);
            }
        }
        let Some(method) = msg.method().cloned() else { return Some(msg) };
        let key = if method == Method::Register {
            msg.to().and_then(|t| Aor::from_uri(&t.uri))
        } else {
            msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| Aor::from_uri(&u))
        };
        let Some(home) = key.and_then(|aor| self.home_of(&aor)) else { return Some(msg) };
        // A client may not name a member in a Path or Route: only an edge does, under seal.
        let names_member = [HeaderName::Path, HeaderName::Route].into_iter().any(|h| {
            msg.name_addrs(h)
                .any(|n| n.ok().and_then(|n| uri_addr(&n.uri)).is_some_and(|a| self.membership.peer_at(a).is_some()))
        });
        if names_member {
            metrics::counter!(m::POOL_HOPS_REFUSED, "reason" => "client_names_member").increment(1);
            self.refuse(&msg, &source, 403, "Forged pool hop");
            return None;
        }
        let leg = Leg::of_source(&source);
        if method == Method::Register {
            let token = self.tokens.seal(&[leg]);
            msg.prepend_header(
                HeaderName::Path,
                format!("<sip:{token}@{};transport=tcp;lr;ob;{PATH_PARAM}>", self.address()),
            );
        } else if !in_dialog && matches!(method, Method::Invite | Method::Subscribe) {
            let token = self.tokens.seal(&[leg]);
            let client_side = route_uri(&token, source.transport, source.local);
            let member_side = format!("<sip:{token}@{};transport=tcp;lr>", self.address());
            msg.prepend_header(HeaderName::RecordRoute, client_side.clone());
            if member_side != client_side {
                msg.prepend_header(HeaderName::RecordRoute, member_side);
            }
        }
        self.to_member(msg, &source, home.addr, true);
        None
    }

    /// The member a request for `aor` is served by: `None` for this one. A partner domain's
    /// user is reached through the federation edge the operator named, while it is live (and
    /// through its AOR's home, as any member federates, while it is not).
    fn home_of(&self, aor: &Aor) -> Option<Peer> {
        if let Some(edge) = self.federation_edge.as_ref().filter(|e| !(e.serves)(aor.domain())) {
            if edge.member == self.membership.id() {
                return None;
            }
            if let Some(peer) = self.membership.peer_named(&edge.member) {
                return Some(peer);
            }
        }
        self.membership.home_of(aor.as_str())
    }

    /// Keeps a client's REGISTER for replay (or forgets the AOR's, when it unregisters).
    fn keep(&self, msg: &Message, source: &Source) {
        let Some(aor) = msg.to().and_then(|t| Aor::from_uri(&t.uri)) else { return };
        let key = (Leg::of_source(source), aor.as_str().to_ascii_lowercase());
        let Some(expires) = registration_expires(msg) else { return };
        let flow = match key.0 {
            Leg::Stream { flow, .. } => Some(flow),
            Leg::Udp(_) => None,
        };
        if expires == 0 {
            if self.registered.remove(&key).is_some() {
                if let Some(flow) = flow {
                    self.unindex(flow, |k| {
                        k.registered.remove(&key);
                    });
                }
            }
            return;
        }
        let home = self.membership.home_of(aor.as_str()).map(|p| p.id);
        let until = Instant::now() + Duration::from_secs(expires.into());
        let kept = Kept { msg: msg.clone(), source: *source, aor: aor.as_str().to_string(), home, until };
        if self.registered.insert(key.clone(), kept).is_none() {
            if let Some(flow) = flow {
                self.by_flow.entry(flow).or_default().registered.insert(key);
                self.closed_meanwhile(flow);
            }
        }
    }

    /// A connection that closed while its entry was being noted has been forgotten already:
    /// forget the entry too (forgetting twice is harmless).
    fn closed_meanwhile(&self, flow: FlowId) {
        if !self.transports.flows.is_open(flow) {
            self.flow_closed(flow);
        }
    }

    /// Changes what is noted of `flow`'s entries, and forgets the flow once it has none.
    fn unindex(&self, flow: FlowId, change: impl FnOnce(&mut FlowKeys)) {
        if let dashmap::Entry::Occupied(mut e) = self.by_flow.entry(flow) {
            change(e.get_mut());
            if e.get().registered.is_empty() && e.get().watching.is_empty() {
                e.remove();
            }
        }
    }

    /// The pool changed: every kept registration whose AOR now has another home, to be
    /// replayed there (the connection it came on still open, and authenticated as the user).
    pub fn rehome(&self) -> Vec<Replay> {
        let now = Instant::now();
        self.registered.retain(|(leg, _), k| {
            k.until > now && !matches!(leg, Leg::Stream { flow, .. } if !self.transports.flows.is_open(*flow))
        });
        let mut out = Vec::new();
        for mut e in self.registered.iter_mut() {
            let home = self.membership.home_of(&e.aor);
            let now_at = home.as_ref().map(|p| p.id.clone());
            if now_at == e.home {
                continue;
            }
            e.home = now_at;
            let identity = e.source.flow.and_then(|f| self.transports.flows.identity(f));
            let Some(identity) = identity.filter(|i| i.eq_ignore_ascii_case(&e.aor)) else { continue };
            let vouch = Vouch {
                member: self.membership.id().to_string(),
                client: Some(e.source.remote),
                identity: Some(identity.to_string()),
                replay: true,
                feed: false,
                partner: None,
                group: None,
            };
            let mut msg = e.msg.clone();
            let left = e.until.saturating_duration_since(now).as_secs().max(1);
            msg.set_header(HeaderName::Expires, left.to_string());
            out.push(Replay { home, msg, source: e.source, vouch });
        }
        out
    }

    /// Sends a replayed REGISTER to its new home, through our Path like the original; the
    /// answer comes back to nobody (our Via names no leg).
    pub fn replay_to(&self, replay: Replay, home: &Peer) {
        let Replay { mut msg, source, vouch, .. } = replay;
        let token = self.tokens.seal(&[Leg::of_source(&source)]);
        msg.prepend_header(
            HeaderName::Path,
            format!("<sip:{token}@{};transport=tcp;lr;ob;{PATH_PARAM}>", self.address()),
        );
        let branch = format!("{BRANCH_PREFIX}r{}", sipfront_proto::reply::new_tag());
        msg.prepend_header(HeaderName::Via, format!("SIP/2.0/TCP {};branch={branch}", self.address()));
        self.seal().sign(&mut msg, &vouch);
        metrics::counter!(m::POOL_RELAYED, "direction" => "replay").increment(1);
        self.send_to_member(msg, home.addr, None);
    }

    /// A client's connection closed: nothing of it is replayed any more.
    pub fn flow_closed(&self, flow: FlowId) {
        let Some((_, keys)) = self.by_flow.remove(&flow) else { return };
        for key in keys.registered {
            self.registered.remove(&key);
        }
        // A dialog's entry may have moved to another connection since (a refresh on a new
        // one): only this connection's go.
        for dialog in keys.watching {
            self.watching.remove_if(&dialog, |_, w| matches!(w.leg, Leg::Stream { flow: f, .. } if f == flow));
        }
    }

    /// The pool changed: our clients' subscriptions served by a member that is no longer
    /// their resource's home end now, with `deactivated` (RFC 6665 4.1.3: subscribe again at
    /// once), since that member may be gone and cannot say it.
    pub fn deactivate_moved(&self) {
        let moved: Vec<String> = self
            .watching
            .iter()
            .filter(|e| self.membership.home_of(&e.resource).map(|p| p.id) != Some(e.notifier.clone()))
            .map(|e| e.key().clone())
            .collect();
        for key in moved {
            let Some((_, w)) = self.watching.remove(&key) else { continue };
            if let Leg::Stream { flow, .. } = w.leg {
                self.unindex(flow, |k| {
                    k.watching.remove(&key);
                });
            }
            let mut n = Message::request(Method::Notify, w.ruri.clone());
            n.push_header(
                HeaderName::Via,
                format!("SIP/2.0/TCP {};branch={BRANCH_PREFIX}d{}", self.address(), sipfront_proto::reply::new_tag()),
            );
            n.push_header(HeaderName::MaxForwards, "70");
            n.push_header(HeaderName::From, w.from.clone());
            n.push_header(HeaderName::To, w.to.clone());
            n.push_header(HeaderName::CallId, w.call_id.clone());
            n.push_header(HeaderName::CSeq, format!("{} NOTIFY", w.cseq.saturating_add(1)));
            n.push_header(HeaderName::Event, w.event.clone());
            n.push_header(HeaderName::SubscriptionState, "terminated;reason=deactivated");
            n.push_header(HeaderName::ContentLength, "0");
            let mut target = w.leg.target();
            if let Leg::Udp(remote) = w.leg {
                target.local = self.transports.udp_local(remote);
            }
            metrics::counter!(m::POOL_RELAYED, "direction" => "deactivated").increment(1);
            let _ = self.transports.send(&target, n.to_bytes());
        }
    }

    /// Notes a NOTIFY on its way to our client from `notifier`: the subscription it belongs to
    /// (or its end).
    fn watch(&self, msg: &Message, leg: Leg, notifier: Arc<str>) {
        let call_id = String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned();
        let from_tag = msg.from().and_then(|f| f.tag().map(|t| String::from_utf8_lossy(t).into_owned()));
        let key = format!("{call_id}\n{}", from_tag.unwrap_or_default());
        let terminated = msg
            .header(HeaderName::SubscriptionState)
            .is_some_and(|s| s.len() >= 10 && s[..10].eq_ignore_ascii_case(b"terminated"));
        if terminated {
            if let Some((_, w)) = self.watching.remove(&key) {
                if let Leg::Stream { flow, .. } = w.leg {
                    self.unindex(flow, |k| {
                        k.watching.remove(&key);
                    });
                }
            }
            return;
        }
        let text = |h: HeaderName| msg.header(h).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let resource =
            msg.from().and_then(|f| Aor::from_uri(&f.uri)).map(|a| a.as_str().to_string()).unwrap_or_default();
        let w = Watched {
            leg,
            notifier,
            resource,
            ruri: String::from_utf8_lossy(msg.request_uri().unwrap_or_default()).into_owned(),
            from: text(HeaderName::From),
            to: text(HeaderName::To),
            call_id,
            event: text(HeaderName::Event),
            cseq: msg.cseq().map_or(1, |c| c.seq),
        };
        let was = self.watching.insert(key.clone(), w);
        let moved = was.as_ref().map(|w| w.leg) != Some(leg);
        if let (true, Some(Leg::Stream { flow, .. })) = (moved, was.map(|w| w.leg)) {
            self.unindex(flow, |k| {
                k.watching.remove(&key);
            });
        }
        if let (true, Leg::Stream { flow, .. }) = (moved, leg) {
            self.by_flow.entry(flow).or_default().watching.insert(key);
            self.closed_meanwhile(flow);
        }
    }

    /// Relays a client's request to the member at `to`, sealed.
    fn to_member(&self, mut msg: Message, source: &Source, to: SocketAddr, count: bool) {
        let identity = source.flow.and_then(|f| self.transports.flows.identity(f)).map(|i| i.to_string());
        // A partner's edge (federation) is known here by its certificate, which the member
        // serving the request cannot see: what it names of the From domain goes under seal.
        let from_domain = msg.from().and_then(|f| Aor::from_uri(&f.uri)).map(|a| a.domain().to_string());
        let partner = source
            .flow
            .and_then(|f| self.transports.flows.certificate(f))
            .zip(from_domain)
            .filter(|(ids, domain)| ids.names(domain))
            .map(|(_, domain)| domain);
        let vouch = Vouch {
            member: self.membership.id().to_string(),
            client: Some(source.remote),
            identity,
            replay: false,
            feed: false,
            partner,
            group: None,
        };
        let Some(branch) = self.push_via(&mut msg, source, Transport::Tcp, &self.address()) else { return };
        if let Some(method) = msg.method().filter(|m| **m != Method::Ack) {
            self.time(branch, method);
        }
        self.seal().sign(&mut msg, &vouch);
        if count {
            metrics::counter!(m::POOL_RELAYED, "direction" => "to_home").increment(1);
        }
        self.send_to_member(msg, to, Some(*source));
    }

    /// Sends to the member at `to`, connecting first if need be; a request that cannot reach
    /// it is answered 503 (Retry-After: 1) to `answer_to`, the client: the pool is changing.
    fn send_to_member(&self, mut msg: Message, to: SocketAddr, answer_to: Option<Source>) {
        let target = Target { transport: Transport::Tcp, remote: to, flow: None, local: None };
        msg.ensure_content_length();
        let bytes = msg.to_bytes();
        if self.transports.send(&target, bytes.clone()).is_err() {
            // No connection to that member yet: open one, then send.
            let (membership, transports, agent) =
                (self.membership.clone(), self.transports.clone(), self.agent.clone());
            tokio::spawn(async move {
                if membership.connection_to(to, CONNECT_WITHIN).await.is_some()
                    && transports.send(&target, bytes).is_ok()
                {
                    return;
                }
                let Some(source) = answer_to.filter(|_| msg.method() != Some(&Method::Ack)) else { return };
                // Our Via off again: the answer is the client's.
                msg.pop_first_element(HeaderName::Via);
                let mut r = reply::response(&msg, 503, &agent);
                r.push_header(HeaderName::RetryAfter, "1");
                r.ensure_content_length();
                let mut reply_to = source.reply_target();
                if source.transport == Transport::Udp {
                    reply_to.remote = crate::transport::udp_response_addr(&msg, source.remote);
                }
                let _ = transports.send(&reply_to, r.to_bytes());
            });
        }
    }

    /// Relays a member's request (or a dialog party's) to the client on `leg`.
    fn to_client(&self, mut msg: Message, source: &Source, leg: Leg) {
        let mut target = leg.target();
        match leg {
            Leg::Stream { flow, .. } if !self.transports.flows.is_open(flow) => {
                // RFC 5626 5.3: the flow to that client has failed.
                return self.refuse(&msg, source, 430, "Flow Failed");
            }
            Leg::Udp(remote) => target.local = self.transports.udp_local(remote),
            Leg::Stream { .. } => {}
        }
        let creates_dialog = msg.to().is_some_and(|t| t.tag().is_none())
            && matches!(msg.method(), Some(Method::Invite | Method::Subscribe));
        if creates_dialog {
            // The client's requests in the dialog come back through here (double
            // Record-Route when its side and the pool's differ, RFC 5658).
            let token = self.tokens.seal(&[leg]);
            let member_side = format!("<sip:{token}@{};transport=tcp;lr>", self.address());
            msg.prepend_header(HeaderName::RecordRoute, member_side.clone());
            if let Some(local) = self.client_side_local(&leg, &target) {
                let client_side = route_uri(&token, target.transport, local);
                if client_side != member_side {
                    msg.prepend_header(HeaderName::RecordRoute, client_side);
                }
            }
        }
        if msg.method() == Some(&Method::Notify) {
            if let Some(notifier) = self.member_of(source) {
                self.watch(&msg, leg, notifier);
            }
        }
        let sent_by = target.local.map_or_else(|| self.address(), |l| l.to_string());
        if self.push_via(&mut msg, source, target.transport, &sent_by).is_none() {
            return;
        }
        metrics::counter!(m::POOL_RELAYED, "direction" => "to_client").increment(1);
        msg.ensure_content_length();
        if self.transports.send(&target, msg.to_bytes()).is_err() && msg.method() != Some(&Method::Ack) {
            self.refuse(&msg, source, 430, "Flow Failed");
        }
    }

    /// The address the client on `leg` knows us by: the UDP socket we send from, or the
    /// listener its connection came in on.
    fn client_side_local(&self, leg: &Leg, target: &Target) -> Option<SocketAddr> {
        match leg {
            Leg::Udp(_) => target.local,
            Leg::Stream { flow, .. } => self.transports.flows.local(*flow),
        }
    }

    /// One hop less and our Via on top (naming the leg the request came from); `false` (and
    /// answered) when no hop is left.
    fn push_via(&self, msg: &mut Message, source: &Source, transport: Transport, sent_by: &str) -> Option<String> {
        let hops = msg.max_forwards().unwrap_or(70);
        if hops == 0 {
            self.refuse(msg, source, 483, "Too Many Hops");
            return None;
        }
        msg.set_header(HeaderName::MaxForwards, (hops - 1).to_string());
        let incoming = msg.top_via().and_then(|v| v.branch()).unwrap_or_default();
        let branch = stateless_branch(incoming, self.membership.id());
        let leg = self.tokens.seal(&[Leg::of_source(source)]);
        msg.prepend_header(
            HeaderName::Via,
            format!("SIP/2.0/{} {sent_by};branch={branch};{LEG_PARAM}={leg}", transport.via_name()),
        );
        Some(branch)
    }

    /// Starts timing a client's request relayed under `branch` (its retransmissions keep the
    /// first time).
    fn time(&self, branch: String, method: &Method) {
        if self.timed.len() >= SWEEP_AT {
            self.timed.retain(|_, (at, _)| at.elapsed() < TIMED_FOR);
            if self.timed.len() >= TIMED_MAX {
                return;
            }
        }
        self.timed.entry(branch).or_insert_with(|| (Instant::now(), method_label(method)));
    }

    /// A response to what this edge relayed: sent on to the leg its request came from (and
    /// kept), or given back.
    pub fn response(&self, mut resp: Message, source: &Source) -> Option<Message> {
        let leg = {
            let via = resp.top_via()?;
            let Some(branch) = via.branch().filter(|b| b.starts_with(BRANCH_PREFIX.as_bytes())) else {
                return Some(resp);
            };
            if resp.status().is_some_and(|c| c >= 200) {
                // What the client waited for its answer, through this edge and the pool.
                if let Some((_, (at, method))) = self.timed.remove(String::from_utf8_lossy(branch).as_ref()) {
                    metrics::histogram!(m::RELAY_DURATION, "method" => method).record(at.elapsed().as_secs_f64());
                }
            }
            via.params.get(LEG_PARAM).flatten().and_then(|t| self.tokens.open(t))
        };
        let Some([leg]) = leg.as_deref() else {
            // The answer to a member's hello (no leg), or a leg we did not seal.
            return None;
        };
        let leg = *leg;
        resp.pop_first_element(HeaderName::Via);
        let register_ok = resp.status().is_some_and(|c| (200..300).contains(&c))
            && resp.cseq().is_some_and(|c| c.method == Method::Register);
        if let (true, Leg::Stream { flow, .. }) = (register_ok, leg) {
            // The home accepted the client's credentials: its connection now speaks for the
            // user here too, as on a single node. Only a member's word counts.
            if self.comes_from_member(source) {
                if let Some(aor) = resp.to().and_then(|t| Aor::from_uri(&t.uri)) {
                    // Unless that REGISTER removed what the connection held (it is no longer
                    // kept): then it speaks for nobody any more.
                    if self.registered.contains_key(&(leg, aor.as_str().to_ascii_lowercase())) {
                        self.transports.flows.bind_identity(flow, aor.as_str());
                    } else {
                        self.transports.flows.unbind_identity(flow);
                    }
                }
            }
        }
        let mut target = leg.target();
        if let Leg::Udp(remote) = leg {
            target.remote = crate::transport::udp_response_addr(&resp, remote);
            target.local = self.transports.udp_local(remote);
        }
        resp.ensure_content_length();
        let _ = self.transports.send(&target, resp.to_bytes());
        None
    }

    /// Whether `source` is a connection to or from a live member.
    fn comes_from_member(&self, source: &Source) -> bool {
        self.member_of(source).is_some()
    }

    /// The live member whose connection `source` is.
    fn member_of(&self, source: &Source) -> Option<Arc<str>> {
        let flow = source.flow?;
        let peers = self.membership.peers();
        let p = peers.iter().find(|p| self.transports.flows.find(Transport::Tcp, p.addr) == Some(flow))?;
        Some(p.id.clone())
    }

    /// The leg our token in the top Route names, if the top Route is ours.
    fn our_route(&self, msg: &Message) -> Option<Leg> {
        let route = msg.list(HeaderName::Route).next()?;
        let legs = NameAddr::parse(route).ok().and_then(|r| self.tokens.open(r.uri.user()?))?;
        match legs[..] {
            [leg] => Some(leg),
            _ => None,
        }
    }

    /// Removes our Route entries from the top (one, or two after a double Record-Route).
    fn pop_our_routes(&self, msg: &mut Message) {
        while self.our_route(msg).is_some() {
            msg.pop_first_element(HeaderName::Route);
        }
    }

    /// Answers statelessly (an ACK gets nothing).
    fn refuse(&self, msg: &Message, source: &Source, code: u16, reason: &str) {
        if msg.method() == Some(&Method::Ack) {
            return;
        }
        let mut r = reply::response(msg, code, &self.agent);
        r.set_reason(reason.to_string());
        r.ensure_content_length();
        let mut target = source.reply_target();
        if source.transport == Transport::Udp {
            target.remote = crate::transport::udp_response_addr(msg, source.remote);
        }
        let _ = self.transports.send(&target, r.to_bytes());
    }

    fn address(&self) -> String {
        self.membership.address().to_string()
    }
}

/// How long a REGISTER asks to be registered: its Expires, or the longest of its Contacts'
/// `expires` (0: it unregisters; an hour if it says nothing); `None` for a query (no
/// Contact), which changes nothing.
fn registration_expires(msg: &Message) -> Option<u32> {
    let header = msg.expires().and_then(Result::ok);
    let mut longest = None;
    for c in msg.contacts().flatten() {
        match c {
            sipfront_proto::Contact::Star => return Some(0),
            sipfront_proto::Contact::Addr(a) => {
                let e = a
                    .params
                    .get("expires")
                    .flatten()
                    .and_then(sipfront_proto::scan::parse_u32)
                    .or(header)
                    .unwrap_or(3600);
                longest = Some(longest.map_or(e, |l: u32| l.max(e)));
            }
        }
    }
    longest
}

/// A branch for a request relayed statelessly: the same for every retransmission of the
/// incoming request and for its CANCEL (RFC 3261 16.11), different at every member.
fn stateless_branch(incoming: &[u8], member: &str) -> String {
    let h = super::fnv1a(incoming.iter().copied().chain([0xff]).chain(member.bytes()));
    format!("{BRANCH_PREFIX}{h:016x}")
}

/// The address a URI names, when its host is an address literal.
fn uri_addr(uri: &Uri<'_>) -> Option<SocketAddr> {
    let ip: IpAddr = match uri.host() {
        Host::V4(ip) => ip.into(),
        Host::V6(ip) => ip.into(),
        Host::Name(_) => return None,
    };
    Some(SocketAddr::new(ip, uri.port().unwrap_or(5060)))
}
