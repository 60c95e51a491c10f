//! Distribution groups over SIP (issue 21, items 3 to 5), over real sockets: a MESSAGE to a
//! group reaches its online and offline members once each, archived per recipient, answered
//! once; who may send and how large a group may be; a SUBSCRIBE with eventlist watches every
//! member in one dialog, each member's rules applied, and membership changes arrive as partial
//! RLMI state; in a pool, members homed on other members are reached through their homes.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::presence::rlmi;
use sipfront_proto::{HeaderName, Message, Method};
use sipfront_storage::testing::eventually;
use sipfront_storage::RuleAction;
use std::time::Duration;

const USERS: &[(&str, &str)] = &[
    ("alice", "wonderland"),
    ("bob", "builder"),
    ("carol", "singer"),
    ("dave", "diver"),
    ("erin", "eagle"),
    ("boss", "bigdesk"),
];

fn aor(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// Runs `change` against the store and waits until the server has followed it: its group
/// names and expansions read again.
async fn groups_changed<F: std::future::Future>(s: &TestServer, change: F) -> F::Output {
    let mut seen = s.server.directory.groups().changes();
    seen.borrow_and_update();
    let out = change.await;
    tokio::time::timeout(Duration::from_secs(5), seen.changed())
        .await
        .expect("the group change reaches the server")
        .unwrap();
    out
}

/// Adds group `name` with `members` (user names, or other groups' names).
async fn add_group(s: &TestServer, name: &str, members: &[&str]) {
    let store = s.server.directory.store().clone();
    groups_changed(s, async {
        store.add_group(&aor(name), name).await.unwrap();
        let rows: Vec<(String, String)> = members.iter().map(|m| (aor(name), aor(m))).collect();
        store.add_group_members(&rows).await.unwrap();
    })
    .await;
}

fn reason(m: &Message) -> String {
    String::from_utf8_lossy(m.reason().unwrap_or_default()).into_owned()
}

fn to_group(phone: &Phone, from: &str, group: &str, body: &str) -> Request {
    let mut r = Request::message(phone, from, group);
    r.body = body.into();
    r
}

/// No request reaches `phone` for a while.
async fn nothing_for(phone: &mut Phone) {
    let got = match phone {
        Phone::Udp(c) => c.recv(QUIET).await.is_some(),
        Phone::Tcp(c) => c.next_frame(QUIET).await.is_some(),
        Phone::Tls(c) => c.next_frame(QUIET).await.is_some(),
    };
    assert!(!got, "nothing more for this phone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_to_a_group_reaches_online_and_offline_members_once_each() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let store = s.server.directory.store().clone();
    // Dave is a member directly and through a nested group: he gets it once.
    add_group(&s, "divers", &["dave"]).await;
    add_group(&s, "team", &["alice", "bob", "carol", "dave", "divers"]).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    let mut carol = Phone::udp(&s).await;
    register(&mut carol, "carol", "singer", None).await;

    let msg = to_group(&alice, "alice", "team", "stand-up in 5");
    let answer = alice.request(&msg).await;
    assert_eq!(answer.status(), Some(202), "answered once, at once: {:?}", answer.reason());
    assert_matches_request(&answer, &msg);
    for (phone, tag) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        let got = phone.expect_request(Method::Message).await;
        assert_eq!(got.body(), b"stand-up in 5");
        assert!(header(&got, HeaderName::From).contains(&aor("alice")), "from the sender");
        assert!(header(&got, HeaderName::To).contains(&aor("team")), "to the group");
        assert!(got.header(HeaderName::ProxyAuthorization).is_none());
        // A request of the server's own (RFC 3261 8.1.1): not the sender's Call-ID or tag.
        assert_ne!(header(&got, HeaderName::CallId), msg.header("Call-ID").unwrap());
        assert!(!header(&got, HeaderName::From).contains(msg.header("From").unwrap().split("tag=").nth(1).unwrap()));
        phone.answer(&got, 200, tag).await;
    }
    nothing_for(&mut alice).await;
    nothing_for(&mut bob).await;

    // Dave is away: his copy is kept, and comes when he registers.
    assert!(
        eventually(Duration::from_secs(5), async || {
            store.offline_messages(&aor("dave"), 10).await.unwrap().len() == 1
        })
        .await,
        "kept for the member who is away"
    );
    let mut dave = Phone::tcp(&s).await;
    register(&mut dave, "dave", "diver", None).await;
    let got = dave.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"stand-up in 5");
    dave.answer(&got, 200, "dave").await;

    // Archived once per recipient, never for the sender.
    for member in ["bob", "carol", "dave"] {
        let store = store.clone();
        assert!(
            eventually(Duration::from_secs(5), async || {
                store.search_archive(&aor(member), Some(&aor("alice")), 0, i64::MAX, 10).await.unwrap().len() == 1
            })
            .await,
            "archived for {member}"
        );
    }
    assert!(store.search_archive(&aor("alice"), Some(&aor("alice")), 0, i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(s.metric("sipfront_group_messages_total{result=\"202\"}").await, 1.0);
    assert_eq!(s.metric("sipfront_group_deliveries_total").await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_members_and_the_configured_senders_may_send_to_a_group_of_bounded_size() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.groups.max_members_for_message = 3;
        c.groups.senders = vec![aor("boss")];
    })
    .await;
    add_group(&s, "team", &["alice", "bob", "carol"]).await;
    add_group(&s, "everyone", &["alice", "bob", "carol", "dave"]).await;
    add_group(&s, "loop-a", &["loop-b", "alice"]).await;
    add_group(&s, "loop-b", &["loop-a", "bob"]).await;
    let mut erin = online(&s, "erin", "eagle").await;
    let refused = erin.request(&to_group(&erin, "erin", "team", "let me in")).await;
    assert_eq!(refused.status(), Some(403));
    assert!(reason(&refused).contains("only the group's members"), "{:?}", refused.reason());

    let mut boss = online(&s, "boss", "bigdesk").await;
    let mut bob = online(&s, "bob", "builder").await;
    assert_eq!(boss.request(&to_group(&boss, "boss", "team", "all hands")).await.status(), Some(202));
    let got = bob.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"all hands");
    bob.answer(&got, 200, "bob").await;

    let mut alice = online(&s, "alice", "wonderland").await;
    let too_many = alice.request(&to_group(&alice, "alice", "everyone", "hi all")).await;
    assert_eq!(too_many.status(), Some(403));
    assert!(reason(&too_many).contains("more than 3 members"), "{:?}", too_many.reason());

    // A loop of groups is expanded once: Bob gets one copy.
    assert_eq!(alice.request(&to_group(&alice, "alice", "loop-a", "round")).await.status(), Some(202));
    let got = bob.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"round");
    bob.answer(&got, 200, "bob").await;
    nothing_for(&mut bob).await;

    // The message's own checks come first: no body type, no fan-out.
    let mut bad = to_group(&alice, "alice", "team", "x");
    bad = bad.without("Content-Type");
    assert_eq!(alice.request(&bad).await.status(), Some(400));

    // A group removed is nobody's address any more.
    let store = s.server.directory.store().clone();
    groups_changed(&s, store.remove_group(&aor("team"))).await.unwrap();
    assert_eq!(alice.request(&to_group(&alice, "alice", "team", "anyone?")).await.status(), Some(404));
    assert_eq!(s.metric("sipfront_group_messages_total{result=\"403\"}").await, 2.0);
}

/// The RLMI document of a list NOTIFY, and its parts' count beside it.
fn rlmi_of(n: &Message) -> (rlmi::Rlmi, usize) {
    let ct = n.header(HeaderName::ContentType).expect("Content-Type");
    let parts = sipfront_proto::multipart::parts(ct, n.body()).expect("multipart body");
    (rlmi::parse(parts[0].body).expect("RLMI first"), parts.len() - 1)
}

fn resource<'a>(list: &'a rlmi::Rlmi, user: &str) -> &'a rlmi::Resource {
    let uri = format!("sip:{}", aor(user));
    list.resources.iter().find(|r| r.uri == uri).unwrap_or_else(|| panic!("{uri} in {list:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_is_watched_in_one_subscription_and_its_membership_changes_arrive_as_partial_state() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.presence.notify_interval_ms = 50;
        c.groups.max_members_for_subscription = 3;
    })
    .await;
    let store = s.server.directory.store().clone();
    // Carol blocks Alice: her instance says so, and shows nothing of her.
    store.set_rule(&aor("carol"), &aor("alice"), RuleAction::Block).await.unwrap();
    add_group(&s, "team", &["bob", "carol"]).await;
    add_group(&s, "crowd", &["bob", "carol", "dave", "erin"]).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;

    let watch = subscribe(&alice, "alice", "team", "presence", 600)
        .set("Accept", "application/pidf+xml, application/rlmi+xml, multipart/related");
    let without = alice.request(&watch.clone()).await;
    assert_eq!(without.status(), Some(421), "eventlist required");
    let too_large = subscribe(&alice, "alice", "crowd", "presence", 600).set("Supported", "eventlist");
    let refused = alice.request(&too_large).await;
    assert_eq!(refused.status(), Some(403));
    assert!(reason(&refused).contains("more than 3 members"));

    let watch = watch.set("Supported", "eventlist").new_branch();
    let (ok, n) = subscribed(&mut alice, &watch).await;
    assert_eq!(header(&ok, HeaderName::Require), "eventlist");
    let (full, parts) = rlmi_of(&n);
    assert!(full.full_state);
    assert_eq!(full.uri, format!("sip:{}", aor("team")));
    assert_eq!(full.resources.len(), 2);
    assert!(matches!(resource(&full, "bob").instances[0].state, rlmi::InstanceState::Active));
    assert!(
        matches!(&resource(&full, "carol").instances[0].state, rlmi::InstanceState::Terminated { reason: Some(r) } if r == "rejected"),
        "Carol's rule applies to the group's watcher"
    );
    assert_eq!(parts, 1, "a PIDF for Bob only");

    // A member's presence: partial state, that member only.
    bob.request(&publish(&bob, "bob", Some(&pidf_doc("bob", "b", "closed", "in a meeting")), None, 600)).await;
    let n = notified(&mut alice).await;
    let (partial, _) = rlmi_of(&n);
    assert!(!partial.full_state);
    assert_eq!(partial.resources.len(), 1);
    assert!(String::from_utf8_lossy(n.body()).contains("in a meeting"));
    let bob_id = resource(&full, "bob").instances[0].id.clone();
    assert_eq!(resource(&partial, "bob").instances[0].id, bob_id, "an instance keeps its id");

    // Membership: Dave added is sent as he is; Carol removed, as terminated.
    groups_changed(&s, store.add_group_member(&aor("team"), &aor("dave"))).await.unwrap();
    let n = notified(&mut alice).await;
    let (added, parts) = rlmi_of(&n);
    assert!(!added.full_state, "partial state: {added:?}");
    assert_eq!(added.resources.len(), 1);
    assert!(matches!(resource(&added, "dave").instances[0].state, rlmi::InstanceState::Active));
    assert_eq!(parts, 1);
    groups_changed(&s, store.remove_group_member(&aor("team"), &aor("carol"))).await.unwrap();
    let n = notified(&mut alice).await;
    let (removed, parts) = rlmi_of(&n);
    assert!(!removed.full_state);
    assert_eq!(removed.resources.len(), 1);
    assert!(
        matches!(&resource(&removed, "carol").instances[0].state, rlmi::InstanceState::Terminated { reason: Some(r) } if r == "noresource"),
        "{removed:?}"
    );
    assert_eq!(parts, 0);
    assert!(removed.version > added.version);

    // Bob in the group still, Carol no more: only Bob's change is told.
    bob.request(&publish(&bob, "bob", Some(&pidf_doc("bob", "b", "open", "back")), None, 600)).await;
    let (again, _) = rlmi_of(&notified(&mut alice).await);
    assert_eq!(again.resources.len(), 1);
    resource(&again, "bob");

    // The group grows past the limit: the subscription ends.
    groups_changed(&s, store.add_group_member(&aor("team"), &aor("erin"))).await.unwrap();
    let (growing, _) = rlmi_of(&notified(&mut alice).await);
    resource(&growing, "erin");
    groups_changed(&s, store.add_group_member(&aor("team"), &aor("boss"))).await.unwrap();
    let n = notified(&mut alice).await;
    assert!(state(&n).starts_with("terminated;reason=rejected"), "{}", state(&n));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_group_ends_its_subscriptions_and_a_fetch_leaves_nothing() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| c.presence.notify_interval_ms = 50).await;
    let store = s.server.directory.store().clone();
    add_group(&s, "team", &["bob", "carol"]).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let fetch = subscribe(&alice, "alice", "team", "presence", 0).set("Supported", "eventlist");
    let (_, n) = subscribed(&mut alice, &fetch).await;
    assert!(state(&n).starts_with("terminated"));
    assert_eq!(rlmi_of(&n).0.resources.len(), 2);

    let watch = subscribe(&alice, "alice", "team", "presence", 600).set("Supported", "eventlist");
    subscribed(&mut alice, &watch).await;
    groups_changed(&s, store.remove_group(&aor("team"))).await.unwrap();
    let n = notified(&mut alice).await;
    assert!(state(&n).starts_with("terminated;reason=noresource"), "{}", state(&n));
    assert_eq!(s.metric("sipfront_subscriptions{event=\"presence-list\"}").await, 0.0);

    // A group of 50,000: refused by size (`groups.max_members_for_message`, 500 by default,
    // and `_for_subscription`, 100), its expansion read no further than 10,001.
    // Alice among them: who may not send learns nothing of its size.
    let rows: Vec<(String, String)> =
        (0..50_000).map(|i| (aor("huge"), format!("m{i}@{DOMAIN}"))).chain([(aor("huge"), aor("alice"))]).collect();
    groups_changed(&s, async {
        store.add_group(&aor("huge"), "Huge").await.unwrap();
        store.add_group_members(&rows).await.unwrap();
    })
    .await;
    let refused = alice.request(&to_group(&alice, "alice", "huge", "hello all")).await;
    assert_eq!(refused.status(), Some(403));
    assert!(reason(&refused).contains("more than 500 members"), "{:?}", refused.reason());
    let watch = subscribe(&alice, "alice", "huge", "presence", 600).set("Supported", "eventlist");
    assert_eq!(alice.request(&watch).await.status(), Some(403));
    let group = s.server.directory.group(&aor("huge")).await.unwrap().unwrap();
    assert!(group.truncated && group.members.len() == sipfront::core::groups::MAX_MEMBERS);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_pool_a_group_message_reaches_members_homed_on_every_member() {
    use sipfront::core::pool::home_among;
    const IDS: [&str; 2] = ["fe-a", "fe-b"];
    let users: Vec<(String, String)> = (0..40).map(|i| (format!("user{i}"), "secret".to_string())).collect();
    let refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let a = TestServer::with_users(&Backend::Sqlite, &refs, pool_member(IDS[0], String::new())).await;
    let shared = format!("sqlite://{}", a.dir.path().join("sipfront.db").display());
    let b = TestServer::with(pool_member(IDS[1], shared)).await;
    for m in [&a, &b] {
        assert!(eventually(Duration::from_secs(5), async || m.server.membership.peers().len() == 1).await);
    }
    let home = |aor: &str| home_among(IDS, aor).unwrap();
    // The group homed on A; a sender and a member homed on A, a member homed on B.
    let group = (0..100).map(|i| format!("grp{i}")).find(|g| home(&aor(g)) == IDS[0]).unwrap();
    let on =
        |id: &str, skip: usize| users.iter().map(|(u, _)| u.clone()).filter(|u| home(&aor(u)) == id).nth(skip).unwrap();
    let (sender, near, far) = (on(IDS[0], 0), on(IDS[0], 1), on(IDS[1], 0));
    let store = a.server.directory.store().clone();
    let mut seen = b.server.directory.groups().changes();
    seen.borrow_and_update();
    groups_changed(&a, async {
        store.add_group(&aor(&group), "Pool team").await.unwrap();
        let rows: Vec<(String, String)> = [&sender, &near, &far].iter().map(|m| (aor(&group), aor(m))).collect();
        store.add_group_members(&rows).await.unwrap();
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), seen.changed()).await.unwrap().unwrap();

    // Everyone connects to B (its edge), whatever their home.
    let mut sender_phone = online(&b, &sender, "secret").await;
    let mut near_phone = online(&b, &near, "secret").await;
    let mut far_phone = online(&b, &far, "secret").await;
    let msg = to_group(&sender_phone, &sender, &group, "pool-wide");
    assert_eq!(sender_phone.request(&msg).await.status(), Some(202));
    for (phone, tag) in [(&mut near_phone, "near"), (&mut far_phone, "far")] {
        let got = phone.expect_request(Method::Message).await;
        assert_eq!(got.body(), b"pool-wide");
        assert!(got.header_named("X-Sipfront-Pool").is_none(), "the seal stays inside the pool");
        phone.answer(&got, 200, tag).await;
    }
    // The group watched from B: its subscription is held at the group's home, A, which
    // follows the member homed on B through its feed.
    let mut watcher = online(&b, &on(IDS[1], 1), "secret").await;
    let watcher_name = on(IDS[1], 1);
    let watch = subscribe(&watcher, &watcher_name, &group, "presence", 600).set("Supported", "eventlist");
    let (_, n) = subscribed(&mut watcher, &watch).await;
    assert_eq!(rlmi_of(&n).0.resources.len(), 3);
    let ok =
        far_phone.request(&publish(&far_phone, &far, Some(&pidf_doc(&far, "f", "open", "far away")), None, 600)).await;
    assert_eq!(ok.status(), Some(200));
    // The feed's first document may come first (it starts with the list's first state).
    let mut seen = false;
    for _ in 0..3 {
        let n = notified(&mut watcher).await;
        if String::from_utf8_lossy(n.body()).contains("far away") {
            seen = true;
            break;
        }
    }
    assert!(seen, "a member homed on B, seen from A");
    groups_changed(&a, store.remove_group_member(&aor(&group), &aor(&near))).await.unwrap();
    let (partial, _) = rlmi_of(&notified(&mut watcher).await);
    assert!(!partial.full_state);
    assert!(
        matches!(&resource(&partial, &near).instances[0].state, rlmi::InstanceState::Terminated { reason: Some(r) } if r == "noresource")
    );

    for member in [&near, &far] {
        let store = store.clone();
        assert!(
            eventually(Duration::from_secs(5), async || {
                store.search_archive(&aor(member), Some(&aor(&sender)), 0, i64::MAX, 10).await.unwrap().len() == 1
            })
            .await,
            "archived once for {member}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_outs_beyond_the_copies_in_flight_are_refused_for_a_while() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| c.groups.max_copies_in_flight = 1).await;
    add_group(&s, "team", &["alice", "bob", "carol"]).await;
    add_group(&s, "pair", &["alice", "bob"]).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let refused = alice.request(&to_group(&alice, "alice", "team", "two copies")).await;
    assert_eq!(refused.status(), Some(503));
    assert!(refused.header(HeaderName::RetryAfter).is_some());
    assert!(reason(&refused).contains("too many group messages"), "{:?}", refused.reason());
    // One copy fits; once it is delivered (kept for Bob, away) the next one fits too.
    assert_eq!(alice.request(&to_group(&alice, "alice", "pair", "one copy")).await.status(), Some(202));
    let store = s.server.directory.store().clone();
    assert!(
        eventually(Duration::from_secs(5), async || store.offline_messages(&aor("bob"), 10).await.unwrap().len() == 1)
            .await
    );
    let mut accepted = false;
    for _ in 0..50 {
        if alice.request(&to_group(&alice, "alice", "pair", "again")).await.status() == Some(202) {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "the copy's permit comes back once it is delivered");
    assert!(s.metric("sipfront_over_capacity_total{table=\"group_copies\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_account_is_spelled_with_capitals_is_reached_and_watched_by_its_account() {
    let users: Vec<(&str, &str)> = USERS.iter().copied().chain([("Frank", "furter")]).collect();
    let s = TestServer::with_users(&Backend::Sqlite, &users, |c| c.presence.notify_interval_ms = 50).await;
    let store = s.server.directory.store().clone();
    // The group keeps `frank@...`; his rules and bindings are his account's, `Frank@...`.
    store.set_rule(&aor("Frank"), &aor("alice"), RuleAction::Block).await.unwrap();
    add_group(&s, "team", &["alice", "Frank", "bob"]).await;
    let mut frank = online(&s, "Frank", "furter").await;
    let mut alice = online(&s, "alice", "wonderland").await;
    assert_eq!(alice.request(&to_group(&alice, "alice", "team", "hi Frank")).await.status(), Some(202));
    let got = frank.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"hi Frank");
    frank.answer(&got, 200, "frank").await;

    let watch = subscribe(&alice, "alice", "team", "presence", 600).set("Supported", "eventlist");
    let (_, n) = subscribed(&mut alice, &watch).await;
    let (full, _) = rlmi_of(&n);
    assert!(
        matches!(&resource(&full, "Frank").instances[0].state, rlmi::InstanceState::Terminated { reason: Some(r) } if r == "rejected"),
        "Frank's own rule applies: {full:?}"
    );
}
