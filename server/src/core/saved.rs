//! Dynamic state across a restart in place (issue 18, item 6): on a graceful stop a front end
//! that is alone (a single node) writes its bindings, publications and subscriptions to the
//! store, and takes them back when it starts, less the time it was down. A UDP user stays
//! reachable and a watcher keeps its NOTIFYs without re-subscribing. What came over a TCP or
//! TLS connection is restored unreachable (that connection is gone) until the client connects
//! and registers again, which it does at once when its connection drops. In a pool nothing is
//! saved: a draining member hands what it homes to the others, who hand it back when it returns.

use super::presence::Presence;
use crate::state::bindings::{Binding, Bindings};
use crate::state::subscriptions::{Dialog, Grant, Package, Subscription, Throttle};
use crate::transport::{Source, Target, Transport};
use serde::{Deserialize, Serialize};
use sipfront_proto::presence::pidf;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Serialize, Deserialize, Default)]
pub struct Saved {
    bindings: Vec<SavedBinding>,
    publications: Vec<SavedPublication>,
    subscriptions: Vec<SavedSubscription>,
}

#[derive(Serialize, Deserialize)]
struct SavedBinding {
    aor: String,
    uri: String,
    params: String,
    instance: Option<String>,
    reg_id: Option<u32>,
    call_id: String,
    cseq: u32,
    /// Seconds it had left when saved.
    left: u64,
    path: Vec<String>,
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    temp_gruu: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SavedPublication {
    aor: String,
    etag: String,
    left: u64,
    /// The document as PIDF.
    doc: String,
}

#[derive(Serialize, Deserialize)]
struct SavedSubscription {
    package: Package,
    resource: String,
    watcher: String,
    event_id: Option<String>,
    call_id: String,
    our_tag: String,
    our_uri: String,
    resource_uri: String,
    their_from: String,
    remote_target: String,
    route_set: Vec<String>,
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    cseq: u32,
    left: u64,
    grant: Grant,
    version: u32,
    members: Vec<String>,
}

impl Saved {
    /// What is live now.
    pub fn take(bindings: &Bindings, presence: &Presence) -> Saved {
        let now = Instant::now();
        let left = |at: Instant| at.saturating_duration_since(now).as_secs();
        let mut saved = Saved::default();
        for aor in bindings.aors() {
            for b in bindings.get(&aor) {
                saved.bindings.push(SavedBinding {
                    aor: aor.to_string(),
                    uri: b.uri.to_string(),
                    params: b.params.to_string(),
                    instance: b.instance.as_deref().map(str::to_string),
                    reg_id: b.reg_id,
                    call_id: b.call_id.to_string(),
                    cseq: b.cseq,
                    left: left(b.expires_at),
                    path: b.path.iter().map(|p| p.to_string()).collect(),
                    transport: b.source.transport,
                    remote: b.source.remote,
                    local: b.source.local,
                    temp_gruu: b.temp_gruu.as_deref().map(str::to_string),
                });
            }
        }
        for (aor, p) in presence.publications.all() {
            let entity = format!("sip:{aor}");
            let doc = pidf::compose(&entity, &[pidf::Source { doc: &p.doc, tag: "", newest_first_rank: 0 }]);
            saved.publications.push(SavedPublication {
                aor: aor.to_string(),
                etag: p.etag.to_string(),
                left: left(p.expires_at),
                doc,
            });
        }
        for sub in presence.subscriptions.all() {
            let d = &sub.dialog;
            let (remote_target, leg) = d.target();
            saved.subscriptions.push(SavedSubscription {
                package: sub.package,
                resource: sub.resource.to_string(),
                watcher: sub.watcher.to_string(),
                event_id: sub.event_id.clone(),
                call_id: d.call_id.clone(),
                our_tag: d.our_tag.clone(),
                our_uri: d.our_uri.clone(),
                resource_uri: d.resource_uri.clone(),
                their_from: d.their_from.clone(),
                remote_target,
                route_set: d.route_set.clone(),
                transport: leg.transport,
                remote: leg.remote,
                local: d.local,
                cseq: d.cseq.load(std::sync::atomic::Ordering::Relaxed),
                left: sub.remaining_secs(),
                grant: *sub.grant.lock().unwrap_or_else(|p| p.into_inner()),
                version: sub.version.load(std::sync::atomic::Ordering::Relaxed),
                members: sub.members.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|m| m.to_string()).collect(),
            });
        }
        saved
    }

    /// Puts back what is still live after `down` (how long ago it was saved): bindings (those
    /// of a connection unreachable until their client registers again), publications with
    /// their entity tags, subscriptions (over UDP as they were; over a connection, until the
    /// watcher's next refresh, a target refresh, moves them to its new connection). Returns how
    /// many of each.
    pub fn restore(self, down: Duration, bindings: &Bindings, presence: &Presence) -> (usize, usize, usize) {
        let now = Instant::now();
        let until = |left: u64| Duration::from_secs(left).checked_sub(down).map(|d| now + d);
        let mut counts = (0, 0, 0);
        for b in self.bindings {
            let Some(at) = until(b.left) else { continue };
            let binding = Binding {
                id: bindings.new_id(),
                uri: b.uri.into(),
                params: b.params.into(),
                instance: b.instance.map(Into::into),
                reg_id: b.reg_id,
                call_id: b.call_id.into(),
                cseq: b.cseq,
                expires_at: at,
                registered_at: now,
                path: b.path.into_iter().map(Into::into).collect(),
                // A connection's flow is gone with the process: no flow, unreachable.
                source: Source { transport: b.transport, remote: b.remote, local: b.local, flow: None },
                temp_gruu: b.temp_gruu.map(Into::into),
            };
            bindings.update(&b.aor, |v| v.push(binding));
            counts.0 += 1;
        }
        for p in self.publications {
            let Some(at) = until(p.left) else { continue };
            let Ok(doc) = pidf::parse(p.doc.as_bytes()) else { continue };
            presence.publications.create_as(&p.aor, doc, at, Some(&p.etag));
            counts.1 += 1;
        }
        for s in self.subscriptions {
            let Some(at) = until(s.left) else { continue };
            let leg = Target { transport: s.transport, remote: s.remote, flow: None, local: Some(s.local) };
            let sub = Subscription {
                id: presence.subscriptions.new_id(),
                package: s.package,
                resource: Arc::from(s.resource.as_str()),
                watcher: Arc::from(s.watcher.as_str()),
                event_id: s.event_id,
                dialog: Dialog {
                    call_id: s.call_id,
                    our_tag: s.our_tag,
                    our_uri: s.our_uri,
                    resource_uri: s.resource_uri,
                    their_from: s.their_from,
                    target: Mutex::new((s.remote_target, leg)),
                    route_set: s.route_set,
                    local: s.local,
                    cseq: AtomicU32::new(s.cseq),
                },
                expires_at: Mutex::new(at),
                grant: Mutex::new(s.grant),
                version: AtomicU32::new(s.version),
                members: Mutex::new(s.members.iter().map(|m| Arc::from(m.as_str())).collect()),
                throttle: Mutex::new(Throttle::default()),
                // Its watcher had the full state before the restart.
                notifying: tokio::sync::Mutex::new(true),
            };
            presence.subscriptions.insert(sub);
            counts.2 += 1;
        }
        counts
    }
}
