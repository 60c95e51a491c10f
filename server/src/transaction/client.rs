//! Client transactions (RFC 3261 17.1): one task each, which sends the request, retransmits it
//! over UDP (Timer A/E), gives up with a 408 after Timer B/F, ACKs a non-2xx final response to
//! an INVITE, and stays a while to absorb retransmitted final responses (Timer D/K).

use super::key::client_key;
use super::{method_label, Transactions};
use crate::ops::metrics as m;
use crate::transport::Target;
use sipfront_proto::{HeaderName, Message, Method};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    match client_key(&req) {
        Some(key) => {
            let (inbox_tx, inbox) = mpsc::channel(8);
            txs.0.client.insert(key.clone(), inbox_tx);
            let guard = txs.0.inflight.enter();
            tokio::spawn(async move {
                run(&txs, req, target, inbox, out).await;
                txs.0.client.remove(&key);
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

async fn run(
    txs: &Transactions,
    req: Message,
    target: Target,
    mut inbox: mpsc::Receiver<Message>,
    out: mpsc::Sender<Message>,
) {
    let timers = txs.0.timers;
    let transports = &txs.0.transports;
    let method = req.method().cloned().unwrap_or(Method::Options);
    let invite = method == Method::Invite;
    let bytes = req.to_bytes();
    if transports.send(&target, bytes.clone()).is_err() {
        let _ = out.send(made_up(&req, 503)).await;
        return;
    }
    let reliable = target.transport.is_reliable();
    let deadline = Instant::now() + timers.timeout();
    let mut interval = timers.t1;
    let mut next_retransmit = Instant::now() + interval;
    let mut proceeding = false;
    let final_code = loop {
        // INVITE stops retransmitting once a provisional response arrives (17.1.1.2).
        let retransmit = !reliable && !(invite && proceeding);
        tokio::select! {
            r = inbox.recv() => {
                let Some(resp) = r else { return };
                let code = resp.status().unwrap_or(0);
                if code < 200 {
                    if !proceeding && !invite {
                        // 17.1.2.2: in Proceeding, Timer E fires every T2.
                        interval = timers.t2;
                        next_retransmit = Instant::now() + interval;
                    }
                    proceeding = true;
                    let _ = out.send(resp).await;
                    continue;
                }
                if invite && code >= 300 {
                    let _ = transports.send(&target, ack_for(&req, &resp).to_bytes());
                }
                let _ = out.send(resp).await;
                break code;
            }
            _ = tokio::time::sleep_until(next_retransmit), if retransmit => {
                let _ = transports.send(&target, bytes.clone());
                if !invite {
                    interval = (interval * 2).min(timers.t2);
                } else {
                    interval *= 2;
                }
                next_retransmit = Instant::now() + interval;
            }
            _ = tokio::time::sleep_until(deadline) => {
                metrics::counter!(m::CLIENT_TIMEOUTS, "method" => method_label(&method)).increment(1);
                let _ = out.send(made_up(&req, 408)).await;
                return;
            }
        }
    };
    // Completed: absorb retransmissions of the final response (Timer K = T4 for non-INVITE,
    // Timer D >= 32 s for INVITE, both zero over reliable transports), re-ACKing for INVITE.
    if reliable || (invite && final_code < 300) {
        return;
    }
    let linger = if invite { Duration::from_secs(32).max(timers.timeout() / 2) } else { timers.t4 };
    let until = Instant::now() + linger;
    while let Ok(Some(resp)) = tokio::time::timeout_at(until, inbox.recv()).await {
        if invite && resp.status().is_some_and(|c| c >= 300) {
            let _ = transports.send(&target, ack_for(&req, &resp).to_bytes());
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
