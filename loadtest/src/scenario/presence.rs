//! `presence`: every user registers, then watches the `watch` users after it (user i
//! SUBSCRIBEs to users i+1..i+watch, wrapping round), each subscription answered 200 with an
//! immediate NOTIFY. The measured transactions are PUBLISHes, users taken in turn: the first of
//! a user creates its publication, later ones modify it under its entity tag (RFC 3903), its
//! state flipping between open and closed; the server fans each change out as NOTIFYs to the
//! watchers, which answer 200 and count them (`notifies`, and per second `notify_rate`).

use super::{exchange, exchange_for, measured, Kinds};
use crate::schedule::{open_loop, Phase};
use crate::sip::{self, Exchange};
use crate::stats::{Counters, Outcome};
use crate::users::Users;
use sipfront_proto::{HeaderName, Method};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

pub const SUBSCRIBE: Kinds = Kinds { whole: "setup.subscribe", steps: None };
pub const MEASURED: Kinds = Kinds { whole: "publish", steps: Some(("publish.initial", "publish.auth")) };

/// Each user's current entity tag and how many times it published.
struct Publications(Vec<Mutex<(Option<String>, u64)>>);

/// What the measured PUBLISHes share.
pub struct Prepared {
    publications: Arc<Publications>,
}

pub async fn prepare(users: &Arc<Users>, stop: &mut watch::Receiver<bool>) -> Result<Prepared, Phase> {
    let n = users.len();
    super::register::register_all(users, stop).await?;
    let watch = users.config().watch;
    let subscribing = open_loop(users.config().setup_rate, (n * watch) as u64, stop, |j, due| {
        let users = users.clone();
        async move {
            let (watcher, k) = (j as usize / watch, j as usize % watch);
            subscribe(&users, watcher, (watcher + 1 + k) % n, due).await;
        }
    })
    .await;
    if subscribing.interrupted {
        return Err(Phase { started: 0, ..subscribing });
    }
    let counters = &users.stats().counters;
    // The set-up's NOTIFYs (one per subscription) come first, and apart from the measured ones.
    settle(counters, std::time::Duration::from_millis(500)).await;
    counters.notifies_before.store(Counters::get(&counters.notifies), std::sync::atomic::Ordering::Relaxed);
    Ok(Prepared { publications: Arc::new(Publications((0..n).map(|_| Mutex::new((None, 0))).collect())) })
}

pub async fn measure(
    users: &Arc<Users>,
    prepared: &Prepared,
    rate: f64,
    count: u64,
    stop: &mut watch::Receiver<bool>,
) -> Phase {
    let n = users.len();
    let counters = &users.stats().counters;
    let phase = measured(users, rate, count, stop, |i, due| {
        let (users, publications) = (users.clone(), prepared.publications.clone());
        async move { publish(&users, &publications, i as usize % n, due).await }
    })
    .await;
    // A server may hold changes back to throttle NOTIFYs (RFC 6446): wait for the last ones.
    if !phase.interrupted {
        settle(counters, std::time::Duration::from_millis(1500)).await;
    }
    phase
}

/// Waits until no NOTIFY has come for `quiet` (at most 10 s).
async fn settle(counters: &Counters, quiet: std::time::Duration) {
    let limit = Instant::now() + std::time::Duration::from_secs(10);
    let mut last = (Counters::get(&counters.notifies), Instant::now());
    while Instant::now() < limit && last.1.elapsed() < quiet {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = Counters::get(&counters.notifies);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

/// `watcher` subscribes to `presentity`'s presence (RFC 3856), with its own address as Contact.
async fn subscribe(users: &Users, watcher: usize, presentity: usize, due: Instant) -> bool {
    let stats = users.stats();
    let Some(endpoint) = users.endpoint(watcher).await else {
        stats.record(SUBSCRIBE.whole, due.elapsed(), Outcome::Error);
        return false;
    };
    let c = users.config();
    let (w, p) = (users.get(watcher), users.get(presentity));
    let uri = format!("sip:{}@{}", p.account.user, c.domain);
    let contact = format!("<sip:{}@{};transport={}>", w.account.user, endpoint.local(), c.transport.param());
    let (call_id, from_tag) = (sip::token(), sip::token());
    let make = |creds: Option<&super::Credentials>| {
        let branch = sip::branch();
        let x = Exchange {
            from: &w.account.user,
            to: &p.account.user,
            domain: &c.domain,
            from_tag: &from_tag,
            call_id: &call_id,
        };
        let cseq = if creds.is_some() { 2 } else { 1 };
        let mut m = sip::request(Method::Subscribe, &uri, &x, cseq, endpoint.local(), c.transport, &branch);
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Accept, "application/pidf+xml");
        m.push_header(HeaderName::Expires, c.expires.to_string());
        m.push_header(HeaderName::Contact, contact.clone());
        if let Some((name, value)) = creds {
            m.push_header(*name, value.clone());
        }
        m.push_header(HeaderName::ContentLength, "0");
        (m, branch)
    };
    exchange(stats, &endpoint, &w.account, "SUBSCRIBE", &uri, due, SUBSCRIBE, make).await
}

/// One PUBLISH by user `i`: initial, or a modification under the entity tag it holds.
async fn publish(users: &Users, publications: &Publications, i: usize, due: Instant) -> bool {
    let stats = users.stats();
    let Some(endpoint) = users.endpoint(i).await else {
        stats.record(MEASURED.whole, due.elapsed(), Outcome::Error);
        return false;
    };
    let c = users.config();
    let u = users.get(i);
    let (etag, nth) = {
        let mut p = publications.0[i].lock().unwrap_or_else(|e| e.into_inner());
        p.1 += 1;
        (p.0.clone(), p.1)
    };
    let uri = format!("sip:{}@{}", u.account.user, c.domain);
    let basic = if nth % 2 == 1 { "open" } else { "closed" };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{uri}\">\
         <tuple id=\"load\"><status><basic>{basic}</basic></status><note>change {nth}</note></tuple></presence>\n"
    );
    let (call_id, from_tag) = (sip::token(), sip::token());
    let make = |creds: Option<&super::Credentials>| {
        let branch = sip::branch();
        let x = Exchange {
            from: &u.account.user,
            to: &u.account.user,
            domain: &c.domain,
            from_tag: &from_tag,
            call_id: &call_id,
        };
        let cseq = if creds.is_some() { 2 } else { 1 };
        let mut m = sip::request(Method::Publish, &uri, &x, cseq, endpoint.local(), c.transport, &branch);
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Expires, c.expires.to_string());
        if let Some(t) = &etag {
            m.push_header(HeaderName::SipIfMatch, t.clone());
        }
        if let Some((name, value)) = creds {
            m.push_header(*name, value.clone());
        }
        m.push_header(HeaderName::ContentType, "application/pidf+xml");
        m.push_header(HeaderName::ContentLength, "0");
        m.set_body(body.as_bytes().to_vec());
        (m, branch)
    };
    let resp = exchange_for(stats, &endpoint, &u.account, "PUBLISH", &uri, due, MEASURED, make).await;
    let fresh = resp
        .as_ref()
        .and_then(|r| r.header(HeaderName::SipETag))
        .map(|t| String::from_utf8_lossy(t).trim().to_string());
    // A failed modification (412: the tag expired or is unknown) starts over with a new one.
    publications.0[i].lock().unwrap_or_else(|e| e.into_inner()).0 = fresh;
    resp.is_some()
}
