//! `message`: the users are split in two halves, senders and receivers, paired in order
//! (sender k writes to receiver k). Every user registers first (the set-up, measured apart),
//! each with its own socket or connection as Contact; then senders send MESSAGE at the rate,
//! answering 407 challenges, and the receivers answer what the server relays to them with 200.
//! Latency is from the scheduled send to the sender's final response; deliveries are counted
//! where the receivers see them.

use super::{exchange, measured, register, Kinds};
use crate::schedule::Phase;
use crate::sip::{self, Exchange};
use crate::stats::Outcome;
use crate::users::Users;
use sipfront_proto::{HeaderName, Method};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

pub const MEASURED: Kinds = Kinds { whole: "message", steps: Some(("message.initial", "message.auth")) };

/// The body every MESSAGE carries.
pub struct Prepared {
    body: Arc<str>,
}

/// Registers every user, at the set-up rate.
pub async fn prepare(users: &Arc<Users>, stop: &mut watch::Receiver<bool>) -> Result<Prepared, Phase> {
    register::register_all(users, stop).await?;
    Ok(Prepared { body: body(users.config().message_bytes).into() })
}

pub async fn measure(
    users: &Arc<Users>,
    prepared: &Prepared,
    rate: f64,
    count: u64,
    stop: &mut watch::Receiver<bool>,
) -> Phase {
    let pairs = users.len() / 2;
    measured(users, rate, count, stop, |i, due| {
        let (users, body) = (users.clone(), prepared.body.clone());
        let k = i as usize % pairs;
        async move { send(&users, k, pairs + k, due, &body, MEASURED).await }
    })
    .await
}

/// One MESSAGE from `sender` to `receiver`, answering a challenge.
pub async fn send(users: &Users, sender: usize, receiver: usize, due: Instant, body: &str, kinds: Kinds) -> bool {
    let stats = users.stats();
    let Some(endpoint) = users.endpoint(sender).await else {
        stats.record(kinds.whole, due.elapsed(), Outcome::Error);
        return false;
    };
    let c = users.config();
    let (from, to) = (users.get(sender), users.get(receiver));
    let uri = format!("sip:{}@{}", to.account.user, c.domain);
    // Pager mode (RFC 3428 4): every MESSAGE is a request of its own, outside any dialog.
    let (call_id, from_tag) = (sip::token(), sip::token());
    let sent = std::sync::atomic::AtomicU32::new(0);
    let make = |creds: Option<&super::Credentials>| {
        let branch = sip::branch();
        let x = Exchange {
            from: &from.account.user,
            to: &to.account.user,
            domain: &c.domain,
            from_tag: &from_tag,
            call_id: &call_id,
        };
        // 1, then 2 with credentials; higher on each try after a 503 (RFC 3261 8.1.3.5).
        let cseq = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut m = sip::request(Method::Message, &uri, &x, cseq, endpoint.local(), c.transport, &branch);
        if let Some((name, value)) = creds {
            m.push_header(*name, value.clone());
        }
        m.push_header(HeaderName::ContentType, "text/plain");
        m.push_header(HeaderName::ContentLength, "0");
        m.set_body(body.as_bytes().to_vec());
        (m, branch)
    };
    let ok = exchange(stats, &endpoint, &from.account, "MESSAGE", &uri, due, kinds, make).await;
    if ok {
        users.acked(&call_id);
    }
    ok
}

/// A text of exactly `len` bytes.
pub fn body(len: usize) -> String {
    let line = "The quick brown fox jumps over the lazy dog. ";
    line.repeat(len / line.len() + 1)[..len].to_string()
}
