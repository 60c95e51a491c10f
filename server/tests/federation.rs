//! Federation (issue 20) end to end: two organisations, `a.test` and `b.test`, each a sipfront
//! server with its own certificate authority, find each other's edge by DNS SRV (a test DNS
//! server on loopback) and exchange instant messages over mutual TLS, under each operator's
//! policy; and every refusal a partner, a certificate or DNS can cause.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::dns::TestDns;
use common::federation::*;
use common::*;
use sipfront_proto::{HeaderName, Method};
use sipfront_storage::{FederationAction, FederationDomain, FederationMode};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Two organisations that federate with each other, found through one DNS server.
async fn two_orgs() -> (Org, Org, TestDns, Ca, Ca) {
    let (ca_a, ca_b) = (Ca::new("a.test"), Ca::new("b.test"));
    let dns = TestDns::start(Vec::new()).await;
    // a.test lets its own users see each other without rules: partners still wait for one.
    let a = Org::start_with("a.test", &ca_a, &[&ca_b], dns.addr, &["alice", "amy"], |c| {
        c.presence.default_policy = "allow".into()
    })
    .await;
    let b = Org::start("b.test", &ca_b, &[&ca_a], dns.addr, &["bob", "bill"]).await;
    for r in a.dns_records().into_iter().chain(b.dns_records()) {
        dns.add(r);
    }
    a.allow("b.test").await;
    b.allow("a.test").await;
    (a, b, dns, ca_a, ca_b)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_organisations_exchange_messages_both_ways() {
    let (a, b, dns, _, _) = two_orgs().await;
    let mut alice = a.online("alice").await;
    let mut bob = b.online("bob").await;

    // a.test -> b.test: found by SRV, over mutual TLS, delivered, answered.
    // Credentials for our own realm never leave (a partner could attack the password with
    // them); the partner's own go on (RFC 3261 22.3).
    let hello = message(&alice, "alice@a.test", "bob@b.test", "hello from a")
        .set(
            "Authorization",
            r#"Digest username="alice", realm="a.test", nonce="n", uri="sip:bob@b.test", response="0""#,
        )
        .set_another(
            "Authorization",
            r#"Digest username="alice", realm="b.test", nonce="n", uri="sip:bob@b.test", response="0""#,
        );
    alice.send(&hello.to_bytes()).await;
    let got = bob.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"hello from a");
    let credentials = headers(&got, HeaderName::Authorization);
    assert_eq!(credentials.len(), 1, "a.test's credentials stayed home: {credentials:?}");
    assert!(credentials[0].contains(r#"realm="b.test""#), "b.test's went on");
    assert!(header(&got, HeaderName::From).contains("alice@a.test"), "the sender as she is");
    bob.answer(&got, 200, "bob1").await;
    alice.expect_response(200).await;
    assert!(dns.queries("_sipfederationtls._tcp.b.test") >= 1, "b.test's edge found by SRV");

    // b.test -> a.test, over b's own connection to a's edge.
    let reply = message(&bob, "bob@b.test", "alice@a.test", "hello from b");
    bob.send(&reply.to_bytes()).await;
    let got = alice.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"hello from b");
    alice.answer(&got, 200, "alice1").await;
    bob.expect_response(200).await;

    // Both archived, with the remote party's address.
    let mine = a.store.search_archive("alice@a.test", Some("bob@b.test"), 0, i64::MAX, 10).await.unwrap();
    let ours = sipfront_storage::testing::eventually(Duration::from_secs(3), async || {
        a.store.search_archive("alice@a.test", Some("bob@b.test"), 0, i64::MAX, 10).await.unwrap().len() == 2
    })
    .await;
    assert!(ours, "both messages archived at a.test: {mine:?}");
    assert!(a.server.metric("sipfront_federation_requests_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_and_the_per_user_flag_are_enforced_both_ways() {
    let (a, b, _dns, _, _) = two_orgs().await;
    let mut alice = a.online("alice").await;
    let mut bob = b.online("bob").await;
    let mut amy = a.online("amy").await;

    // A sender without federation: refused at home, nothing sent.
    a.store.set_user_federation("amy@a.test", false).await.unwrap();
    a.settle().await;
    let r = send(&mut amy, "amy@a.test", "bob@b.test").await;
    assert_eq!(r.status(), Some(403), "amy may not federate");
    assert!(header(&r, HeaderName::Warning).contains("not enabled for the sender"));

    // A recipient without federation, and one who does not exist: the same answer.
    b.store.set_user_federation("bill@b.test", false).await.unwrap();
    b.settle().await;
    let off = send(&mut alice, "alice@a.test", "bill@b.test").await;
    let nobody = send(&mut alice, "alice@a.test", "nobody@b.test").await;
    assert_eq!((off.status(), nobody.status()), (Some(403), Some(403)));
    assert_eq!(header(&off, HeaderName::Warning), header(&nobody, HeaderName::Warning), "nothing to enumerate by");
    assert_eq!(off.reason(), nobody.reason());

    // b.test blocks a.test: a.test's messages are refused there; b.test's own go nowhere.
    let block = FederationDomain { domain: "a.test".into(), action: FederationAction::Block, via: None };
    b.store.set_federation_domain(&block).await.unwrap();
    b.settle().await;
    let r = send(&mut alice, "alice@a.test", "bob@b.test").await;
    assert_eq!(r.status(), Some(403), "blocked at b.test");
    assert!(header(&r, HeaderName::Warning).contains("not allowed"));
    let r = send(&mut bob, "bob@b.test", "alice@a.test").await;
    assert_eq!(r.status(), Some(403), "b.test does not send to a domain it blocks");

    // Closed mode: a domain not on the allow list is refused before any lookup.
    let r = send(&mut alice, "alice@a.test", "carol@c.test").await;
    assert_eq!(r.status(), Some(403), "c.test is not allowed");
    // Open mode: anyone found by SRV, except the blocked; c.test publishes no edge.
    a.store.set_federation_mode(FederationMode::Open).await.unwrap();
    a.settle().await;
    let r = send(&mut alice, "alice@a.test", "carol@c.test").await;
    assert_eq!(r.status(), Some(404), "c.test has no federation edge");
    assert!(header(&r, HeaderName::Warning).contains("no federation edge"));
    let _ = &mut bob;
}

type PartnerStream = SipStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A partner's edge connecting to `server` by hand: it trusts `server_ca` for `domain` and
/// presents the certificate `cert` (with `key`). `None` if the handshake fails on our side.
async fn partner_edge(
    server: SocketAddr,
    domain: &str,
    server_ca: &Ca,
    cert: &Path,
    key: &Path,
) -> Option<PartnerStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.cert.der().clone()).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = connector.connect(ServerName::try_from(domain.to_string()).unwrap(), tcp).await.ok()?;
    Some(SipStream::over(stream, local))
}

/// A MESSAGE as a partner's edge relays it: its own Via on top of the sender's.
fn relayed(edge: &PartnerStream, from: &str, to: &str) -> Request {
    let mut r = Request::new("MESSAGE", Transport::Tls, edge.local)
        .set("From", &format!("<sip:{from}>;tag={}", token(8)))
        .set("To", &format!("<sip:{to}>"))
        .set("Content-Type", "text/plain");
    r.start_line = format!("MESSAGE sip:{to} SIP/2.0");
    r.body = "from a partner".into();
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn partners_are_who_their_certificates_say() {
    let (a, _b, _dns, ca_a, ca_b) = two_orgs().await;
    let mut alice = a.online("alice").await;
    a.allow("c.test").await;
    let dir = tempfile::tempdir().unwrap();

    // b.test's certificate: as b.test, delivered; as c.test (allowed too), refused.
    let (cert, key) = ca_b.issue(&["b.test"], &dir.path().join("b"), false);
    let mut edge = partner_edge(a.server.tls_addr(), "a.test", &ca_a, &cert, &key).await.expect("handshake");
    let req = relayed(&edge, "bob@b.test", "alice@a.test");
    edge.write(&req.to_bytes()).await;
    let got = alice.expect_request(Method::Message).await;
    alice.answer(&got, 200, "alice1").await;
    assert_eq!(edge.recv_response().await.status(), Some(200), "b.test's own user, delivered");
    let r = edge.transact(&relayed(&edge, "mallory@c.test", "alice@a.test")).await;
    assert_eq!(r.status(), Some(403), "c.test is not the certificate's");
    // Nor is b.test's absolute form, which would escape the policy's spelling of b.test.
    let r = edge.transact(&relayed(&edge, "bob@b.test.", "alice@a.test")).await;
    assert_eq!(r.status(), Some(403), "b.test. is refused");
    assert!(header(&r, HeaderName::Warning).contains("does not name the From domain"));
    // A partner's request for a domain that is not ours: no relaying between partners.
    let r = edge.transact(&relayed(&edge, "bob@b.test", "carol@c.test")).await;
    assert_eq!(r.status(), Some(404), "not a relay");

    // An expired certificate and a self-signed one: refused in the handshake, counted.
    let (cert, key) = ca_b.issue(&["b.test"], &dir.path().join("expired"), true);
    let self_signed = Ca::new("b.test");
    let (own_cert, own_key) = self_signed.issue(&["b.test"], &dir.path().join("self"), false);
    for (cert, key) in [(cert, key), (own_cert, own_key)] {
        // TLS 1.3: the client's handshake ends before the server has checked its certificate;
        // the refusal is the server's alert, and nothing it answers.
        if let Some(mut edge) = partner_edge(a.server.tls_addr(), "a.test", &ca_a, &cert, &key).await {
            let _ = edge.try_write(&relayed(&edge, "bob@b.test", "alice@a.test").to_bytes()).await;
            assert!(edge.closed_within(WAIT).await, "the connection is closed unanswered");
        }
    }
    let refused = sipfront_storage::testing::eventually(WAIT, async || {
        a.server.metric("sipfront_tls_handshake_failures_total").await >= 2.0
    })
    .await;
    assert!(refused, "both handshakes counted");
    assert!(tokio::time::timeout(QUIET, alice.recv()).await.is_err(), "nothing reached alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn edges_that_cannot_be_used_and_dns_failures_are_answered() {
    let (ca_a, ca_b) = (Ca::new("a.test"), Ca::new("b.test"));
    let dns = TestDns::start(Vec::new()).await;
    let a = Org::start("a.test", &ca_a, &[&ca_b], dns.addr, &["alice"]).await;
    let b = Org::start("b.test", &ca_b, &[&ca_a], dns.addr, &["bob"]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for r in [
        // d.test's SRV names b.test's edge, whose certificate does not name d.test.
        TestDns::srv("d.test", 10, 0, b.server.tls_addr().port(), "sip.b.test"),
        TestDns::a("sip.b.test", Ipv4Addr::LOCALHOST),
        // e.test's names a.test's own edge: a loop.
        TestDns::srv("e.test", 10, 0, a.server.tls_addr().port(), "sip.a.test"),
        TestDns::a("sip.a.test", Ipv4Addr::LOCALHOST),
        // f.test's names a port nobody listens on.
        TestDns::srv("f.test", 10, 0, closed, "sip.f.test"),
        TestDns::a("sip.f.test", Ipv4Addr::LOCALHOST),
        // g.test's DNS never answers; h.test's fails; i.test's says "no service".
        TestDns::silent("_sipfederationtls._tcp.g.test"),
        TestDns::servfail("_sipfederationtls._tcp.h.test"),
        TestDns::no_service("i.test"),
    ] {
        dns.add(r);
    }
    a.store.set_federation_mode(FederationMode::Open).await.unwrap();
    a.settle().await;
    let mut alice = a.online("alice").await;
    for (domain, code, warning) in [
        ("d.test", 502, "not trusted for the domain"),
        ("e.test", 482, "is this server"),
        ("f.test", 502, "unreachable"),
        ("g.test", 504, "timed out"),
        ("h.test", 502, "DNS lookup"),
        ("i.test", 404, "no federation edge"),
    ] {
        let r = send(&mut alice, "alice@a.test", &format!("someone@{domain}")).await;
        assert_eq!(r.status(), Some(code), "{domain}");
        assert!(header(&r, HeaderName::Warning).contains(warning), "{domain}: {}", header(&r, HeaderName::Warning));
    }
    assert!(a.server.metric("sipfront_federation_connect_failures_total").await >= 2.0);
    assert!(a.server.metric("sipfront_federation_dns_failures_total").await >= 3.0);
    let _ = b;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_over_its_share_waits_and_nobody_else_does() {
    let (ca_a, ca_b) = (Ca::new("a.test"), Ca::new("b.test"));
    let dns = TestDns::start(Vec::new()).await;
    let a = Org::start_with("a.test", &ca_a, &[&ca_b], dns.addr, &["alice", "amy"], |c| {
        c.federation.max_requests_per_partner = 3;
        c.federation.max_connections_per_partner = 1;
    })
    .await;
    a.allow("b.test").await;
    let mut alice = a.online("alice").await;
    let mut amy = a.online("amy").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_b.issue(&["b.test"], &dir.path().join("b"), false);
    let mut edge = partner_edge(a.server.tls_addr(), "a.test", &ca_a, &cert, &key).await.expect("handshake");

    // Five requests at once: three within the second's share, two told to wait.
    for _ in 0..5 {
        edge.write(&relayed(&edge, "bob@b.test", "alice@a.test").to_bytes()).await;
    }
    let mut delivered = 0;
    while let Ok(got) = tokio::time::timeout(QUIET, alice.expect_request(Method::Message)).await {
        alice.answer(&got, 200, &token(6)).await;
        delivered += 1;
    }
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = edge.recv_response().await;
        if r.status() == Some(503) {
            assert_eq!(header(&r, HeaderName::RetryAfter), "1", "wait a second");
        }
        codes.push(r.status().unwrap());
    }
    codes.sort();
    assert_eq!((delivered, codes), (3, vec![200, 200, 200, 503, 503]), "three delivered, two refused");
    // Our own users are not slowed meanwhile.
    let r = send(&mut amy, "amy@a.test", "nobody@a.test").await;
    assert_eq!(r.status(), Some(404), "local traffic goes on, answered as ever");

    // A second connection of b.test's beyond its cap of one: refused; the first goes on.
    let mut second = partner_edge(a.server.tls_addr(), "a.test", &ca_a, &cert, &key).await.expect("handshake");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = second.transact(&relayed(&second, "bob@b.test", "alice@a.test")).await;
    assert_eq!(r.status(), Some(503), "over b.test's connection cap");
    edge.write(&relayed(&edge, "bob@b.test", "alice@a.test").to_bytes()).await;
    let got = alice.expect_request(Method::Message).await;
    alice.answer(&got, 200, "again").await;
    assert_eq!(edge.recv_response().await.status(), Some(200), "the first connection goes on");
    drop(edge);
    // Once it closes, another may take its place.
    let fresh = sipfront_storage::testing::eventually(WAIT, async || {
        let mut third = partner_edge(a.server.tls_addr(), "a.test", &ca_a, &cert, &key).await.expect("handshake");
        let req = relayed(&third, "bob@b.test", "nobody@a.test");
        third.transact(&req).await.status() == Some(403)
    })
    .await;
    assert!(fresh, "a connection in place of the closed one is served");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_pool_a_partners_request_reaches_the_recipients_home_whichever_member_it_reaches() {
    let Some(url) = sipfront_storage::testing::fresh_postgres("federation_pool").await else { return };
    let (ca_a, ca_b) = (Ca::new("a.test"), Ca::new("b.test"));
    let dns = TestDns::start(Vec::new()).await;
    // fe2 is the pool's federation edge: whatever member a user is on, requests to partners
    // go out from it.
    let member = |id: &'static str| {
        let pool = pool_member(id, url.clone());
        move |c: &mut sipfront::config::Config| {
            pool(c);
            c.federation.edge_member = "fe2".into();
        }
    };
    let m1 = Org::start_with("a.test", &ca_a, &[&ca_b], dns.addr, &["alice", "amy", "ann"], member("fe1")).await;
    let m2 = Org::start_with("a.test", &ca_a, &[&ca_b], dns.addr, &["alice", "amy", "ann"], member("fe2")).await;
    m1.allow("b.test").await;
    let both = sipfront_storage::testing::eventually(WAIT, async || {
        m1.server.metric("sipfront_pool_members").await >= 2.0 && m2.server.metric("sipfront_pool_members").await >= 2.0
    })
    .await;
    assert!(both, "the two members see each other");
    let mut phones = Vec::new();
    for user in ["alice", "amy", "ann"] {
        phones.push((user, m1.online(user).await));
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_b.issue(&["b.test"], &dir.path().join("b"), false);
    // b.test's edge reaches either member: every user gets its message, whichever member is
    // their home (three users: some are homed on the member the partner did not reach).
    for m in [&m1, &m2] {
        let mut edge = partner_edge(m.server.tls_addr(), "a.test", &ca_a, &cert, &key).await.expect("handshake");
        for (user, phone) in phones.iter_mut() {
            edge.write(&relayed(&edge, "bob@b.test", &format!("{user}@a.test")).to_bytes()).await;
            let got = phone.expect_request(Method::Message).await;
            assert!(header(&got, HeaderName::From).contains("bob@b.test"));
            phone.answer(&got, 200, "ok").await;
            assert_eq!(
                edge.recv_response().await.status(),
                Some(200),
                "{user}, reached through {}",
                m.server.tls_addr()
            );
        }
        // As c.test, which the certificate does not name: refused, at the home member too.
        for (user, _) in phones.iter() {
            let r = edge.transact(&relayed(&edge, "mallory@c.test", &format!("{user}@a.test"))).await;
            assert_eq!(r.status(), Some(403), "{user}: c.test is not the certificate's");
        }
    }
    let relayed =
        m1.server.metric("sipfront_pool_relayed_total").await + m2.server.metric("sipfront_pool_relayed_total").await;
    assert!(relayed >= 1.0, "some went from the member reached to the recipient's home");

    // Out: every user's message to b.test leaves through fe2, the named edge.
    let b = Org::start("b.test", &ca_b, &[&ca_a], dns.addr, &["bob"]).await;
    for r in m2.dns_records().into_iter().chain(b.dns_records()) {
        dns.add(r);
    }
    b.allow("a.test").await;
    let mut bob = b.online("bob").await;
    for (user, phone) in phones.iter_mut() {
        phone.send(&message(phone, &format!("{user}@a.test"), "bob@b.test", "from the pool").to_bytes()).await;
        let got = bob.expect_request(Method::Message).await;
        // The Via a.test's edge put on it names the member that sent it out.
        let vias = headers(&got, HeaderName::Via).join(",");
        assert!(vias.contains(&format!("TLS {}", m2.server.tls_addr())), "{user}'s left through fe2: {vias}");
        assert!(!vias.contains(&format!("TLS {}", m1.server.tls_addr())), "not through fe1: {vias}");
        bob.answer(&got, 200, "ok").await;
        phone.expect_response(200).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_across_domains_once_the_rules_allow_it() {
    let (a, b, _dns, _, _) = two_orgs().await;
    let mut alice = a.online("alice").await;
    let mut bob = b.online("bob").await;
    let doc_of_bob = pidf_doc("bob", "t1", "open", "at b");
    let r = bob.request(&in_domain(publish(&bob, "bob", Some(&doc_of_bob), None, 600), "b.test")).await;
    assert_eq!(r.status(), Some(200), "bob publishes at home");

    // Alice watches Bob: through a.test's edge to b.test's, where Bob's rules have nothing
    // for her yet: pending (the default for a watcher of another domain).
    let users = [("alice", "a.test"), ("bob", "b.test")];
    let watch = across(subscribe(&alice, "alice", "bob", "presence", 600), &users);
    let (ok, first) = subscribed(&mut alice, &watch).await;
    assert!(!header(&ok, HeaderName::RecordRoute).is_empty(), "a.test stays on the dialog's path");
    assert!(state(&first).starts_with("pending"), "pending: {}", state(&first));

    // The other way: Bob watches Alice; a partner's watcher is pending, though a.test's
    // policy allows its own users by default.
    let his = across(subscribe(&bob, "bob", "alice", "presence", 600), &users);
    let (_, first) = subscribed(&mut bob, &his).await;
    assert!(state(&first).starts_with("pending"), "pending at a.test too: {}", state(&first));

    // Bob's operator allows her: b.test tells her, through both edges.
    b.store.set_rule("bob@b.test", "alice@a.test", sipfront_storage::RuleAction::Allow).await.unwrap();
    let n = notified(&mut alice).await;
    assert!(state(&n).starts_with("active"), "active: {}", state(&n));
    assert_eq!(doc(&n).tuples.first().and_then(|t| t.note.clone()).as_deref(), Some("at b"));

    // A refresh inside the dialog takes the route set back to b.test.
    let mut dialog = Dialog::caller(&watch, &ok);
    let refresh = dialog.request("SUBSCRIBE", &alice).set("Event", "presence").set("Expires", "600");
    let r = alice.request(&refresh).await;
    assert_eq!(r.status(), Some(200), "refreshed at b.test");

    // Alice's PUBLISH for a partner's user is never sent out.
    let foreign = across(publish(&alice, "bob", Some(&doc_of_bob), None, 600), &users)
        .set("From", &format!("<sip:alice@a.test>;tag={}", token(8)));
    let r = alice.request(&foreign).await;
    assert_eq!(r.status(), Some(403), "publications stay home");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_im_session_across_domains_is_routed_both_ways_and_archived() {
    let (a, b, _dns, _, _) = two_orgs().await;
    let mut alice = a.online("alice").await;
    let mut bob = b.online("bob").await;
    let users = [("alice", "a.test"), ("bob", "b.test")];
    let call = across(invite(&alice, "alice", "bob"), &users);
    alice.send(&call.to_bytes()).await;
    let offered = bob.expect_request(Method::Invite).await;
    assert!(headers(&offered, HeaderName::RecordRoute).len() >= 2, "both edges record-route");
    let mut answer = offered.response_to(200);
    answer.set_to_tag("bobtag");
    answer.push_header(HeaderName::Contact, bob.contact("bob"));
    // RFC 3261 12.1.1: the UAS copies the Record-Route into its 2xx.
    for rr in headers(&offered, HeaderName::RecordRoute) {
        answer.push_header(HeaderName::RecordRoute, rr);
    }
    answer.ensure_content_length();
    bob.send(&answer.to_bytes()).await;
    let ok = loop {
        let m = alice.recv().await;
        if m.status().is_some_and(|c| c >= 200) {
            break m;
        }
    };
    assert_eq!(ok.status(), Some(200), "bob answers");
    let mut caller = Dialog::caller(&call, &ok);
    alice.send(&caller.request("ACK", &alice).to_bytes()).await;
    bob.expect_request(Method::Ack).await;

    // IM inside the session, both ways, each side's route set through both edges.
    let mut im = caller.request("MESSAGE", &alice).set("Content-Type", "text/plain");
    im.body = "in the session".into();
    alice.send(&im.to_bytes()).await;
    let got = bob.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"in the session");
    bob.answer(&got, 200, "bobtag").await;
    alice.expect_response(200).await;
    let mut callee = Dialog::callee(&offered, "bobtag");
    let mut back = callee.request("MESSAGE", &bob).set("Content-Type", "text/plain");
    back.body = "and back".into();
    bob.send(&back.to_bytes()).await;
    let got = alice.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"and back");
    alice.answer(&got, 200, "x").await;
    bob.expect_response(200).await;

    // Bob hangs up.
    bob.send(&callee.request("BYE", &bob).to_bytes()).await;
    let bye = alice.expect_request(Method::Bye).await;
    alice.answer(&bye, 200, "x").await;
    bob.expect_response(200).await;
    let archived = sipfront_storage::testing::eventually(Duration::from_secs(3), async || {
        a.store.search_archive("alice@a.test", Some("bob@b.test"), 0, i64::MAX, 10).await.unwrap().len() == 2
    })
    .await;
    assert!(archived, "the session's messages archived at a.test");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_edge_answering_503_hands_the_message_to_the_next_one() {
    let (ca_a, ca_b) = (Ca::new("a.test"), Ca::new("b.test"));
    let dns = TestDns::start(Vec::new()).await;
    let a = Org::start("a.test", &ca_a, &[&ca_b], dns.addr, &["alice"]).await;
    let b = Org::start("b.test", &ca_b, &[&ca_a], dns.addr, &["bob"]).await;
    // b.test's first edge is busy: it admits no partner request (503 with Retry-After).
    let busy = Org::start_with("b.test", &ca_b, &[&ca_a], dns.addr, &["bob"], |c| {
        c.federation.max_requests_per_partner = 0;
    })
    .await;
    for r in [
        TestDns::srv("b.test", 10, 0, busy.server.tls_addr().port(), "edge1.b.test"),
        TestDns::srv("b.test", 20, 0, b.server.tls_addr().port(), "edge2.b.test"),
        TestDns::a("edge1.b.test", Ipv4Addr::LOCALHOST),
        TestDns::a("edge2.b.test", Ipv4Addr::LOCALHOST),
    ] {
        dns.add(r);
    }
    a.allow("b.test").await;
    b.allow("a.test").await;
    busy.allow("a.test").await;
    let mut alice = a.online("alice").await;
    let mut bob = b.online("bob").await;
    alice.send(&message(&alice, "alice@a.test", "bob@b.test", "second edge").to_bytes()).await;
    let got = bob.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"second edge");
    bob.answer(&got, 200, "ok").await;
    alice.expect_response(200).await;

    // With the second edge gone too, the sender hears 500, not the partner's 503 as ours.
    drop(b);
    let r = send(&mut alice, "alice@a.test", "bob@b.test").await;
    assert_eq!(r.status(), Some(500), "the partner's 503 is not passed on");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partners_watchers_together_hold_at_most_their_share_of_subscriptions() {
    let (ca_a, ca_b) = (Ca::new("a.test"), Ca::new("b.test"));
    let dns = TestDns::start(Vec::new()).await;
    let a = Org::start_with("a.test", &ca_a, &[&ca_b], dns.addr, &["alice"], |c| {
        c.presence.max_subscriptions_per_partner = 2;
    })
    .await;
    a.allow("b.test").await;
    let _alice = a.online("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_b.issue(&["b.test"], &dir.path().join("b"), false);
    let mut edge = partner_edge(a.server.tls_addr(), "a.test", &ca_a, &cert, &key).await.expect("handshake");
    let watch = |edge: &PartnerStream, watcher: &str| {
        let mut r = Request::new("SUBSCRIBE", Transport::Tls, edge.local)
            .set("From", &format!("<sip:{watcher}@b.test>;tag={}", token(8)))
            .set("To", "<sip:alice@a.test>")
            .set("Event", "presence")
            .set("Expires", "600")
            .set("Contact", &format!("<sip:{watcher}@{};transport=tls>", edge.local));
        r.start_line = "SUBSCRIBE sip:alice@a.test SIP/2.0".into();
        r
    };
    let mut codes = Vec::new();
    for watcher in ["bob", "bill", "ben"] {
        edge.write(&watch(&edge, watcher).to_bytes()).await;
        // The NOTIFY that follows a granted subscription is answered; the final response kept.
        loop {
            // Any message, request or response: recv_response only reads and parses.
            let m = edge.recv_response().await;
            if m.method() == Some(&Method::Notify) {
                let mut ok = m.response_to(200);
                ok.ensure_content_length();
                edge.write(&ok.to_bytes()).await;
                continue;
            }
            if m.status().is_some_and(|c| c >= 200) {
                codes.push(m.status().unwrap());
                break;
            }
        }
    }
    assert_eq!(codes, vec![200, 200, 403], "b.test's third watcher is over its share");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_with_a_partners_user_among_its_members_is_messaged_both_ways() {
    let (a, b, _dns, _, _) = two_orgs().await;
    a.store.add_group("team@a.test", "Team").await.unwrap();
    let rows: Vec<(String, String)> = ["alice@a.test", "amy@a.test", "bob@b.test"]
        .iter()
        .map(|m| ("team@a.test".to_string(), m.to_string()))
        .collect();
    a.store.add_group_members(&rows).await.unwrap();
    a.settle().await;
    let mut alice = a.online("alice").await;
    let mut amy = a.online("amy").await;
    let mut bob = b.online("bob").await;

    // Ours to the group: Bob's copy goes to b.test's edge like any message to him.
    let to_team = message(&alice, "alice@a.test", "team@a.test", "team news");
    assert_eq!(alice.request(&to_team).await.status(), Some(202));
    for (phone, tag) in [(&mut amy, "amy"), (&mut bob, "bob")] {
        let got = phone.expect_request(Method::Message).await;
        assert_eq!(got.body(), b"team news");
        assert!(header(&got, HeaderName::From).contains("alice@a.test"));
        phone.answer(&got, 200, tag).await;
    }

    // The partner's member to the group: our members get it from him, through our edge.
    let from_bob = message(&bob, "bob@b.test", "team@a.test", "hello team");
    assert_eq!(bob.request(&from_bob).await.status(), Some(202));
    for (phone, tag) in [(&mut alice, "alice"), (&mut amy, "amy")] {
        let got = phone.expect_request(Method::Message).await;
        assert_eq!(got.body(), b"hello team");
        assert!(header(&got, HeaderName::From).contains("bob@b.test"));
        phone.answer(&got, 200, tag).await;
    }
    // Bill, of b.test too but no member, may not.
    let mut bill = b.online("bill").await;
    let refused = bill.request(&message(&bill, "bill@b.test", "team@a.test", "me too")).await;
    assert_eq!(refused.status(), Some(403));
}
