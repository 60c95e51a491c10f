//! Presence documents of presentities homed on other members of the pool, for the resource
//! lists (RFC 4662) served here: a list shows its owner's contacts wherever they are homed.
//! For each such contact this member holds one subscription of its own (a *feed*, RFC 4662's
//! back-end subscription) at the contact's home, sealed as the pool's, which that home grants
//! without rules: the rules are in the shared store, and this member applies the list owner's
//! itself. A feed lives while some list here shows its presentity, is refreshed before it
//! lapses, and moves when the presentity's home does.

use super::super::pool::hop::Vouch;
use super::super::pool::Membership;
use crate::transaction::Transactions;
use crate::transport::{Target, Transport};
use bytes::Bytes;
use dashmap::DashMap;
use sipfront_proto::reply;
use sipfront_proto::{HeaderName, Message, Method};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a feed asks to last; it is refreshed when a third of that is left.
const FEED_SECS: u64 = 3600;

pub struct Feeds {
    pool: Arc<Membership>,
    txs: Transactions,
    /// The last document each feed brought, by presentity.
    docs: DashMap<Arc<str>, Bytes>,
    /// Feeds by presentity.
    feeds: DashMap<Arc<str>, Arc<Feed>>,
}

pub struct Feed {
    aor: Arc<str>,
    /// The member it is held at.
    home: Arc<str>,
    call_id: String,
    our_tag: String,
    cseq: AtomicU32,
    /// The dialog, once the home has answered: its tag and Contact.
    dialog: std::sync::Mutex<Option<(String, String)>>,
    until: std::sync::Mutex<Instant>,
}

/// What a NOTIFY told of a feed.
pub enum Notified {
    /// Not a feed's NOTIFY.
    NotOurs,
    /// A new document (or the end of the feed) for this presentity.
    Changed(Arc<str>),
}

impl Feeds {
    pub fn new(pool: Arc<Membership>, txs: Transactions) -> Feeds {
        Feeds { pool, txs, docs: DashMap::new(), feeds: DashMap::new() }
    }

    /// Whether `aor`'s presence is kept elsewhere in the pool.
    pub fn remote(&self, aor: &str) -> bool {
        !self.pool.alone() && self.pool.home_of(aor).is_some()
    }

    /// The last document of a presentity homed elsewhere, starting its feed if there is none;
    /// `None` until its home has sent one.
    pub fn document(self: &Arc<Self>, aor: &str) -> Option<Bytes> {
        if !self.feeds.contains_key(aor) {
            self.start(aor);
        }
        self.known(aor)
    }

    /// The last document of a presentity homed elsewhere, if a feed here has brought one;
    /// no feed is started for asking.
    pub fn known(&self, aor: &str) -> Option<Bytes> {
        self.docs.get(aor).map(|d| d.clone())
    }

    fn start(self: &Arc<Self>, aor: &str) {
        let Some(home) = self.pool.home_of(aor) else { return };
        let feed = Arc::new(Feed {
            aor: Arc::from(aor),
            home: home.id.clone(),
            call_id: format!("feed-{}", reply::new_tag()),
            our_tag: reply::new_tag(),
            cseq: AtomicU32::new(1),
            dialog: std::sync::Mutex::new(None),
            until: std::sync::Mutex::new(Instant::now() + Duration::from_secs(FEED_SECS)),
        });
        if self.feeds.insert(feed.aor.clone(), feed.clone()).is_some() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.subscribe(&feed, FEED_SECS).await });
    }

    /// Sends the feed's SUBSCRIBE (initial, refresh, or with 0 its end) to its home.
    async fn subscribe(&self, feed: &Feed, expires: u64) {
        let Some(home) = self.pool.peer_named(&feed.home) else {
            self.forget(&feed.aor);
            return;
        };
        let me = self.pool.address().to_string();
        let dialog = feed.dialog.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ruri = dialog.as_ref().map_or_else(|| format!("sip:{}", feed.aor), |(_, contact)| contact.clone());
        let mut m = Message::request(Method::Subscribe, ruri);
        m.push_header(HeaderName::Via, format!("SIP/2.0/TCP {me};branch={}", crate::transaction::key::new_branch()));
        m.push_header(HeaderName::MaxForwards, "70");
        m.push_header(HeaderName::From, format!("<sip:pool@{me}>;tag={}", feed.our_tag));
        m.push_header(
            HeaderName::To,
            match &dialog {
                Some((tag, _)) => format!("<sip:{}>;tag={tag}", feed.aor),
                None => format!("<sip:{}>", feed.aor),
            },
        );
        m.push_header(HeaderName::CallId, feed.call_id.clone());
        m.push_header(HeaderName::CSeq, format!("{} SUBSCRIBE", feed.cseq.fetch_add(1, Ordering::Relaxed)));
        m.push_header(HeaderName::Contact, format!("<sip:{me};transport=tcp>"));
        m.push_header(HeaderName::Event, "presence");
        m.push_header(HeaderName::Accept, sipfront_proto::presence::pidf::CONTENT_TYPE);
        m.push_header(HeaderName::Expires, expires.to_string());
        m.push_header(HeaderName::ContentLength, "0");
        let vouch = Vouch {
            member: self.pool.id().to_string(),
            client: None,
            identity: None,
            replay: false,
            feed: true,
            partner: None,
            group: None,
        };
        self.pool.seal().sign(&mut m, &vouch);
        let flow = self.pool.connection_to(home.addr, Duration::from_secs(2)).await;
        let target = Target { transport: Transport::Tcp, remote: home.addr, flow, local: None };
        let resp = self.txs.final_response(m, target).await;
        match resp.status() {
            Some(200..=299) if expires > 0 => {
                let tag = resp.to().and_then(|t| t.tag().map(|t| String::from_utf8_lossy(t).into_owned()));
                let contact = resp.contacts().next().and_then(|c| c.ok()).and_then(|c| match c {
                    sipfront_proto::Contact::Addr(a) => Some(String::from_utf8_lossy(a.uri.raw()).into_owned()),
                    sipfront_proto::Contact::Star => None,
                });
                if let (Some(tag), Some(contact)) = (tag, contact) {
                    *feed.dialog.lock().unwrap_or_else(|p| p.into_inner()) = Some((tag, contact));
                }
                *feed.until.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() + Duration::from_secs(expires);
            }
            Some(200..=299) => {}
            other => {
                tracing::debug!(aor = %feed.aor, code = ?other, "presence feed refused; tried again when next needed");
                self.forget(&feed.aor);
            }
        }
    }

    /// A NOTIFY that may belong to a feed: its document kept (or the feed ended).
    pub fn notified(&self, msg: &Message) -> Notified {
        let Some(call_id) = msg.call_id() else { return Notified::NotOurs };
        if !call_id.starts_with(b"feed-") {
            return Notified::NotOurs;
        }
        let our_tag = msg.to().and_then(|t| t.tag().map(|t| String::from_utf8_lossy(t).into_owned()));
        let found = self.feeds.iter().find(|f| f.call_id.as_bytes() == call_id && Some(&f.our_tag) == our_tag.as_ref());
        let Some(feed) = found.map(|f| f.value().clone()) else { return Notified::NotOurs };
        if let Some(tag) = msg.from().and_then(|f| f.tag().map(|t| String::from_utf8_lossy(t).into_owned())) {
            let mut d = feed.dialog.lock().unwrap_or_else(|p| p.into_inner());
            if d.is_none() {
                let contact = msg.contacts().next().and_then(|c| c.ok()).and_then(|c| match c {
                    sipfront_proto::Contact::Addr(a) => Some(String::from_utf8_lossy(a.uri.raw()).into_owned()),
                    sipfront_proto::Contact::Star => None,
                });
                if let Some(contact) = contact {
                    *d = Some((tag, contact));
                }
            }
        }
        let terminated = msg
            .header(HeaderName::SubscriptionState)
            .is_some_and(|s| s.len() >= 10 && s[..10].eq_ignore_ascii_case(b"terminated"));
        if terminated {
            // Its home moved or it lapsed: the next rendering starts a new one if still needed.
            self.forget(&feed.aor);
        } else if !msg.body().is_empty() {
            self.docs.insert(feed.aor.clone(), Bytes::copy_from_slice(msg.body()));
        }
        Notified::Changed(feed.aor.clone())
    }

    fn forget(&self, aor: &str) {
        self.feeds.remove(aor);
        self.docs.remove(aor);
    }

    /// Keeps the feeds that `wanted` still wants, refreshed; ends the others. Feeds whose
    /// presentity's home moved are forgotten: what shows them starts a new one at the new home.
    /// Returns the presentities whose document went away (to be shown again).
    pub fn tend(self: &Arc<Self>, wanted: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let now = Instant::now();
        let mut gone = Vec::new();
        for f in self.feeds.iter().map(|e| e.value().clone()).collect::<Vec<_>>() {
            let home_now = self.pool.home_of(&f.aor).map(|p| p.id);
            if home_now.as_ref() != Some(&f.home) {
                self.forget(&f.aor);
                gone.push(f.aor.clone());
                continue;
            }
            let this = self.clone();
            if !wanted(&f.aor) {
                self.forget(&f.aor);
                tokio::spawn(async move { this.subscribe(&f, 0).await });
            } else if *f.until.lock().unwrap_or_else(|p| p.into_inner()) - now < Duration::from_secs(FEED_SECS / 3) {
                tokio::spawn(async move { this.subscribe(&f, FEED_SECS).await });
            }
        }
        gone
    }
}
