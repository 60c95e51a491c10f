//! Routing across the pool (issue 15, items 2 and 3), three members on one store over real
//! sockets: a client's requests are relayed by the member holding its connection (its edge)
//! to the home of the AOR they concern, and the home reaches a client through its edge; a
//! request for a user registered anywhere in the pool is delivered at once, never stored as
//! offline; a hop that claims to be a member without the pool's seal is refused.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront::core::pool::home_among;
use sipfront_proto::{HeaderName, Method};
use sipfront_storage::testing::eventually;
use std::time::Duration;

const IDS: [&str; 3] = ["fe-a", "fe-b", "fe-c"];
const PASSWORD: &str = "secret";

/// Three members on one store (A's SQLite file, or PostgreSQL) with user0..user99, each
/// seeing the other two.
async fn pool(backend: &Backend) -> Vec<TestServer> {
    let all = users();
    let refs: Vec<(&str, &str)> = all.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let a = TestServer::with_users(backend, &refs, pool_member(IDS[0], String::new())).await;
    let shared = match backend {
        Backend::Sqlite => format!("sqlite://{}", a.dir.path().join("sipfront.db").display()),
        Backend::Postgres(url) => url.clone(),
    };
    let b = TestServer::with(pool_member(IDS[1], shared.clone())).await;
    let c = TestServer::with(pool_member(IDS[2], shared)).await;
    let members = vec![a, b, c];
    for m in &members {
        assert!(
            eventually(Duration::from_secs(5), async || m.server.membership.peers().len() == 2).await,
            "{} sees the other two",
            m.server.membership.id()
        );
    }
    members
}

/// Which member (index into [`IDS`]) is the home of `user`.
fn home(user: &str) -> usize {
    let h = home_among(IDS, &format!("{user}@{DOMAIN}")).unwrap();
    IDS.iter().position(|i| *i == h).unwrap()
}

/// A user, among user0..user99, whose home is member `h`, other than those in `taken`.
fn user_homed_on(h: usize, taken: &[&str]) -> String {
    (0..100).map(|i| format!("user{i}")).find(|u| home(u) == h && !taken.contains(&u.as_str())).unwrap()
}

fn users() -> Vec<(String, String)> {
    (0..100).map(|i| (format!("user{i}"), PASSWORD.to_string())).collect()
}

#[tokio::test]
async fn a_message_reaches_a_user_connected_to_another_member_through_its_home() {
    for backend in backends("pool_routing_message").await {
        let m = pool(&backend).await;
        // Bob's home is C, and he is connected to B; Alice is homed on B and connected to A:
        // every hop of the pool is exercised (A -> C -> B for a message to Bob, and a
        // REGISTER relayed by each edge to another member).
        let bob = user_homed_on(2, &[]);
        let alice = user_homed_on(1, &[&bob]);
        let mut bob_phone = online(&m[1], &bob, PASSWORD).await;
        let mut alice_phone = online(&m[0], &alice, PASSWORD).await;
        assert_eq!(m[2].bindings_of(&bob).len(), 1, "Bob's binding is at his home, C");
        assert!(m[1].bindings_of(&bob).is_empty(), "not at his edge");
        assert_eq!(m[1].bindings_of(&alice).len(), 1, "Alice's at hers, B");

        // Alice's connection authenticated at her home through A: A vouches for it.
        let msg = Request::message(&alice_phone, &alice, &bob);
        alice_phone.send(&msg.to_bytes()).await;
        let got = bob_phone.expect_request(Method::Message).await;
        assert_eq!(got.body(), b"hello");
        assert!(got.header_named("X-Sipfront-Pool").is_none(), "the seal stays inside the pool");
        bob_phone.answer(&got, 200, "bob").await;
        let ok = alice_phone.expect_response(200).await;
        assert_matches_request(&ok, &msg);

        // And back: Bob to Alice, through C? No: Alice's home is B, Bob's edge.
        let back = Request::message(&bob_phone, &bob, &alice);
        bob_phone.send(&back.to_bytes()).await;
        let got = alice_phone.expect_request(Method::Message).await;
        alice_phone.answer(&got, 200, "alice").await;
        bob_phone.expect_response(200).await;

        // A UDP client (HAProxy does not balance UDP: it reaches a member directly, as DNS SRV
        // sends it) is reached from the whole pool through that member like a TCP one.
        let carol = user_homed_on(0, &[&bob, &alice]);
        let mut carol_phone = Phone::udp(&m[2]).await;
        register(&mut carol_phone, &carol, PASSWORD, None).await;
        assert_eq!(m[0].bindings_of(&carol).len(), 1, "Carol's binding at her home, A");
        let to_carol = Request::message(&bob_phone, &bob, &carol);
        bob_phone.send(&to_carol.to_bytes()).await;
        let got = carol_phone.expect_request(Method::Message).await;
        carol_phone.answer(&got, 200, "carol").await;
        bob_phone.expect_response(200).await;
        let from_carol = Request::message(&carol_phone, &carol, &alice);
        // UDP has no authenticated connection to vouch for Carol: Alice's home challenges her.
        let with_creds = authorized(&mut carol_phone, &from_carol, &carol, PASSWORD).await;
        carol_phone.send(&with_creds.to_bytes()).await;
        let got = alice_phone.expect_request(Method::Message).await;
        alice_phone.answer(&got, 200, "alice").await;
        carol_phone.expect_response(200).await;

        // Nothing was kept as offline: all were delivered at once.
        for s in &m {
            assert_eq!(s.metric("sipfront_offline_messages_total{event=\"stored\"}").await, 0.0);
        }
        assert!(m[0].metric("sipfront_pool_relayed_total{direction=\"to_home\"}").await >= 1.0);
    }
}

#[tokio::test]
async fn a_client_cannot_pose_as_a_member() {
    for backend in backends("pool_routing_forged").await {
        let m = pool(&backend).await;
        let bob = user_homed_on(2, &[]);
        let mut bob_phone = online(&m[1], &bob, PASSWORD).await;

        // A made-up seal claiming to be member C, vouching for Bob.
        let mut mallory = Phone::tcp(&m[2]).await;
        let forged = Request::message(&mallory, &bob, &bob)
            .set("X-Sipfront-Pool", "t=1;m=66652d61;i=626f62;mac=00112233445566778899aabbccddeeff");
        mallory.send(&forged.to_bytes()).await;
        let r = mallory.expect_response(403).await;
        assert_eq!(r.reason(), Some(&b"Forged pool hop"[..]));

        // A REGISTER whose Path names a member, to be reached through it.
        let mut eve = Phone::tcp(&m[0]).await;
        let path = format!("<sip:sf00@{};transport=tcp;lr;ob;sfe>", m[1].tcp_addr());
        let reg = Request::register(&eve, &bob).set("Path", &path);
        eve.send(&reg.to_bytes()).await;
        let r = eve.expect_response(403).await;
        assert_eq!(r.reason(), Some(&b"Forged pool hop"[..]));

        // A request routed at Bob's edge token without the seal and outside any dialog.
        let binding = m[2].bindings_of(&bob).pop().unwrap();
        let token_route = binding.path.first().unwrap().to_string();
        let mut direct = Phone::tcp(&m[1]).await;
        let sneak = Request::message(&direct, "user0", &bob).set("Route", &token_route);
        direct.send(&sneak.to_bytes()).await;
        direct.expect_response(403).await;
        // Bob got nothing.
        assert!(
            tokio::time::timeout(QUIET, bob_phone.recv()).await.is_err(),
            "nothing reaches Bob around the pool's checks"
        );
    }
}

#[tokio::test]
async fn an_invite_forks_to_endpoints_on_two_members_and_the_dialog_runs_through_the_pool() {
    for backend in backends("pool_routing_invite").await {
        let m = pool(&backend).await;
        // Bob (home C) has one endpoint on B and one on A; Alice (home B) calls from A.
        let bob = user_homed_on(2, &[]);
        let alice = user_homed_on(1, &[&bob]);
        let mut bob_b = online(&m[1], &bob, PASSWORD).await;
        let mut bob_a = online(&m[0], &bob, PASSWORD).await;
        let mut alice_phone = online(&m[0], &alice, PASSWORD).await;
        assert_eq!(m[2].bindings_of(&bob).len(), 2, "both of Bob's endpoints at his home");

        let inv = invite(&alice_phone, &alice, &bob);
        alice_phone.send(&inv.to_bytes()).await;
        let at_b = bob_b.expect_request(Method::Invite).await;
        let at_a = bob_a.expect_request(Method::Invite).await;
        bob_b.answer(&at_b, 180, "bb").await;
        bob_a.answer(&at_a, 180, "ba").await;
        let mut rung = 0;
        let ok = loop {
            let r = alice_phone.recv().await;
            match r.status() {
                Some(100) => {}
                Some(180) => {
                    rung += 1;
                    if rung == 2 {
                        bob_b.answer(&at_b, 200, "bb").await;
                    }
                }
                Some(200) => break r,
                other => panic!("unexpected {other:?}"),
            }
        };
        // The branch on A is cancelled once B's endpoint answered.
        let cancel = bob_a.expect_request(Method::Cancel).await;
        bob_a.answer(&cancel, 200, "ba").await;
        bob_a.answer(&at_a, 487, "ba").await;
        bob_a.expect_request(Method::Ack).await;

        // ACK, then a BYE from Bob, each through the route set the pool recorded.
        let mut caller = Dialog::caller(&inv, &ok);
        alice_phone.send(&caller.request("ACK", &alice_phone).to_bytes()).await;
        bob_b.expect_request(Method::Ack).await;
        let mut callee = Dialog::callee(&at_b, "bb");
        bob_b.send(&callee.request("BYE", &bob_b).to_bytes()).await;
        let bye = alice_phone.expect_request(Method::Bye).await;
        alice_phone.answer(&bye, 200, "x").await;
        bob_b.expect_response(200).await;
    }
}

#[tokio::test]
async fn presence_of_two_endpoints_on_two_members_reaches_a_watcher_on_a_third() {
    for backend in backends("pool_routing_presence").await {
        let m = pool(&backend).await;
        // Pat (home C) publishes from a phone on B and a laptop on A; Walt watches from A.
        let pat = user_homed_on(2, &[]);
        let walt = user_homed_on(1, &[&pat]);
        let mut phone = online(&m[1], &pat, PASSWORD).await;
        let mut laptop = online(&m[0], &pat, PASSWORD).await;
        let mut watcher = online(&m[0], &walt, PASSWORD).await;
        let published =
            phone.request(&publish(&phone, &pat, Some(&pidf_doc(&pat, "p", "open", "on the phone")), None, 600)).await;
        assert_eq!(published.status(), Some(200));
        let published = laptop
            .request(&publish(&laptop, &pat, Some(&pidf_doc(&pat, "l", "closed", "laptop asleep")), None, 600))
            .await;
        assert_eq!(published.status(), Some(200));

        let req = subscribe(&watcher, &walt, &pat, "presence", 600);
        let (ok, first) = subscribed(&mut watcher, &req).await;
        let d = doc(&first);
        assert_eq!(
            d.tuples.len(),
            2,
            "both endpoints' tuples, aggregated at Pat's home: {}",
            String::from_utf8_lossy(first.body())
        );

        // A change published on B reaches the watcher on A.
        let etag = header(&published, HeaderName::SipETag);
        let changed = laptop
            .request(&publish(&laptop, &pat, Some(&pidf_doc(&pat, "l", "open", "laptop awake")), Some(&etag), 600))
            .await;
        assert_eq!(changed.status(), Some(200));
        let n = notified(&mut watcher).await;
        let notes: Vec<_> = doc(&n).tuples.iter().filter_map(|t| t.note.clone()).collect();
        assert!(notes.contains(&"laptop awake".to_string()), "{notes:?}");

        // Unsubscribing inside the dialog, through the route set the pool recorded.
        let mut routes = headers(&ok, HeaderName::RecordRoute);
        routes.reverse();
        let mut unsub = req.clone().next().set("To", &header(&ok, HeaderName::To)).set("Expires", "0");
        for r in &routes {
            unsub = unsub.set_another("Route", r);
        }
        unsub.start_line = format!("SUBSCRIBE {} SIP/2.0", contact_of(&ok));
        let (ok, last) = subscribed(&mut watcher, &unsub).await;
        assert_eq!(header(&ok, HeaderName::Expires), "0");
        assert!(state(&last).starts_with("terminated"), "{}", state(&last));
    }
}

#[tokio::test]
async fn when_a_member_dies_its_users_are_reachable_again_and_their_watchers_resubscribe() {
    for backend in backends("pool_routing_crash").await {
        let mut m = pool(&backend).await;
        // Bob's home is C; he is connected to B. Alice, on A, watches him.
        let bob = user_homed_on(2, &[]);
        let alice = user_homed_on(0, &[&bob]);
        let mut bob_phone = online(&m[1], &bob, PASSWORD).await;
        let mut alice_phone = online(&m[0], &alice, PASSWORD).await;
        let req = subscribe(&alice_phone, &alice, &bob, "presence", 600);
        let (_, first) = subscribed(&mut alice_phone, &req).await;
        assert!(state(&first).starts_with("active"), "{}", state(&first));

        // C dies without a word (as with kill -9: it stops beating and answering).
        let c = m.pop().unwrap();
        let crashed = tokio::time::Instant::now();
        drop(c);

        // Alice's subscription, served by C, is ended for her by her edge: subscribe again.
        let n = alice_phone.expect_request(Method::Notify).await;
        alice_phone.answer(&n, 200, "w").await;
        assert_eq!(state(&n), "terminated;reason=deactivated");
        let again = subscribe(&alice_phone, &alice, &bob, "presence", 600);
        let (_, renewed) = subscribed(&mut alice_phone, &again).await;
        assert!(state(&renewed).starts_with("active"), "{}", state(&renewed));
        // Bob is online at his new home (at once, or as soon as his edge has replayed his
        // registration: the two edges notice the death each at its own heartbeat).
        let open = Some(sipfront_proto::presence::pidf::Basic::Open);
        if doc(&renewed).tuples[0].basic != open {
            let n = notified(&mut alice_phone).await;
            assert_eq!(doc(&n).tuples[0].basic, open, "Bob online again");
        }

        // Bob is reachable without registering again: his edge replayed his registration.
        let msg = Request::message(&alice_phone, &alice, &bob);
        alice_phone.send(&msg.to_bytes()).await;
        let got = bob_phone.expect_request(Method::Message).await;
        bob_phone.answer(&got, 200, "bob").await;
        alice_phone.expect_response(200).await;
        assert!(
            crashed.elapsed() < Duration::from_millis(600 + 2000),
            "reachable within the member timeout and two seconds: {:?}",
            crashed.elapsed()
        );
        let new_home = home_among(IDS[..2].iter().copied(), &format!("{bob}@{DOMAIN}")).unwrap();
        let at = IDS.iter().position(|i| *i == new_home).unwrap();
        assert_eq!(m[at].bindings_of(&bob).len(), 1, "Bob's binding at his new home, {new_home}");
    }
}

#[tokio::test]
async fn a_member_joining_takes_over_only_the_users_it_now_homes_and_a_draining_one_hands_them_back() {
    for backend in backends("pool_routing_join").await {
        let all = users();
        let refs: Vec<(&str, &str)> = all.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
        // Two members first; ten users on each.
        let a = TestServer::with_users(&backend, &refs, pool_member(IDS[0], String::new())).await;
        let shared = match &backend {
            Backend::Sqlite => format!("sqlite://{}", a.dir.path().join("sipfront.db").display()),
            Backend::Postgres(url) => url.clone(),
        };
        let b = TestServer::with(pool_member(IDS[1], shared.clone())).await;
        for s in [&a, &b] {
            assert!(eventually(Duration::from_secs(5), async || s.server.membership.peers().len() == 1).await);
        }
        let names: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
        let mut phones = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let edge = if i % 2 == 0 { &a } else { &b };
            phones.push(online(edge, n, PASSWORD).await);
        }
        let two = &IDS[..2];
        let home2 = |u: &str| home_among(two.iter().copied(), &format!("{u}@{DOMAIN}")).unwrap();

        // One who will move publishes first.
        let mover = names.iter().position(|u| home(u) == 2).unwrap();
        let first =
            publish(&phones[mover], &names[mover], Some(&pidf_doc(&names[mover], "m", "open", "moving")), None, 600);
        let published = phones[mover].request(&first).await;
        assert_eq!(published.status(), Some(200));
        let etag = header(&published, HeaderName::SipETag);

        // C joins: the users it now homes move to it, with their bindings; nobody else moves.
        let c = TestServer::with(pool_member(IDS[2], shared)).await;
        let members = [&a, &b, &c];
        let moved: Vec<&String> = names.iter().filter(|u| home(u) == 2).collect();
        assert!(!moved.is_empty(), "some users move to C");
        for u in &names {
            let now = home(u);
            assert!(
                eventually(Duration::from_secs(5), async || members[now].bindings_of(u).len() == 1).await,
                "{u} registered at {} once C joined",
                IDS[now]
            );
            if now == 2 {
                let before = IDS.iter().position(|i| *i == home2(u)).unwrap();
                assert!(
                    eventually(Duration::from_secs(5), async || members[before].bindings_of(u).is_empty()).await,
                    "{u} no longer at {}",
                    IDS[before]
                );
            }
        }
        // Everyone reaches everyone: user0 (on A) writes to each moved user.
        writes_to_each(&mut phones, &names, &moved).await;
        // The publication moved with its presentity, entity tag and all: a refresh finds it.
        let refresh = |phones: &[Phone], etag: &str| publish(&phones[mover], &names[mover], None, Some(etag), 600);
        let again = refresh(&phones, &etag);
        let refreshed = phones[mover].request(&again).await;
        assert_eq!(refreshed.status(), Some(200), "the refresh finds the publication at its new home");
        let etag = header(&refreshed, HeaderName::SipETag);

        // C drains (SIGTERM): its users move back to A and B; its clients' connections close.
        let two_left = [&a, &b];
        c.server.shutdown().await;
        let members = two_left;
        for u in &names {
            let back = IDS.iter().position(|i| *i == home2(u)).unwrap();
            assert!(
                eventually(Duration::from_secs(5), async || members[back].bindings_of(u).len() == 1).await,
                "{u} registered at {} again after C left",
                IDS[back]
            );
        }
        writes_to_each(&mut phones, &names, &moved).await;
        let again = refresh(&phones, &etag);
        let refreshed = phones[mover].request(&again).await;
        assert_eq!(refreshed.status(), Some(200), "and back after C drained");
    }
}

#[tokio::test]
async fn a_resource_list_shows_contacts_homed_on_every_member() {
    for backend in backends("pool_routing_lists").await {
        let m = pool(&backend).await;
        // Olga's contacts: one homed on each member, each online through another member.
        let olga = user_homed_on(0, &[]);
        let contacts: Vec<String> = (0..3).map(|h| user_homed_on(h, &[&olga])).collect();
        let store = m[0].server.directory.store().clone();
        for c in &contacts {
            store
                .add_contact(&sipfront_storage::Contact {
                    owner: format!("{olga}@{DOMAIN}"),
                    contact: format!("{c}@{DOMAIN}"),
                    display_name: c.clone(),
                    group: "team".into(),
                })
                .await
                .unwrap();
        }
        let mut phones = Vec::new();
        for (h, c) in contacts.iter().enumerate() {
            phones.push(online(&m[(h + 1) % 3], c, PASSWORD).await);
        }
        let mut watcher = online(&m[0], &olga, PASSWORD).await;
        let list = subscribe(&watcher, &olga, &format!("{olga}+contacts"), "presence", 600)
            .set("Supported", "eventlist")
            .set("Accept", "application/pidf+xml, application/rlmi+xml, multipart/related");
        let (_, first) = subscribed(&mut watcher, &list).await;
        let body = String::from_utf8_lossy(first.body()).into_owned();
        for c in &contacts {
            assert!(body.contains(&format!("sip:{c}@{DOMAIN}")), "{c} in the list: {body}");
        }

        // Each contact publishes a note; every note reaches Olga, wherever its author is homed.
        for (c, phone) in contacts.iter().zip(phones.iter_mut()) {
            let note = format!("note of {c}");
            let r = phone.request(&publish(phone, c, Some(&pidf_doc(c, "t", "open", &note)), None, 600)).await;
            assert_eq!(r.status(), Some(200));
        }
        let mut missing: Vec<String> = contacts.iter().map(|c| format!("note of {c}")).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !missing.is_empty() && tokio::time::Instant::now() < deadline {
            let n = notified(&mut watcher).await;
            let body = String::from_utf8_lossy(n.body()).into_owned();
            missing.retain(|note| !body.contains(note.as_str()));
        }
        assert!(missing.is_empty(), "notes that never reached the list: {missing:?}");
    }
}

/// `names[0]`, on `phones[0]`, writes to each of `to`, and each gets the message.
async fn writes_to_each(phones: &mut [Phone], names: &[String], to: &[&String]) {
    for u in to {
        let i = names.iter().position(|n| n == *u).unwrap();
        let msg = Request::message(&phones[0], &names[0], u);
        phones[0].send(&msg.to_bytes()).await;
        let got = phones[i].expect_request(Method::Message).await;
        phones[i].answer(&got, 200, "x").await;
        phones[0].expect_response(200).await;
    }
}

/// PostgreSQL goes away under the pool (issue 15, "Bad input and faults"): for longer than the
/// member timeout, the members keep serving what they hold (users signed in reach each other
/// across members), take nobody for dead, answer 503 with Retry-After what needs the store;
/// and everything recovers by itself when the store comes back.
#[tokio::test]
async fn a_store_outage_leaves_the_pool_serving_what_it_holds_and_it_recovers() {
    let Some(url) = sipfront_storage::testing::fresh_postgres("pool_store_outage").await else { return };
    let db = url.rsplit('/').next().unwrap().to_string();
    let m = pool(&Backend::Postgres(url)).await;
    // Bob's home is C, connected to B; Alice's home is B, connected to A. Carol (homed on A)
    // signs up after the members started, when each read every user: no member has her
    // credentials.
    let bob = user_homed_on(2, &[]);
    let alice = user_homed_on(1, &[&bob]);
    let carol = (0..).map(|i| format!("late{i}")).find(|u| home(u) == 0).unwrap();
    cli(&m[0], &["user", "add", &format!("{carol}@{DOMAIN}"), "--password-stdin"], &format!("{PASSWORD}\n")).await;
    let mut bob_phone = online(&m[1], &bob, PASSWORD).await;
    let mut alice_phone = online(&m[0], &alice, PASSWORD).await;

    admin(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false")).await;
    admin(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")).await;
    let down = eventually(Duration::from_secs(10), async || m.iter().all(|s| !s.server.readiness.store_ok())).await;
    assert!(down, "every member sees the store down");
    // Three member timeouts without a heartbeat written or read.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    for s in &m {
        assert_eq!(s.server.membership.peers().len(), 2, "{} still counts on the other two", s.server.membership.id());
    }
    let msg = Request::message(&alice_phone, &alice, &bob);
    alice_phone.send(&msg.to_bytes()).await;
    let got = bob_phone.expect_request(Method::Message).await;
    bob_phone.answer(&got, 200, "bob").await;
    alice_phone.expect_response(200).await;
    // Carol's REGISTER needs her credentials from the store: 503, try again later.
    let mut carol_phone = Phone::tcp(&m[1]).await;
    let req = Request::register(&carol_phone, &carol);
    let req = authorized(&mut carol_phone, &req, &carol, PASSWORD).await;
    let refused = carol_phone.request(&req).await;
    assert_eq!(refused.status(), Some(503));
    let retry: u32 = header(&refused, HeaderName::RetryAfter).parse().expect("a numeric Retry-After");
    assert!(retry > 0);

    admin(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true")).await;
    let back = eventually(Duration::from_secs(20), async || m.iter().all(|s| s.server.readiness.store_ok())).await;
    assert!(back, "every member sees the store again");
    let mut carol_phone = online(&m[1], &carol, PASSWORD).await;
    assert_eq!(m[0].bindings_of(&carol).len(), 1, "Carol's binding is at her home, A");
    let msg = Request::message(&carol_phone, &carol, &bob);
    carol_phone.send(&msg.to_bytes()).await;
    let got = bob_phone.expect_request(Method::Message).await;
    bob_phone.answer(&got, 200, "bob").await;
    carol_phone.expect_response(200).await;
    for s in &m {
        assert_eq!(s.server.membership.peers().len(), 2, "{} sees the other two", s.server.membership.id());
    }
}
