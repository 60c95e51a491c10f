//! Instant messages in pager mode (RFC 3428): a MESSAGE from an authenticated user to an AOR
//! we serve is forked in parallel to every binding of the recipient, each over the binding's
//! own flow (RFC 5626: a TCP or TLS client is reached over the connection it registered on,
//! never a new one), and the sender gets the best final response (RFC 3261 16.7). A MESSAGE
//! to a distribution group is copied to each of its members, each copy delivered (or kept) as
//! a MESSAGE of its own at that member's home, and the sender is answered once.

use super::archive::Archive;
use super::federation::Outbound;
use super::gate::Gate;
use super::groups::Group;
use super::location::{Location, Recipient};
use super::offline::Offline;
use super::options::SUPPORTED;
use super::proxy::loops;
use crate::config;
use crate::ops::metrics as m;
use crate::state::bindings::Binding;
use crate::transaction::{ClientTx, Incoming, Transactions};
use sipfront_proto::reply;
use sipfront_proto::{Aor, HeaderName, Message, Uri};
use std::sync::Arc;

pub struct Messaging {
    cfg: config::Messaging,
    groups: config::Groups,
    /// Group copies under way, at most `groups.max_copies_in_flight`: a group MESSAGE takes
    /// one permit per copy until its fan-out ends, and is refused 503 when they are out.
    copies: Arc<tokio::sync::Semaphore>,
    /// `federation.edge_member`, with federation on: the member a copy for a partner's user
    /// leaves from, as every request to partners does.
    federation_edge: Option<String>,
    gate: Arc<Gate>,
    location: Arc<Location>,
    archive: Arc<Archive>,
    offline: Offline,
    txs: Transactions,
    agent: String,
    loops: loops::Loops,
}

impl Messaging {
    #[allow(clippy::too_many_arguments)] // each is one service or setting messaging works with
    pub fn new(
        cfg: config::Messaging,
        groups: config::Groups,
        federation_edge: Option<String>,
        gate: Arc<Gate>,
        location: Arc<Location>,
        archive: Arc<Archive>,
        offline: Offline,
        txs: Transactions,
        agent: String,
        loops: loops::Loops,
    ) -> Messaging {
        let copies = Arc::new(tokio::sync::Semaphore::new(groups.max_copies_in_flight));
        Messaging { cfg, groups, copies, federation_edge, gate, location, archive, offline, txs, agent, loops }
    }

    /// Offline messages: their purge, and following which users have some; runs until dropped.
    pub async fn run(&self, kept_elsewhere: tokio::sync::broadcast::Receiver<Arc<str>>) {
        tokio::join!(self.offline.run_purge(), self.offline.run_census(), self.offline.follow(kept_elsewhere));
    }

    /// A MESSAGE (RFC 3428) outside a dialog: checked, its sender authenticated, archived,
    /// and relayed to every binding of the recipient, or kept until it registers.
    pub async fn handle(self: &Arc<Self>, req: &Incoming) -> Message {
        let msg = &req.msg;
        let sender = match self.gate.sender(req).await {
            Ok(sender) => sender,
            Err(refusal) => return refusal,
        };
        if let Some(refusal) = self.refusal(msg) {
            return refusal;
        }
        if self.loops.looped(msg) {
            return reply::response(msg, 482, &self.agent);
        }
        if let Some(domain) = self.gate.foreign_domain(msg) {
            return self.federate(msg, &sender, &domain).await;
        }
        let group_copy = req.relayed.as_ref().is_some_and(|r| r.group.is_some());
        if let Some(group) = self.group_named(msg) {
            if group_copy {
                // A group's copy names a member, never a group: it is not expanded again.
                return reply::response(msg, 482, &self.agent);
            }
            return self.to_group(msg, &sender, &group).await;
        }
        let to = match self.gate.callee(msg).await {
            Ok(to) => to,
            Err(refusal) => return refusal,
        };
        self.deliver(msg, &sender, &to, group_copy).await
    }

    /// A MESSAGE for our user `to` (who exists and is enabled): archived, then relayed to its
    /// bindings, or kept until it registers. A group's copy (`group_copy`) that the member's
    /// endpoints do not take now (no answer, 480, 503) is kept too, as for a member away.
    async fn deliver(&self, msg: &Message, sender: &Aor, to: &Recipient, group_copy: bool) -> Message {
        let targets = self.location.targets(to);
        if targets.is_empty() && !self.offline.enabled() {
            return Self::unavailable(msg, &self.agent);
        }
        if !self.archive.keep(msg, sender.as_str(), to.aor.as_str()).await {
            return Archive::unavailable(msg, &self.agent);
        }
        if targets.is_empty() {
            return self.offline.keep(msg, to.aor.as_str(), sender.as_str()).await;
        }
        let resp = self.relay(msg, targets).await;
        let code = resp.status().unwrap_or(500);
        if group_copy && self.offline.enabled() && matches!(code, 408 | 480 | 503) {
            return self.offline.keep(msg, to.aor.as_str(), sender.as_str()).await;
        }
        resp
    }

    /// The distribution group a request's Request-URI names, if it names one.
    fn group_named(&self, msg: &Message) -> Option<Arc<str>> {
        let uri = msg.request_uri().and_then(|u| Uri::parse(u).ok())?;
        let aor = Aor::from_uri(&uri)?;
        self.gate.directory().groups().named(aor.as_str())
    }

    /// A MESSAGE of `sender` to distribution group `group`: refused unless the sender is a
    /// member (a partner's user too, when the group lists it) or one of `groups.senders`, and
    /// the group is within
    /// `groups.max_members_for_message`, and 503 while `groups.max_copies_in_flight` copies are
    /// under way; otherwise answered 202 Accepted at once (RFC 3428 7: an exploder's answer),
    /// and a copy goes to every other member, archived and delivered (or kept) at that
    /// member's home as a MESSAGE to them would be.
    async fn to_group(self: &Arc<Self>, msg: &Message, sender: &Aor, group: &str) -> Message {
        let refuse = |code: u16, reason: String| {
            metrics::counter!(m::GROUP_MESSAGES, "result" => m::code_label(code)).increment(1);
            let mut r = reply::response(msg, code, &self.agent);
            r.set_reason(reason);
            if code == 503 {
                r.push_header(HeaderName::RetryAfter, "5");
            }
            r
        };
        let group: Arc<Group> = match self.gate.directory().group(group).await {
            Ok(Some(g)) => g,
            Ok(None) => return refuse(404, "Not Found".into()),
            Err(_) => return refuse(503, "Service Unavailable".into()),
        };
        // Who may send first: a sender who may not learns nothing of the group.
        let may_send =
            group.has(sender.as_str()) || self.groups.senders.iter().any(|s| s.eq_ignore_ascii_case(sender.as_str()));
        if !may_send {
            return refuse(403, "Forbidden (only the group's members may send to it)".into());
        }
        let max = self.groups.max_members_for_message;
        if group.truncated || group.members.len() > max {
            return refuse(403, format!("Forbidden (the group has more than {max} members)"));
        }
        let recipients: Vec<Arc<str>> =
            group.members.iter().filter(|m| !m.eq_ignore_ascii_case(sender.as_str())).cloned().collect();
        let wanted = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
        let permits = match self.copies.clone().try_acquire_many_owned(wanted) {
            Ok(p) => p,
            Err(_) => {
                metrics::counter!(m::OVER_CAPACITY, "table" => "group_copies").increment(1);
                return refuse(503, "Service Unavailable (too many group messages under way)".into());
            }
        };
        tracing::debug!(group = &*group.aor, sender = sender.as_str(), recipients = recipients.len(), "group message");
        let (this, original, sender) = (self.clone(), msg.clone(), sender.clone());
        tokio::spawn(async move {
            let mut copies = tokio::task::JoinSet::new();
            for to in recipients {
                let (this, copy, sender, group) =
                    (this.clone(), copy_for(&original, &to), sender.clone(), group.clone());
                copies.spawn(async move {
                    let code = this.deliver_copy(copy, &sender, &to, &group.aor).await;
                    metrics::counter!(m::GROUP_DELIVERIES, "result" => m::code_label(code)).increment(1);
                    if code >= 300 && code != 202 {
                        tracing::info!(group = &*group.aor, member = &*to, code, "group message not delivered");
                    }
                });
            }
            while copies.join_next().await.is_some() {}
            drop(permits);
        });
        metrics::counter!(m::GROUP_MESSAGES, "result" => "202").increment(1);
        reply::response(msg, 202, &self.agent)
    }

    /// Delivers one member's copy of a group message: here, at the member's home in the pool,
    /// or toward a partner's edge for a remote member. The final status.
    async fn deliver_copy(&self, copy: Message, sender: &Aor, to: &str, group: &str) -> u16 {
        let domain = Aor::domain_of(to).to_string();
        let pool = self.location.pool();
        if !self.gate.serves(&domain) {
            if self.gate.foreign_domain(&copy).is_none() {
                return 403; // a partner's address, and no federation to reach it by
            }
            // From the member that federates for the pool, as every request to partners goes.
            let edge = self.federation_edge.as_deref().filter(|e| *e != pool.id()).and_then(|e| pool.peer_named(e));
            if let Some(edge) = edge {
                return self.through_member(copy, sender, group, edge.addr).await;
            }
            return self.federate(&copy, sender, &domain).await.status().unwrap_or(500);
        }
        if let Some(home) = pool.home_of(to) {
            let code = self.through_member(copy.clone(), sender, group, home.addr).await;
            // The home did not answer, or could not take it: kept in the shared store from
            // here, for the member's next registration, rather than lost after our 202.
            if matches!(code, 408 | 503) && self.offline.enabled() {
                if !self.archive.keep(&copy, sender.as_str(), to).await {
                    return 503;
                }
                return self.offline.keep(&copy, to, sender.as_str()).await.status().unwrap_or(500);
            }
            return code;
        }
        match self.gate.callee(&copy).await {
            Ok(to) => self.deliver(&copy, sender, &to, true).await.status().unwrap_or(500),
            Err(refusal) => refusal.status().unwrap_or(500),
        }
    }

    /// A member's copy to another member of the pool (the member's home, or the federation
    /// edge), which takes it as a MESSAGE from `sender` under the pool's seal.
    async fn through_member(&self, mut copy: Message, sender: &Aor, group: &str, to: std::net::SocketAddr) -> u16 {
        let pool = self.location.pool();
        copy.prepend_header(
            HeaderName::Via,
            format!("SIP/2.0/TCP {};branch={}", pool.address(), self.loops.branch(&copy)),
        );
        let vouch = super::pool::hop::Vouch {
            member: pool.id().to_string(),
            client: None,
            identity: Some(sender.as_str().to_string()),
            replay: false,
            feed: false,
            // A partner's user (a member of the group): its certificate named its domain here.
            partner: (!self.gate.serves(sender.domain())).then(|| sender.domain().to_string()),
            group: Some(group.to_string()),
        };
        pool.seal().sign(&mut copy, &vouch);
        let Some(flow) = pool.connection_to(to, std::time::Duration::from_secs(2)).await else { return 503 };
        let target = crate::transport::Target {
            transport: crate::transport::Transport::Tcp,
            remote: to,
            flow: Some(flow),
            local: None,
        };
        self.txs.final_response(copy, target).await.status().unwrap_or(500)
    }

    /// A MESSAGE of our user `sender` for a user of partner domain `domain`: archived like
    /// any other (with the remote party's address), then sent to the domain's edge.
    async fn federate(&self, msg: &Message, sender: &Aor, domain: &str) -> Message {
        let federation = match self.gate.federating(sender, msg).await {
            Ok(f) => f,
            Err(refusal) => return refusal,
        };
        let recipient = msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| Aor::from_uri(&u));
        let Some(recipient) = recipient else { return reply::response(msg, 404, &self.agent) };
        // The edge first: a message the policy, DNS or the partner refuses was never sent, and
        // is not archived as if it had been.
        let (target, others) = match federation.route(domain).await {
            Outbound::Via(target, others) => (target, others),
            Outbound::Refused(refusal) => return refusal.response(msg, &self.agent),
        };
        if !self.archive.keep(msg, sender.as_str(), recipient.as_str()).await {
            return Archive::unavailable(msg, &self.agent);
        }
        let resp = federation.send(msg, domain, target, others, || self.loops.branch(msg)).await;
        metrics::counter!(m::MESSAGES, "result" => m::code_label(resp.status().unwrap_or(0))).increment(1);
        resp
    }

    /// `aor` has just registered: what was kept for it while it was away goes out now.
    pub fn registered(self: &Arc<Self>, aor: &str) {
        if self.offline.may_have(aor) && !self.location.bindings().get(aor).is_empty() {
            let this = self.clone();
            let aor = aor.to_string();
            tokio::spawn(async move { this.offline.deliver(&aor, &this).await });
        }
    }

    /// The answer refusing a MESSAGE that fails what RFC 3428 asks before it is relayed (a
    /// body of an accepted type, within the size limit, hops left); `None` if it passes.
    pub fn refusal(&self, msg: &Message) -> Option<Message> {
        let refuse = |code: u16, reason: Option<&str>| {
            metrics::counter!(m::MESSAGES, "result" => m::code_label(code)).increment(1);
            let mut r = reply::response(msg, code, &self.agent);
            if let Some(reason) = reason {
                r.set_reason(reason.to_string());
            }
            r
        };
        if msg.max_forwards() == Some(0) {
            return Some(refuse(483, None));
        }
        if msg.body().len() > self.cfg.max_body {
            return Some(refuse(413, None));
        }
        let Some(content_type) = msg.content_type() else {
            return Some(refuse(400, Some("Bad Request (MESSAGE without Content-Type)")));
        };
        if msg.body().is_empty() {
            return Some(refuse(400, Some("Bad Request (MESSAGE without a body)")));
        }
        let (media, _) = sipfront_proto::scan::split_params(content_type);
        if !self.cfg.content_types.iter().any(|t| t.as_bytes().eq_ignore_ascii_case(media)) {
            // RFC 3428 7: an unsupported type is answered 415 with the types accepted.
            let mut r = refuse(415, None);
            r.push_header(HeaderName::Accept, self.cfg.content_types.join(", "));
            return Some(r);
        }
        None
    }

    /// Relays `req` to every reachable binding of `aor`; `None` when it has none.
    pub async fn relay_to(&self, aor: &str, req: &Message) -> Option<Message> {
        let targets = self.location.targets_of(aor);
        if targets.is_empty() {
            return None;
        }
        Some(self.relay(req, targets).await)
    }

    /// Forks `req` to every target and answers with the best final response.
    pub async fn relay(&self, req: &Message, targets: Vec<Binding>) -> Message {
        let txs = &self.txs;
        metrics::histogram!(m::MESSAGE_FORKS).record(targets.len() as f64);
        if let [only] = targets.as_slice() {
            // One branch (the common case): its transaction runs right here, no task spawned.
            let (fork, target) = self.location.fork(req, only, &self.loops.branch(req));
            let mut resp = txs.final_response(fork, target).await;
            resp.pop_first_element(HeaderName::Via);
            metrics::counter!(m::MESSAGES, "result" => m::code_label(resp.status().unwrap_or(0))).increment(1);
            return resp;
        }
        let mut branches: Vec<ClientTx> = Vec::with_capacity(targets.len());
        for b in &targets {
            let (fork, target) = self.location.fork(req, b, &self.loops.branch(req));
            branches.push(txs.request(fork, target));
        }
        // RFC 3261 16.7: a 2xx goes upstream at once; otherwise wait for every branch and pick.
        let (tx, mut finals) = tokio::sync::mpsc::channel(branches.len().max(1));
        for branch in branches {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(r) = branch.final_response().await {
                    let _ = tx.send(r).await;
                }
            });
        }
        drop(tx);
        let mut best: Option<Message> = None;
        while let Some(resp) = finals.recv().await {
            let code = resp.status().unwrap_or(500);
            if (200..300).contains(&code) {
                best = Some(resp);
                break;
            }
            if best.as_ref().is_none_or(|b| better(code, b.status().unwrap_or(500))) {
                best = Some(resp);
            }
        }
        let mut resp = match best {
            Some(r) => r,
            None => reply::response(req, 480, &self.agent),
        };
        // Our Via goes; the response continues on the request's Vias (RFC 3261 16.7 step 3).
        resp.pop_first_element(HeaderName::Via);
        metrics::counter!(m::MESSAGES, "result" => m::code_label(resp.status().unwrap_or(0))).increment(1);
        resp
    }

    /// 480 for a request to a user with no reachable binding.
    pub fn unavailable(msg: &Message, agent: &str) -> Message {
        metrics::counter!(m::MESSAGES, "result" => "480").increment(1);
        let mut r = reply::response(msg, 480, agent);
        r.push_header(HeaderName::Supported, SUPPORTED);
        r
    }
}

/// A group message's copy for member `to`: a request of our own (RFC 3261 8.1.1: its own
/// Call-ID, From tag and CSeq; no Via yet, whoever sends it puts theirs), addressed to the
/// member, From the sender (its address and display name) and To the group, one hop less,
/// without the sender's credentials or Route.
fn copy_for(original: &Message, to: &str) -> Message {
    let mut copy = super::location::forwarded(original, format!("sip:{to}"));
    if let Some(from) = original.from() {
        let display = from.display.map(|d| format!("{} ", String::from_utf8_lossy(d))).unwrap_or_default();
        let uri = String::from_utf8_lossy(from.uri.raw());
        copy.set_header(HeaderName::From, format!("{display}<{uri}>;tag={}", reply::new_tag()));
    }
    copy.set_header(HeaderName::CallId, format!("{}@group.sipfront", reply::new_tag()));
    copy.set_header(HeaderName::CSeq, "1 MESSAGE");
    copy.remove_headers(HeaderName::Via);
    copy
}

/// Whether final response `a` beats `b` (RFC 3261 16.7 step 6): 6xx first, then the lowest
/// class, so a 4xx beats a 5xx; within a class the first one received stays.
pub fn better(a: u16, b: u16) -> bool {
    let rank = |c: u16| if c >= 600 { 0 } else { c / 100 };
    rank(a) < rank(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn best_response_order() {
        assert!(better(603, 404));
        assert!(better(404, 503));
        assert!(better(486, 500));
        assert!(!better(404, 480));
        assert!(!better(500, 404));
    }
}
