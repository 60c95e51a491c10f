//! Server transactions (RFC 3261 17.2).

use super::key::{server_key, TxKey};
use super::{method_label, Incoming, Transactions};
use crate::ops::metrics as m;
use crate::ops::shutdown::InFlightGuard;
use crate::transport::{Source, Target, Transport};
use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use sipfront_proto::{Message, Method};
use tokio::time::Instant;

/// Where a server transaction stands. Requests that need no state (non-INVITE over TCP and
/// TLS, where the client never retransmits) have no entry at all.
pub(super) enum ServerState {
    /// With the transaction user; `provisional` is the last provisional response sent, repeated
    /// to a retransmitted request (17.2.1, 17.2.2).
    Proceeding { provisional: Option<Bytes> },
    /// The final response went out; a retransmitted request gets it again.
    Completed { response: Bytes },
    /// INVITE only: the ACK arrived; further ACKs are absorbed until Timer I.
    Confirmed,
}

pub(super) struct ServerEntry {
    state: ServerState,
    target: Target,
}

impl ServerEntry {
    /// Whether an expiry timer may remove it (never one still with the TU).
    pub(super) fn is_done(&self) -> bool {
        !matches!(self.state, ServerState::Proceeding { .. })
    }

    fn last_response(&self) -> Option<&Bytes> {
        match &self.state {
            ServerState::Proceeding { provisional } => provisional.as_ref(),
            ServerState::Completed { response } => Some(response),
            ServerState::Confirmed => None,
        }
    }
}

/// Where responses to a request go: back on its flow for streams; over UDP to the address RFC
/// 3261 18.2.2 and RFC 3581 give.
fn response_target(msg: &Message, source: &Source) -> Target {
    match source.transport {
        Transport::Udp => Target {
            transport: Transport::Udp,
            remote: crate::transport::udp_response_addr(msg, source.remote),
            flow: None,
            local: Some(source.local),
        },
        _ => source.reply_target(),
    }
}

/// The To tag of a challenge sent statelessly, by which its ACK is known.
const STATELESS_TAG: &str = "sfsc";

pub(super) fn on_request(txs: &Transactions, msg: Message, source: Source) {
    let msg = match txs.tu() {
        Some(tu) => match tu.before_transaction(msg, source) {
            Some(msg) => msg,
            None => return,
        },
        None => msg,
    };
    let Some(method) = msg.method().cloned() else { return };
    let inner = &txs.0;
    let Some(key) = server_key(&msg, &method) else { return };
    if method == Method::Ack {
        // An ACK for a non-2xx final response ends its INVITE transaction (17.2.1); any other
        // ACK is the end-to-end ACK for a 2xx.
        if let Some(mut e) = inner.server.get_mut(&key) {
            if matches!(e.state, ServerState::Completed { .. }) {
                e.state = ServerState::Confirmed;
                drop(e);
                if source.transport.is_reliable() {
                    inner.server.remove(&key);
                } else {
                    inner.confirmed.push(key);
                }
            }
            return;
        }
        if msg.to().and_then(|t| t.tag()).is_some_and(|t| t.starts_with(STATELESS_TAG.as_bytes())) {
            // The ACK of a challenge sent statelessly: nothing to do (8.2.7).
            return;
        }
        if let Some(tu) = txs.tu() {
            tu.on_stray_ack(Incoming { msg, source, received: Instant::now(), relayed: None });
        }
        return;
    }
    metrics::counter!(m::REQUESTS, "method" => method_label(&method), "transport" => source.transport.label())
        .increment(1);
    tracing::debug!(
        method = method.as_str(),
        call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
        remote = %source.remote,
        transport = source.transport.label(),
        "request"
    );

    let target = response_target(&msg, &source);
    let stateful = !source.transport.is_reliable() || method == Method::Invite;
    if stateful {
        // Measured before the entry is taken: counting takes every shard's lock.
        let full = inner.server.len() >= inner.max_server;
        match inner.server.entry(key.clone()) {
            Entry::Occupied(e) => {
                metrics::counter!(m::RETRANSMISSIONS_ABSORBED).increment(1);
                if let Some(last) = e.get().last_response() {
                    let (target, last) = (e.get().target, last.clone());
                    drop(e);
                    let _ = inner.transports.send(&target, last);
                }
                return;
            }
            Entry::Vacant(v) if !full => {
                v.insert(ServerEntry { state: ServerState::Proceeding { provisional: None }, target });
            }
            Entry::Vacant(v) => {
                // Full: nothing kept, a 503 sent once (and not for an ACK, handled above).
                drop(v);
                metrics::counter!(m::OVER_CAPACITY, "table" => "server_transactions").increment(1);
                let mut r = sipfront_proto::reply::response(&msg, 503, &inner.agent);
                r.push_header(sipfront_proto::HeaderName::RetryAfter, "5");
                count_response(&r);
                let _ = inner.transports.send(&target, r.to_bytes());
                return;
            }
        }
    }
    let tx = ServerTx {
        txs: txs.clone(),
        key: stateful.then_some(key),
        target,
        method: method.clone(),
        started: Instant::now(),
        _inflight: inner.inflight.enter(),
        answered: false,
    };
    if method == Method::Cancel {
        cancel(txs, msg, tx);
        return;
    }
    match txs.tu() {
        Some(tu) => tu.on_request(Incoming { msg, source, received: tx.started, relayed: None }, tx),
        None => {
            tx.respond(msg.response_to(503));
        }
    }
}

/// RFC 3261 9.2: a CANCEL matching a pending INVITE gets 200 and the TU ends the INVITE; one
/// matching nothing gets 481.
fn cancel(txs: &Transactions, msg: Message, tx: ServerTx) {
    let invite_key = server_key(&msg, &Method::Invite);
    let pending = invite_key
        .as_ref()
        .and_then(|k| txs.0.server.get(k))
        .is_some_and(|e| matches!(e.state, ServerState::Proceeding { .. }));
    tx.respond(sipfront_proto::reply::response(&msg, if pending { 200 } else { 481 }, &txs.0.agent));
    if let (true, Some(k), Some(tu)) = (pending, invite_key, txs.tu()) {
        tu.on_cancel(&k);
    }
}

/// The handle through which the transaction user answers a request. Dropping it unanswered
/// is a bug in the TU; the transaction is then forgotten (and logged) rather than kept forever.
pub struct ServerTx {
    txs: Transactions,
    key: Option<TxKey>,
    target: Target,
    method: Method,
    started: Instant,
    _inflight: InFlightGuard,
    answered: bool,
}

impl ServerTx {
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The transaction's key (INVITE and UDP transactions have one): what a CANCEL names.
    pub fn key(&self) -> Option<&TxKey> {
        self.key.as_ref()
    }

    /// Where this transaction's responses go; a proxy sends later 2xx responses to an INVITE
    /// there after the transaction has ended (RFC 3261 16.7 step 5).
    pub fn target(&self) -> Target {
        self.target
    }

    /// Sends a provisional (1xx) response; it is repeated to a retransmitted request.
    pub fn provisional(&self, mut resp: Message) {
        resp.ensure_content_length();
        let bytes = resp.to_bytes();
        if let Some(key) = &self.key {
            if let Some(mut e) = self.txs.0.server.get_mut(key) {
                e.state = ServerState::Proceeding { provisional: Some(bytes.clone()) };
            }
        }
        count_response(&resp);
        let _ = self.txs.0.transports.send(&self.target, bytes);
    }

    /// Sends the final response and completes the transaction. (A 1xx belongs in
    /// [`ServerTx::provisional`]; given here it is sent, and the transaction is dropped
    /// unanswered, which is logged as the TU bug it is.)
    pub fn respond(mut self, mut resp: Message) {
        let code = resp.status().unwrap_or(500);
        if code < 200 {
            self.provisional(resp);
            return;
        }
        self.answered = true;
        // A challenge over UDP goes out statelessly (RFC 3261 8.2.7): once, with nothing kept.
        // Anyone can send a request from a spoofed address; kept, the challenge would be sent
        // again at every retransmission timer of an INVITE (up to ten answers for one
        // datagram) and held for Timer J, so reflecting and filling memory at no cost. The
        // client that is really there retransmits its request, and gets a fresh challenge.
        let stateless = matches!(code, 401 | 407) && !self.target.transport.is_reliable();
        if stateless {
            // Its ACK (for an INVITE) is known by this tag, and absorbed.
            resp.set_to_tag(&format!("{STATELESS_TAG}{}", sipfront_proto::random::alphanumeric(10)));
        }
        resp.ensure_content_length();
        let bytes = resp.to_bytes();
        count_response(&resp);
        metrics::histogram!(m::TRANSACTION_DURATION, "method" => method_label(&self.method))
            .record(self.started.elapsed().as_secs_f64());
        let inner = &self.txs.0;
        let invite = self.method == Method::Invite;
        let key = self.key.take();
        if stateless {
            if let Some(key) = &key {
                inner.server.remove(key);
            }
            let _ = inner.transports.send(&self.target, bytes);
            return;
        }
        if let (Some(key), false) = (&key, invite && code < 300) {
            // RFC 3261 17.2.2: a retransmission in Completed gets the final response again. So
            // the transaction is Completed before the response leaves: a client that answers
            // at once would otherwise find it still Proceeding, and be absorbed unanswered.
            if let Some(mut e) = inner.server.get_mut(key) {
                e.state = ServerState::Completed { response: bytes.clone() };
            }
        }
        let _ = inner.transports.send(&self.target, bytes.clone());
        let Some(key) = key else { return };
        if invite && code < 300 {
            // A 2xx ends an INVITE server transaction at once (17.2.1); the UAS retransmits
            // the 2xx end to end.
            inner.server.remove(&key);
            return;
        }
        inner.completed.push(key.clone());
        if invite && !self.target.transport.is_reliable() {
            // Timer G: repeat the final response until the ACK comes (Timer H ends it).
            let (txs, target) = (self.txs.clone(), self.target);
            tokio::spawn(async move {
                let timers = txs.0.timers;
                let deadline = Instant::now() + timers.timeout();
                let mut interval = timers.t1;
                loop {
                    tokio::time::sleep(interval).await;
                    if Instant::now() >= deadline {
                        return;
                    }
                    let still_waiting =
                        txs.0.server.get(&key).is_some_and(|e| matches!(e.state, ServerState::Completed { .. }));
                    if !still_waiting {
                        return;
                    }
                    let _ = txs.0.transports.send(&target, bytes.clone());
                    interval = (interval * 2).min(timers.t2);
                }
            });
        }
    }
}

fn count_response(resp: &Message) {
    let code = resp.status().unwrap_or(0);
    metrics::counter!(m::RESPONSES, "code" => m::code_label(code)).increment(1);
}

impl Drop for ServerTx {
    fn drop(&mut self) {
        if !self.answered {
            tracing::error!(method = self.method.as_str(), "request dropped without a final response");
            if let Some(key) = self.key.take() {
                self.txs.0.server.remove(&key);
            }
        }
    }
}
