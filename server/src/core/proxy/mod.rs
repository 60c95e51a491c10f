//! The stateful proxy for IM sessions and calls (RFC 3261 section 16): an INVITE to one of our
//! users is forked to every binding, Record-Routed so that the dialog's later requests
//! (MESSAGE, INFO, BYE, re-INVITE, UPDATE, the ACK for a 2xx) come through us, and answered
//! with the best response; the caller's CANCEL, a 2xx on one branch, a 6xx or Timer C cancel
//! the others. No dialog state is kept: the Record-Route carries a sealed token naming both
//! parties' flows (see [`token`]), so a request inside the dialog finds the other side
//! however many dialogs are open.

mod fallback;
pub mod loops;
pub mod token;

use super::archive::Archive;
use super::gate::Gate;
use super::location::Location;
use super::messaging::Messaging;
use super::refusal::Refusal;
use crate::ops::metrics as m;
use crate::transaction::key::TxKey;
use crate::transaction::{Incoming, ServerTx, Transactions};
use crate::transport::{Source, Target, Transport, Transports};
use dashmap::DashMap;
use sipfront_proto::reply;
use sipfront_proto::{Aor, HeaderName, Message, Method, NameAddr, Uri};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use token::{Dialog as TokenDialog, Leg, Tokens};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Timer C (RFC 3261 16.6 item 11): a branch that has rung this long without a final
/// response is cancelled. "Greater than 3 minutes".
const TIMER_C: Duration = Duration::from_secs(181);
/// The Via parameter that carries the caller's leg on a forwarded INVITE, so that a
/// retransmitted 2xx (which matches no transaction) still finds its way upstream.
const CALLER_PARAM: &str = "sft";

pub struct Proxy {
    txs: Transactions,
    transports: Arc<Transports>,
    gate: Arc<Gate>,
    location: Arc<Location>,
    archive: Arc<Archive>,
    agent: String,
    tokens: Tokens,
    /// How long a dialog's route token is good for (`proxy.dialog_max_hours`).
    dialog_max: Duration,
    /// INVITEs being forwarded, by server transaction: where the caller's CANCEL goes.
    pending: DashMap<TxKey, mpsc::Sender<()>>,
    /// Our loop detection, shared with messaging (one key per server).
    loops: loops::Loops,
}

/// Where a request inside a dialog goes.
pub enum Hop {
    /// Its Route does not name us: not a dialog we record-routed.
    NotOurs,
    /// Ours, but it cannot be sent on (the other side's connection is gone, or the sender is
    /// not a party).
    Refused(Refusal),
    /// Send it there; our Route entries have been removed.
    To(Target),
}

/// One forwarded copy of an INVITE.
struct Branch {
    req: Message,
    target: Target,
    state: BranchState,
    /// Cancel as soon as it has had a provisional response (RFC 3261 9.1: not before).
    cancel_wanted: bool,
    /// The ms-proxy-2007fallback retry was made from this branch already.
    retried: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BranchState {
    Calling,
    Proceeding,
    Done,
}

impl Proxy {
    pub fn new(
        txs: Transactions,
        gate: Arc<Gate>,
        location: Arc<Location>,
        archive: Arc<Archive>,
        agent: String,
        dialog_max: Duration,
        loops: loops::Loops,
    ) -> Proxy {
        let transports = txs.transports().clone();
        let tokens = Tokens::default();
        Proxy { txs, transports, gate, location, archive, agent, tokens, dialog_max, pending: DashMap::new(), loops }
    }

    /// An initial INVITE (RFC 3261 16.3 to 16.6): checked, its sender authenticated, forked
    /// to every binding of the callee with Record-Route, and answered as the branches answer.
    pub async fn invite(&self, req: Incoming, tx: ServerTx) {
        if let Some(domain) = self.gate.foreign_domain(&req.msg) {
            return self.federate(req, tx, domain).await;
        }
        let msg = &req.msg;
        let agent = &self.agent;
        let caller = match self.caller(&req).await {
            Ok(caller) => caller,
            Err(refusal) => return tx.respond(refusal),
        };
        let to = match self.gate.callee(msg).await {
            Ok(to) => to,
            Err(refusal) => return tx.respond(refusal),
        };
        let targets = self.location.targets(&to);
        if targets.is_empty() {
            metrics::counter!(m::PROXIED_INVITES, "code" => "480").increment(1);
            return tx.respond(Messaging::unavailable(msg, agent));
        }
        tx.provisional(reply::response(msg, 100, agent));
        let dialog = self.token_dialog(msg, &caller, &to.aor);
        let forks = targets
            .iter()
            .map(|b| {
                let (mut fork, target) = self.location.fork(msg, b, &self.loops.branch(msg));
                self.record_route(&mut fork, &req.source, &target, &b.source.local.to_string(), &dialog);
                (fork, target)
            })
            .collect();
        self.forward_invite(tx, msg, forks).await;
    }

    /// A request that starts a dialog (INVITE, SUBSCRIBE) from one of our users for a user of
    /// partner domain `domain` (federation): sent to the domain's edge, record-routed like a
    /// call to one of ours, so that the dialog's later requests in both directions (the
    /// partner's NOTIFYs, a BYE, IM inside the session) come through us and find the other
    /// side by the route token.
    pub async fn federate(&self, req: Incoming, tx: ServerTx, domain: String) {
        let msg = &req.msg;
        let agent = &self.agent;
        let caller = match self.caller(&req).await {
            Ok(caller) => caller,
            Err(refusal) => return tx.respond(refusal),
        };
        let federation = match self.gate.federating(&caller, msg).await {
            Ok(f) => f.clone(),
            Err(refusal) => return tx.respond(refusal),
        };
        let callee = msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| Aor::from_uri(&u));
        let Some(callee) = callee else { return tx.respond(reply::response(msg, 404, agent)) };
        let invite = msg.method() == Some(&Method::Invite);
        if invite {
            // Finding and connecting to the edge may take a while: the caller stops resending.
            tx.provisional(reply::response(msg, 100, agent));
        }
        let target = match federation.route(&domain).await {
            // No failover once sent: a dialog's route set names the edge it went through.
            super::federation::Outbound::Via(t, _) => t,
            super::federation::Outbound::Refused(refusal) => return tx.respond(refusal.response(msg, agent)),
        };
        let dialog = self.token_dialog(msg, &caller, &callee);
        let mut fork = msg.clone();
        fork.set_header(HeaderName::MaxForwards, msg.max_forwards().unwrap_or(70).saturating_sub(1).to_string());
        // Credentials for our realms were consumed here; our Route entries too.
        federation.strip_our_credentials(&mut fork);
        fork.remove_headers(HeaderName::Route);
        let ours = federation.address();
        fork.prepend_header(HeaderName::Via, format!("SIP/2.0/TLS {ours};branch={}", self.loops.branch(msg)));
        self.record_route(&mut fork, &req.source, &target, ours, &dialog);
        if invite {
            return self.forward_invite(tx, msg, vec![(fork, target)]).await;
        }
        let mut client = self.txs.request(fork, target);
        while let Some(resp) = client.response().await {
            let code = resp.status().unwrap_or(500);
            if code < 200 {
                continue;
            }
            metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "out", "result" => m::code_label(code))
                .increment(1);
            // RFC 3261 16.7 step 6: a 503 from the partner is not ours to pass on as our own.
            return tx.respond(if code == 503 { reply::response(msg, 500, agent) } else { upstream_copy(resp) });
        }
        tx.respond(reply::response(msg, 408, agent));
    }

    /// The sender of a request that starts a dialog, once it has hops left (483), has not
    /// looped (482) and is one of our users proving it (or a partner's, from its edge); or
    /// the response that refuses it.
    // The error is the response that refuses the request, sent next (as the gate's checks).
    #[allow(clippy::result_large_err)]
    async fn caller(&self, req: &Incoming) -> Result<Aor, Message> {
        let msg = &req.msg;
        if msg.max_forwards() == Some(0) {
            return Err(reply::response(msg, 483, &self.agent));
        }
        if self.loops.looped(msg) {
            return Err(reply::response(msg, 482, &self.agent));
        }
        self.gate.sender(req).await
    }

    /// What a dialog's route token seals of the request that starts it: the dialog (Call-ID
    /// and From tag), both parties, and how long it may be routed (`proxy.dialog_max_hours`).
    fn token_dialog(&self, msg: &Message, caller: &Aor, callee: &Aor) -> TokenDialog {
        let until = SystemTime::now() + self.dialog_max;
        TokenDialog {
            id: TokenDialog::id_of(
                msg.call_id().unwrap_or_default(),
                msg.from().and_then(|f| f.tag()).unwrap_or_default(),
            ),
            caller: TokenDialog::party(caller.as_str()),
            callee: TokenDialog::party(callee.as_str()),
            until: until
                .duration_since(UNIX_EPOCH)
                .map_or(u32::MAX, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
        }
    }

    /// A request inside a dialog (its To has a tag; `tx` is `None` for the ACK of a 2xx):
    /// through us when we record-routed the dialog, otherwise there is no such dialog here.
    pub async fn in_dialog(&self, req: Incoming, tx: Option<ServerTx>) {
        let agent = &self.agent;
        let received = &req.msg;
        let respond = |tx: Option<ServerTx>, resp: Message| {
            if let Some(tx) = tx {
                tx.respond(resp);
            }
        };
        let mut msg = received.clone();
        let target = match self.next_hop(&mut msg, &req.source) {
            Hop::To(target) => target,
            Hop::NotOurs => return respond(tx, reply::response(received, 481, agent)),
            Hop::Refused(refusal) => return respond(tx, refusal.response(received, agent)),
        };
        if received.max_forwards() == Some(0) {
            return respond(tx, reply::response(received, 483, agent));
        }
        if received.method() == Some(&Method::Message) {
            // IM inside a session is archived as pager-mode IM is.
            let aor = |a: Option<NameAddr<'_>>| a.and_then(|a| Aor::from_uri(&a.uri)).map(|a| a.to_arc());
            let (sender, recipient) = (aor(received.from()), aor(received.to()));
            let (sender, recipient) = (sender.as_deref().unwrap_or(""), recipient.as_deref().unwrap_or(""));
            if !self.archive.keep(received, sender, recipient).await {
                return respond(tx, Archive::unavailable(received, agent));
            }
        }
        self.forward_in_dialog(tx, received, msg, req.source.local, target).await;
    }

    /// Completes the copy `fork` of an initial INVITE that came from `source` and goes to
    /// `target` (a binding whose REGISTER arrived on `callee_local`, or a partner's edge, to
    /// which we are `callee_local`, our federation address): Record-Route with the
    /// token of both legs for `dialog`, twice when the two sides use different transports or
    /// addresses (RFC 5658), and the caller's leg in our Via.
    fn record_route(
        &self,
        fork: &mut Message,
        source: &Source,
        target: &Target,
        callee_local: &str,
        dialog: &TokenDialog,
    ) {
        let caller = Leg::of_source(source);
        let token = self.tokens.seal_dialog(&[caller, Leg::of_target(target)], dialog);
        let caller_side = route_uri(&token, source.transport, source.local);
        let callee_side = route_uri(&token, target.transport, callee_local);
        fork.prepend_header(HeaderName::RecordRoute, caller_side.clone());
        if callee_side != caller_side {
            fork.prepend_header(HeaderName::RecordRoute, callee_side);
        }
        let top = fork.list(HeaderName::Via).next().map(<[u8]>::to_vec);
        if let Some(mut v) = top {
            v.extend_from_slice(format!(";{CALLER_PARAM}={}", self.tokens.seal_dialog(&[caller], dialog)).as_bytes());
            fork.pop_first_element(HeaderName::Via);
            fork.prepend_header(HeaderName::Via, v);
        }
    }

    /// Forwards an INVITE's copies and answers the caller: provisional responses as they come,
    /// a 2xx at once (and every later 2xx too, RFC 3261 16.7 step 5), otherwise the best final
    /// response once every branch has one. Runs until every branch has ended.
    async fn forward_invite(&self, tx: ServerTx, original: &Message, forks: Vec<(Message, Target)>) {
        let (events_in, mut events) = mpsc::channel::<(usize, Message)>(16);
        let (cancel_in, mut cancels) = mpsc::channel::<()>(1);
        let key = tx.key().cloned();
        if let Some(k) = &key {
            self.pending.insert(k.clone(), cancel_in);
        }
        let upstream = tx.target();
        let mut tx = Some(tx);
        let mut branches = Vec::with_capacity(forks.len());
        for (req, target) in forks {
            self.start(&mut branches, req, target, false, &events_in);
        }
        let mut best: Option<Message> = None;
        let mut timer_c = Instant::now() + TIMER_C;
        while branches.iter().any(|b| b.state != BranchState::Done) {
            tokio::select! {
                Some((i, resp)) = events.recv() => {
                    let code = resp.status().unwrap_or(500);
                    if code < 200 {
                        timer_c = Instant::now() + TIMER_C;
                        let b = &mut branches[i];
                        if b.state == BranchState::Calling {
                            b.state = BranchState::Proceeding;
                            if b.cancel_wanted {
                                self.cancel(b);
                            }
                        }
                        if let (Some(tx), true) = (&tx, code > 100) {
                            tx.provisional(upstream_copy(resp));
                        }
                        continue;
                    }
                    let was_done = branches[i].state == BranchState::Done;
                    branches[i].state = BranchState::Done;
                    if (200..300).contains(&code) {
                        // Every 2xx goes upstream, even one after another branch's 2xx or
                        // after the caller's CANCEL: the caller must ACK and may hang up.
                        let resp = upstream_copy(resp);
                        match tx.take() {
                            Some(tx) => {
                                count(code);
                                tx.respond(resp);
                            }
                            None => self.send_upstream(upstream, resp),
                        }
                        self.cancel_all(&mut branches);
                        continue;
                    }
                    if was_done || tx.is_none() {
                        continue;
                    }
                    if code == 415 && !branches[i].retried {
                        if let Some(part) = fallback::part(&branches[i].req) {
                            let mut retry = fallback::retry(&branches[i].req, part);
                            renew_branch(&mut retry, original, &self.loops);
                            let target = branches[i].target;
                            self.start(&mut branches, retry, target, true, &events_in);
                            continue;
                        }
                    }
                    if code >= 600 {
                        self.cancel_all(&mut branches);
                    }
                    if best.as_ref().is_none_or(|b| super::messaging::better(code, b.status().unwrap_or(500))) {
                        best = Some(resp);
                    }
                }
                Some(()) = cancels.recv(), if tx.is_some() => {
                    // RFC 3261 16.10: cancel every pending branch; the caller's INVITE ends 487.
                    self.cancel_all(&mut branches);
                    if let Some(tx) = tx.take() {
                        count(487);
                        tx.respond(reply::response(original, 487, &self.agent));
                    }
                }
                _ = tokio::time::sleep_until(timer_c) => {
                    // Timer C: a branch that rang too long is cancelled and counts as a 408.
                    for b in branches.iter_mut().filter(|b| b.state != BranchState::Done) {
                        b.cancel_wanted = true;
                        if b.state == BranchState::Proceeding {
                            self.cancel(b);
                        }
                        b.state = BranchState::Done;
                        if best.is_none() {
                            best = Some(b.req.response_to(408));
                        }
                    }
                    timer_c = Instant::now() + TIMER_C;
                }
            }
        }
        if let Some(k) = key {
            self.pending.remove(&k);
        }
        if let Some(tx) = tx {
            let mut resp = match best {
                Some(r) => upstream_copy(r),
                None => reply::response(original, 480, &self.agent),
            };
            if resp.status() == Some(503) {
                // RFC 3261 16.7 step 6: a 503 is not passed upstream; the callee is unreachable.
                resp = reply::response(original, 480, &self.agent);
            }
            count(resp.status().unwrap_or(500));
            tx.respond(resp);
        }
    }

    /// The caller's CANCEL matched one of our pending INVITEs.
    pub fn on_cancel(&self, invite: &TxKey) {
        if let Some(sender) = self.pending.get(invite) {
            let _ = sender.try_send(());
        }
    }

    fn start(
        &self,
        branches: &mut Vec<Branch>,
        req: Message,
        target: Target,
        retried: bool,
        events: &mpsc::Sender<(usize, Message)>,
    ) {
        let i = branches.len();
        let mut client = self.txs.request(req.clone(), target);
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(r) = client.response().await {
                if events.send((i, r)).await.is_err() {
                    return;
                }
            }
        });
        branches.push(Branch { req, target, state: BranchState::Calling, cancel_wanted: false, retried });
    }

    /// Cancels every branch still pending: at once if it has had a provisional response,
    /// otherwise as soon as it has one.
    fn cancel_all(&self, branches: &mut [Branch]) {
        for b in branches.iter_mut().filter(|b| b.state != BranchState::Done && !b.cancel_wanted) {
            b.cancel_wanted = true;
            if b.state == BranchState::Proceeding {
                self.cancel(b);
            }
        }
    }

    /// RFC 3261 9.1: a CANCEL for the branch's INVITE, in a client transaction of its own.
    fn cancel(&self, b: &Branch) {
        let invite = &b.req;
        let mut c = Message::request(Method::Cancel, invite.request_uri().unwrap_or_default().to_vec());
        if let Some(via) = invite.list(HeaderName::Via).next() {
            c.push_header(HeaderName::Via, via.to_vec());
        }
        for route in invite.header_all(HeaderName::Route) {
            c.push_header(HeaderName::Route, route.to_vec());
        }
        c.push_header(HeaderName::MaxForwards, "70");
        for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
            if let Some(v) = invite.header(name) {
                c.push_header(name, v.to_vec());
            }
        }
        c.push_header(HeaderName::CSeq, format!("{} CANCEL", invite.cseq().map_or(1, |s| s.seq)));
        if let Some(seal) = invite.header_named(super::pool::hop::HEADER) {
            // To a client's edge: the INVITE's seal holds for its CANCEL.
            c.push_header_named(super::pool::hop::HEADER, seal.to_vec());
        }
        c.push_header(HeaderName::ContentLength, "0");
        // Its response (200, or 481 if the INVITE ended meanwhile) changes nothing here.
        drop(self.txs.request(c, b.target));
    }

    /// A request inside a dialog: removes our Route entries and says where it goes. The
    /// party it came from is recognised by its flow (or UDP address); it goes to the other.
    /// The token is good for its own dialog only, while it lasts, and for requests that come
    /// from that dialog's parties as themselves (finding 1 of issue 17): the caller's carry
    /// the caller's tag in From, the callee's carry it in To, and each its own AOR in From.
    fn next_hop(&self, msg: &mut Message, source: &Source) -> Hop {
        let mut opened = None;
        loop {
            let Some(route) = msg.list(HeaderName::Route).next() else { break };
            let token = NameAddr::parse(route).ok().and_then(|r| self.tokens.open_dialog(r.uri.user()?));
            match token {
                Some(t) => {
                    opened = opened.or(Some(t));
                    msg.pop_first_element(HeaderName::Route);
                }
                None => break,
            }
        }
        let Some((legs, dialog)) = opened else { return Hop::NotOurs };
        let (&[a, b], Some(dialog)) = (&legs[..], dialog) else { return Hop::Refused(Refusal::MalformedRoute) };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now > u64::from(dialog.until) {
            return Hop::Refused(Refusal::DialogExpired);
        }
        let (to, party, tag) = if a.sent(source) {
            (b, dialog.caller, msg.from().and_then(|f| f.tag()))
        } else if b.sent(source) {
            (a, dialog.callee, msg.to().and_then(|t| t.tag()))
        } else {
            return Hop::Refused(Refusal::NotAParty);
        };
        let of_dialog = TokenDialog::id_of(msg.call_id().unwrap_or_default(), tag.unwrap_or_default()) == dialog.id;
        if !of_dialog || self.sender_party(msg) != Some(party) {
            return Hop::Refused(Refusal::NotOfTheDialog);
        }
        let mut target = to.target();
        match to {
            Leg::Stream { flow, .. } if !self.transports.flows.is_open(flow) => {
                // RFC 5626 5.3: the flow to that party has failed.
                return Hop::Refused(Refusal::FlowFailed);
            }
            Leg::Udp(remote) => target.local = self.transports.udp_local(remote),
            Leg::Stream { .. } => {}
        }
        Hop::To(target)
    }

    /// The digest of the AOR a request's From names (a GRUU stands for its owner's AOR).
    fn sender_party(&self, msg: &Message) -> Option<[u8; 8]> {
        let from = msg.from()?;
        Some(TokenDialog::party(self.location.recipient(&from.uri)?.aor.as_str()))
    }

    /// Forwards a request inside a dialog to `target` (see [`Proxy::next_hop`]): one hop
    /// less, our Via on top; an ACK statelessly, anything else in a client transaction whose
    /// responses go back to the sender.
    async fn forward_in_dialog(
        &self,
        tx: Option<ServerTx>,
        received: &Message,
        mut msg: Message,
        local: SocketAddr,
        target: Target,
    ) {
        msg.set_header(HeaderName::MaxForwards, received.max_forwards().unwrap_or(70).saturating_sub(1).to_string());
        let sent_by = target.local.unwrap_or(local);
        msg.prepend_header(
            HeaderName::Via,
            format!("SIP/2.0/{} {sent_by};branch={}", target.transport.via_name(), self.loops.branch(received)),
        );
        let Some(tx) = tx else {
            // ACK for a 2xx: end to end, no transaction (RFC 3261 16.6, 17).
            let _ = self.transports.send(&target, msg.to_bytes());
            return;
        };
        if msg.method() == Some(&Method::Invite) {
            // A re-INVITE: provisional responses, CANCEL and Timer C as for the first.
            self.forward_invite(tx, received, vec![(msg, target)]).await;
            return;
        }
        let mut client = self.txs.request(msg, target);
        while let Some(resp) = client.response().await {
            let code = resp.status().unwrap_or(500);
            if code < 200 {
                if code > 100 {
                    tx.provisional(upstream_copy(resp));
                }
                continue;
            }
            tx.respond(upstream_copy(resp));
            return;
        }
        tx.respond(reply::response(received, 500, &self.agent));
    }

    /// A 2xx to a forwarded INVITE that matched no transaction (the callee retransmits it
    /// until the ACK comes): sent on to the caller our Via names (RFC 3261 16.7 step 1 and 5).
    pub fn stray_response(&self, resp: Message) -> bool {
        let invite_2xx = resp.status().is_some_and(|c| (200..300).contains(&c))
            && resp.cseq().is_some_and(|c| c.method == Method::Invite);
        let caller = resp
            .top_via()
            .filter(|v| v.branch().is_some_and(|b| b.starts_with(loops::BRANCH_PREFIX.as_bytes())))
            .and_then(|v| v.params.get(CALLER_PARAM).flatten())
            .and_then(|t| self.tokens.open_dialog(t));
        // Only for the dialog the token was sealed for: the INVITE's Call-ID and From tag.
        let of_dialog = |d: &TokenDialog| {
            let tag = resp.from().and_then(|f| f.tag()).unwrap_or_default();
            TokenDialog::id_of(resp.call_id().unwrap_or_default(), tag) == d.id
        };
        match (invite_2xx, caller.as_ref().map(|(legs, d)| (&legs[..], d))) {
            (true, Some((&[leg], Some(d)))) if of_dialog(d) => {
                self.send_upstream(leg.target(), upstream_copy(resp));
                true
            }
            _ => false,
        }
    }

    /// Sends a response upstream outside any transaction: to the caller's flow, or over UDP to
    /// where its Via says (RFC 3261 18.2.2).
    fn send_upstream(&self, mut target: Target, mut resp: Message) {
        if target.transport == Transport::Udp {
            target.remote = crate::transport::udp_response_addr(&resp, target.remote);
        }
        resp.ensure_content_length();
        let _ = self.transports.send(&target, resp.to_bytes());
    }
}

/// A branch's response as it goes upstream: our Via removed (RFC 3261 16.7 step 3).
fn upstream_copy(mut resp: Message) -> Message {
    resp.pop_first_element(HeaderName::Via);
    resp
}

/// A new top Via branch on a copy we send again as a new transaction.
fn renew_branch(fork: &mut Message, original: &Message, loops: &loops::Loops) {
    let Some(text) = fork.list(HeaderName::Via).next().map(|v| String::from_utf8_lossy(v).into_owned()) else {
        return;
    };
    let fresh = loops.branch(original);
    let renewed = match text.find(";branch=") {
        Some(at) => {
            let rest = &text[at + 8..];
            let end = rest.find(';').map_or(text.len(), |e| at + 8 + e);
            format!("{};branch={fresh}{}", &text[..at], &text[end..])
        }
        None => format!("{text};branch={fresh}"),
    };
    fork.pop_first_element(HeaderName::Via);
    fork.prepend_header(HeaderName::Via, renewed);
}

/// A Record-Route URI naming this server at `local` over `transport`, with the token.
/// A Record-Route URI with `token` for a leg over `transport`, at our address `local`.
pub fn route_uri(token: &str, transport: Transport, local: impl std::fmt::Display) -> String {
    match transport {
        Transport::Udp => format!("<sip:{token}@{local};lr>"),
        t => format!("<sip:{token}@{local};transport={};lr>", t.via_name().to_ascii_lowercase()),
    }
}

fn count(code: u16) {
    metrics::counter!(m::PROXIED_INVITES, "code" => m::code_label(code)).increment(1);
}
