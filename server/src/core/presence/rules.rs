//! Watcher authorization: the presentity's rules from the store (allow, block, polite-block,
//! for one AOR or a whole domain), cached with explicit invalidation, and the default policy
//! for watchers no rule names.

use crate::ops::metrics as m;
use crate::state::subscriptions::Grant;
use dashmap::DashMap;
use sipfront_proto::Aor;
use sipfront_storage::{Contact, Rule, RuleAction, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// What a watcher may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Until the presentity decides (winfo tells it of the watcher).
    Pending,
    /// 403: the subscription is refused (or ended).
    Block,
    /// The subscription looks active and shows the presentity offline.
    PoliteBlock,
}

impl Decision {
    /// What a subscription shows under the decision; `None` for a block (it ends).
    pub fn grant(self) -> Option<Grant> {
        match self {
            Decision::Allow => Some(Grant::Active),
            Decision::Pending => Some(Grant::Pending),
            Decision::PoliteBlock => Some(Grant::PoliteBlocked),
            Decision::Block => None,
        }
    }
}

/// The default for watchers with no rule (config `presence.default_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    SameDomain,
    Pending,
    Allow,
}

impl Policy {
    pub fn parse(s: &str) -> Policy {
        match s {
            "allow" => Policy::Allow,
            "pending" => Policy::Pending,
            "same-domain" => Policy::SameDomain,
            other => {
                tracing::warn!(policy = other, "unknown presence.default_policy; using same-domain");
                Policy::SameDomain
            }
        }
    }
}

pub struct Rules {
    store: Arc<dyn Store>,
    timeout: Duration,
    policy: Policy,
    rules: DashMap<Arc<str>, Arc<Vec<Rule>>>,
    contacts: DashMap<Arc<str>, Arc<[Listed]>>,
    /// One copy of each contact's AOR, however many lists name it.
    aors: Interner,
    /// Whether a domain is one of ours: a watcher of any other is a partner's user.
    served: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// An entry of a contact list as presence uses it: the contact, once whatever its groups, and
/// the name the owner gave it (the first group's). The owner and the groups, which no NOTIFY
/// carries, are not kept: with every user's list cached, this is most of a user's memory.
pub struct Listed {
    /// Shared with the list subscriptions' members.
    pub contact: Arc<str>,
    pub name: Option<Box<str>>,
}

impl Rules {
    pub fn new(
        store: Arc<dyn Store>,
        timeout: Duration,
        policy: Policy,
        served: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Rules {
        Rules {
            store,
            timeout,
            policy,
            rules: DashMap::new(),
            contacts: DashMap::new(),
            aors: Interner::default(),
            served: Box::new(served),
        }
    }

    /// Drops what is cached of `owner` (its rules or contact list changed in the store).
    pub fn forget(&self, owner: &str) {
        self.rules.remove(owner);
        self.contacts.remove(owner);
    }

    /// Drops everything cached: the change log went by faster than it was followed, so any
    /// owner's rules may have changed.
    pub fn forget_all(&self) {
        self.rules.clear();
        self.contacts.clear();
    }

    /// What `watcher` may see of `owner`: a rule for the watcher's AOR, else one for its
    /// domain, else pending for a partner domain's watcher and the default policy for ours.
    /// One always sees oneself.
    pub async fn decide(&self, owner: &str, watcher: &str) -> Result<Decision, StoreError> {
        if owner.eq_ignore_ascii_case(watcher) {
            return Ok(Decision::Allow);
        }
        let rules = self.rules_of(owner).await?;
        let wildcard = format!("*@{}", Aor::domain_of(watcher));
        let rule = rules
            .iter()
            .find(|r| r.watcher.eq_ignore_ascii_case(watcher))
            .or_else(|| rules.iter().find(|r| r.watcher.eq_ignore_ascii_case(&wildcard)));
        Ok(match rule.map(|r| r.action) {
            Some(RuleAction::Allow) => Decision::Allow,
            Some(RuleAction::Block) => Decision::Block,
            Some(RuleAction::PoliteBlock) => Decision::PoliteBlock,
            // A partner's user with no rule waits for the owner's (issue 20, as in OCS),
            // whatever the policy for our own users.
            None if !(self.served)(Aor::domain_of(watcher)) => Decision::Pending,
            None => match self.policy {
                Policy::Allow => Decision::Allow,
                Policy::Pending => Decision::Pending,
                Policy::SameDomain if Aor::domain_of(owner).eq_ignore_ascii_case(Aor::domain_of(watcher)) => {
                    Decision::Allow
                }
                Policy::SameDomain => Decision::Pending,
            },
        })
    }

    async fn rules_of(&self, owner: &str) -> Result<Arc<Vec<Rule>>, StoreError> {
        if let Some(r) = self.rules.get(owner) {
            return Ok(r.clone());
        }
        let r = Arc::new(self.bounded(m::store_op("rules", self.store.rules(owner))).await?);
        self.rules.insert(Arc::from(owner), r.clone());
        Ok(r)
    }

    /// `owner`'s contact list: every contact once (in any ASCII case), in the store's order.
    pub async fn contacts(&self, owner: &str) -> Result<Arc<[Listed]>, StoreError> {
        if let Some(c) = self.contacts.get(owner) {
            return Ok(c.clone());
        }
        let rows = self.bounded(m::store_op("contacts", self.store.contacts(owner))).await?;
        let c = listed(rows, &self.aors);
        self.contacts.insert(Arc::from(owner), c.clone());
        Ok(c)
    }

    async fn bounded<T>(&self, f: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| StoreError::Timeout(self.timeout))?
    }
}

/// A list's rows as [`Listed`] entries, each contact once.
fn listed(rows: Vec<Contact>, aors: &Interner) -> Arc<[Listed]> {
    let mut seen = std::collections::HashSet::new();
    rows.into_iter()
        .filter(|c| seen.insert(c.contact.to_ascii_lowercase()))
        .map(|c| Listed {
            contact: aors.intern(&c.contact),
            name: (!c.display_name.is_empty()).then(|| c.display_name.into_boxed_str()),
        })
        .collect()
}

/// Shared copies of strings. A copy no one else holds any more is dropped when the set has
/// doubled since it was last swept, so the set stays within twice what is in use.
#[derive(Default)]
struct Interner {
    set: DashMap<Arc<str>, ()>,
    swept_at: std::sync::atomic::AtomicUsize,
}

impl Interner {
    fn intern(&self, s: &str) -> Arc<str> {
        if let Some(shared) = self.set.get(s) {
            return shared.key().clone();
        }
        // Two at once: the one that goes in first is the copy both get.
        let shared = self.set.entry(Arc::from(s)).or_insert(()).key().clone();
        let swept_at = self.swept_at.load(std::sync::atomic::Ordering::Relaxed);
        if self.set.len() >= (2 * swept_at).max(1024) {
            self.set.retain(|k, _| Arc::strong_count(k) > 1);
            self.swept_at.store(self.set.len(), std::sync::atomic::Ordering::Relaxed);
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(owner: &str, contact: &str, name: &str, group: &str) -> Contact {
        Contact { owner: owner.into(), contact: contact.into(), display_name: name.into(), group: group.into() }
    }

    #[test]
    fn a_list_keeps_each_contact_once_with_its_first_name_and_shares_its_aor_with_other_lists() {
        let aors = Interner::default();
        let alice = listed(
            vec![
                row("alice@x", "bob@x", "Bob", "Work"),
                row("alice@x", "BOB@x", "Bobby", "Friends"),
                row("alice@x", "carol@x", "", "Work"),
            ],
            &aors,
        );
        assert_eq!(alice.len(), 2, "Bob once, whatever the group or case");
        assert_eq!((&*alice[0].contact, alice[0].name.as_deref()), ("bob@x", Some("Bob")));
        assert_eq!((&*alice[1].contact, alice[1].name.as_deref()), ("carol@x", None));
        let dave = listed(vec![row("dave@x", "bob@x", "", "")], &aors);
        assert!(Arc::ptr_eq(&alice[0].contact, &dave[0].contact), "one copy of Bob's AOR");
    }

    #[test]
    fn copies_no_one_holds_are_swept() {
        let aors = Interner::default();
        let kept = aors.intern("kept@x");
        for i in 0..5000 {
            drop(aors.intern(&format!("gone{i}@x")));
        }
        assert!(aors.set.len() < 2048, "swept as it doubled: {}", aors.set.len());
        assert!(Arc::ptr_eq(&kept, &aors.intern("kept@x")), "what is held stays shared");
    }
}
