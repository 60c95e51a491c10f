//! The stateful proxy for IM sessions (issue 5, RFC 3261 section 16) over real sockets, UDP,
//! TCP and TLS clients mixed: an INVITE forked to two endpoints, the other branch cancelled on
//! the 2xx, the ACK, an in-dialog MESSAGE and the BYE through our Record-Route; the caller's
//! CANCEL; the ms-proxy-2007fallback retry; and the refusals.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::{HeaderName, Method};
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")];

#[tokio::test(flavor = "multi_thread")]
async fn an_im_session_forks_then_carries_message_and_bye_through_record_route() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut alice = Phone::tcp(&s).await;
    let mut bob_udp = Phone::udp(&s).await;
    let mut bob_tls = Phone::tls(&s).await;
    register(&mut alice, "alice", "wonderland", None).await;
    register(&mut bob_udp, "bob", "builder", None).await;
    register(&mut bob_tls, "bob", "builder", None).await;

    // Alice registered on this connection: her INVITE on it needs no challenge.
    let inv = invite(&alice, "alice", "bob");
    alice.send(&inv.to_bytes()).await;
    alice.expect_response(100).await;
    let at_udp = bob_udp.expect_request(Method::Invite).await;
    let at_tls = bob_tls.expect_request(Method::Invite).await;
    for forked in [&at_udp, &at_tls] {
        assert_eq!(forked.max_forwards(), Some(69), "one hop less");
        assert!(forked.header(HeaderName::RecordRoute).is_some(), "record-routed");
        assert_eq!(forked.vias().count(), 2, "our Via on top of Alice's");
        assert_eq!(forked.body(), inv.body.as_bytes(), "the SDP unchanged");
    }
    assert_eq!(headers(&at_tls, HeaderName::RecordRoute).len(), 2, "TCP in, TLS out: two entries (RFC 5658)");
    assert!(headers(&at_tls, HeaderName::RecordRoute)[0].contains("transport=tls"));
    bob_udp.answer(&at_udp, 180, "bu").await;
    bob_tls.answer(&at_tls, 180, "bt").await;
    let ringing = alice.expect_response(180).await;
    assert_eq!(ringing.vias().count(), 1, "our Via removed upstream");
    alice.expect_response(180).await;

    // Bob answers on UDP: Alice gets the 2xx, Bob's TLS phone is cancelled (RFC 3261 16.7).
    bob_udp.answer(&at_udp, 200, "bu").await;
    let ok = alice.expect_response(200).await;
    let cancel = bob_tls.expect_request(Method::Cancel).await;
    bob_tls.answer(&cancel, 200, "bt").await;
    bob_tls.answer(&at_tls, 487, "bt").await;
    let ack = bob_tls.expect_request(Method::Ack).await;
    assert_eq!(header(&ack, HeaderName::CSeq), format!("{} ACK", inv.cseq()), "hop-by-hop ACK of the 487");

    // The 2xx ACK goes end to end, through us.
    let mut caller = Dialog::caller(&inv, &ok);
    assert!(!caller.routes.is_empty(), "a route set through us");
    alice.send(&caller.request("ACK", &alice).to_bytes()).await;
    let ack = bob_udp.expect_request(Method::Ack).await;
    assert!(ack.header(HeaderName::Route).is_none(), "our Route entries consumed");

    // A MESSAGE inside the session, Alice to Bob.
    let mut msg = caller.request("MESSAGE", &alice).set("Content-Type", "text/plain");
    msg.body = "hello inside the session".into();
    alice.send(&msg.to_bytes()).await;
    let got = bob_udp.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"hello inside the session");
    bob_udp.answer(&got, 200, "bu").await;
    alice.expect_response(200).await;

    // Bob hangs up: the BYE reaches Alice over her TCP connection.
    let mut callee = Dialog::callee(&at_udp, "bu");
    let bye = callee.request("BYE", &bob_udp);
    bob_udp.send(&bye.to_bytes()).await;
    let got = alice.expect_request(Method::Bye).await;
    assert_eq!(header(&got, HeaderName::CallId), caller.call_id);
    alice.answer(&got, 200, "x").await;
    bob_udp.expect_response(200).await;

    assert_eq!(s.metric("sipfront_proxied_invites_total").await, 1.0);
    let store = s.server.directory.store().clone();
    let archived = eventually(Duration::from_secs(5), async || {
        store.search_archive("alice@example.test", None, 0, i64::MAX, 100).await.unwrap().len() == 1
    })
    .await;
    assert!(archived, "the in-dialog MESSAGE is archived");
    let json = cli(
        &s,
        &["archive", "search", "--user", "alice@example.test", "--peer", "bob@example.test", "--format", "json"],
        "",
    )
    .await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON from archive search");
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["text"], "hello inside the session");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_callers_cancel_ends_the_invite_with_487_and_cancels_the_branch() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut alice = Phone::udp(&s).await;
    let mut bob = Phone::tcp(&s).await;
    register(&mut alice, "alice", "wonderland", None).await;
    register(&mut bob, "bob", "builder", None).await;

    let inv = invite(&alice, "alice", "bob");
    let inv = authorized(&mut alice, &inv, "alice", "wonderland").await;
    alice.send(&inv.to_bytes()).await;
    alice.expect_response(100).await;
    let at_bob = bob.expect_request(Method::Invite).await;
    bob.answer(&at_bob, 180, "b").await;
    alice.expect_response(180).await;

    // RFC 3261 9.1: the CANCEL has the INVITE's Via, Call-ID, From, To and CSeq number.
    let cancel = Request { start_line: inv.start_line.replace("INVITE", "CANCEL"), ..inv.clone() }
        .set("CSeq", &format!("{} CANCEL", inv.cseq()))
        .without("Content-Type")
        .without("Proxy-Authorization");
    let cancel = Request { body: String::new(), ..cancel };
    alice.send(&cancel.to_bytes()).await;
    let first = alice.recv().await;
    let second = alice.recv().await;
    let mut codes = [first.status(), second.status()];
    codes.sort();
    assert_eq!(codes, [Some(200), Some(487)], "200 for the CANCEL, 487 for the INVITE");

    let their_cancel = bob.expect_request(Method::Cancel).await;
    assert_eq!(header(&their_cancel, HeaderName::Via), header(&at_bob, HeaderName::Via).split(',').next().unwrap());
    bob.answer(&their_cancel, 200, "b").await;
    bob.answer(&at_bob, 487, "b").await;
    bob.expect_request(Method::Ack).await;
    assert_eq!(s.metric("sipfront_proxied_invites_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_415_to_a_multipart_invite_is_retried_with_the_2007_fallback_part() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut alice = Phone::tcp(&s).await;
    let mut bob = Phone::udp(&s).await;
    register(&mut alice, "alice", "wonderland", None).await;
    register(&mut bob, "bob", "builder", None).await;

    let mut inv = invite(&alice, "alice", "bob").set("Content-Type", "multipart/alternative;boundary=b1");
    inv.body = "--b1\r\nContent-Type: application/sdp\r\nContent-Disposition: session; handling=optional; ms-proxy-2007fallback\r\n\r\nv=0 for 2007\r\n--b1\r\nContent-Type: application/sdp\r\nContent-Disposition: session; handling=optional\r\n\r\nv=0 for R2\r\n--b1--\r\n".into();
    alice.send(&inv.to_bytes()).await;
    alice.expect_response(100).await;
    let first = bob.expect_request(Method::Invite).await;
    bob.answer(&first, 415, "b").await;
    bob.expect_request(Method::Ack).await;
    let retry = bob.expect_request(Method::Invite).await;
    assert_eq!(retry.body(), b"v=0 for 2007");
    assert_eq!(header(&retry, HeaderName::ContentType), "application/sdp");
    assert_ne!(retry.top_via().unwrap().branch(), first.top_via().unwrap().branch(), "a new transaction");
    bob.answer(&retry, 200, "b").await;
    alice.expect_response(200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut alice = Phone::udp(&s).await;
    register(&mut alice, "alice", "wonderland", None).await;

    // Without credentials: 407.
    let r = alice.request(&invite(&alice, "alice", "bob")).await;
    assert_eq!(r.status(), Some(407));
    // Max-Forwards 0: 483, before anything else.
    let r = alice.request(&invite(&alice, "alice", "bob").set("Max-Forwards", "0")).await;
    assert_eq!(r.status(), Some(483));
    // Nobody registered for Bob: 480.
    let req = invite(&alice, "alice", "bob");
    let r = with_credentials(&mut alice, &req, "alice", "wonderland").await;
    assert_eq!(r.status(), Some(480));
    // Unknown user: 404.
    let req = invite(&alice, "alice", "nobody");
    let r = with_credentials(&mut alice, &req, "alice", "wonderland").await;
    assert_eq!(r.status(), Some(404));
    // A Route to somewhere else: we are not a relay.
    let req = invite(&alice, "alice", "bob").set("Route", "<sip:192.0.2.1;lr>");
    let r = with_credentials(&mut alice, &req, "alice", "wonderland").await;
    assert_eq!(r.status(), Some(403));
    // An unsupported Proxy-Require: 420 with Unsupported.
    let r = alice.request(&invite(&alice, "alice", "bob").set("Proxy-Require", "foo")).await;
    assert_eq!(r.status(), Some(420));
    assert_eq!(header(&r, HeaderName::Unsupported), "foo");
    // In-dialog requests for a dialog we never record-routed: 481.
    let bye = invite(&alice, "alice", "bob").set("To", &format!("<sip:bob@{DOMAIN}>;tag=x")).without("Content-Type");
    let bye = Request { start_line: format!("BYE sip:bob@{DOMAIN} SIP/2.0"), body: String::new(), ..bye };
    let r = alice.request(&bye.set("CSeq", "2 BYE")).await;
    assert_eq!(r.status(), Some(481));
    // A forged token: not ours either.
    let forged = Request { start_line: format!("BYE sip:bob@{DOMAIN} SIP/2.0"), ..invite(&alice, "alice", "bob") }
        .set("To", &format!("<sip:bob@{DOMAIN}>;tag=x"))
        .set("CSeq", "3 BYE")
        .set("Route", "<sip:sf00000000000000000100112233445566778899@127.0.0.1;lr>");
    let r = alice.request(&Request { body: String::new(), ..forged.without("Content-Type") }).await;
    assert_eq!(r.status(), Some(481));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callee_that_never_answers_gets_the_caller_a_408() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.transaction.t1_ms = 50;
    })
    .await;
    let mut alice = Phone::tcp(&s).await;
    let bob = Phone::udp(&s).await;
    let mut bob = bob;
    register(&mut alice, "alice", "wonderland", None).await;
    register(&mut bob, "bob", "builder", None).await;
    let inv = invite(&alice, "alice", "bob");
    alice.send(&inv.to_bytes()).await;
    alice.expect_response(100).await;
    // Timer B: 64*T1 without any response.
    let r = alice.recv().await;
    assert!(matches!(r.status(), Some(408)), "got {:?}", r.status());
    let _ = bob;
}
