//! Distribution groups as the SIP services meet them (issue 21): whether an address is a
//! group, answered from memory, and a group's members with nested groups expanded, read once
//! and kept until the change log says some group changed. A MESSAGE to a group and a watch of
//! one ([`super::messaging`], [`super::presence`]) both ask here.

use crate::ops::metrics as m;
use dashmap::DashMap;
use sipfront_storage::{Store, StoreError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Nested groups are followed this deep, and a group stands for this many members at most:
/// the bounds of the directory's expansion endpoint too.
pub const DEPTH: u32 = 10;
pub const MAX_MEMBERS: usize = 10_000;

/// A group, expanded.
#[derive(Debug)]
pub struct Group {
    /// `name@domain`, lower case.
    pub aor: Arc<str>,
    pub display_name: String,
    /// Its users and remote addresses, each once (lower case).
    pub members: Vec<Arc<str>>,
    /// More than [`MAX_MEMBERS`]: `members` is not all of them.
    pub truncated: bool,
}

impl Group {
    /// Whether `aor` (any case) is one of its members.
    pub fn has(&self, aor: &str) -> bool {
        self.members.iter().any(|m| m.eq_ignore_ascii_case(aor))
    }
}

pub struct Groups {
    store: Arc<dyn Store>,
    timeout: Duration,
    /// Every group's AOR, lower case.
    names: RwLock<HashSet<Box<str>>>,
    /// Expansions read since the last change of any group. Nesting makes a change of one group
    /// a change of every group that reaches it, so a change drops them all: groups change
    /// seldom, and each is read again when next asked for.
    expanded: DashMap<Box<str>, Arc<Group>>,
    /// Bumped after each batch of group changes, once the cache has been dropped.
    changes: tokio::sync::watch::Sender<u64>,
    /// Bumped before the cache is dropped: an expansion read across a change is not kept.
    generation: AtomicU64,
}

impl Groups {
    /// Every group's name, read at start.
    pub async fn load(store: Arc<dyn Store>, timeout: Duration) -> Result<Groups, StoreError> {
        let names = store.groups(None).await?.into_iter().map(|g| g.aor.into_boxed_str()).collect();
        Ok(Groups {
            store,
            timeout,
            names: RwLock::new(names),
            expanded: DashMap::new(),
            changes: tokio::sync::watch::channel(0).0,
            generation: AtomicU64::new(0),
        })
    }

    /// The group `aor` names (its user part in any case), if it is one: its AOR as stored.
    pub fn named(&self, aor: &str) -> Option<Arc<str>> {
        let folded = aor.to_ascii_lowercase();
        self.names.read().unwrap_or_else(|p| p.into_inner()).contains(folded.as_str()).then(|| Arc::from(folded))
    }

    /// How many groups there are.
    pub fn count(&self) -> usize {
        self.names.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Group `aor` expanded ([`DEPTH`] deep, [`MAX_MEMBERS`] at most): `Ok(None)` if there is
    /// no such group, `Err` if the store did not answer in time. A group keeps its members in
    /// lower case; `spelling` gives a user's AOR as its account spells it (rules, bindings and
    /// publications are keyed so), `None` for an address that is no user of ours.
    pub async fn get(
        &self,
        aor: &str,
        spelling: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Arc<Group>>, StoreError> {
        let folded = aor.to_ascii_lowercase();
        if let Some(g) = self.expanded.get(folded.as_str()) {
            return Ok(Some(g.clone()));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let read = async {
            let Some(g) = self.store.group(&folded).await? else { return Ok(None) };
            let e = sipfront_storage::expand(self.store.as_ref(), &g, DEPTH, MAX_MEMBERS).await?;
            Ok(Some(Group {
                aor: Arc::from(g.aor.as_str()),
                display_name: g.display_name,
                members: e.members.into_iter().map(|m| Arc::from(spelling(&m).unwrap_or(m))).collect(),
                truncated: e.truncated,
            }))
        };
        let group = match tokio::time::timeout(self.timeout, m::store_op("group", read)).await {
            Err(_) => return Err(StoreError::Timeout(self.timeout)),
            Ok(Err(StoreError::NotFound(_))) | Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Some(g))) => Arc::new(g),
        };
        if self.generation.load(Ordering::Acquire) == generation {
            self.expanded.insert(folded.into_boxed_str(), group.clone());
        }
        Ok(Some(group))
    }

    /// How many batches of group changes have been followed: an expansion read before a
    /// change, kept by someone after it, is stale when this moved in between.
    pub fn version(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Bumped whenever groups changed (after their cache was dropped): whoever keeps an
    /// expansion reads it again.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The change log named some groups: the names are read again and every expansion is
    /// dropped, then the change is told. The names stay as they were if the store does not
    /// answer; the next change reads them again.
    pub async fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let read = tokio::time::timeout(self.timeout, self.store.groups(None)).await;
        match read.unwrap_or(Err(StoreError::Timeout(self.timeout))) {
            Ok(all) => {
                *self.names.write().unwrap_or_else(|p| p.into_inner()) =
                    all.into_iter().map(|g| g.aor.into_boxed_str()).collect();
            }
            Err(e) => tracing::warn!(error = %e, "group names not read again after a change"),
        }
        self.expanded.clear();
        self.changes.send_modify(|n| *n += 1);
    }
}
