//! Subscription dialogs (RFC 6665): who watches what, over which flow, until when, and where
//! each stands in the NOTIFY throttle. Indexed by id, by dialog, by the resources watched and
//! by watcher (for the per-watcher cap, and for finding what a user's changes touch without
//! looking at every subscription).

use super::expiry::DeadlineHeap;
use crate::transport::Target;
use dashmap::DashMap;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Package {
    /// `presence` of one presentity (RFC 3856).
    Presence,
    /// `presence` of every contact on a list, batched (RFC 4662).
    List,
    /// `presence.winfo`: the watchers of one's own presence (RFC 3857).
    Winfo,
}

/// What the presentity's rules grant the watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Grant {
    Pending,
    Active,
    /// Looks active, shows offline.
    PoliteBlocked,
}

/// The dialog's identifiers and route, as the NOTIFYs need them (RFC 3261 12.1.1).
pub struct Dialog {
    pub call_id: String,
    /// Our tag (the To tag we gave the SUBSCRIBE's response; From of our NOTIFYs).
    pub our_tag: String,
    /// The To of the SUBSCRIBE, without tag: the From of our NOTIFYs.
    pub our_uri: String,
    /// The resource's URI as subscribed (a list's URI in its RLMI).
    pub resource_uri: String,
    /// The From of the SUBSCRIBE, tag included: the To of our NOTIFYs.
    pub their_from: String,
    /// The watcher's Contact URI, and where NOTIFYs go (its flow, or its UDP address): set by
    /// the SUBSCRIBE, moved by each refresh (a target refresh request, RFC 6665 4.1.2.1).
    pub target: Mutex<(String, Target)>,
    /// Record-Route of the SUBSCRIBE, in order.
    pub route_set: Vec<String>,
    /// The address of ours the watcher reached: our Contact, and our Via over UDP.
    pub local: SocketAddr,
    pub cseq: AtomicU32,
}

impl Dialog {
    /// The watcher's Contact URI and where to reach it, now.
    pub fn target(&self) -> (String, Target) {
        self.target.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where to reach the watcher, now (without its Contact URI).
    pub fn leg(&self) -> Target {
        self.target.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// A refresh came from `leg` with Contact `remote_target`: NOTIFYs go there from now on.
    pub fn retarget(&self, remote_target: String, leg: Target) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = (remote_target, leg);
    }
}

pub struct Subscription {
    pub id: u64,
    pub package: Package,
    /// The presentity (Presence), the list's owner (List) or the owner watched (Winfo).
    pub resource: Arc<str>,
    pub watcher: Arc<str>,
    /// The Event header's `id` parameter, echoed in every NOTIFY.
    pub event_id: Option<String>,
    pub dialog: Dialog,
    pub expires_at: Mutex<Instant>,
    pub grant: Mutex<Grant>,
    /// Version of the watcherinfo or RLMI document last sent.
    pub version: AtomicU32,
    /// The presentities of a List subscription.
    pub members: Mutex<Vec<Arc<str>>>,
    pub throttle: Mutex<Throttle>,
    /// Held while a NOTIFY's body is made and the NOTIFY sent, so that versions and CSeqs go
    /// out in one order (RFC 4662: each RLMI version one more than the last); `true` once a
    /// full state has gone (a partial one before it is sent as full state).
    pub notifying: tokio::sync::Mutex<bool>,
}

/// RFC 6446: when the last NOTIFY went, whether one is scheduled, and which presentities
/// changed since (for a list's partial state).
#[derive(Default)]
pub struct Throttle {
    pub last_sent: Option<Instant>,
    pub scheduled: bool,
    pub dirty: BTreeSet<Arc<str>>,
    /// Members a group's list lost since (sent as terminated in its next partial state).
    pub removed: BTreeSet<Arc<str>>,
}

impl Subscription {
    pub fn remaining_secs(&self) -> u64 {
        let at = *self.expires_at.lock().unwrap_or_else(|p| p.into_inner());
        at.saturating_duration_since(Instant::now()).as_secs()
    }

    pub fn grant(&self) -> Grant {
        *self.grant.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_cseq(&self) -> u32 {
        self.dialog.cseq.fetch_add(1, Ordering::Relaxed)
    }

    /// A list of a distribution group's members (its resource is the group, not its watcher's
    /// own contact list).
    pub fn is_group(&self) -> bool {
        self.package == Package::List && self.resource != self.watcher
    }
}

#[derive(Default)]
pub struct Subscriptions {
    by_id: DashMap<u64, Arc<Subscription>>,
    by_dialog: DashMap<(String, String), u64>,
    /// Presentity -> subscriptions that show it (Presence and List).
    watching: DashMap<Arc<str>, Vec<u64>>,
    /// Owner -> its winfo subscriptions.
    winfo: DashMap<Arc<str>, Vec<u64>>,
    /// Group -> the subscriptions to its members' list.
    groups: DashMap<Arc<str>, Vec<u64>>,
    /// Watcher -> its subscriptions (for the per-watcher cap, and the changes of a user).
    by_watcher: DashMap<Arc<str>, Vec<u64>>,
    /// Subscriptions held by the watchers of each domain (a partner's cap).
    by_domain: DashMap<Box<str>, usize>,
    deadlines: DeadlineHeap<u64>,
    next: AtomicU64,
    /// Live subscriptions per package, for the gauge.
    counts: [std::sync::atomic::AtomicI64; 3],
}

impl Subscriptions {
    pub fn new_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    pub fn held_by(&self, watcher: &str) -> usize {
        self.by_watcher.get(watcher).map_or(0, |ids| ids.len())
    }

    /// Subscriptions held by all the watchers of `domain` (lower case).
    pub fn held_by_domain(&self, domain: &str) -> usize {
        self.by_domain.get(&*domain.to_ascii_lowercase()).map_or(0, |n| *n)
    }

    pub fn insert(&self, sub: Subscription) -> Arc<Subscription> {
        let sub = Arc::new(sub);
        let at = *sub.expires_at.lock().unwrap_or_else(|p| p.into_inner());
        self.by_dialog.insert((sub.dialog.call_id.clone(), sub.dialog.our_tag.clone()), sub.id);
        match sub.package {
            Package::Winfo => self.winfo.entry(sub.resource.clone()).or_default().push(sub.id),
            Package::Presence => self.watching.entry(sub.resource.clone()).or_default().push(sub.id),
            Package::List => {
                for m in sub.members.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    self.watching.entry(m.clone()).or_default().push(sub.id);
                }
                if sub.is_group() {
                    self.groups.entry(sub.resource.clone()).or_default().push(sub.id);
                }
            }
        }
        self.by_watcher.entry(sub.watcher.clone()).or_default().push(sub.id);
        *self.by_domain.entry(watcher_domain(&sub.watcher)).or_default() += 1;
        self.by_id.insert(sub.id, sub.clone());
        self.deadlines.push(at, sub.id);
        self.gauge(sub.package, 1);
        sub
    }

    pub fn get(&self, id: u64) -> Option<Arc<Subscription>> {
        self.by_id.get(&id).map(|e| e.value().clone())
    }

    /// Every subscription.
    pub fn all(&self) -> Vec<Arc<Subscription>> {
        self.by_id.iter().map(|e| e.value().clone()).collect()
    }

    /// The subscription of a dialog (Call-ID and our tag).
    pub fn by_dialog(&self, call_id: &str, our_tag: &str) -> Option<Arc<Subscription>> {
        let id = *self.by_dialog.get(&(call_id.to_string(), our_tag.to_string()))?;
        self.get(id)
    }

    /// Subscriptions showing `presentity`.
    pub fn watching(&self, presentity: &str) -> Vec<Arc<Subscription>> {
        self.ids(&self.watching, presentity)
    }

    /// Every group watched, with the subscriptions to it.
    pub fn groups(&self) -> Vec<(Arc<str>, Vec<Arc<Subscription>>)> {
        let groups: Vec<Arc<str>> = self.groups.iter().map(|e| e.key().clone()).collect();
        groups.into_iter().map(|g| (g.clone(), self.ids(&self.groups, &g))).collect()
    }

    /// `owner`'s winfo subscriptions.
    pub fn winfo_of(&self, owner: &str) -> Vec<Arc<Subscription>> {
        self.ids(&self.winfo, owner)
    }

    /// Every subscription whose resource or watcher is `aor`, from the indexes: its own
    /// subscriptions (its list's among them: only the owner holds one), those watching it
    /// (minus the lists that merely show it), its winfo subscriptions.
    pub fn involving(&self, aor: &str) -> Vec<Arc<Subscription>> {
        let mut ids: Vec<u64> = [&self.by_watcher, &self.watching, &self.winfo]
            .into_iter()
            .filter_map(|index| index.get(aor).map(|v| v.clone()))
            .flatten()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().filter_map(|id| self.get(id)).filter(|s| &*s.resource == aor || &*s.watcher == aor).collect()
    }

    fn ids(&self, index: &DashMap<Arc<str>, Vec<u64>>, key: &str) -> Vec<Arc<Subscription>> {
        let ids = index.get(key).map(|v| v.clone()).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// A new deadline for a refreshed subscription.
    pub fn refresh(&self, sub: &Subscription, at: Instant) {
        *sub.expires_at.lock().unwrap_or_else(|p| p.into_inner()) = at;
        self.deadlines.push(at, sub.id);
    }

    /// Changes a list subscription's members (its owner's contact list changed).
    pub fn set_members(&self, sub: &Subscription, members: Vec<Arc<str>>) {
        let old = std::mem::replace(&mut *sub.members.lock().unwrap_or_else(|p| p.into_inner()), members.clone());
        for m in &old {
            unindex(&self.watching, m, sub.id);
        }
        for m in members {
            self.watching.entry(m).or_default().push(sub.id);
        }
    }

    /// Ends a subscription; `None` if it had ended already.
    pub fn remove(&self, id: u64) -> Option<Arc<Subscription>> {
        let (_, sub) = self.by_id.remove(&id)?;
        self.by_dialog.remove(&(sub.dialog.call_id.clone(), sub.dialog.our_tag.clone()));
        match sub.package {
            Package::Winfo => unindex(&self.winfo, &sub.resource, id),
            Package::Presence => unindex(&self.watching, &sub.resource, id),
            Package::List => {
                for m in sub.members.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    unindex(&self.watching, m, id);
                }
                if sub.is_group() {
                    unindex(&self.groups, &sub.resource, id);
                }
            }
        }
        unindex(&self.by_watcher, &sub.watcher, id);
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = self.by_domain.entry(watcher_domain(&sub.watcher)) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.gauge(sub.package, -1);
        Some(sub)
    }

    fn gauge(&self, package: Package, delta: i64) {
        let (i, label) = match package {
            Package::Presence => (0, "presence"),
            Package::List => (1, "presence-list"),
            Package::Winfo => (2, "presence.winfo"),
        };
        let n = self.counts[i].fetch_add(delta, Ordering::Relaxed) + delta;
        metrics::gauge!(crate::ops::metrics::SUBSCRIPTIONS, "event" => label).set(n as f64);
    }

    /// Calls `ended` for each subscription whose deadline passed (it is removed first); runs
    /// until dropped.
    pub async fn run_expiry(&self, ended: impl Fn(Arc<Subscription>)) {
        self.deadlines
            .run(|id| {
                let due = self
                    .get(id)
                    .is_some_and(|s| *s.expires_at.lock().unwrap_or_else(|p| p.into_inner()) <= Instant::now());
                if due {
                    if let Some(sub) = self.remove(id) {
                        ended(sub);
                    }
                }
            })
            .await;
    }
}

fn unindex(index: &DashMap<Arc<str>, Vec<u64>>, key: &str, id: u64) {
    if let Some(mut v) = index.get_mut(key) {
        v.retain(|x| *x != id);
    }
    index.remove_if(key, |_, v| v.is_empty());
}

/// The domain of a watcher (`user@domain`, or a member's feed name), lower case.
fn watcher_domain(watcher: &str) -> Box<str> {
    watcher.rsplit_once('@').map_or(watcher, |(_, d)| d).to_ascii_lowercase().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use crate::transport::Transport;

    fn sub(subs: &Subscriptions, package: Package, resource: &str, watcher: &str, members: &[&str]) -> u64 {
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let id = subs.new_id();
        subs.insert(Subscription {
            id,
            package,
            resource: Arc::from(resource),
            watcher: Arc::from(watcher),
            event_id: None,
            dialog: Dialog {
                call_id: format!("call-{id}"),
                our_tag: format!("tag-{id}"),
                our_uri: String::new(),
                resource_uri: String::new(),
                their_from: String::new(),
                target: Mutex::new((
                    String::new(),
                    Target { transport: Transport::Udp, remote: local, flow: None, local: None },
                )),
                route_set: Vec::new(),
                local,
                cseq: AtomicU32::new(1),
            },
            expires_at: Mutex::new(Instant::now() + std::time::Duration::from_secs(60)),
            grant: Mutex::new(Grant::Active),
            version: AtomicU32::new(0),
            members: Mutex::new(members.iter().map(|m| Arc::from(*m)).collect()),
            throttle: Mutex::new(Throttle::default()),
            notifying: tokio::sync::Mutex::new(false),
        })
        .id
    }

    #[test]
    fn involving_finds_what_a_user_holds_and_what_shows_it_but_not_lists_it_is_on() {
        let subs = Subscriptions::default();
        let bob_watches_alice = sub(&subs, Package::Presence, "alice", "bob", &[]);
        let alice_watches_carol = sub(&subs, Package::Presence, "carol", "alice", &[]);
        let alice_winfo = sub(&subs, Package::Winfo, "alice", "alice", &[]);
        let alice_list = sub(&subs, Package::List, "alice", "alice", &["bob", "carol"]);
        let carol_list = sub(&subs, Package::List, "carol", "carol", &["alice"]);
        sub(&subs, Package::Presence, "dave", "bob", &[]);
        let mut found: Vec<u64> = subs.involving("alice").iter().map(|s| s.id).collect();
        found.sort_unstable();
        assert_eq!(found, vec![bob_watches_alice, alice_watches_carol, alice_winfo, alice_list]);
        assert!(!found.contains(&carol_list), "carol's list shows alice but is carol's");
        assert_eq!((subs.held_by("alice"), subs.held_by("bob")), (3, 2));

        subs.remove(alice_list);
        subs.remove(alice_watches_carol);
        assert_eq!(subs.held_by("alice"), 1);
        assert_eq!(subs.involving("alice").len(), 2);
        subs.remove(alice_winfo);
        assert_eq!(subs.held_by("alice"), 0);
        assert!(subs.by_watcher.get("alice").is_none(), "no empty entry left behind");
    }
}
