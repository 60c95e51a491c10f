//! Client transactions (RFC 3261 17.1): one task each, which sends the request, retransmits it
//! over UDP (Timer A/E), gives up with a 408 after Timer B/F, ACKs a non-2xx final response to
//! an INVITE, and stays a while to absorb retransmitted final responses (Timer D/K).

use super::key::{client_key, TxKey};
use super::{method_label, Transactions};
use crate::ops::metrics as m;
use crate::transport::Target;
use sipfront_proto::{HeaderName, Message, Method};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often a client transaction over TCP or TLS checks that its connection is still open.
const FLOW_CHECK: Duration = Duration::from_millis(250);
/// An INVITE that has had a provisional response waits for its final one without Timer B
/// (RFC 3261 17.1.1.2); the proxy above cancels it after Timer C. This bound, renewed by each
/// provisional response, only makes sure that a transaction whose CANCEL went unanswered ends.
pub const INVITE_PROCEEDING_LIMIT: Duration = Duration::from_secs(240);

/// The requester's end of a client transaction: responses arrive here, provisional ones first,
/// then exactly one final response (received, or 408/503 made up on timeout or transport
/// failure, RFC 3261 8.1.3.1).
pub struct ClientTx {
    responses: mpsc::Receiver<Message>,
}

impl ClientTx {
    /// The next response; `None` after the final one.
    pub async fn response(&mut self) -> Option<Message> {
        self.responses.recv().await
    }

    /// Waits for the final response, skipping provisional ones.
    pub async fn final_response(mut self) -> Option<Message> {
        while let Some(r) = self.responses.recv().await {
            if r.status().is_some_and(|c| c >= 200) {
                return Some(r);
            }
        }
        None
    }
}

pub(super) fn start(txs: Transactions, req: Message, target: Target) -> ClientTx {
    let (out, responses) = mpsc::channel(8);
    match open(&txs, &req) {
        Some((key, mut inbox)) => {
            let guard = txs.0.inflight.enter();
            tokio::spawn(async move {
                let provisional = |r: Message| {
                    let _ = out.try_send(r);
                };
                let (fin, end) = exchange(&txs, &req, target, &mut inbox, provisional).await;
                let _ = out.send(fin).await;
                close(&txs, key, inbox, &req, target, end);
                drop(guard);
            });
        }
        None => {
            // No branch or CSeq: a bug in the caller; answer at once rather than send it.
            tracing::error!("client transaction for a request without Via branch or CSeq");
            let _ = out.try_send(req.response_to(500));
        }
    }
    ClientTx { responses }
}

/// Runs a client transaction in the caller's task and returns its final response (provisional
/// ones are dropped): what a relay with a single branch needs, without spawning anything.
pub(super) async fn final_response(txs: &Transactions, req: Message, target: Target) -> Message {
    let Some((key, mut inbox)) = open(txs, &req) else {
        tracing::error!("client transaction for a request without Via branch or CSeq");
        return req.response_to(500);
    };
    let _guard = txs.0.inflight.enter();
    let (fin, end) = exchange(txs, &req, target, &mut inbox, |_| {}).await;
    close(txs, key, inbox, &req, target, end);
    fin
}

/// Registers the transaction so that its responses find it.
fn open(txs: &Transactions, req: &Message) -> Option<(TxKey, mpsc::Receiver<Message>)> {
    let key = client_key(req)?;
    let (inbox_tx, inbox) = mpsc::channel(8);
    txs.0.client.insert(key.clone(), inbox_tx);
    Some((key, inbox))
}

/// How a client transaction ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// A final response came; for an INVITE, whether it was a non-2xx one (ACKed by us).
    Received { invite_non_2xx: bool },
    /// Timer B/F fired or the transport failed: terminated at once (17.1.1.2, 17.1.2.2).
    MadeUp,
}

/// Completed: retransmissions of the final response are absorbed for Timer K (T4, non-INVITE)
/// or Timer D (32 s, INVITE, re-ACKing each), both zero over reliable transports. A non-INVITE
/// transaction needs no task for that: its key stays registered (so the retransmissions match
/// and are dropped) until the lingering queue lets it go.
fn close(txs: &Transactions, key: TxKey, inbox: mpsc::Receiver<Message>, req: &Message, target: Target, end: End) {
    let End::Received { invite_non_2xx } = end else {
        txs.0.client.remove(&key);
        return;
    };
    if target.transport.is_reliable() {
        txs.0.client.remove(&key);
        return;
    }
    if !invite_non_2xx {
        if req.method() == Some(&Method::Invite) {
            // A 2xx ends an INVITE client transaction at once (17.1.1.2).
            txs.0.client.remove(&key);
        } else {
            drop(inbox);
            txs.0.lingering.push(key);
        }
        return;
    }
    let (txs, req) = (txs.clone(), req.clone());
    let mut inbox = inbox;
    tokio::spawn(async move {
        let linger = Duration::from_secs(32).max(txs.0.timers.timeout() / 2);
        let until = Instant::now() + linger;
        while let Ok(Some(resp)) = tokio::time::timeout_at(until, inbox.recv()).await {
            if resp.status().is_some_and(|c| c >= 300) {
                let _ = txs.0.transports.send(&target, ack_for(&req, &resp).to_bytes());
            }
        }
        txs.0.client.remove(&key);
    });
}

/// Sends the request, retransmits it over UDP, and waits for the final response (made up on
/// timeout or transport failure). Provisional responses go to `provisional`.
async fn exchange(
    txs: &Transactions,
    req: &Message,
    target: Target,
    inbox: &mut mpsc::Receiver<Message>,
    mut provisional: impl FnMut(Message),
) -> (Message, End) {
    let timers = txs.0.timers;
    let transports = &txs.0.transports;
    let method = req.method().cloned().unwrap_or(Method::Options);
    let invite = method == Method::Invite;
    let bytes = req.to_bytes();
    if transports.send(&target, bytes.clone()).is_err() {
        return (made_up(req, 503), End::MadeUp);
    }
    let reliable = target.transport.is_reliable();
    let mut deadline = Instant::now() + timers.timeout();
    let mut interval = timers.t1;
    let mut next_retransmit = Instant::now() + interval;
    let mut proceeding = false;
    loop {
        // INVITE stops retransmitting once a provisional response arrives (17.1.1.2).
        let retransmit = !(reliable || invite && proceeding);
        tokio::select! {
            r = inbox.recv() => {
                let Some(resp) = r else { return (made_up(req, 503), End::MadeUp) };
                let code = resp.status().unwrap_or(0);
                if code < 200 {
                    if !proceeding && !invite {
                        // 17.1.2.2: in Proceeding, Timer E fires every T2.
                        interval = timers.t2;
                        next_retransmit = Instant::now() + interval;
                    }
                    proceeding = true;
                    if invite {
                        deadline = Instant::now() + INVITE_PROCEEDING_LIMIT;
                    }
                    provisional(resp);
                    continue;
                }
                if invite && code >= 300 {
                    let _ = transports.send(&target, ack_for(req, &resp).to_bytes());
                }
                return (resp, End::Received { invite_non_2xx: invite && code >= 300 });
            }
            _ = tokio::time::sleep_until(next_retransmit), if retransmit => {
                let _ = transports.send(&target, bytes.clone());
                interval = if invite { interval * 2 } else { (interval * 2).min(timers.t2) };
                next_retransmit = Instant::now() + interval;
            }
            _ = tokio::time::sleep_until(deadline) => {
                metrics::counter!(m::CLIENT_TIMEOUTS, "method" => method_label(&method)).increment(1);
                return (made_up(req, 408), End::MadeUp);
            }
            // A stream has no retransmissions to notice a dead peer: watch its connection
            // instead, and treat its loss as a transport error (RFC 3261 8.1.3.1: a 503).
            _ = tokio::time::sleep(FLOW_CHECK), if reliable => {
                if target.flow.is_some_and(|f| !transports.flows.is_open(f)) {
                    return (made_up(req, 503), End::MadeUp);
                }
            }
        }
    }
}

/// A response this side makes up for its own request (timeout, transport failure).
fn made_up(req: &Message, code: u16) -> Message {
    let mut r = req.response_to(code);
    r.push_header(HeaderName::ContentLength, "0");
    r
}

/// RFC 3261 17.1.1.3: the ACK for a non-2xx final response, in the INVITE's transaction.
fn ack_for(invite: &Message, resp: &Message) -> Message {
    let mut ack = Message::request(Method::Ack, invite.request_uri().unwrap_or_default().to_vec());
    if let Some(via) = invite.list(HeaderName::Via).next() {
        ack.push_header(HeaderName::Via, via.to_vec());
    }
    for route in invite.header_all(HeaderName::Route) {
        ack.push_header(HeaderName::Route, route.to_vec());
    }
    ack.push_header(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = invite.header(name) {
            ack.push_header(name, v.to_vec());
        }
    }
    if let Some(to) = resp.header(HeaderName::To) {
        ack.push_header(HeaderName::To, to.to_vec());
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    ack.push_header(HeaderName::CSeq, format!("{seq} ACK"));
    ack.push_header(HeaderName::ContentLength, "0");
    ack
}
