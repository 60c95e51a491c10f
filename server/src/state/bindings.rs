//! The location table: AOR -> contacts (RFC 3261 10.3), kept in a sharded map so that
//! registrations of different users never wait for each other. Each binding is removed exactly
//! at its expiry by one task that sleeps until the next deadline.

use crate::transport::Source;
use dashmap::DashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// One registered contact of an AOR.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub id: u64,
    /// The Contact URI, as registered (what requests for the AOR are sent to).
    pub uri: Box<str>,
    /// The Contact's header parameters other than `expires`, as written (`;+sip.instance=...`).
    pub params: Box<str>,
    /// RFC 5626 / 5627 instance id (`<urn:uuid:...>`), unquoted.
    pub instance: Option<Box<str>>,
    /// RFC 5626 reg-id: with an instance, names an outbound flow.
    pub reg_id: Option<u32>,
    pub call_id: Box<str>,
    pub cseq: u32,
    pub expires_at: Instant,
    pub registered_at: Instant,
    /// RFC 3327 Path, in order: the route from us to the contact.
    pub path: Box<[Box<str>]>,
    /// Where the REGISTER came from: the flow to reach a TCP/TLS client over (RFC 5626).
    pub source: Source,
    /// The temp-gruu user part handed out with this registration (RFC 5627).
    pub temp_gruu: Option<Box<str>>,
}

impl Binding {
    /// Seconds left, rounded up, at least 0. RFC 3261 10.3 step 8: the 200 states the
    /// interval the registrar chose; truncating would answer `expires=599` to a request for
    /// 600 granted in full, a few microseconds after granting it.
    pub fn remaining(&self, now: Instant) -> u64 {
        let left = self.expires_at.saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

/// When binding `id` of an AOR expires; earliest first in the heap.
type Deadline = Reverse<(Instant, u64, Arc<str>)>;

/// What is told of an AOR whose bindings changed.
type OnChange = Box<dyn Fn(&str) + Send + Sync>;

pub struct Bindings {
    map: DashMap<Arc<str>, Vec<Binding>>,
    /// Deadlines; an entry whose binding was refreshed or removed since is skipped when it
    /// comes up, so a refresh costs one push and no search.
    deadlines: Mutex<BinaryHeap<Deadline>>,
    wake: Notify,
    next_id: AtomicU64,
    /// temp-gruu user part -> AOR, for requests addressed to a temp-gruu.
    temp_gruus: DashMap<Box<str>, Arc<str>>,
    /// Told of every AOR whose set of bindings changed (presence from registration state).
    on_change: std::sync::OnceLock<OnChange>,
}

impl Default for Bindings {
    fn default() -> Self {
        Bindings {
            map: DashMap::new(),
            deadlines: Mutex::new(BinaryHeap::new()),
            wake: Notify::new(),
            next_id: AtomicU64::new(1),
            temp_gruus: DashMap::new(),
            on_change: std::sync::OnceLock::new(),
        }
    }
}

impl Bindings {
    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live bindings of an AOR (expired ones are never returned, even in the instant
    /// before the expiry task removes them).
    pub fn get(&self, aor: &str) -> Vec<Binding> {
        let now = Instant::now();
        self.map.get(aor).map(|v| v.iter().filter(|b| b.expires_at > now).cloned().collect()).unwrap_or_default()
    }

    /// The AOR a temp-gruu user part stands for.
    pub fn temp_gruu_aor(&self, user: &str) -> Option<Arc<str>> {
        self.temp_gruus.get(user).map(|e| e.value().clone())
    }

    /// AORs with at least one binding.
    /// Every AOR with bindings.
    pub fn aors(&self) -> Vec<Arc<str>> {
        self.map.iter().map(|e| e.key().clone()).collect()
    }

    pub fn aor_count(&self) -> usize {
        self.map.len()
    }

    pub fn binding_count(&self) -> usize {
        self.map.iter().map(|e| e.value().len()).sum()
    }

    /// Sets what is told of changed AORs; once, before any binding exists.
    pub fn set_on_change(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    /// Changes the bindings of one AOR atomically (no other change to the same AOR runs
    /// meanwhile) and schedules the expiry of every binding whose deadline moved.
    pub fn update<R>(&self, aor: &str, change: impl FnOnce(&mut Vec<Binding>) -> R) -> R {
        let key: Arc<str> = Arc::from(aor);
        let mut entry = self.map.entry(key.clone()).or_default();
        let before: Vec<(u64, Instant, Option<Box<str>>)> =
            entry.iter().map(|b| (b.id, b.expires_at, b.temp_gruu.clone())).collect();
        let result = change(&mut entry);
        // Most AORs have one or two contacts: do not keep the spare room a Vec grows by.
        if entry.capacity() > entry.len() {
            entry.shrink_to_fit();
        }
        let delta = entry.len() as f64 - before.len() as f64;
        if delta != 0.0 {
            metrics::gauge!(crate::ops::metrics::BINDINGS).increment(delta);
        }
        let moved: Vec<(Instant, u64)> = entry
            .iter()
            .filter(|b| !before.iter().any(|(id, at, _)| *id == b.id && *at == b.expires_at))
            .map(|b| (b.expires_at, b.id))
            .collect();
        for (id, _, gruu) in &before {
            if let Some(g) = gruu {
                if !entry.iter().any(|b| b.id == *id && b.temp_gruu.as_ref() == Some(g)) {
                    self.temp_gruus.remove(g);
                }
            }
        }
        for b in entry.iter() {
            if let Some(g) = &b.temp_gruu {
                self.temp_gruus.entry(g.clone()).or_insert_with(|| key.clone());
            }
        }
        let empty = entry.is_empty();
        let set_changed =
            entry.len() != before.len() || entry.iter().any(|b| !before.iter().any(|(id, _, _)| *id == b.id));
        drop(entry);
        if set_changed {
            if let Some(f) = self.on_change.get() {
                f(aor);
            }
        }
        if empty {
            self.map.remove_if(aor, |_, v| v.is_empty());
        }
        if !moved.is_empty() {
            let earliest_before = self.next_deadline();
            {
                let mut heap = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
                for (at, id) in &moved {
                    heap.push(Reverse((*at, *id, key.clone())));
                }
            }
            if earliest_before.is_none_or(|e| moved.iter().any(|(at, _)| *at < e)) {
                self.wake.notify_one();
            }
        }
        result
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner()).peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes bindings as they expire; runs until dropped.
    pub async fn run_expiry(&self) {
        loop {
            match self.next_deadline() {
                None => self.wake.notified().await,
                Some(at) if at > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        // An earlier deadline arrived.
                        _ = self.wake.notified() => {}
                    }
                }
                Some(_) => self.expire_due(),
            }
        }
    }

    fn expire_due(&self) {
        let now = Instant::now();
        loop {
            let due = {
                let mut heap = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
                match heap.peek() {
                    Some(Reverse((at, _, _))) if *at <= now => heap.pop(),
                    _ => None,
                }
            };
            let Some(Reverse((_, id, aor))) = due else { return };
            // Only if that binding still has a passed deadline: a refresh moved it otherwise.
            let expired = self.map.get(&*aor).is_some_and(|v| v.iter().any(|b| b.id == id && b.expires_at <= now));
            if expired {
                self.update(&aor, |v| v.retain(|b| !(b.id == id && b.expires_at <= now)));
                tracing::debug!(aor = &*aor, "binding expired");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use crate::transport::Transport;
    use std::time::Duration;

    fn binding(b: &Bindings, uri: &str, secs: u64) -> Binding {
        let now = Instant::now();
        Binding {
            id: b.new_id(),
            uri: uri.into(),
            params: "".into(),
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 1,
            expires_at: now + Duration::from_secs(secs),
            registered_at: now,
            path: Box::new([]),
            source: Source {
                transport: Transport::Udp,
                remote: "127.0.0.1:5000".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                flow: None,
            },
            temp_gruu: Some(format!("tgruu.{uri}").into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bindings_go_exactly_at_expiry_and_refreshes_move_them() {
        let b = Arc::new(Bindings::default());
        let runner = b.clone();
        tokio::spawn(async move { runner.run_expiry().await });
        let (one, two) = (binding(&b, "sip:a@h", 60), binding(&b, "sip:b@h", 120));
        b.update("alice@example.test", |v| v.extend([one.clone(), two]));
        assert_eq!(b.temp_gruu_aor("tgruu.sip:a@h").as_deref(), Some("alice@example.test"));
        tokio::time::sleep(Duration::from_secs(30)).await;
        // Refresh the first to 100 s from now.
        b.update("alice@example.test", |v| v[0].expires_at = Instant::now() + Duration::from_secs(100));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(b.get("alice@example.test").len(), 2, "the refreshed binding outlives its first deadline");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let left = b.get("alice@example.test");
        assert_eq!(left.len(), 1);
        assert_eq!(&*left[0].uri, "sip:a@h");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(b.get("alice@example.test").is_empty());
        assert_eq!(b.aor_count(), 0);
        assert!(b.temp_gruu_aor("tgruu.sip:a@h").is_none());
    }
}

#[cfg(test)]
mod size {
    /// What one binding costs, apart from its strings: the figure BENCHMARKS.md builds on.
    #[test]
    fn a_binding_is_small() {
        let size = std::mem::size_of::<super::Binding>();
        println!("size_of::<Binding>() = {size}");
        assert!(size <= 256, "Binding grew to {size} bytes");
    }
}
