//! `presence`: the users are split into presentities (the first `--presentities`, by default
//! half) and watchers (the rest). Every user registers (the set-up); then each watcher
//! subscribes (RFC 3856), either to `--watch` K presentities one SUBSCRIBE each (watcher j
//! watches presentities j, j+1, ... j+K-1, wrapping round, so each has about K watchers), or
//! with `--resource-lists` once to its own list (RFC 4662, `sip:<user>+contacts@domain`,
//! whose members the server knows). The measured transactions are PUBLISHes by the
//! presentities in turn: the first creates a publication, later ones modify it under its entity
//! tag (RFC 3903), flipping between open and closed; the server fans each change out as
//! NOTIFYs, which the watchers answer 200 and count (by Subscription-State, and per second).

use super::{exchange, exchange_for, measured, Kinds};
use crate::config::Config;
use crate::schedule::{open_loop, Phase};
use crate::sip::{self, Exchange};
use crate::stats::{Counters, Outcome};
use crate::users::Users;
use sipfront_proto::{HeaderName, Method};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

pub const SUBSCRIBE: Kinds = Kinds { whole: "subscribe", steps: Some(("subscribe.initial", "subscribe.auth")) };
pub const UNSUBSCRIBE: Kinds = Kinds { whole: "unsubscribe", steps: None };
pub const MEASURED: Kinds = Kinds { whole: "publish", steps: Some(("publish.initial", "publish.auth")) };

/// How many of the users are presentities (the first ones); the others watch.
pub fn presentities(c: &Config) -> usize {
    c.presentities.unwrap_or(c.accounts.len() / 2)
}

/// The contact list behind each watcher's resource list, by user index: (watcher, the
/// presentities it watches).
pub fn contact_lists(c: &Config) -> Vec<(usize, Vec<usize>)> {
    let (n, p) = (c.accounts.len(), presentities(c));
    (0..n.saturating_sub(p)).map(|j| (p + j, (0..c.watch).map(|k| watched(j, k, p)).collect())).collect()
}

/// The presentity watcher number `j` (counted among the watchers) watches `k`-th.
pub fn watched(j: usize, k: usize, presentities: usize) -> usize {
    (j + k) % presentities
}

/// One user's publication: the entity tag the server gave it, and how many states it has
/// published.
#[derive(Default)]
pub struct Publication {
    etag: Option<String>,
    changes: u64,
}

/// Every user's publication. A user's PUBLISHes go one at a time, as a client's do: one that is
/// due while the last is unanswered waits for it (and its entity tag), its wait counted in its
/// latency, instead of racing it with a stale tag into a 412.
pub struct Publications(Vec<tokio::sync::Mutex<Publication>>);

impl Publications {
    pub fn new(users: usize) -> Publications {
        Publications((0..users).map(|_| tokio::sync::Mutex::default()).collect())
    }

    async fn lock(&self, i: usize) -> tokio::sync::MutexGuard<'_, Publication> {
        self.0[i % self.0.len()].lock().await
    }
}

/// What the measured PUBLISHes share, and the subscriptions to end afterwards.
pub struct Prepared {
    publications: Arc<Publications>,
    /// (watcher, its subscription)
    pub dialogs: Vec<(usize, Arc<Dialog>)>,
}

pub async fn prepare(users: &Arc<Users>, stop: &mut watch::Receiver<bool>) -> Result<Prepared, Phase> {
    let c = users.config();
    let (n, p) = (users.len(), presentities(c));
    super::register::register_all(users, stop).await?;
    let per_watcher = if c.resource_lists { 1 } else { c.watch };
    let (expires, lists) = (c.expires, c.resource_lists);
    let dialogs = Arc::new(Mutex::new(Vec::new()));
    let subscribing = open_loop(c.setup_rate, ((n - p) * per_watcher) as u64, stop, |s, due| {
        let users = users.clone();
        let (j, k) = (s as usize / per_watcher, s as usize % per_watcher);
        let target = if lists { Target::List } else { Target::Presentity(watched(j, k, p)) };
        let dialogs = dialogs.clone();
        async move {
            if let Some(d) = subscribe(&users, p + j, target, expires, due, SUBSCRIBE).await {
                dialogs.lock().unwrap_or_else(|e| e.into_inner()).push((p + j, Arc::new(d)));
            }
        }
    })
    .await;
    if subscribing.interrupted {
        return Err(Phase { started: 0, ..subscribing });
    }
    // The set-up's NOTIFYs (one per subscription) come first, and apart from the measured ones.
    settle(&users.stats().counters, std::time::Duration::from_millis(500)).await;
    let dialogs = std::mem::take(&mut *dialogs.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Prepared { publications: Arc::new(Publications::new(n)), dialogs })
}

/// After the run: every watcher ends its subscriptions (SUBSCRIBE with Expires 0 in each
/// dialog, `unsubscribe`), so that a server kept running is left without dead watchers that
/// it would go on notifying in the next run.
pub async fn teardown(users: &Arc<Users>, dialogs: &[(usize, Arc<Dialog>)], stop: &mut watch::Receiver<bool>) {
    let dialogs: Arc<[(usize, Arc<Dialog>)]> = dialogs.into();
    open_loop(users.config().setup_rate, dialogs.len() as u64, stop, |i, due| {
        let (users, dialogs) = (users.clone(), dialogs.clone());
        async move {
            let (watcher, dialog) = &dialogs[i as usize];
            resubscribe(&users, *watcher, dialog, 0, due, UNSUBSCRIBE).await;
        }
    })
    .await;
    settle(&users.stats().counters, std::time::Duration::from_millis(300)).await;
}

pub async fn measure(
    users: &Arc<Users>,
    prepared: &Prepared,
    rate: f64,
    count: u64,
    stop: &mut watch::Receiver<bool>,
) -> Phase {
    let p = presentities(users.config());
    let counters = &users.stats().counters;
    let phase = measured(users, rate, count, stop, |i, due| {
        let (users, publications) = (users.clone(), prepared.publications.clone());
        async move { publish(&users, &publications, i as usize % p, Change::Modify, due, MEASURED).await }
    })
    .await;
    // A server may hold changes back to throttle NOTIFYs (RFC 6446): wait for the last ones.
    if !phase.interrupted {
        settle(counters, std::time::Duration::from_millis(1500)).await;
    }
    phase
}

/// Waits until no NOTIFY has come for `quiet` (at most 10 s).
pub async fn settle(counters: &Counters, quiet: std::time::Duration) {
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

/// Where a SUBSCRIBE goes.
#[derive(Clone, Copy)]
pub enum Target {
    /// One presentity, by user index.
    Presentity(usize),
    /// The watcher's own resource list, `sip:<user><list suffix>@domain` (RFC 4662).
    List,
}

/// A subscription dialog as its subscriber holds it (RFC 6665 4.1.2): enough to refresh or
/// end it from inside the dialog.
pub struct Dialog {
    pub call_id: String,
    pub from_tag: String,
    /// The notifier's tag, from the 200.
    pub to_tag: String,
    /// Where in-dialog requests go: the Contact of the 200, else the original URI.
    pub remote_target: String,
    /// The resource, as the To header names it.
    pub to_user: String,
    cseq: AtomicU32,
}

/// `watcher` subscribes to `target`'s presence (RFC 3856) for `expires` seconds (0: a fetch,
/// RFC 6665 4.4.3), with its own address as Contact. The subscription's NOTIFYs are
/// answered 200 from before the SUBSCRIBE leaves. Returns the dialog on a 2xx.
pub async fn subscribe(
    users: &Users,
    watcher: usize,
    target: Target,
    expires: u32,
    due: Instant,
    kinds: Kinds,
) -> Option<Dialog> {
    let stats = users.stats();
    let Some(endpoint) = users.endpoint(watcher).await else {
        stats.record(kinds.whole, due.elapsed(), Outcome::Error);
        return None;
    };
    let c = users.config();
    let w = users.get(watcher);
    let to_user = match target {
        Target::Presentity(p) => users.get(p).account.user.clone(),
        Target::List => format!("{}{}", w.account.user, c.list_suffix),
    };
    let uri = format!("sip:{to_user}@{}", c.domain);
    let contact = format!("<sip:{}@{};transport={}>", w.account.user, endpoint.local(), c.transport.param());
    let (call_id, from_tag) = (sip::token(), sip::token());
    let sent = std::sync::atomic::AtomicU32::new(0);
    let make = |creds: Option<&super::Credentials>| {
        let branch = sip::branch();
        let x =
            Exchange { from: &w.account.user, to: &to_user, domain: &c.domain, from_tag: &from_tag, call_id: &call_id };
        // 1, then 2 with credentials; higher on each try after a 503 (RFC 3261 8.1.3.5).
        let cseq = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut m = sip::request(Method::Subscribe, &uri, &x, cseq, endpoint.local(), c.transport, &branch);
        m.push_header(HeaderName::Event, "presence");
        match target {
            Target::Presentity(_) => m.push_header(HeaderName::Accept, "application/pidf+xml"),
            Target::List => {
                m.push_header(HeaderName::Supported, "eventlist");
                m.push_header(HeaderName::Accept, "multipart/related, application/rlmi+xml, application/pidf+xml");
            }
        }
        m.push_header(HeaderName::Expires, expires.to_string());
        m.push_header(HeaderName::Contact, contact.clone());
        if let Some((name, value)) = creds {
            m.push_header(*name, value.clone());
        }
        m.push_header(HeaderName::ContentLength, "0");
        (m, branch)
    };
    endpoint.subscribing(&call_id, &from_tag);
    let resp = exchange_for(stats, &endpoint, &w.account, "SUBSCRIBE", &uri, due, kinds, make).await;
    let Some(resp) = resp else {
        endpoint.unsubscribed(&call_id);
        return None;
    };
    let to_tag = resp.to().and_then(|t| t.tag().map(|t| String::from_utf8_lossy(t).into_owned())).unwrap_or_default();
    let remote_target = match resp.contacts().next() {
        Some(Ok(sipfront_proto::Contact::Addr(a))) => String::from_utf8_lossy(a.uri.raw()).into_owned(),
        _ => uri,
    };
    Some(Dialog { call_id, from_tag, to_tag, remote_target, to_user, cseq: AtomicU32::new(2) })
}

/// A SUBSCRIBE inside `dialog`: a refresh for `expires` seconds, or with 0 its end (RFC 6665
/// 4.1.2.2, 4.1.2.3). Whether it got a 2xx.
pub async fn resubscribe(
    users: &Users,
    watcher: usize,
    dialog: &Dialog,
    expires: u32,
    due: Instant,
    kinds: Kinds,
) -> bool {
    let stats = users.stats();
    let Some(endpoint) = users.endpoint(watcher).await else {
        stats.record(kinds.whole, due.elapsed(), Outcome::Error);
        return false;
    };
    let c = users.config();
    let w = users.get(watcher);
    let contact = format!("<sip:{}@{};transport={}>", w.account.user, endpoint.local(), c.transport.param());
    let make = |creds: Option<&super::Credentials>| {
        let branch = sip::branch();
        let x = Exchange {
            from: &w.account.user,
            to: &dialog.to_user,
            domain: &c.domain,
            from_tag: &dialog.from_tag,
            call_id: &dialog.call_id,
        };
        let cseq = dialog.cseq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut m =
            sip::request(Method::Subscribe, &dialog.remote_target, &x, cseq, endpoint.local(), c.transport, &branch);
        m.set_to_tag(&dialog.to_tag);
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Expires, expires.to_string());
        m.push_header(HeaderName::Contact, contact.clone());
        if let Some((name, value)) = creds {
            m.push_header(*name, value.clone());
        }
        m.push_header(HeaderName::ContentLength, "0");
        (m, branch)
    };
    let ok = exchange(stats, &endpoint, &w.account, "SUBSCRIBE", &dialog.remote_target, due, kinds, make).await;
    if !ok {
        // 481 and the like: the notifier has forgotten it (RFC 6665 4.1.2.2); the NOTIFY with
        // `terminated` that ends a successful unsubscription forgets it on our side.
        endpoint.unsubscribed(&dialog.call_id);
    }
    ok
}

/// What a PUBLISH does to its publication (RFC 3903 4).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new state: initial without an entity tag, else a modification under it.
    Modify,
    /// Only a new expiry, no body, under the entity tag (an initial one if there is none).
    Refresh,
}

/// One PUBLISH by user `i`. A 2xx's SIP-ETag is kept for the next one; any failure (a 412
/// for a tag the server no longer knows) starts over with an initial PUBLISH.
pub async fn publish(
    users: &Users,
    publications: &Publications,
    i: usize,
    change: Change,
    due: Instant,
    kinds: Kinds,
) -> bool {
    let stats = users.stats();
    let Some(endpoint) = users.endpoint(i).await else {
        stats.record(kinds.whole, due.elapsed(), Outcome::Error);
        return false;
    };
    let c = users.config();
    let u = users.get(i);
    let mut p = publications.lock(i).await;
    if change == Change::Modify || p.etag.is_none() {
        p.changes += 1;
    }
    let (etag, nth) = (p.etag.clone(), p.changes);
    let refresh = change == Change::Refresh && etag.is_some();
    let uri = format!("sip:{}@{}", u.account.user, c.domain);
    let basic = if nth % 2 == 1 { "open" } else { "closed" };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{uri}\">\
         <tuple id=\"load\"><status><basic>{basic}</basic></status><note>change {nth}</note></tuple></presence>\n"
    );
    let (call_id, from_tag) = (sip::token(), sip::token());
    let sent = std::sync::atomic::AtomicU32::new(0);
    let make = |creds: Option<&super::Credentials>| {
        let branch = sip::branch();
        let x = Exchange {
            from: &u.account.user,
            to: &u.account.user,
            domain: &c.domain,
            from_tag: &from_tag,
            call_id: &call_id,
        };
        // 1, then 2 with credentials; higher on each try after a 503 (RFC 3261 8.1.3.5).
        let cseq = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut m = sip::request(Method::Publish, &uri, &x, cseq, endpoint.local(), c.transport, &branch);
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Expires, c.expires.to_string());
        if let Some(t) = &etag {
            m.push_header(HeaderName::SipIfMatch, t.clone());
        }
        if let Some((name, value)) = creds {
            m.push_header(*name, value.clone());
        }
        if refresh {
            m.push_header(HeaderName::ContentLength, "0");
        } else {
            m.push_header(HeaderName::ContentType, "application/pidf+xml");
            m.push_header(HeaderName::ContentLength, "0");
            m.set_body(body.as_bytes().to_vec());
        }
        (m, branch)
    };
    let resp = exchange_for(stats, &endpoint, &u.account, "PUBLISH", &uri, due, kinds, make).await;
    let fresh = resp
        .as_ref()
        .and_then(|r| r.header(HeaderName::SipETag))
        .map(|t| String::from_utf8_lossy(t).trim().to_string());
    p.etag = fresh;
    resp.is_some()
}
