//! The presence server: PUBLISH (RFC 3903) of `application/pidf+xml`, SUBSCRIBE/NOTIFY (RFC
//! 6665, RFC 3856) with fetch, watcher authorization by the presentity's rules, watcher
//! information (RFC 3857/3858) and resource lists (RFC 4662): a user's stored contact list,
//! and a distribution group's members.
//! Every change fans out to the watchers through a throttle (RFC 6446) that coalesces rapid
//! changes into one NOTIFY per interval.

pub mod feeds;
mod notify;
pub mod rules;

use super::gate::Gate;
use super::location::Location;
use crate::config;
use crate::ops::metrics as m;
use crate::state::bindings::Bindings;
use crate::state::publications::{Publications, Updated};
use crate::state::subscriptions::{Dialog, Grant, Package, Subscription, Subscriptions, Throttle};
use crate::transaction::{Incoming, ServerTx, Transactions};
use crate::transport::{Transport, Transports};
use bytes::Bytes;
use dashmap::DashMap;
use rules::{Decision, Rules};
use sipfront_proto::presence::pidf;
use sipfront_proto::reply;
use sipfront_proto::{HeaderName, Message, Method, NameAddr, Uri};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Event packages served; the Allow-Events of every 489.
pub const ALLOW_EVENTS: &str = "presence, presence.winfo";

pub struct Presence {
    cfg: config::Presence,
    /// `groups.max_members_for_subscription`.
    max_group_members: usize,
    agent: String,
    pub publications: Publications,
    pub subscriptions: Subscriptions,
    rules: Rules,
    bindings: Arc<Bindings>,
    gate: Arc<Gate>,
    location: Arc<Location>,
    txs: Transactions,
    transports: Arc<Transports>,
    /// The composed document of each presentity, until it changes: one composition per change
    /// however many watchers it goes to.
    documents: DashMap<Arc<str>, Bytes>,
    /// Documents of presentities homed on other members, for the lists served here.
    feeds: Arc<feeds::Feeds>,
    /// Owners whose rules could not be read when they changed: their watchers see nothing
    /// until they are read, retried every [`RULES_RETRY`].
    unread_rules: Mutex<Vec<Arc<str>>>,
}

/// How often rules that could not be read (the store was down) are tried again.
const RULES_RETRY: Duration = Duration::from_secs(5);

/// The watcher name of another member's feed (see [`feeds`]): no user's, and never shown.
const FEED_WATCHER: &str = "pool:";
/// On a publication handed over between members (under the pool's seal): the entity tag it
/// had, to keep.
const HANDOVER_ETAG: &str = "X-Sipfront-ETag";

/// What follows the response to a SUBSCRIBE.
pub enum Followup {
    None,
    /// The NOTIFY with the current state (a new or refreshed subscription).
    Notify(Arc<Subscription>),
    /// The final NOTIFY of a fetch or an unsubscribe: current state, `terminated`.
    Final(Arc<Subscription>),
    /// The final NOTIFY of a subscription the presentity's rules no longer allow.
    Rejected(Arc<Subscription>),
}

impl Presence {
    #[allow(clippy::too_many_arguments)] // each is one service or setting presence works with
    pub fn new(
        cfg: config::Presence,
        max_group_members: usize,
        agent: String,
        store: Arc<dyn sipfront_storage::Store>,
        store_timeout: Duration,
        gate: Arc<Gate>,
        location: Arc<Location>,
        txs: Transactions,
    ) -> Presence {
        let policy = rules::Policy::parse(&cfg.default_policy);
        let transports = txs.transports().clone();
        let feeds = Arc::new(feeds::Feeds::new(location.pool().clone(), txs.clone()));
        Presence {
            feeds,
            rules: Rules::new(store, store_timeout, policy, {
                let gate = gate.clone();
                move |domain: &str| gate.serves(domain)
            }),
            cfg,
            max_group_members,
            agent,
            publications: Publications::default(),
            subscriptions: Subscriptions::default(),
            bindings: location.bindings().clone(),
            gate,
            location,
            txs,
            transports,
            documents: DashMap::new(),
            unread_rules: Mutex::default(),
        }
    }

    /// Publications and subscriptions expiring, and the store's changes of users' rules and
    /// contact lists (`changes`) applied to live subscriptions; runs until dropped.
    pub async fn run(self: &Arc<Self>, mut changes: tokio::sync::broadcast::Receiver<Arc<str>>) {
        let ended_publication = |aor: &str| self.changed(aor);
        let ended_subscription = |sub: Arc<Subscription>| {
            self.watchers_changed(&sub);
            self.send_final(&sub, "timeout");
        };
        let follow_changes = async {
            loop {
                match changes.recv().await {
                    Ok(aor) => self.rules_changed(&aor).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Which owners changed is lost (a bulk import): every cached rule and
                        // list is dropped, and every live subscription is authorized anew.
                        tracing::warn!(missed = n, "presence fell behind the change log; reloading every rule");
                        self.rules.forget_all();
                        let subs = self.subscriptions.all();
                        for owner in dedup(subs.iter().flat_map(|s| [s.resource.clone(), s.watcher.clone()])) {
                            self.rules_changed(&owner).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        let retry_unread_rules = async {
            let mut every = tokio::time::interval(RULES_RETRY);
            loop {
                every.tick().await;
                let owners: Vec<Arc<str>> =
                    std::mem::take(&mut *self.unread_rules.lock().unwrap_or_else(|p| p.into_inner()));
                for owner in owners {
                    self.rules_changed(&owner).await;
                }
            }
        };
        let tend_feeds = async {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                self.tend_feeds();
            }
        };
        let follow_groups = async {
            let mut changes = self.gate.directory().groups().changes();
            while changes.changed().await.is_ok() {
                self.groups_changed().await;
            }
        };
        tokio::join!(
            follow_groups,
            self.publications.run_expiry(ended_publication),
            self.subscriptions.run_expiry(ended_subscription),
            follow_changes,
            retry_unread_rules,
            tend_feeds
        );
    }

    /// PUBLISH, or a SUBSCRIBE that starts a subscription: from one of our users,
    /// authenticated like any of their requests.
    pub async fn handle(self: &Arc<Self>, req: Incoming, tx: ServerTx) {
        if let Some(member) = req.relayed.as_ref().filter(|r| r.feed).map(|r| format!("{FEED_WATCHER}{}", r.member)) {
            // Another member's feed of a presentity homed here: granted, its lists' owners'
            // rules are applied there.
            if req.msg.method() != Some(&Method::Subscribe) {
                return tx.respond(reply::response(&req.msg, 403, &self.agent));
            }
            let (resp, followup) = self.subscribe(&req, &member, true).await;
            tx.respond(resp);
            return self.follow(followup);
        }
        let sender = match self.gate.sender(&req).await {
            Ok(sender) => sender,
            Err(refusal) => return tx.respond(refusal),
        };
        if req.msg.method() == Some(&Method::Publish) {
            if self.gate.foreign_domain(&req.msg).is_some() {
                // Our users' presence is served here, to partners' watchers too: a PUBLISH is
                // never sent out (issue 20).
                let mut r = reply::response(&req.msg, 403, &self.agent);
                r.set_reason("Forbidden (a publication is never sent to a partner domain)");
                return tx.respond(r);
            }
            // A publication handed over by its presentity's former home keeps its entity tag,
            // so that its publisher's next refresh finds it here.
            let keep_etag = req
                .relayed
                .as_ref()
                .filter(|r| r.replay)
                .and_then(|_| req.msg.header_named(HANDOVER_ETAG))
                .map(|t| String::from_utf8_lossy(t).into_owned());
            let resp = match self.gate.callee(&req.msg).await {
                Ok(to) => self.publish(&req.msg, sender.as_str(), to.aor.as_str(), keep_etag.as_deref()),
                Err(refusal) => refusal,
            };
            return tx.respond(resp);
        }
        let (resp, followup) = self.subscribe(&req, sender.as_str(), false).await;
        tx.respond(resp);
        self.follow(followup);
    }

    /// The subscription of ours an in-dialog SUBSCRIBE names (by Call-ID and our tag), if any;
    /// otherwise the dialog may be one the proxy knows.
    pub fn subscription_of(&self, msg: &Message) -> Option<Arc<Subscription>> {
        let call_id = String::from_utf8_lossy(msg.call_id()?).into_owned();
        let our_tag = msg.to().and_then(|t| t.tag().map(|t| String::from_utf8_lossy(t).into_owned()))?;
        self.subscriptions.by_dialog(&call_id, &our_tag)
    }

    /// A SUBSCRIBE inside `sub`'s dialog: a refresh, or with Expires 0 its end.
    pub async fn refresh(self: &Arc<Self>, req: Incoming, tx: ServerTx, sub: Arc<Subscription>) {
        let (resp, followup) = self.resubscribe(&req, sub).await;
        tx.respond(resp);
        self.follow(followup);
    }

    /// The Expires a PUBLISH or SUBSCRIBE asks, as granted: `Err` with the refusal (400 for
    /// a value that is not a number, 423 with Min-Expires for too short).
    #[allow(clippy::result_large_err)] // the refusal is what the caller sends next
    fn expires(&self, msg: &Message) -> Result<u32, Message> {
        let asked = match msg.expires() {
            None => self.cfg.default_expires,
            Some(Ok(e)) => e,
            Some(Err(_)) => {
                let mut r = reply::response(msg, 400, &self.agent);
                r.set_reason("Bad Request (Expires is not a number)");
                return Err(r);
            }
        };
        if asked != 0 && asked < self.cfg.min_expires {
            let mut r = reply::response(msg, 423, &self.agent);
            r.push_header(HeaderName::MinExpires, self.cfg.min_expires.to_string());
            return Err(r);
        }
        Ok(asked.min(self.cfg.max_expires))
    }

    fn bad_event(&self, msg: &Message) -> Message {
        let mut r = reply::response(msg, 489, &self.agent);
        r.push_header(HeaderName::AllowEvents, ALLOW_EVENTS);
        r
    }

    fn count_publish(result: &'static str) {
        metrics::counter!(m::PUBLISHES, "result" => result).increment(1);
    }

    /// PUBLISH by `publisher` (authenticated) for the presentity `presentity` (RFC 3903 6).
    fn publish(self: &Arc<Self>, msg: &Message, publisher: &str, presentity: &str, keep_etag: Option<&str>) -> Message {
        let agent = &self.agent;
        let refuse = |code: u16, reason: Option<&str>| {
            Self::count_publish(m::code_label(code));
            let mut r = reply::response(msg, code, agent);
            if let Some(reason) = reason {
                r.set_reason(reason.to_string());
            }
            r
        };
        if !msg.event().is_some_and(|e| e.is("presence")) {
            Self::count_publish("489");
            return self.bad_event(msg);
        }
        if !publisher.eq_ignore_ascii_case(presentity) {
            return refuse(403, Some("Forbidden (only the presentity publishes its presence)"));
        }
        let expires = match self.expires(msg) {
            Ok(e) => e,
            Err(r) => {
                Self::count_publish(m::code_label(r.status().unwrap_or(400)));
                return r;
            }
        };
        let doc = if msg.body().is_empty() {
            None
        } else {
            let ct = msg.content_type().map(|c| sipfront_proto::scan::split_params(c).0);
            if !ct.is_some_and(|c| c.eq_ignore_ascii_case(pidf::CONTENT_TYPE.as_bytes())) {
                let mut r = refuse(415, None);
                r.push_header(HeaderName::Accept, pidf::CONTENT_TYPE);
                return r;
            }
            match pidf::parse(msg.body()) {
                Err(e) => return refuse(400, Some(&format!("Bad Request (PIDF: {e})"))),
                Ok(d) if !d.entity_aor().is_some_and(|a| a.eq_ignore_ascii_case(presentity)) => {
                    return refuse(400, Some("Bad Request (the PIDF entity is another AOR)"));
                }
                Ok(d) => Some(d),
            }
        };
        let at = Instant::now() + Duration::from_secs(u64::from(expires));
        let if_match = msg
            .header(HeaderName::SipIfMatch)
            .map(|t| String::from_utf8_lossy(sipfront_proto::scan::trim(t)).into_owned());
        let (etag, result) = match (if_match, doc) {
            (None, None) => return refuse(400, Some("Bad Request (initial PUBLISH without a body)")),
            (None, Some(_)) if expires == 0 => {
                return refuse(400, Some("Bad Request (Expires 0 without SIP-If-Match)"))
            }
            (None, Some(_)) if self.publications.count_of(presentity) >= self.cfg.max_publications_per_presentity => {
                metrics::counter!(m::OVER_CAPACITY, "table" => "publications").increment(1);
                return refuse(403, Some("Forbidden (too many publications)"));
            }
            (None, Some(doc)) => (Some(self.publications.create_as(presentity, doc, at, keep_etag)), "created"),
            (Some(tag), doc) => {
                let (changes, result) = match (&doc, expires) {
                    (_, 0) => (true, "removed"),
                    (Some(_), _) => (true, "modified"),
                    (None, _) => (false, "refreshed"),
                };
                let when = (expires > 0).then_some(at);
                match self.publications.update(presentity, &tag, doc, when) {
                    Updated::UnknownTag => return refuse(412, None),
                    Updated::Removed => (None, result),
                    Updated::Tag(t) if changes => (Some(t), result),
                    Updated::Tag(t) => {
                        Self::count_publish(result);
                        return self.published(msg, Some(t), expires);
                    }
                }
            }
        };
        Self::count_publish(result);
        self.changed(presentity);
        self.published(msg, etag, expires)
    }

    fn published(&self, msg: &Message, etag: Option<Arc<str>>, expires: u32) -> Message {
        let mut r = reply::response(msg, 200, &self.agent);
        if let Some(t) = etag {
            r.push_header(HeaderName::SipETag, t.to_string());
        }
        r.push_header(HeaderName::Expires, expires.to_string());
        r
    }

    /// An initial SUBSCRIBE from `watcher` (authenticated) to `target` (the AOR its
    /// Request-URI names; a list URI names its owner's list).
    async fn subscribe(self: &Arc<Self>, req: &Incoming, watcher: &str, feed: bool) -> (Message, Followup) {
        let msg = &req.msg;
        let agent = &self.agent;
        let refuse = |code: u16, reason: &str| {
            let mut r = reply::response(msg, code, agent);
            if !reason.is_empty() {
                r.set_reason(reason.to_string());
            }
            (r, Followup::None)
        };
        let package = match msg.event() {
            Some(e) if e.is("presence") => Package::Presence,
            Some(e) if e.is("presence.winfo") => Package::Winfo,
            _ => return (self.bad_event(msg), Followup::None),
        };
        let expires = match self.expires(msg) {
            Ok(e) => e,
            Err(r) => return (r, Followup::None),
        };
        let Some(uri) = msg.request_uri().and_then(|u| Uri::parse(u).ok()) else { return refuse(400, "") };
        let Some(recipient) = self.location.recipient(&uri) else { return refuse(404, "") };
        let resource: String;
        let mut package = package;
        let list_owner = (recipient.aor.user().strip_suffix(self.cfg.list_suffix.as_str()))
            .map(|owner| format!("{owner}@{}", recipient.aor.domain()));
        let group = (package == Package::Presence)
            .then(|| self.gate.directory().groups().named(recipient.aor.as_str()))
            .flatten();
        if (list_owner.is_some() || group.is_some()) && package == Package::Presence {
            // RFC 4662: a list is only sent to a subscriber that supports eventlist.
            if !msg.list_has(HeaderName::Supported, "eventlist") {
                let (mut r, f) = refuse(421, "");
                r.push_header(HeaderName::Require, "eventlist");
                return (r, f);
            }
        }
        if let Some(group) = group {
            // A group's members are watched by its own domain's users (as the directory
            // expands it for them), each member's rules applied to the watcher.
            if !sipfront_proto::Aor::domain_of(watcher).eq_ignore_ascii_case(sipfront_proto::Aor::domain_of(&group)) {
                return refuse(403, "Forbidden (a group is watched by its own domain's users)");
            }
            resource = group.to_string();
            package = Package::List;
        } else if let (Some(owner), Package::Presence) = (list_owner, package) {
            if !owner.eq_ignore_ascii_case(watcher) {
                return refuse(403, "Forbidden (a contact list is its owner's)");
            }
            // The watcher as authenticated: the account's own spelling.
            resource = watcher.to_string();
            package = Package::List;
        } else {
            // The presentity is one of our users, enabled, named by its account's spelling
            // whatever the case of the Request-URI: its rules are keyed so (finding 5).
            match self.gate.callee(msg).await {
                Ok(account) => resource = account.aor.as_str().to_string(),
                Err(refusal) => return (refusal, Followup::None),
            }
        }
        if package == Package::Winfo && !resource.eq_ignore_ascii_case(watcher) {
            return refuse(403, "Forbidden (only the presentity watches its watchers)");
        }
        if feed && package != Package::Presence {
            return refuse(403, "");
        }
        if !feed && expires > 0 && self.subscriptions.held_by(watcher) >= self.cfg.max_subscriptions_per_watcher {
            return refuse(403, "Forbidden (too many subscriptions)");
        }
        // A partner's users together: one partner cannot fill the table, whatever number of
        // watchers it claims.
        let domain = sipfront_proto::Aor::domain_of(watcher);
        if !feed
            && expires > 0
            && !self.gate.serves(domain)
            && self.subscriptions.held_by_domain(domain) >= self.cfg.max_subscriptions_per_partner
        {
            metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "in", "result" => "over_subscriptions")
                .increment(1);
            return refuse(403, "Forbidden (too many subscriptions from that domain)");
        }
        let grant = match package {
            Package::Presence if feed => Grant::Active,
            Package::Presence => match self.rules.decide(&resource, watcher).await.map(Decision::grant) {
                Ok(Some(grant)) => grant,
                Ok(None) => return refuse(403, ""),
                Err(_) => {
                    let (mut r, f) = refuse(503, "");
                    r.push_header(HeaderName::RetryAfter, "5");
                    return (r, f);
                }
            },
            Package::List | Package::Winfo => Grant::Active,
        };
        let groups_version = self.gate.directory().groups().version();
        let members = match package {
            Package::List if resource != watcher => match self.group_members(&resource).await {
                Ok(members) => members,
                Err(403) => {
                    let reason = format!("Forbidden (the group has more than {} members)", self.max_group_members);
                    return refuse(403, &reason);
                }
                Err(code) => return refuse(code, ""),
            },
            Package::List => match self.rules.contacts(&resource).await {
                Ok(c) => c.iter().map(|l| l.contact.clone()).collect(),
                Err(_) => return refuse(503, ""),
            },
            _ => Vec::new(),
        };
        let our_tag = reply::new_tag();
        let Some(dialog) = dialog_of(req, &our_tag, &uri) else { return refuse(400, "Bad Request (no Contact)") };
        let sub = Subscription {
            id: self.subscriptions.new_id(),
            package,
            resource: Arc::from(resource.as_str()),
            watcher: Arc::from(watcher),
            event_id: msg.event().and_then(|e| e.id()).map(|i| String::from_utf8_lossy(i).into_owned()),
            dialog,
            expires_at: Mutex::new(Instant::now() + Duration::from_secs(u64::from(expires))),
            grant: Mutex::new(grant),
            version: AtomicU32::new(0),
            members: Mutex::new(members),
            throttle: Mutex::new(Throttle::default()),
            notifying: tokio::sync::Mutex::new(false),
        };
        let mut r = reply::response(msg, 200, agent);
        // Our tag, so that the watcher's refreshes find the dialog.
        r.remove_headers(HeaderName::To);
        r.push_header(
            HeaderName::To,
            format!("{};tag={our_tag}", String::from_utf8_lossy(msg.header(HeaderName::To).unwrap_or_default())),
        );
        r.push_header(HeaderName::Expires, expires.to_string());
        r.push_header(HeaderName::Contact, our_contact(&sub.dialog));
        // RFC 3261 12.1.1: the response that establishes the dialog carries the request's
        // Record-Route, so that the watcher's route set (a partner's edges, say) matches ours.
        for rr in msg.header_all(HeaderName::RecordRoute) {
            r.push_header(HeaderName::RecordRoute, rr.to_vec());
        }
        if package == Package::List {
            r.push_header(HeaderName::Require, "eventlist");
        }
        if expires == 0 {
            // A fetch (RFC 6665 4.4.3): one NOTIFY with the state, nothing kept.
            return (r, Followup::Final(Arc::new(sub)));
        }
        let sub = self.subscriptions.insert(sub);
        if package == Package::Presence {
            self.watchers_changed(&sub);
        }
        if sub.is_group() && self.gate.directory().groups().version() != groups_version {
            // The group changed while this subscription was made: its members are read again.
            let this = self.clone();
            tokio::spawn(async move { this.groups_changed().await });
        }
        (r, Followup::Notify(sub))
    }

    /// The members of group `group` a subscription shows: `Err` with the status refusing it
    /// (404 no such group, 403 more than `groups.max_members_for_subscription`, 503 the store
    /// did not answer).
    async fn group_members(&self, group: &str) -> Result<Vec<Arc<str>>, u16> {
        match self.gate.directory().group(group).await {
            Ok(Some(g)) if g.truncated || g.members.len() > self.max_group_members => Err(403),
            Ok(Some(g)) => Ok(g.members.clone()),
            Ok(None) => Err(404),
            Err(_) => Err(503),
        }
    }

    /// Groups changed: each group watched here is read again, and its subscriptions get the
    /// members it gained and lost as partial state (RFC 4662: a removed resource's
    /// instance terminated); a group gone, or grown past the limit, ends them.
    pub async fn groups_changed(self: &Arc<Self>) {
        for (group, subs) in self.subscriptions.groups() {
            let now = match self.group_members(&group).await {
                Ok(members) => members,
                Err(503) => {
                    tracing::warn!(group = &*group, "group not read after a change; its watchers keep its old members");
                    continue;
                }
                Err(code) => {
                    let reason = if code == 404 { "noresource" } else { "rejected" };
                    for sub in subs {
                        if self.subscriptions.remove(sub.id).is_some() {
                            self.send_final(&sub, reason);
                        }
                    }
                    continue;
                }
            };
            let has: std::collections::HashSet<&str> = now.iter().map(|m| &**m).collect();
            for sub in subs {
                let before = sub.members.lock().unwrap_or_else(|p| p.into_inner()).clone();
                // Ended meanwhile: nothing to index again under its id.
                if before == now || self.subscriptions.get(sub.id).is_none() {
                    continue;
                }
                let had: std::collections::HashSet<&str> = before.iter().map(|m| &**m).collect();
                self.subscriptions.set_members(&sub, now.clone());
                {
                    let mut t = sub.throttle.lock().unwrap_or_else(|p| p.into_inner());
                    for m in now.iter().filter(|m| !had.contains(&***m)) {
                        t.removed.remove(m);
                        t.dirty.insert(m.clone());
                    }
                    for m in before.iter().filter(|m| !has.contains(&***m)) {
                        t.dirty.remove(m);
                        t.removed.insert(m.clone());
                    }
                }
                self.schedule(&sub, None);
            }
        }
        self.tend_feeds();
    }

    /// A SUBSCRIBE inside `sub`'s dialog. Only the subscriber may send it, proven as for a new
    /// subscription (its connection, or credentials), and a refresh is authorized anew: a
    /// watcher blocked or disabled since keeps watching no longer (issue 17, finding 3).
    async fn resubscribe(self: &Arc<Self>, req: &Incoming, sub: Arc<Subscription>) -> (Message, Followup) {
        let msg = &req.msg;
        let refuse = |code: u16| (reply::response(msg, code, &self.agent), Followup::None);
        // RFC 3261 12.2.2: the dialog is the Call-ID and both tags; a request with our tag but
        // another From tag is not of this dialog.
        let their_tag =
            NameAddr::parse(sub.dialog.their_from.as_bytes()).ok().and_then(|f| f.tag().map(<[u8]>::to_vec));
        if msg.from().and_then(|f| f.tag()) != their_tag.as_deref() {
            return refuse(481);
        }
        let expires = match self.expires(msg) {
            Ok(e) => e,
            Err(r) => return (r, Followup::None),
        };
        // Ending it needs no proof when it comes on the subscription's own leg (its connection,
        // or for UDP its address), as the watcher's NOTIFYs go; what extends it does.
        let on_its_leg = || {
            let leg = sub.dialog.leg();
            req.relayed.is_none()
                && req.source.transport == leg.transport
                && req.source.flow.map_or(req.source.remote == leg.remote, |f| leg.flow == Some(f))
        };
        if sub.watcher.starts_with(FEED_WATCHER) {
            // Another member's feed: refreshed by that member only, under the pool's seal.
            let member = req.relayed.as_ref().filter(|r| r.feed).map(|r| format!("{FEED_WATCHER}{}", r.member));
            if member.as_deref() != Some(&*sub.watcher) {
                return refuse(403);
            }
        } else if !(expires == 0 && on_its_leg()) {
            match self.gate.sender(req).await {
                Ok(sender) if sender == *sub.watcher => {}
                Ok(_) => return refuse(403),
                Err(refusal) => return (refusal, Followup::None),
            }
        }
        let mut r = reply::response(msg, 200, &self.agent);
        r.push_header(HeaderName::Expires, expires.to_string());
        r.push_header(HeaderName::Contact, our_contact(&sub.dialog));
        if expires == 0 {
            self.subscriptions.remove(sub.id);
            self.watchers_changed(&sub);
            return (r, Followup::Final(sub));
        }
        if sub.package == Package::Presence && !sub.watcher.starts_with(FEED_WATCHER) {
            // The rules as they are now; unknown (the store is down) extends nothing.
            let grant = match self.rules.decide(&sub.resource, &sub.watcher).await.map(Decision::grant) {
                Ok(Some(grant)) => grant,
                Ok(None) => {
                    self.subscriptions.remove(sub.id);
                    self.watchers_changed(&sub);
                    return (reply::response(msg, 403, &self.agent), Followup::Rejected(sub));
                }
                Err(_) => {
                    let (mut r, f) = refuse(503);
                    r.push_header(HeaderName::RetryAfter, "5");
                    return (r, f);
                }
            };
            if std::mem::replace(&mut *sub.grant.lock().unwrap_or_else(|p| p.into_inner()), grant) != grant {
                self.watchers_changed(&sub);
            }
        }
        // A target refresh (RFC 6665 4.1.2.1): the watcher may be somewhere else now (a new
        // connection after ours restarted, a new NAT binding); relayed by a member, its leg is
        // that member's and stays.
        if req.relayed.is_none() {
            if let Some((remote_target, leg)) = target_of(req) {
                sub.dialog.retarget(remote_target, leg);
            }
        }
        self.subscriptions.refresh(&sub, Instant::now() + Duration::from_secs(u64::from(expires)));
        (r, Followup::Notify(sub))
    }

    /// After the response to a SUBSCRIBE went out.
    fn follow(self: &Arc<Self>, f: Followup) {
        match f {
            Followup::None => {}
            Followup::Notify(sub) => self.send_full(&sub),
            Followup::Final(sub) => self.send_final(&sub, "timeout"),
            Followup::Rejected(sub) => self.send_final(&sub, "rejected"),
        }
    }

    /// The presence of `aor` changed (a publication, or its registrations when it publishes
    /// nothing): every watcher hears of it, through the throttle.
    pub fn changed(self: &Arc<Self>, aor: &str) {
        self.documents.remove(aor);
        let watchers = self.subscriptions.watching(aor);
        metrics::histogram!(m::NOTIFY_FANOUT).record(watchers.len() as f64);
        let changed: Arc<str> = Arc::from(aor);
        for sub in watchers {
            self.schedule(&sub, Some(changed.clone()));
        }
    }

    /// The pool changed and the resources `stays` refuses now have their home elsewhere: each
    /// subscription to one ends with `deactivated`, so that its watcher subscribes again at
    /// once, at the new home (RFC 6665 4.1.3); their publications are dropped here.
    /// Returns the hand-overs of the publications under way.
    pub fn moved_away(self: &Arc<Self>, stays: impl Fn(&str) -> bool) -> Vec<tokio::task::JoinHandle<()>> {
        for sub in self.subscriptions.all() {
            if !stays(&sub.resource) && self.subscriptions.remove(sub.id).is_some() {
                self.send_final(&sub, "deactivated");
            }
        }
        let moved = self.publications.take_where(|aor| !stays(aor));
        moved.iter().filter_map(|(aor, publication)| self.hand_over(aor, publication)).collect()
    }

    /// Sends a publication whose presentity's home moved to that home, as a PUBLISH under the
    /// pool's seal with its entity tag and what is left of its lifetime.
    fn hand_over(&self, aor: &str, p: &crate::state::publications::Publication) -> Option<tokio::task::JoinHandle<()>> {
        let pool = self.location.pool();
        let home = pool.home_of(aor)?;
        let left = p.expires_at.saturating_duration_since(Instant::now()).as_secs();
        if left == 0 {
            return None;
        }
        let entity = format!("sip:{aor}");
        let body = pidf::compose(&entity, &[pidf::Source { doc: &p.doc, tag: &p.etag, newest_first_rank: 0 }]);
        let me = pool.address().to_string();
        let mut m = Message::request(Method::Publish, entity.clone());
        m.push_header(HeaderName::Via, format!("SIP/2.0/TCP {me};branch={}", crate::transaction::key::new_branch()));
        m.push_header(HeaderName::MaxForwards, "70");
        m.push_header(HeaderName::From, format!("<{entity}>;tag={}", reply::new_tag()));
        m.push_header(HeaderName::To, format!("<{entity}>"));
        m.push_header(HeaderName::CallId, format!("handover-{}", reply::new_tag()));
        m.push_header(HeaderName::CSeq, "1 PUBLISH");
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Expires, left.to_string());
        m.push_header_named(HANDOVER_ETAG, p.etag.to_string());
        m.push_header(HeaderName::ContentType, pidf::CONTENT_TYPE);
        m.set_body(body.into_bytes());
        m.ensure_content_length();
        let vouch = super::pool::hop::Vouch {
            member: pool.id().to_string(),
            client: None,
            identity: Some(aor.to_string()),
            replay: true,
            feed: false,
            partner: None,
            group: None,
        };
        pool.seal().sign(&mut m, &vouch);
        let (pool, txs, aor) = (pool.clone(), self.txs.clone(), aor.to_string());
        Some(tokio::spawn(async move {
            let flow = pool.connection_to(home.addr, Duration::from_secs(2)).await;
            let target = crate::transport::Target { transport: Transport::Tcp, remote: home.addr, flow, local: None };
            let code = txs.final_response(m, target).await.status();
            tracing::debug!(%aor, ?code, "publication handed over to its new home");
        }))
    }

    /// A NOTIFY of one of this member's feeds: kept, and the lists showing its presentity
    /// told; `None` if it is not one.
    pub fn feed_notify(self: &Arc<Self>, msg: &Message) -> Option<Message> {
        match self.feeds.notified(msg) {
            feeds::Notified::NotOurs => None,
            feeds::Notified::Changed(aor) => {
                self.changed(&aor);
                Some(reply::response(msg, 200, &self.agent))
            }
        }
    }

    /// Refreshes the feeds the lists here still show, ends the others, and shows again the
    /// presentities whose feed went (their home moved).
    pub fn tend_feeds(self: &Arc<Self>) {
        let subs = &self.subscriptions;
        let wanted = |aor: &str| subs.watching(aor).iter().any(|s| s.package == Package::List);
        for aor in self.feeds.tend(wanted) {
            self.changed(&aor);
        }
    }

    /// `aor`'s bindings changed: that is a change of presence only while it publishes nothing.
    pub fn registration_changed(self: &Arc<Self>, aor: &str) {
        if self.publications.of(aor).is_empty() {
            self.changed(aor);
        }
    }

    /// `owner`'s rules or contact list changed in the store: live subscriptions follow at once.
    async fn rules_changed(self: &Arc<Self>, owner: &str) {
        self.rules.forget(owner);
        for sub in self.subscriptions.involving(owner) {
            match sub.package {
                Package::Presence if &*sub.resource == owner && !sub.watcher.starts_with(FEED_WATCHER) => {
                    let grant = match self.rules.decide(owner, &sub.watcher).await.map(Decision::grant) {
                        Ok(Some(grant)) => grant,
                        Ok(None) => {
                            self.subscriptions.remove(sub.id);
                            self.watchers_changed(&sub);
                            self.send_final(&sub, "rejected");
                            continue;
                        }
                        Err(_) => {
                            // Fail closed: the rules may now block this watcher, so until they
                            // can be read it sees nothing (pending), and they are read again
                            // every RULES_RETRY.
                            let mut unread = self.unread_rules.lock().unwrap_or_else(|p| p.into_inner());
                            if !unread.iter().any(|o| &**o == owner) {
                                unread.push(Arc::from(owner));
                            }
                            Grant::Pending
                        }
                    };
                    let was = std::mem::replace(&mut *sub.grant.lock().unwrap_or_else(|p| p.into_inner()), grant);
                    if was != grant {
                        self.watchers_changed(&sub);
                        self.send_full(&sub);
                    }
                }
                Package::List if &*sub.watcher == owner && !sub.is_group() => {
                    if let Ok(c) = self.rules.contacts(owner).await {
                        self.subscriptions.set_members(&sub, c.iter().map(|l| l.contact.clone()).collect());
                        self.send_full(&sub);
                    }
                }
                _ => {}
            }
        }
        // Lists that show the owner see its new rules for them.
        let owner: Arc<str> = Arc::from(owner);
        for sub in self.subscriptions.watching(&owner).into_iter().filter(|s| s.package == Package::List) {
            self.schedule(&sub, Some(owner.clone()));
        }
    }

    /// A presence subscription came, changed or went: the presentity's winfo watchers hear.
    fn watchers_changed(self: &Arc<Self>, sub: &Subscription) {
        if sub.package != Package::Presence {
            return;
        }
        for w in self.subscriptions.winfo_of(&sub.resource) {
            self.send_full(&w);
        }
    }

    /// What `watcher` may see of `aor`'s presence now, as a directory search shows it: `None`
    /// when its rules leave the watcher pending or blocked (or cannot be read), and for a
    /// presentity homed on another member that no list here follows (its presence is kept
    /// there). A polite block shows `closed`, as it does in a NOTIFY.
    pub async fn seen_by(&self, aor: &str, watcher: &str) -> Option<Seen> {
        match self.rules.decide(aor, watcher).await.ok()? {
            Decision::Block | Decision::Pending => None,
            Decision::PoliteBlock => Some(Seen { open: false, note: None }),
            Decision::Allow if self.feeds.remote(aor) => summary(&self.feeds.known(aor)?),
            Decision::Allow => summary(&self.document(aor)),
        }
    }

    /// The composed PIDF of `aor` for an allowed watcher: its publications, or else its
    /// registration state; for a presentity homed on another member, what its feed brought
    /// (offline until it has).
    fn document(&self, aor: &str) -> Bytes {
        if let Some(d) = self.documents.get(aor) {
            return d.clone();
        }
        let entity = format!("sip:{aor}");
        if self.feeds.remote(aor) {
            return self
                .feeds
                .document(aor)
                .unwrap_or_else(|| Bytes::from(pidf::basic_document(&entity, false, Some("offline"))));
        }
        let pubs = self.publications.of(aor);
        let doc = if pubs.is_empty() {
            let online = !self.bindings.get(aor).is_empty();
            pidf::basic_document(&entity, online, (!online).then_some("offline"))
        } else {
            let sources: Vec<pidf::Source> = pubs
                .iter()
                .enumerate()
                .map(|(i, p)| pidf::Source { doc: &p.doc, tag: &p.etag, newest_first_rank: i })
                .collect();
            pidf::compose(&entity, &sources)
        };
        let doc = Bytes::from(doc);
        self.documents.insert(Arc::from(aor), doc.clone());
        doc
    }
}

/// What a search entry shows of a presentity: `open` if any tuple is, else `closed` if any
/// says; the note of the document, else of its first open tuple, else of any tuple.
fn summary(doc: &[u8]) -> Option<Seen> {
    let d = pidf::parse(doc).ok()?;
    let open = d.tuples.iter().any(|t| t.basic == Some(pidf::Basic::Open));
    if !open && !d.tuples.iter().any(|t| t.basic.is_some()) {
        return None;
    }
    let note = d.notes.first().cloned().or_else(|| {
        let open_note = d.tuples.iter().filter(|t| t.basic == Some(pidf::Basic::Open)).find_map(|t| t.note.clone());
        open_note.or_else(|| d.tuples.iter().find_map(|t| t.note.clone()))
    });
    Some(Seen { open, note })
}

/// A presentity's presence in a word: its basic status and a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub open: bool,
    pub note: Option<String>,
}

/// Each AOR once, in order.
fn dedup(aors: impl Iterator<Item = Arc<str>>) -> Vec<Arc<str>> {
    let mut seen = std::collections::HashSet::new();
    aors.filter(|a| seen.insert(a.to_ascii_lowercase())).collect()
}

/// The watcher's Contact URI in a SUBSCRIBE, and where NOTIFYs reach it: the flow it came on,
/// or over UDP its Contact's address.
fn target_of(req: &Incoming) -> Option<(String, crate::transport::Target)> {
    let sipfront_proto::Contact::Addr(contact) = req.msg.contacts().next()?.ok()? else { return None };
    let remote_target = String::from_utf8_lossy(contact.uri.raw()).into_owned();
    let mut leg = req.source.reply_target();
    if req.source.transport == Transport::Udp {
        leg.remote = super::location::contact_addr(&remote_target).unwrap_or(req.source.remote);
        leg.local = Some(req.source.local);
    }
    Some((remote_target, leg))
}

/// The dialog a SUBSCRIBE creates (RFC 3261 12.1.1, as a UAS).
fn dialog_of(req: &Incoming, our_tag: &str, uri: &Uri<'_>) -> Option<Dialog> {
    let msg = &req.msg;
    let target = target_of(req)?;
    let to = msg.to()?;
    Some(Dialog {
        call_id: String::from_utf8_lossy(msg.call_id()?).into_owned(),
        our_tag: our_tag.to_string(),
        our_uri: format!("<{}>", String::from_utf8_lossy(to.uri.raw())),
        resource_uri: format!(
            "{}:{}",
            String::from_utf8_lossy(uri.scheme()),
            String::from_utf8_lossy(uri_sans_params(uri))
        ),
        their_from: String::from_utf8_lossy(msg.header(HeaderName::From)?).into_owned(),
        target: Mutex::new(target),
        route_set: msg.header_all(HeaderName::RecordRoute).map(|v| String::from_utf8_lossy(v).into_owned()).collect(),
        local: req.source.local,
        cseq: AtomicU32::new(1),
    })
}

/// `user@host[:port]` of a URI, without parameters or headers.
fn uri_sans_params<'a>(uri: &Uri<'a>) -> &'a [u8] {
    let raw = uri.raw();
    let start = raw.iter().position(|&c| c == b':').map_or(0, |i| i + 1);
    let end = raw[start..].iter().position(|&c| c == b';' || c == b'?').map_or(raw.len(), |e| start + e);
    &raw[start..end]
}

/// The Contact of our side of a subscription dialog: where the watcher reached us.
fn our_contact(d: &Dialog) -> String {
    match d.leg().transport {
        Transport::Udp => format!("<sip:{}>", d.local),
        t => format!("<sip:{};transport={}>", d.local, t.via_name().to_ascii_lowercase()),
    }
}
