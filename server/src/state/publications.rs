//! Event state published with PUBLISH (RFC 3903), per presentity: each publication has an
//! entity tag, a document and an expiry, and ends exactly on time.

use super::expiry::DeadlineHeap;
use dashmap::DashMap;
use sipfront_proto::presence::pidf::Pidf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

#[derive(Clone)]
pub struct Publication {
    pub etag: Arc<str>,
    pub doc: Arc<Pidf>,
    pub expires_at: Instant,
    /// Order of the last change (a modify makes it the newest), for "the newest note wins".
    pub changed: u64,
}

#[derive(Default)]
pub struct Publications {
    by_aor: DashMap<Arc<str>, Vec<Publication>>,
    /// Entity tag -> presentity, so that a tag names exactly one publication of one AOR.
    owners: DashMap<Arc<str>, Arc<str>>,
    deadlines: DeadlineHeap<Arc<str>>,
    clock: AtomicU64,
}

/// What [`Publications::update`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Updated {
    /// The new entity tag (RFC 3903 4.1: a new tag on every successful PUBLISH).
    Tag(Arc<str>),
    /// Expires 0: the publication is gone.
    Removed,
    /// No publication of this presentity has that tag (412).
    UnknownTag,
}

impl Publications {
    /// The live publications of a presentity, newest change first.
    /// How many live publications `aor` holds.
    pub fn count_of(&self, aor: &str) -> usize {
        let now = Instant::now();
        self.by_aor.get(aor).map_or(0, |e| e.iter().filter(|p| p.expires_at > now).count())
    }

    pub fn of(&self, aor: &str) -> Vec<Publication> {
        let now = Instant::now();
        let mut v: Vec<Publication> = self
            .by_aor
            .get(aor)
            .map(|e| e.iter().filter(|p| p.expires_at > now).cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|p| std::cmp::Reverse(p.changed));
        v
    }

    pub fn count(&self) -> usize {
        self.owners.len()
    }

    /// Every live publication, with its presentity.
    pub fn all(&self) -> Vec<(Arc<str>, Publication)> {
        let now = Instant::now();
        self.by_aor
            .iter()
            .flat_map(|e| {
                e.value()
                    .iter()
                    .filter(|p| p.expires_at > now)
                    .map(|p| (e.key().clone(), p.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Takes out every publication of the presentities `gone` names (their home moved).
    pub fn take_where(&self, gone: impl Fn(&str) -> bool) -> Vec<(Arc<str>, Publication)> {
        let aors: Vec<Arc<str>> = self.by_aor.iter().filter(|e| gone(e.key())).map(|e| e.key().clone()).collect();
        let mut out = Vec::new();
        for aor in aors {
            if let Some((_, list)) = self.by_aor.remove(&aor) {
                for p in list {
                    self.owners.remove(&p.etag);
                    out.push((aor.clone(), p));
                }
            }
        }
        out
    }

    /// A new publication (initial PUBLISH); returns its entity tag.
    pub fn create(&self, aor: &str, doc: Pidf, expires_at: Instant) -> Arc<str> {
        self.create_as(aor, doc, expires_at, None)
    }

    /// A new publication under the entity tag it had at another member (its presentity's home
    /// moved here), unless that tag is taken; returns its tag.
    pub fn create_as(&self, aor: &str, doc: Pidf, expires_at: Instant, etag: Option<&str>) -> Arc<str> {
        let etag = match etag.filter(|t| !t.is_empty() && t.len() <= 64 && !self.owners.contains_key(*t)) {
            Some(t) => Arc::from(t),
            None => new_etag(),
        };
        let aor: Arc<str> = Arc::from(aor);
        let changed = self.clock.fetch_add(1, Ordering::Relaxed);
        self.owners.insert(etag.clone(), aor.clone());
        self.by_aor.entry(aor).or_default().push(Publication {
            etag: etag.clone(),
            doc: Arc::new(doc),
            expires_at,
            changed,
        });
        self.deadlines.push(expires_at, etag.clone());
        metrics::gauge!(crate::ops::metrics::PUBLICATIONS).set(self.owners.len() as f64);
        etag
    }

    /// Refresh (no `doc`), modify (`doc`) or remove (`expires_at` is `None`) the publication of
    /// `aor` tagged `etag`.
    pub fn update(&self, aor: &str, etag: &str, doc: Option<Pidf>, expires_at: Option<Instant>) -> Updated {
        let owned = self.owners.get(etag).is_some_and(|o| &**o == aor);
        if !owned {
            return Updated::UnknownTag;
        }
        let Some(mut list) = self.by_aor.get_mut(aor) else { return Updated::UnknownTag };
        let Some(i) = list.iter().position(|p| &*p.etag == etag && p.expires_at > Instant::now()) else {
            return Updated::UnknownTag;
        };
        self.owners.remove(etag);
        let Some(at) = expires_at else {
            list.remove(i);
            let empty = list.is_empty();
            drop(list);
            if empty {
                self.by_aor.remove_if(aor, |_, v| v.is_empty());
            }
            metrics::gauge!(crate::ops::metrics::PUBLICATIONS).set(self.owners.len() as f64);
            return Updated::Removed;
        };
        let fresh = new_etag();
        let p = &mut list[i];
        p.etag = fresh.clone();
        p.expires_at = at;
        if let Some(doc) = doc {
            p.doc = Arc::new(doc);
            p.changed = self.clock.fetch_add(1, Ordering::Relaxed);
        }
        drop(list);
        self.owners.insert(fresh.clone(), Arc::from(aor));
        self.deadlines.push(at, fresh.clone());
        Updated::Tag(fresh)
    }

    /// Removes publications as they expire, calling `ended` with the presentity; runs until
    /// dropped.
    pub async fn run_expiry(&self, ended: impl Fn(&str)) {
        self.deadlines
            .run(|etag| {
                let Some((_, aor)) = self.owners.remove(&etag) else { return };
                let now = Instant::now();
                let mut gone = false;
                if let Some(mut list) = self.by_aor.get_mut(&aor) {
                    let before = list.len();
                    list.retain(|p| !(p.etag == etag && p.expires_at <= now));
                    gone = list.len() < before;
                }
                self.by_aor.remove_if(&aor, |_, v| v.is_empty());
                metrics::gauge!(crate::ops::metrics::PUBLICATIONS).set(self.owners.len() as f64);
                if gone {
                    tracing::debug!(aor = &*aor, "publication expired");
                    ended(&aor);
                } else {
                    // Refreshed meanwhile under the same tag is impossible (a refresh changes
                    // the tag); a tag removed by Expires: 0 is simply gone.
                }
            })
            .await;
    }
}

/// An entity tag: 16 random alphanumerics, unpredictable (a guessed one would let another
/// party modify or remove a publication, RFC 3903).
fn new_etag() -> Arc<str> {
    Arc::from(sipfront_proto::random::alphanumeric(16))
}
