//! Who our users are, as the hot path needs it: a cache in front of the store of each user's
//! credentials and the served domains. Every front end polls the store's change log and drops
//! what changed, so a CLI change takes effect everywhere within `database.poll_ms`.

use crate::ops::metrics as m;
use dashmap::DashMap;
use sipfront_storage::{Change, Store, StoreError, User};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Unknown AORs remembered at most (a flood of random names must not grow memory without
/// bound); past it the negative entries are dropped.
const MAX_NEGATIVE: usize = 100_000;

pub struct Directory {
    store: Arc<dyn Store>,
    timeout: Duration,
    /// Keyed by the AOR folded to ASCII lower case: a user part names its account whatever
    /// its case (the store looks users up so), and a change to the account drops every variant.
    users: DashMap<Box<str>, Option<Arc<User>>>,
    negative: std::sync::atomic::AtomicUsize,
    domains: RwLock<HashSet<String>>,
    /// Every AOR the change log names, for those that cache more than credentials (presence
    /// rules and contact lists).
    changes: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Every recipient the change log says a message was kept for (offline delivery).
    waiting: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Bumped whenever the change log says the federation policy changed.
    federation: tokio::sync::watch::Sender<u64>,
    /// Distribution groups: which addresses are groups, and their members.
    groups: super::groups::Groups,
    /// The change log's end when loaded: every change after it is followed, so that nothing
    /// done once the server has started (a CLI command a moment later) is missed.
    head: i64,
}

impl Directory {
    /// Loads the served domains and every user; fails if the store cannot be read at start.
    ///
    /// Every user is read at once, so that the registration storm that follows a restart (all
    /// clients coming back within seconds) is served from memory instead of queueing one store
    /// lookup per user: the cache would hold them all once they are back anyway. The change
    /// log's head is read first, so a change made during the read is followed after it.
    pub async fn load(store: Arc<dyn Store>, timeout: Duration) -> Result<Directory, StoreError> {
        let domains = store.domains().await?.into_iter().collect();
        let head = store.changes_head().await?;
        let started = Instant::now();
        let users: DashMap<Box<str>, Option<Arc<User>>> = DashMap::new();
        for u in store.users(None).await? {
            // Accounts from before AORs were folded may differ only in case: the first in
            // the store's order is the one a lookup finds, so it is the one kept.
            users.entry(folded(&u.aor).into()).or_insert_with(|| Some(Arc::new(u)));
        }
        let groups = super::groups::Groups::load(store.clone(), timeout).await?;
        tracing::info!(
            users = users.len(),
            groups = groups.count(),
            ms = started.elapsed().as_millis() as u64,
            "users loaded"
        );
        Ok(Directory {
            groups,
            head,
            store,
            timeout,
            users,
            negative: Default::default(),
            domains: RwLock::new(domains),
            changes: tokio::sync::broadcast::channel(1024).0,
            waiting: tokio::sync::broadcast::channel(1024).0,
            federation: tokio::sync::watch::channel(0).0,
        })
    }

    /// AORs as the change log names them (a lagging receiver misses some: it should then
    /// treat everything as changed).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.changes.subscribe()
    }

    /// Recipients the change log says a message was kept for, by any front end (a lagging
    /// receiver misses some, as with [`Directory::changes`]).
    pub fn waiting(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.waiting.subscribe()
    }

    /// Changes whenever the federation policy (domains, mode) changed in the store.
    pub fn federation_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.federation.subscribe()
    }

    /// Distribution groups, following the change log as the users do.
    pub fn groups(&self) -> &super::groups::Groups {
        &self.groups
    }

    /// Distribution group `aor` expanded (see [`super::groups::Groups::get`]), its members as
    /// their accounts spell them.
    pub async fn group(&self, aor: &str) -> Result<Option<Arc<super::groups::Group>>, StoreError> {
        self.groups.get(aor, |m| self.cached(m).flatten().map(|u| u.aor.clone())).await
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The domains we serve, in order.
    pub fn domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.domains.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        domains.sort_unstable();
        domains
    }

    /// The domain we serve when we serve exactly one.
    pub fn only_domain(&self) -> Option<String> {
        let domains = self.domains.read().unwrap_or_else(|p| p.into_inner());
        if domains.len() == 1 {
            domains.iter().next().cloned()
        } else {
            None
        }
    }

    /// Whether `domain` (lower case) is one we serve.
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.read().unwrap_or_else(|p| p.into_inner()).contains(domain)
    }

    /// The user of an AOR (its user part in any ASCII case; the user's `aor` is the account's
    /// own spelling, which every table is keyed by), from the cache when it is there:
    /// `Ok(None)` for no such user, `Err` when the store is needed and unavailable.
    pub async fn user(&self, aor: &str) -> Result<Option<Arc<User>>, StoreError> {
        if let Some(hit) = self.cached(aor) {
            return Ok(hit);
        }
        // A store that hangs (a lock wait, a stalled network) must not hold requests: past the
        // timeout the request is answered 503 and the client retries later.
        let user = tokio::time::timeout(self.timeout, m::store_op("user", self.store.user(aor)))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??
            .map(Arc::new);
        if user.is_none() && self.negative.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_NEGATIVE {
            self.users.retain(|_, v| v.is_some());
            self.negative.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        self.users.insert(folded(aor).into(), user.clone());
        Ok(user)
    }

    /// Every user the cache holds: at start, before the change log is followed, every user
    /// of the store (read once, by [`Directory::load`]).
    pub fn cached_users(&self) -> Vec<Arc<User>> {
        self.users.iter().filter_map(|e| e.value().clone()).collect()
    }

    /// The cached answer, without touching the store.
    pub fn cached(&self, aor: &str) -> Option<Option<Arc<User>>> {
        self.users.get(&*folded(aor)).map(|e| e.value().clone())
    }

    /// Follows the store's change log until dropped. While the store is unreachable the cache
    /// keeps serving what it has; when it comes back, everything changed meanwhile is dropped.
    pub async fn run_invalidation(&self, every: Duration) {
        let mut last = self.head;
        // When the log was last read to its end: what this member knows of users, rules and
        // contacts is at most this old (`sipfront_store_change_lag_seconds`).
        let mut caught_up = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let read = m::store_op("changes_since", self.store.changes_since(last)).await;
            if matches!(&read, Ok(c) if !c.more) {
                caught_up = Instant::now();
            }
            metrics::gauge!(m::CHANGE_LAG).set(caught_up.elapsed().as_secs_f64());
            match read {
                Ok(c) if c.entries.is_empty() => last = c.last,
                Ok(c) => {
                    last = c.last;
                    // A new domain, or a user (who may bring a new domain with it).
                    let mut reload_domains = false;
                    let mut groups_changed = false;
                    for change in &c.entries {
                        match change {
                            Change::Waiting(recipient) => {
                                let _ = self.waiting.send(Arc::from(recipient.as_str()));
                            }
                            Change::Domain(_) => reload_domains = true,
                            Change::Federation(_) => self.federation.send_modify(|n| *n += 1),
                            Change::Group(_) => groups_changed = true,
                            Change::User(aor) => {
                                reload_domains = true;
                                self.users.remove(&*folded(aor));
                                let _ = self.changes.send(Arc::from(aor.as_str()));
                            }
                        }
                    }
                    if groups_changed {
                        self.groups.changed().await;
                    }
                    if reload_domains {
                        if let Ok(d) = self.store.domains().await {
                            *self.domains.write().unwrap_or_else(|p| p.into_inner()) = d.into_iter().collect();
                        }
                    }
                    tracing::debug!(changed = c.entries.len(), "directory refreshed");
                }
                Err(e) => tracing::debug!(error = %e, "change log unavailable"),
            }
        }
    }
}

/// An AOR folded to ASCII lower case, the key users are cached by (borrowed when it is already).
fn folded(aor: &str) -> std::borrow::Cow<'_, str> {
    if aor.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(aor.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(aor)
    }
}
