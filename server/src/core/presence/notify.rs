//! NOTIFY: the throttle (RFC 6446), the body each package sends (PIDF, watcherinfo, RLMI with
//! its parts), and the NOTIFY itself, a client transaction over the watcher's flow whose
//! failure ends the subscription (RFC 6665 4.2.2).

use super::rules::Decision;
use super::Presence;
use crate::ops::metrics as m;
use crate::state::subscriptions::{Grant, Package, Subscription};
use crate::transport::{Target, Transport};
use bytes::Bytes;
use sipfront_proto::presence::{pidf, rlmi, winfo};
use sipfront_proto::{HeaderName, Message, Method, Uri};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a list's partial state tells: members whose state changed, and (a group's list)
/// members it lost.
#[derive(Default)]
pub(super) struct Partial {
    changed: BTreeSet<Arc<str>>,
    removed: BTreeSet<Arc<str>>,
}

/// The RLMI instance id of a list member's one instance: the same in every NOTIFY, whatever
/// else joins or leaves the list, as partial state needs (RFC 4662).
fn instance_id(aor: &str) -> String {
    format!("r{:016x}", crate::core::pool::fnv1a(aor.bytes()))
}

/// The Subscription-State of a NOTIFY.
enum State<'a> {
    Current,
    Terminated(&'a str),
}

impl Presence {
    /// Sends `sub` a NOTIFY now if its last one is older than the interval, otherwise once
    /// the interval has passed, with whatever the state is then (changes in between coalesce).
    pub(super) fn schedule(self: &Arc<Self>, sub: &Arc<Subscription>, changed: Option<Arc<str>>) {
        let interval = Duration::from_millis(self.cfg.notify_interval_ms);
        let mut t = sub.throttle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = changed {
            t.dirty.insert(c);
        }
        if t.scheduled {
            metrics::counter!(m::NOTIFIES_COALESCED).increment(1);
            return;
        }
        let now = Instant::now();
        let due = t.last_sent.map_or(now, |l| l + interval);
        if due <= now {
            t.last_sent = Some(now);
            let partial = Partial { changed: std::mem::take(&mut t.dirty), removed: std::mem::take(&mut t.removed) };
            drop(t);
            self.send_current(sub, partial);
            return;
        }
        t.scheduled = true;
        drop(t);
        let (this, sub) = (self.clone(), sub.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let partial = {
                let mut t = sub.throttle.lock().unwrap_or_else(|p| p.into_inner());
                t.scheduled = false;
                t.last_sent = Some(Instant::now());
                Partial { changed: std::mem::take(&mut t.dirty), removed: std::mem::take(&mut t.removed) }
            };
            if this.subscriptions.get(sub.id).is_some() {
                this.send_current(&sub, partial);
            }
        });
    }

    /// The full state now (a new or refreshed subscription, a changed grant or list).
    pub(super) fn send_full(self: &Arc<Self>, sub: &Arc<Subscription>) {
        {
            // The full state tells whatever changed meanwhile.
            let mut t = sub.throttle.lock().unwrap_or_else(|p| p.into_inner());
            t.last_sent = Some(Instant::now());
            t.dirty.clear();
            t.removed.clear();
        }
        let (this, sub) = (self.clone(), sub.clone());
        tokio::spawn(async move {
            let mut full_sent = sub.notifying.lock().await;
            let body = this.body(&sub, None).await;
            this.send(&sub, State::Current, body);
            *full_sent = true;
        });
    }

    /// The last NOTIFY of a subscription (fetch, unsubscribe, expiry, rejection).
    pub(super) fn send_final(self: &Arc<Self>, sub: &Arc<Subscription>, reason: &'static str) {
        let (this, sub) = (self.clone(), sub.clone());
        tokio::spawn(async move {
            let _turn = sub.notifying.lock().await;
            let body = if reason == "rejected" { None } else { this.body(&sub, None).await };
            this.send(&sub, State::Terminated(reason), body);
        });
    }

    fn send_current(self: &Arc<Self>, sub: &Arc<Subscription>, partial: Partial) {
        let (this, sub) = (self.clone(), sub.clone());
        tokio::spawn(async move {
            let mut full_sent = sub.notifying.lock().await;
            // A list's partial state only follows its full state (RFC 4662).
            let partial = (sub.package == Package::List && *full_sent).then_some(partial);
            let body = this.body(&sub, partial).await;
            this.send(&sub, State::Current, body);
            *full_sent = true;
        });
    }

    /// The body for `sub` now: (Content-Type, bytes). A list sends only `partial` when given.
    async fn body(&self, sub: &Subscription, partial: Option<Partial>) -> Option<(String, Bytes)> {
        match sub.package {
            Package::Presence => Some((pidf::CONTENT_TYPE.to_string(), self.seen_as(sub.grant(), &sub.resource))),
            Package::Winfo => {
                let version = sub.version.fetch_add(1, Ordering::Relaxed);
                let watchers: Vec<winfo::Watcher> = self
                    .subscriptions
                    .watching(&sub.resource)
                    .iter()
                    .filter(|w| {
                        w.package == Package::Presence
                            && w.resource == sub.resource
                            && !w.watcher.starts_with(super::FEED_WATCHER)
                    })
                    .map(|w| {
                        let pending = w.grant() == Grant::Pending;
                        winfo::Watcher {
                            id: w.id.to_string(),
                            uri: format!("sip:{}", w.watcher),
                            display_name: None,
                            status: if pending { winfo::WatcherStatus::Pending } else { winfo::WatcherStatus::Active },
                            event: if pending { winfo::WatcherEvent::Subscribe } else { winfo::WatcherEvent::Approved },
                            duration_subscribed: None,
                        }
                    })
                    .collect();
                let doc = winfo::document(version, true, &format!("sip:{}", sub.resource), "presence", &watchers);
                Some((winfo::CONTENT_TYPE.to_string(), Bytes::from(doc)))
            }
            Package::List => Some(self.list_body(sub, partial).await),
        }
    }

    /// What a watcher with `grant` sees of `aor`.
    fn seen_as(&self, grant: Grant, aor: &str) -> Bytes {
        let entity = format!("sip:{aor}");
        match grant {
            Grant::Active => self.document(aor),
            Grant::Pending => Bytes::from(pidf::empty_document(&entity)),
            Grant::PoliteBlocked => Bytes::from(pidf::basic_document(&entity, false, None)),
        }
    }

    /// RFC 4662: multipart/related, the RLMI document first, then one PIDF per member the
    /// watcher may see; full state, or `partial`: the members that changed, and those a
    /// group's list lost (their instance terminated, RFC 4662).
    async fn list_body(&self, sub: &Subscription, partial: Option<Partial>) -> (String, Bytes) {
        let version = sub.version.fetch_add(1, Ordering::Relaxed);
        let members = sub.members.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // A contact list names its contacts as its owner wrote them; a group's, as the
        // directory does.
        let names = if sub.is_group() { None } else { self.rules.contacts(&sub.resource).await.ok() };
        let directory = self.gate.directory();
        let name_of = |aor: &str| match &names {
            Some(c) => c
                .iter()
                .find(|l| l.contact.eq_ignore_ascii_case(aor))
                .and_then(|l| l.name.as_deref().map(str::to_string)),
            None if sub.is_group() => directory.cached(aor).flatten().map(|u| u.display_name.clone()),
            None => None,
        };
        let mut resources = Vec::new();
        let mut parts: Vec<(String, Bytes)> = Vec::new();
        for aor in &members {
            if partial.as_ref().is_some_and(|p| !p.changed.contains(aor)) {
                continue;
            }
            let id = instance_id(aor);
            let state = match self.rules.decide(aor, &sub.watcher).await {
                Ok(Decision::Block) => rlmi::InstanceState::Terminated { reason: Some("rejected".into()) },
                Ok(Decision::Pending) => rlmi::InstanceState::Pending,
                Ok(d) => {
                    let grant = if d == Decision::PoliteBlock { Grant::PoliteBlocked } else { Grant::Active };
                    let cid = format!("{id}.{}.{version}@sipfront", sub.id);
                    parts.push((cid, self.seen_as(grant, aor)));
                    rlmi::InstanceState::Active
                }
                Err(_) => rlmi::InstanceState::Pending,
            };
            let cid = matches!(state, rlmi::InstanceState::Active).then(|| parts.last().map(|p| p.0.clone())).flatten();
            let name = name_of(aor).filter(|n| !n.is_empty());
            resources.push(rlmi::Resource {
                uri: format!("sip:{aor}"),
                name,
                instances: vec![rlmi::Instance { id, state, cid }],
            });
        }
        for aor in partial.iter().flat_map(|p| p.removed.iter()) {
            let state = rlmi::InstanceState::Terminated { reason: Some("noresource".into()) };
            resources.push(rlmi::Resource {
                uri: format!("sip:{aor}"),
                name: None,
                instances: vec![rlmi::Instance { id: instance_id(aor), state, cid: None }],
            });
        }
        let list =
            rlmi::Rlmi { uri: sub.dialog.resource_uri.clone(), version, full_state: partial.is_none(), resources };
        let doc = rlmi::document(&list);
        let rlmi_cid = format!("list.{}.{}@sipfront", sub.id, version);
        let body_parts: Vec<rlmi::BodyPart> = parts
            .iter()
            .map(|(cid, body)| rlmi::BodyPart { content_id: cid, content_type: pidf::CONTENT_TYPE, body })
            .collect();
        let (content_type, body) = rlmi::multipart_related(&rlmi_cid, &doc, &body_parts);
        (content_type, Bytes::from(body))
    }

    /// Sends one NOTIFY in the subscription's dialog; a failure ends the subscription.
    fn send(self: &Arc<Self>, sub: &Arc<Subscription>, state: State<'_>, body: Option<(String, Bytes)>) {
        let Some((ruri, target)) = self.notify_target(sub) else {
            // Its connection is gone: the subscription ends, unless it was restored after a
            // restart (a stream leg without a flow) and waits for its watcher's refresh on a
            // new connection, which a full NOTIFY answers.
            let leg = sub.dialog.leg();
            let restored = leg.transport.is_reliable() && leg.flow.is_none();
            if !restored && self.subscriptions.remove(sub.id).is_some() {
                self.watchers_changed(sub);
            }
            metrics::counter!(m::NOTIFIES, "result" => "unreachable").increment(1);
            return;
        };
        let d = &sub.dialog;
        let mut n = Message::request(Method::Notify, ruri);
        let sent_by = target.local.unwrap_or(d.local);
        n.push_header(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {sent_by};branch={}",
                target.transport.via_name(),
                crate::transaction::key::new_branch()
            ),
        );
        for r in &d.route_set {
            n.push_header(HeaderName::Route, r.clone());
        }
        n.push_header(HeaderName::MaxForwards, "70");
        n.push_header(HeaderName::From, format!("{};tag={}", d.our_uri, d.our_tag));
        n.push_header(HeaderName::To, d.their_from.clone());
        n.push_header(HeaderName::CallId, d.call_id.clone());
        n.push_header(HeaderName::CSeq, format!("{} NOTIFY", sub.next_cseq()));
        n.push_header(HeaderName::Contact, super::our_contact(d));
        let event = match sub.package {
            Package::Winfo => "presence.winfo",
            _ => "presence",
        };
        n.push_header(
            HeaderName::Event,
            match &sub.event_id {
                Some(id) => format!("{event};id={id}"),
                None => event.to_string(),
            },
        );
        let state_value = match state {
            State::Terminated(reason) => format!("terminated;reason={reason}"),
            State::Current => {
                let s = if sub.grant() == Grant::Pending { "pending" } else { "active" };
                format!("{s};expires={}", sub.remaining_secs())
            }
        };
        n.push_header(HeaderName::SubscriptionState, state_value);
        if sub.package == Package::List {
            n.push_header(HeaderName::Require, "eventlist");
        }
        n.push_header(HeaderName::UserAgent, self.agent.clone());
        // Written from the body when sent.
        n.push_header(HeaderName::ContentLength, "0");
        if let Some((ct, body)) = body {
            n.push_header(HeaderName::ContentType, ct);
            n.set_body(body.to_vec());
        }
        let client = self.txs.request(n, target);
        let (this, sub) = (self.clone(), sub.clone());
        tokio::spawn(async move {
            let code = client.final_response().await.and_then(|r| r.status()).unwrap_or(500);
            metrics::counter!(m::NOTIFIES, "result" => m::code_label(code)).increment(1);
            // RFC 6665 4.2.2: a 481, a timeout or another failure (but a challenge) ends it.
            if code >= 300 && code != 401 && code != 407 && this.subscriptions.remove(sub.id).is_some() {
                tracing::debug!(
                    watcher = &*sub.watcher,
                    resource = &*sub.resource,
                    code,
                    "subscription ended by its NOTIFY"
                );
                this.watchers_changed(&sub);
            }
        });
    }

    /// Where a NOTIFY goes: a GRUU of ours is resolved through our own bindings (RFC 5627);
    /// otherwise the watcher's flow, or over UDP its Contact's address. `None` once a stream
    /// watcher's connection is gone.
    fn notify_target(&self, sub: &Subscription) -> Option<(String, Target)> {
        let (remote_target, leg) = sub.dialog.target();
        if let Ok(uri) = Uri::parse(remote_target.as_bytes()) {
            if uri.params().get("gr").is_some() {
                let recipient = self.location.recipient(&uri)?;
                let b = self.location.targets(&recipient).into_iter().next()?;
                return Some((b.uri.to_string(), self.location.target_of(&b)));
            }
        }
        match leg.transport {
            Transport::Udp => Some((remote_target, leg)),
            _ => leg.flow.filter(|f| self.transports.flows.is_open(*f)).map(|_| (remote_target, leg)),
        }
    }
}
