//! Instant messages in pager mode (RFC 3428): a MESSAGE from an authenticated user to an AOR
//! we serve is forked in parallel to every binding of the recipient, each over the binding's
//! own flow (RFC 5626: a TCP or TLS client is reached over the connection it registered on,
//! never a new one), and the sender gets the best final response (RFC 3261 16.7).

use super::archive::Archive;
use super::federation::Outbound;
use super::gate::Gate;
use super::location::Location;
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
        gate: Arc<Gate>,
        location: Arc<Location>,
        archive: Arc<Archive>,
        offline: Offline,
        txs: Transactions,
        agent: String,
        loops: loops::Loops,
    ) -> Messaging {
        Messaging { cfg, gate, location, archive, offline, txs, agent, loops }
    }

    /// Offline messages: their purge, and following which users have some; runs until dropped.
    pub async fn run(&self, kept_elsewhere: tokio::sync::broadcast::Receiver<Arc<str>>) {
        tokio::join!(self.offline.run_purge(), self.offline.run_census(), self.offline.follow(kept_elsewhere));
    }

    /// A MESSAGE (RFC 3428) outside a dialog: checked, its sender authenticated, archived,
    /// and relayed to every binding of the recipient, or kept until it registers.
    pub async fn handle(&self, req: &Incoming) -> Message {
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
        let to = match self.gate.callee(msg).await {
            Ok(to) => to,
            Err(refusal) => return refusal,
        };
        let targets = self.location.targets(&to);
        if targets.is_empty() && !self.offline.enabled() {
            return Self::unavailable(msg, &self.agent);
        }
        if !self.archive.keep(msg, sender.as_str(), to.aor.as_str()).await {
            return Archive::unavailable(msg, &self.agent);
        }
        if targets.is_empty() {
            return self.offline.keep(msg, to.aor.as_str(), sender.as_str()).await;
        }
        self.relay(msg, targets).await
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
