//! Presence (issue 6) over real sockets: PUBLISH with entity tags (RFC 3903), SUBSCRIBE and
//! NOTIFY (RFC 6665, RFC 3856) with fetch, aggregation of publications, watcher authorization,
//! watcher information (RFC 3857) and resource lists (RFC 4662).

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::presence::{pidf, rlmi, winfo};
use sipfront_proto::{HeaderName, Message, Method};
use sipfront_storage::RuleAction;
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "singer"), ("dave", "diver")];

fn fast(c: &mut sipfront::config::Config) {
    c.presence.notify_interval_ms = 50;
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_modify_refresh_remove_with_entity_tags() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, fast).await;
    let mut alice = online(&s, "alice", "wonderland").await;

    let created =
        alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t1", "open", "hi")), None, 600)).await;
    assert_eq!(created.status(), Some(200));
    let etag1 = header(&created, HeaderName::SipETag);
    assert!(!etag1.is_empty(), "SIP-ETag on create");
    assert_eq!(header(&created, HeaderName::Expires), "600");

    let refreshed = alice.request(&publish(&alice, "alice", None, Some(&etag1), 600)).await;
    assert_eq!(refreshed.status(), Some(200), "refresh with SIP-If-Match and no body");
    let etag2 = header(&refreshed, HeaderName::SipETag);
    assert_ne!(etag1, etag2, "a new entity tag each time (RFC 3903 4.1)");

    let stale = alice.request(&publish(&alice, "alice", None, Some(&etag1), 600)).await;
    assert_eq!(stale.status(), Some(412), "the old tag is gone");
    let unknown = alice.request(&publish(&alice, "alice", None, Some("nosuchtag"), 600)).await;
    assert_eq!(unknown.status(), Some(412));

    let modified = alice
        .request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t1", "closed", "away")), Some(&etag2), 600))
        .await;
    assert_eq!(modified.status(), Some(200), "modify");
    let etag3 = header(&modified, HeaderName::SipETag);

    let short = alice.request(&publish(&alice, "alice", None, Some(&etag3), 5)).await;
    assert_eq!(short.status(), Some(423));
    assert_eq!(header(&short, HeaderName::MinExpires), "60");

    let removed = alice.request(&publish(&alice, "alice", None, Some(&etag3), 0)).await;
    assert_eq!(removed.status(), Some(200), "remove with Expires 0");
    let again = alice.request(&publish(&alice, "alice", None, Some(&etag3), 600)).await;
    assert_eq!(again.status(), Some(412), "removed means gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_publications_are_refused() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, fast).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let r = alice.request(&publish(&alice, "alice", Some("<presence><tuple>"), None, 600)).await;
    assert_eq!(r.status(), Some(400), "malformed PIDF");
    let r = alice.request(&publish(&alice, "alice", Some(&pidf_doc("bob", "t", "open", "")), None, 600)).await;
    assert_eq!(r.status(), Some(400), "an entity that is another AOR");
    let r = alice.request(&publish(&alice, "alice", None, None, 600)).await;
    assert_eq!(r.status(), Some(400), "initial PUBLISH without a body");
    let r = alice
        .request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t", "open", "")), None, 600).set("Event", "dialog"))
        .await;
    assert_eq!(r.status(), Some(489));
    assert_eq!(header(&r, HeaderName::AllowEvents), "presence, presence.winfo");
    let mut for_bob = publish(&alice, "bob", Some(&pidf_doc("bob", "t", "open", "")), None, 600);
    for_bob = for_bob.set("From", &format!("<sip:alice@{DOMAIN}>;tag=x"));
    let r = alice.request(&for_bob).await;
    assert_eq!(r.status(), Some(403), "only the presentity publishes for itself");
    let r = alice
        .request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t", "open", "")), None, 600).set("Expires", "soon"))
        .await;
    assert_eq!(r.status(), Some(400), "Expires not a number");
    let r = alice.request(&subscribe(&alice, "alice", "bob", "dialog", 600)).await;
    assert_eq!(r.status(), Some(489), "SUBSCRIBE to an unknown package");
    let r = alice.request(&subscribe(&alice, "alice", "bob", "presence", 600).set("Expires", "x")).await;
    assert_eq!(r.status(), Some(400));
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_notify_on_change_and_unsubscribe() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, fast).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = Phone::udp(&s).await;
    register(&mut bob, "bob", "builder", None).await;

    // Bob over UDP: challenged once, then subscribed.
    let first = subscribe(&bob, "bob", "alice", "presence", 600);
    let req = authorized(&mut bob, &first, "bob", "builder").await;
    let (ok, first) = subscribed(&mut bob, &req).await;
    assert_eq!(header(&ok, HeaderName::Expires), "600");
    assert!(state(&first).starts_with("active;expires="), "{}", state(&first));
    let d = doc(&first);
    assert_eq!(d.tuples[0].basic, Some(pidf::Basic::Open), "registered, nothing published: open");

    alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t1", "closed", "in a meeting")), None, 600)).await;
    let change = notified(&mut bob).await;
    let d = doc(&change);
    assert_eq!(d.tuples[0].basic, Some(pidf::Basic::Closed));
    assert_eq!(d.tuples[0].note.as_deref(), Some("in a meeting"));
    assert!(String::from_utf8_lossy(change.body()).contains("on-the-phone"), "RPID passed through");
    assert_eq!(header(&change, HeaderName::CallId), req.header("Call-ID").unwrap_or_default());

    // Unsubscribe in the dialog: 200 and a final NOTIFY, terminated.
    let to_tag = header(&ok, HeaderName::To);
    let mut unsub = req.clone().next().set("To", &to_tag).set("Expires", "0").without("Proxy-Authorization");
    unsub.start_line = format!("SUBSCRIBE {} SIP/2.0", contact_of(&ok));
    let (ok, last) = subscribed(&mut bob, &unsub).await;
    assert_eq!(header(&ok, HeaderName::Expires), "0");
    assert!(state(&last).starts_with("terminated"), "{}", state(&last));

    alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t2", "open", "back")), None, 600)).await;
    let quiet = tokio::time::timeout(Duration::from_millis(500), bob.recv()).await;
    assert!(quiet.is_err(), "no NOTIFY after the unsubscribe");
    assert_eq!(s.metric("sipfront_subscriptions").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_gets_one_notify_and_leaves_nothing_behind() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, fast).await;
    let _alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    let (ok, n) = {
        let req = subscribe(&bob, "bob", "alice", "presence", 0);
        subscribed(&mut bob, &req).await
    };
    assert_eq!(header(&ok, HeaderName::Expires), "0");
    assert!(state(&n).starts_with("terminated"), "{}", state(&n));
    assert_eq!(doc(&n).tuples[0].basic, Some(pidf::Basic::Open));
    assert_eq!(s.metric("sipfront_subscriptions").await, 0.0, "no state kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_endpoints_publications_are_aggregated() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, fast).await;
    let mut phone = online(&s, "alice", "wonderland").await;
    let mut laptop = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    phone
        .request(&publish(&phone, "alice", Some(&pidf_doc("alice", "same-id", "open", "on the phone")), None, 600))
        .await;
    laptop
        .request(&publish(&laptop, "alice", Some(&pidf_doc("alice", "same-id", "closed", "laptop asleep")), None, 600))
        .await;
    let (_, n) = {
        let req = subscribe(&bob, "bob", "alice", "presence", 600);
        subscribed(&mut bob, &req).await
    };
    let d = doc(&n);
    assert_eq!(d.tuples.len(), 2, "one tuple per publishing endpoint: {}", String::from_utf8_lossy(n.body()));
    assert_ne!(d.tuples[0].id, d.tuples[1].id);
    let notes: Vec<_> = d.tuples.iter().filter_map(|t| t.note.clone()).collect();
    assert!(notes.contains(&"on the phone".to_string()) && notes.contains(&"laptop asleep".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_allow_block_and_polite_block() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        fast(c);
        c.presence.default_policy = "pending".into();
    })
    .await;
    let store = s.server.directory.store().clone();
    let alice_aor = format!("alice@{DOMAIN}");
    let mut alice = online(&s, "alice", "wonderland").await;
    alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t", "open", "here")), None, 600)).await;

    // No rule: pending, and a neutral document.
    let mut bob = online(&s, "bob", "builder").await;
    let (_, n) = {
        let req = subscribe(&bob, "bob", "alice", "presence", 600);
        subscribed(&mut bob, &req).await
    };
    assert!(state(&n).starts_with("pending"), "{}", state(&n));
    assert!(doc(&n).tuples.is_empty(), "nothing shown to a pending watcher");

    // Alice allows Bob: the live subscription turns active with her state.
    store.set_rule(&alice_aor, &format!("bob@{DOMAIN}"), RuleAction::Allow).await.unwrap();
    let n = notified(&mut bob).await;
    assert!(state(&n).starts_with("active"), "{}", state(&n));
    assert_eq!(doc(&n).tuples[0].note.as_deref(), Some("here"));

    // Polite block for Carol: looks active, shows offline.
    // Rules reach the server through the change log, polled every database.poll_ms (100 here).
    let changes = s.server.directory.changes();
    store.set_rule(&alice_aor, &format!("carol@{DOMAIN}"), RuleAction::PoliteBlock).await.unwrap();
    until_named(changes, &alice_aor).await;
    let mut carol = online(&s, "carol", "singer").await;
    let (_, n) = {
        let req = subscribe(&carol, "carol", "alice", "presence", 600);
        subscribed(&mut carol, &req).await
    };
    assert!(state(&n).starts_with("active"), "{}", state(&n));
    assert_eq!(doc(&n).tuples[0].basic, Some(pidf::Basic::Closed), "polite-block shows offline");

    // Block for the whole domain but Bob's own rule: Dave is refused with 403.
    let changes = s.server.directory.changes();
    store.set_rule(&alice_aor, &format!("*@{DOMAIN}"), RuleAction::Block).await.unwrap();
    until_named(changes, &alice_aor).await;
    let mut dave = online(&s, "dave", "diver").await;
    let r = dave.request(&subscribe(&dave, "dave", "alice", "presence", 600)).await;
    assert_eq!(r.status(), Some(403), "block");

    // Bob newly blocked: his subscription ends at once, and he sees no more changes.
    store.set_rule(&alice_aor, &format!("bob@{DOMAIN}"), RuleAction::Block).await.unwrap();
    let n = notified(&mut bob).await;
    assert!(state(&n).starts_with("terminated;reason=rejected"), "{}", state(&n));
    alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t", "closed", "gone")), None, 600)).await;
    assert!(tokio::time::timeout(Duration::from_millis(500), bob.recv()).await.is_err(), "blocked: nothing more");
}

#[tokio::test(flavor = "multi_thread")]
async fn winfo_tells_of_a_pending_watcher() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        fast(c);
        c.presence.default_policy = "pending".into();
    })
    .await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let (_, n) = {
        let req = subscribe(&alice, "alice", "alice", "presence.winfo", 600);
        subscribed(&mut alice, &req).await
    };
    assert_eq!(header(&n, HeaderName::ContentType), winfo::CONTENT_TYPE);
    let info = winfo::parse(n.body()).expect("watcherinfo");
    assert!(info.lists[0].watchers.is_empty());

    let mut bob = online(&s, "bob", "builder").await;
    {
        let req = subscribe(&bob, "bob", "alice", "presence", 600);
        subscribed(&mut bob, &req).await
    };
    let n = notified(&mut alice).await;
    let info = winfo::parse(n.body()).expect("watcherinfo");
    let w = &info.lists[0].watchers;
    assert_eq!(w.len(), 1, "{}", String::from_utf8_lossy(n.body()));
    assert_eq!(w[0].uri, format!("sip:bob@{DOMAIN}"));
    assert_eq!(w[0].status, winfo::WatcherStatus::Pending);

    let r = alice.request(&subscribe(&alice, "alice", "bob", "presence.winfo", 600)).await;
    assert_eq!(r.status(), Some(403), "only one's own watchers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_list_subscription_gets_full_then_partial_state() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, fast).await;
    let store = s.server.directory.store().clone();
    // The list's change reaches the server before the subscription, or it would bring a
    // second full NOTIFY.
    let changes = s.server.directory.changes();
    let contacts: Vec<_> = [("bob", "Bob"), ("carol", "Carol")]
        .into_iter()
        .map(|(c, name)| sipfront_storage::Contact {
            owner: format!("alice@{DOMAIN}"),
            contact: format!("{c}@{DOMAIN}"),
            display_name: name.into(),
            group: "work".into(),
        })
        .collect();
    // One transaction, one change.
    store.add_contacts(&contacts).await.unwrap();
    until_named(changes, &format!("alice@{DOMAIN}")).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    let list = subscribe(&alice, "alice", "alice+contacts", "presence", 600)
        .set("Supported", "eventlist")
        .set("Accept", "application/pidf+xml, application/rlmi+xml, multipart/related");
    let without = alice.request(&list.clone().without("Supported").new_branch()).await;
    assert_eq!(without.status(), Some(421), "eventlist required");

    let (_, n) = subscribed(&mut alice, &list).await;
    let (full, parts) = rlmi_of(&n);
    assert!(full.full_state);
    assert_eq!(full.resources.len(), 2);
    assert_eq!(full.resources[0].name.as_deref(), Some("Bob"));
    assert_eq!(parts, 2, "a PIDF for each");

    bob.request(&publish(&bob, "bob", Some(&pidf_doc("bob", "b", "closed", "busy")), None, 600)).await;
    let n = notified(&mut alice).await;
    let (partial, parts) = rlmi_of(&n);
    assert!(!partial.full_state);
    assert!(partial.version > full.version);
    assert_eq!(partial.resources.len(), 1, "only what changed");
    assert_eq!(partial.resources[0].uri, format!("sip:bob@{DOMAIN}"));
    assert_eq!(parts, 1);
    assert!(String::from_utf8_lossy(n.body()).contains("busy"));
}

/// The RLMI document of a list NOTIFY and how many other parts it has.
fn rlmi_of(n: &Message) -> (rlmi::Rlmi, usize) {
    let ct = n.header(HeaderName::ContentType).expect("Content-Type");
    assert!(String::from_utf8_lossy(ct).starts_with("multipart/related"));
    let parts = sipfront_proto::multipart::parts(ct, n.body()).expect("multipart body");
    (rlmi::parse(parts[0].body).expect("RLMI first"), parts.len() - 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_keeps_rules_and_contact_lists_and_live_subscriptions_follow() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, fast).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t", "open", "here")), None, 600)).await;
    let mut bob = online(&s, "bob", "builder").await;
    let (_, n) = {
        let req = subscribe(&bob, "bob", "alice", "presence", 600);
        subscribed(&mut bob, &req).await
    };
    assert!(state(&n).starts_with("active"), "same domain: allowed by default");

    let out = cli(&s, &["rules", "block", "alice@example.test", "sip:bob@example.test"], "").await;
    assert!(out.contains("block bob@example.test"), "{out}");
    let n = notified(&mut bob).await;
    assert!(state(&n).starts_with("terminated;reason=rejected"), "a newly blocked watcher is cut off: {}", state(&n));

    cli(&s, &["rules", "polite-block", "alice@example.test", "*@other.test"], "").await;
    let json = cli(&s, &["rules", "list", "alice@example.test", "--format", "json"], "").await;
    let rules: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON rules");
    assert_eq!(rules.len(), 2, "{json}");
    assert_eq!(rules[0]["watcher"], "*@other.test");
    assert_eq!(rules[0]["action"], "polite-block");
    cli(&s, &["rules", "remove", "alice@example.test", "*@other.test"], "").await;

    cli(
        &s,
        &["contacts", "add", "alice@example.test", "carol@example.test", "--group", "work", "--name", "Carol C"],
        "",
    )
    .await;
    cli(&s, &["contacts", "add", "alice@example.test", "dave@example.test"], "").await;
    let csv = cli(&s, &["contacts", "list", "alice@example.test", "--format", "csv"], "").await;
    assert_eq!(csv, "group,contact,name\n,dave@example.test,\nwork,carol@example.test,Carol C\n");
    cli(&s, &["contacts", "remove", "alice@example.test", "dave@example.test"], "").await;
    let table = cli(&s, &["contacts", "list", "alice@example.test"], "").await;
    assert!(table.contains("carol@example.test") && !table.contains("dave"), "{table}");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_sipfront"))
        .arg("--data-dir")
        .arg(s.dir.path())
        .args(["rules", "allow", "nobody@example.test", "bob@example.test"])
        .output()
        .expect("run the CLI");
    assert!(!refused.status.success(), "an unknown owner is an error");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no such user"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_never_answers_loses_its_subscription() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        fast(c);
        c.transaction.t1_ms = 50;
    })
    .await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = Phone::udp(&s).await;
    register(&mut bob, "bob", "builder", None).await;
    let first = subscribe(&bob, "bob", "alice", "presence", 600);
    let req = authorized(&mut bob, &first, "bob", "builder").await;
    bob.send(&req.to_bytes()).await;
    // The 200 and the NOTIFY come; Bob never answers the NOTIFY (nor its retransmissions).
    let mut saw_notify = false;
    for _ in 0..2 {
        let m = bob.recv().await;
        saw_notify |= m.method() == Some(&Method::Notify);
    }
    assert!(saw_notify);
    assert_eq!(s.metric("sipfront_subscriptions").await, 1.0);
    // Timer F (64*T1 = 3.2 s) ends the NOTIFY transaction, and with it the subscription.
    let ended = eventually(Duration::from_secs(8), async || s.metric("sipfront_subscriptions").await == 0.0).await;
    assert!(ended, "the subscription is gone");
    alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t", "open", "x")), None, 600)).await;
    assert!(s.metric("sipfront_notify_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscribe_storm_from_one_watcher_hits_its_cap() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        fast(c);
        c.presence.max_subscriptions_per_watcher = 2;
    })
    .await;
    let mut bob = online(&s, "bob", "builder").await;
    for target in ["alice", "carol"] {
        let req = subscribe(&bob, "bob", target, "presence", 600);
        let (ok, _) = subscribed(&mut bob, &req).await;
        assert_eq!(ok.status(), Some(200));
    }
    let r = bob.request(&subscribe(&bob, "bob", "dave", "presence", 600)).await;
    assert_eq!(r.status(), Some(403), "beyond presence.max_subscriptions_per_watcher");
    // A fetch keeps no state, so it is still answered.
    let req = subscribe(&bob, "bob", "dave", "presence", 0);
    let (ok, n) = subscribed(&mut bob, &req).await;
    assert_eq!(ok.status(), Some(200));
    assert!(state(&n).starts_with("terminated"));
}
