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
    contacts: DashMap<Arc<str>, Arc<Vec<Contact>>>,
}

impl Rules {
    pub fn new(store: Arc<dyn Store>, timeout: Duration, policy: Policy) -> Rules {
        Rules { store, timeout, policy, rules: DashMap::new(), contacts: DashMap::new() }
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
    /// domain, else the default policy. One always sees oneself.
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

    /// `owner`'s contact list (every group).
    pub async fn contacts(&self, owner: &str) -> Result<Arc<Vec<Contact>>, StoreError> {
        if let Some(c) = self.contacts.get(owner) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.bounded(m::store_op("contacts", self.store.contacts(owner))).await?);
        self.contacts.insert(Arc::from(owner), c.clone());
        Ok(c)
    }

    async fn bounded<T>(&self, f: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| StoreError::Timeout(self.timeout))?
    }
}
