//! The scenarios, and the exchange they all are made of: a request, a 401 or 407 challenge
//! answered once with credentials (RFC 3261 22.2), a final response.
//!
//! A scenario is run in two parts: its set-up once ([`prepare`]: registrations, subscriptions),
//! then its measured transactions at a rate ([`Prepared::measure`]), once for a fixed-rate run
//! or once per step of a ramp.

pub mod message;
pub mod model;
pub mod presence;
pub mod register;

use crate::config::{Account, Scenario};
use crate::schedule::{open_loop, Phase};
use crate::sip;
use crate::stats::{Counters, Outcome, Stats};
use crate::transport::{Endpoint, TxResult};
use crate::users::Users;
use sipfront_proto::{HeaderName, Message};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// A scenario whose set-up is done: what its measured transactions need.
pub enum Prepared {
    Register,
    Message(message::Prepared),
    Presence(presence::Prepared),
    Model(model::Prepared),
}

/// Runs the set-up of the configured scenario; `Err` holds its phase if it was interrupted.
pub async fn prepare(users: &Arc<Users>, stop: &mut watch::Receiver<bool>) -> Result<Prepared, Phase> {
    let prepared = match users.config().scenario {
        Scenario::Register => Prepared::Register,
        Scenario::Message => Prepared::Message(message::prepare(users, stop).await?),
        Scenario::Presence => Prepared::Presence(presence::prepare(users, stop).await?),
        Scenario::Model => Prepared::Model(model::prepare(users, stop).await?),
    };
    Ok(prepared)
}

/// The contact lists a run's resource-list subscriptions expect the server to hold, by user
/// index (none unless `--resource-lists`).
pub fn contact_lists(c: &crate::config::Config) -> Vec<(usize, Vec<usize>)> {
    match c.scenario {
        _ if !c.resource_lists => Vec::new(),
        Scenario::Presence => presence::contact_lists(c),
        Scenario::Model => model::contact_lists(c),
        Scenario::Register | Scenario::Message => Vec::new(),
    }
}

impl Prepared {
    /// `count` measured transactions at `rate` per second.
    pub async fn measure(&self, users: &Arc<Users>, rate: f64, count: u64, stop: &mut watch::Receiver<bool>) -> Phase {
        match self {
            Prepared::Register => register::measure(users, rate, count, stop).await,
            Prepared::Message(m) => message::measure(users, m, rate, count, stop).await,
            Prepared::Presence(p) => presence::measure(users, p, rate, count, stop).await,
            // The model's rates are its users' habits; its length is the run's duration.
            Prepared::Model(m) => model::measure(users, m, stop).await,
        }
    }
}

impl Prepared {
    /// What a scenario does after its measured transactions (ending its subscriptions).
    pub async fn teardown(&self, users: &Arc<Users>, stop: &mut watch::Receiver<bool>) {
        match self {
            Prepared::Presence(p) => presence::teardown(users, &p.dialogs, stop).await,
            Prepared::Model(m) => presence::teardown(users, &m.dialogs, stop).await,
            Prepared::Register | Prepared::Message(_) => {}
        }
    }
}

/// The measured phase of every scenario: `count` exchanges at `rate`, each made by
/// `exchange(i, due)` and counted as started, then finished (ok or not) with its latency.
pub async fn measured<F, Fut>(
    users: &Arc<Users>,
    rate: f64,
    count: u64,
    stop: &mut watch::Receiver<bool>,
    exchange: F,
) -> Phase
where
    F: Fn(u64, Instant) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    users.stats().begin();
    open_loop(rate, count, stop, |i, due| {
        let (users, run) = (users.clone(), exchange(i, due));
        async move {
            Counters::add(&users.stats().started);
            let ok = run.await;
            users.stats().finish(ok, due.elapsed());
        }
    })
    .await
}

/// Where an exchange's figures go: the whole exchange, and optionally each of its two steps.
#[derive(Clone, Copy)]
pub struct Kinds {
    pub whole: &'static str,
    /// (the first request, the one with credentials)
    pub steps: Option<(&'static str, &'static str)>,
}

/// Credentials a request carries: the header to put them in and its value.
pub type Credentials = (HeaderName, String);

/// Runs one exchange: `make(None)` is sent first; a 401/407 is answered by `make(Some(creds))`.
/// Latency of the whole exchange and of the first step count from `due`, the scheduled start;
/// the second step from when it was sent. Returns whether it ended in a 2xx.
#[allow(clippy::too_many_arguments)] // one exchange is described by all of them
pub async fn exchange(
    stats: &Stats,
    endpoint: &Endpoint,
    account: &Account,
    method: &str,
    uri: &str,
    due: Instant,
    kinds: Kinds,
    make: impl Fn(Option<&Credentials>) -> (Message, String),
) -> bool {
    exchange_for(stats, endpoint, account, method, uri, due, kinds, make).await.is_some()
}

/// How many times one request is tried again after a 503's Retry-After (`--retry-after`).
pub const RETRIES_AFTER_503: u32 = 8;

/// [`exchange`], returning the 2xx that ended it (`None` for any other end). With
/// `--retry-after`, a 503 that says when to come back is waited out and the exchange begun
/// again, its latency still counted from `due`: the time the user waited for service.
#[allow(clippy::too_many_arguments)] // one exchange is described by all of them
pub async fn exchange_for(
    stats: &Stats,
    endpoint: &Endpoint,
    account: &Account,
    method: &str,
    uri: &str,
    due: Instant,
    kinds: Kinds,
    make: impl Fn(Option<&Credentials>) -> (Message, String),
) -> Option<Message> {
    let mut retries = 0;
    loop {
        // The first step of a try counts from when it was due: the first try's is `due`.
        let first = if retries == 0 { due } else { Instant::now() };
        let (outcome, resp) = attempt(stats, endpoint, account, method, uri, first, kinds, &make).await;
        let wait = match (&outcome, &resp) {
            (Outcome::Status { code: 503, .. }, Some(r)) if endpoint.timers().retry_after => retry_after(r),
            _ => None,
        };
        match wait {
            Some(wait) if retries < RETRIES_AFTER_503 => {
                retries += 1;
                Counters::add(&stats.counters.retries_after_503);
                tokio::time::sleep(wait).await;
            }
            _ => {
                if matches!(outcome, Outcome::Status { code: 503, .. }) {
                    // Not tried again (not asked to, no usable Retry-After, or tried enough).
                    Counters::add(&stats.counters.unexpected);
                }
                stats.record(kinds.whole, due.elapsed(), outcome);
                return resp.filter(|_| matches!(outcome, Outcome::Status { ok: true, .. }));
            }
        }
    }
}

/// A response's Retry-After (RFC 3261 20.33: seconds, then an optional comment or parameters).
fn retry_after(r: &Message) -> Option<std::time::Duration> {
    let value = std::str::from_utf8(r.header(HeaderName::RetryAfter)?).ok()?.trim();
    let secs: u64 = value.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    // A run is bounded in time: no wait longer than five minutes.
    Some(std::time::Duration::from_secs(secs.min(300)))
}

/// One try of an exchange: its outcome and its final response, the steps recorded.
#[allow(clippy::too_many_arguments)] // one exchange is described by all of them
async fn attempt(
    stats: &Stats,
    endpoint: &Endpoint,
    account: &Account,
    method: &str,
    uri: &str,
    first: Instant,
    kinds: Kinds,
    make: &impl Fn(Option<&Credentials>) -> (Message, String),
) -> (Outcome, Option<Message>) {
    let record_step = |i: usize, since: Instant, outcome: Outcome| {
        if let Some(steps) = kinds.steps {
            stats.record(if i == 0 { steps.0 } else { steps.1 }, since.elapsed(), outcome);
        }
    };
    let (req, branch) = make(None);
    let challenge = match endpoint.transact(&req, &branch).await {
        TxResult::Final(r) => {
            let code = r.status().unwrap_or_default();
            match code {
                200..=299 => {
                    // Not challenged (a request over a connection the server already trusts).
                    record_step(0, first, Outcome::Status { code, ok: true });
                    return (Outcome::Status { code, ok: true }, Some(r));
                }
                401 | 407 => {
                    record_step(0, first, Outcome::Status { code, ok: true });
                    r
                }
                _ => {
                    // A 503 is judged by the caller, which may try again.
                    if code != 503 {
                        Counters::add(&stats.counters.unexpected);
                    }
                    record_step(0, first, Outcome::Status { code, ok: false });
                    return (Outcome::Status { code, ok: false }, Some(r));
                }
            }
        }
        TxResult::Timeout => {
            record_step(0, first, Outcome::Timeout);
            return (Outcome::Timeout, None);
        }
        TxResult::Failed => {
            record_step(0, first, Outcome::Error);
            return (Outcome::Error, None);
        }
    };
    let Some(creds) = sip::credentials(&challenge, method, uri, account) else {
        // A challenge we cannot answer (no Digest, unknown algorithm, malformed).
        Counters::add(&stats.counters.unexpected);
        return (Outcome::Status { code: challenge.status().unwrap_or_default(), ok: false }, None);
    };
    let sent = Instant::now();
    let (req, branch) = make(Some(&creds));
    let (outcome, resp) = match endpoint.transact(&req, &branch).await {
        TxResult::Final(r) => {
            let code = r.status().unwrap_or_default();
            let ok = (200..300).contains(&code);
            if !ok && code != 503 {
                Counters::add(&stats.counters.unexpected);
            }
            (Outcome::Status { code, ok }, Some(r))
        }
        TxResult::Timeout => (Outcome::Timeout, None),
        TxResult::Failed => (Outcome::Error, None),
    };
    record_step(1, sent, outcome);
    (outcome, resp)
}
