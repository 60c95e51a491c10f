//! Digest authentication end to end, each test on SQLite and on PostgreSQL: who may register
//! what, brute-force and password-spraying lockouts, hostile and broken credentials, and
//! connections bound to the identity that registered on them (RFC 5626 flows).

mod common;

use common::*;
use sipfront_proto::digest::Algorithm;
use sipfront_proto::HeaderName;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const ALICE: (&str, &str) = ("alice", "wonderland");
const BOB: (&str, &str) = ("bob", "builder");

#[tokio::test(flavor = "multi_thread")]
async fn only_the_owner_registers_an_aor_of_a_served_domain() {
    for backend in backends("auth_authorization").await {
        let s = TestServer::with_users(&backend, &[ALICE, BOB], |_| {}).await;
        let mut c = s.udp_client().await;
        let failures = s.metric("sipfront_auth_failures_total").await;

        // Alice's credentials for Bob's AOR: authenticated, but not his owner (RFC 3261 10.3 step 3).
        let req =
            Request::register(&c, "bob").set("From", &format!("<sip:alice@{DOMAIN}>;tag=x1")).set("Expires", "300");
        let r = with_credentials(&mut c, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(403), "{backend:?}");
        assert!(s.bindings_of("bob").is_empty());

        // A domain we do not serve (step 1).
        let mut req = Request::register(&c, "alice").set("To", "<sip:alice@elsewhere.test>");
        req.start_line = "REGISTER sip:elsewhere.test SIP/2.0".into();
        let r = c.request(&req).await;
        assert_eq!(r.status(), Some(404), "{backend:?}");
        assert!(r.header(HeaderName::WwwAuthenticate).is_none(), "no challenge for a domain not served");

        // A wrong password: a fresh challenge, and the failure counted.
        let req = Request::register(&c, "alice").set("Expires", "300");
        let r = with_credentials(&mut c, &req, "alice", "looking-glass").await;
        assert_eq!(r.status(), Some(401), "{backend:?}");
        assert_eq!(headers(&r, HeaderName::WwwAuthenticate).len(), 1, "a new challenge");
        assert!(s.bindings_of("alice").is_empty());
        let after = s.metric("sipfront_auth_failures_total").await;
        assert!(after > failures, "sipfront_auth_failures_total grew: {failures} -> {after}");

        // And the right one still works.
        let r = with_credentials(&mut c, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(200), "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn brute_force_and_spraying_lock_out_exactly_whom_they_should() {
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const SPRAYER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    for backend in backends("auth_lockout").await {
        let users = [ALICE, BOB, ("carol", "pc"), ("dave", "pd"), ("erin", "pe")];
        let s = TestServer::with_users(&backend, &users, |c| {
            c.auth.max_failures = 3;
            c.auth.max_users_per_ip = 3;
        })
        .await;
        let mut here = s.udp_client().await;
        let register = |c: &UdpClient, user: &str| Request::register(c, user).set("Expires", "300");

        // Three wrong passwords for Alice from 127.0.0.1: then even the right one gets 403.
        for _ in 0..3 {
            let req = register(&here, "alice");
            let r = with_credentials(&mut here, &req, "alice", "guess").await;
            assert_eq!(r.status(), Some(401), "{backend:?}");
        }
        let req = register(&here, "alice");
        let r = with_credentials(&mut here, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(403), "Alice locked out from this address on {backend:?}");
        assert!(s.bindings_of("alice").is_empty());
        assert!(s.metric("sipfront_auth_lockouts_active").await >= 1.0);

        // Nobody else is affected: Bob from the same address, Alice from another one.
        let req = register(&here, "bob");
        let r = with_credentials(&mut here, &req, "bob", "builder").await;
        assert_eq!(r.status(), Some(200), "another user from the same address");
        let mut other = s.udp_client_from(OTHER).await;
        let req = register(&other, "alice");
        let r = with_credentials(&mut other, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(200), "the same user from another address");

        // Password spraying: one failure each for three users locks 127.0.0.3 for everyone.
        let mut sprayer = s.udp_client_from(SPRAYER).await;
        for user in ["carol", "dave", "erin"] {
            let req = register(&sprayer, user);
            let r = with_credentials(&mut sprayer, &req, user, "Summer2026!").await;
            assert_eq!(r.status(), Some(401));
        }
        let req = register(&sprayer, "bob");
        let r = with_credentials(&mut sprayer, &req, "bob", "builder").await;
        assert_eq!(r.status(), Some(403), "the spraying address is locked for every user on {backend:?}");
        assert!(s.metric("sipfront_auth_lockouts_active").await >= 2.0);
        let req = register(&here, "carol");
        let r = with_credentials(&mut here, &req, "carol", "pc").await;
        assert_eq!(r.status(), Some(200), "Carol from elsewhere is not affected");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_and_hostile_credentials_get_defined_answers() {
    for backend in backends("auth_bad_input").await {
        let s = TestServer::with_users(&backend, &[ALICE], |c| c.auth.max_failures = 100).await;
        let mut c = s.udp_client().await;
        let fresh = |c: &UdpClient| Request::register(c, "alice").set("Expires", "300");

        // A malformed Contact or Expires header is refused by the parser, before anything
        // else (RFC 3261 21.4.1); a malformed `expires` parameter by the registrar, once the
        // user has authenticated (10.3 step 6).
        for (name, value) in [("Contact", "<sip:alice@127.0.0.1:5999"), ("Expires", "soon")] {
            let req = fresh(&c).set(name, value);
            let r = c.request(&req).await;
            assert_eq!(r.status(), Some(400), "malformed {name} on {backend:?}");
            assert_matches_request(&r, &req);
        }
        let req = fresh(&c).set("Contact", "<sip:alice@127.0.0.1:5999>;expires=later");
        let r = with_credentials(&mut c, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(400), "non-numeric expires parameter");
        assert!(s.bindings_of("alice").is_empty());

        // Takes a real challenge and returns credentials for it, rewritten by `edit`.
        async fn answer(c: &mut UdpClient, edit: impl FnOnce(String) -> String) -> u16 {
            let req = Request::register(c, "alice").set("Expires", "300");
            let challenge = c.request(&req).await;
            let offered = header(&challenge, HeaderName::WwwAuthenticate);
            let creds = digest_answer(&offered, Algorithm::Md5, "alice", "wonderland", "REGISTER", req.uri(), 1);
            let r = c.request(&req.next().set("Authorization", &edit(creds))).await;
            if r.status() == Some(401) {
                assert!(r.header(HeaderName::WwwAuthenticate).is_some(), "a 401 carries a fresh challenge");
            }
            r.status().unwrap_or_default()
        }
        assert_eq!(
            answer(&mut c, |a| a.replace("realm=\"example.test\"", "realm=\"elsewhere.test\"")).await,
            401,
            "wrong realm"
        );
        assert_eq!(
            answer(&mut c, |a| a.replace("algorithm=MD5", "algorithm=SHA-512-256")).await,
            401,
            "unknown algorithm"
        );
        assert_eq!(
            answer(&mut c, |a| a.replace("algorithm=MD5", "algorithm=SHA-256")).await,
            401,
            "an algorithm not offered"
        );
        let without_nonce = |a: String| {
            let nonce = challenge_param(&a, "nonce").unwrap_or_default();
            a.replace(&format!(" nonce=\"{nonce}\","), "")
        };
        assert_eq!(answer(&mut c, without_nonce).await, 400, "missing nonce");
        assert_eq!(answer(&mut c, |a| a.replace("qop=auth", "qop=auth-int")).await, 401, "a qop not offered");

        // A nonce the server never made, with a response that is right for it.
        let forged = format!("Digest realm=\"{DOMAIN}\", nonce=\"6650f0a1.0123456789abcdef.00112233445566778899aabb\"");
        let req = fresh(&c);
        let creds = digest_answer(&forged, Algorithm::Md5, "alice", "wonderland", "REGISTER", req.uri(), 1);
        let r = c.request(&req.set("Authorization", &creds)).await;
        assert_eq!(r.status(), Some(401), "a forged nonce");

        // A replayed nonce-count is refused; the next count on the same nonce is fine.
        let req = fresh(&c);
        let challenge = header(&c.request(&req).await, HeaderName::WwwAuthenticate);
        let creds = digest_answer(&challenge, Algorithm::Md5, "alice", "wonderland", "REGISTER", req.uri(), 1);
        let req = req.next().set("Authorization", &creds);
        assert_eq!(c.request(&req).await.status(), Some(200));
        assert_eq!(c.request(&req.clone().next()).await.status(), Some(401), "the same nc again (RFC 7616 3.4)");
        let creds = digest_answer(&challenge, Algorithm::Md5, "alice", "wonderland", "REGISTER", req.uri(), 2);
        assert_eq!(c.request(&req.clone().next().set("Authorization", &creds)).await.status(), Some(200), "nc 2");

        // Oversized: a 10 KB Digest header (past limits.max_header_len), and a 2 KB parameter.
        let huge = format!(
            "Digest username=\"alice\", realm=\"{DOMAIN}\", nonce=\"{}\", uri=\"sip:{DOMAIN}\", response=\"00\"",
            "n".repeat(10_240)
        );
        let r = c.request(&fresh(&c).set("Authorization", &huge)).await;
        assert_eq!(r.status(), Some(400), "a 10 KB Digest header on {backend:?}");
        let long = |a: String| {
            a.replace("username=\"alice\"", &format!("username=\"alice\", opaque=\"{}\"", "o".repeat(2048)))
        };
        assert_eq!(answer(&mut c, |a| long(a).replace("opaque", "cnonce")).await, 400, "a 2 KB parameter");

        // The server is still well, and Alice still registers.
        s.assert_answers_options().await;
        let req = fresh(&c);
        let r = with_credentials(&mut c, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(200), "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_nonce_is_challenged_with_stale_true() {
    for backend in backends("auth_stale").await {
        let s = TestServer::with_users(&backend, &[ALICE], |c| c.auth.nonce_lifetime_secs = 1).await;
        let mut c = s.udp_client().await;
        let req = Request::register(&c, "alice").set("Expires", "300");
        let challenge = header(&c.request(&req).await, HeaderName::WwwAuthenticate);
        assert!(!challenge.contains("stale"), "{challenge}");
        // The point of the test: the nonce's 1 s lifetime passes (with a margin).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let creds = digest_answer(&challenge, Algorithm::Md5, "alice", "wonderland", "REGISTER", req.uri(), 1);
        let r = c.request(&req.next().set("Authorization", &creds)).await;
        assert_eq!(r.status(), Some(401), "{backend:?}");
        let again = header(&r, HeaderName::WwwAuthenticate);
        assert!(again.ends_with(", stale=true"), "RFC 7616 3.3: stale=true: {again}");
        assert_ne!(challenge_param(&again, "nonce"), challenge_param(&challenge, "nonce"), "a new nonce");
        // Answering the new nonce at once works.
        let retry = Request::register(&c, "alice").set("Expires", "300");
        let creds = digest_answer(&again, Algorithm::Md5, "alice", "wonderland", "REGISTER", retry.uri(), 1);
        assert_eq!(c.request(&retry.set("Authorization", &creds)).await.status(), Some(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_connection_speaks_for_its_user_and_takes_its_bindings_along() {
    for backend in backends("auth_flows").await {
        let s = TestServer::with_users(&backend, &[ALICE, BOB], |_| {}).await;
        let mut flow = s.tcp_client().await;
        let req = Request::register(&flow, "alice").set("Expires", "300");
        let ok = with_credentials(&mut flow, &req, "alice", "wonderland").await;
        assert_eq!(ok.status(), Some(200), "{backend:?}");
        assert_eq!(s.bindings_of("alice").len(), 1);

        // On the registered connection, Alice needs no credentials: the MESSAGE passes the gate
        // and, Bob having no binding, is kept for him (202).
        let msg = Request::message(&flow, "alice", "bob");
        let r = flow.request(&msg).await;
        assert_eq!(r.status(), Some(202), "bound flow, recipient not registered, on {backend:?}");
        // But it speaks only for Alice.
        let r = flow.request(&Request::message(&flow, "bob", "alice")).await;
        assert_eq!(r.status(), Some(403), "another From on Alice's connection");

        // Elsewhere the same request is challenged: over UDP, and on another connection.
        let mut udp = s.udp_client().await;
        let r = udp.request(&Request::message(&udp, "alice", "bob")).await;
        assert_eq!(r.status(), Some(407), "over UDP");
        assert!(r.header(HeaderName::ProxyAuthenticate).is_some());
        let mut second = s.tcp_client().await;
        let r = second.request(&Request::message(&second, "alice", "bob")).await;
        assert_eq!(r.status(), Some(407), "on a connection Alice did not register on");
        // With her credentials it passes the gate.
        let req = Request::message(&udp, "alice", "bob");
        let r = with_credentials(&mut udp, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(202), "authenticated MESSAGE over UDP, kept for the absent recipient");

        // RFC 5626: when the connection closes, the binding made over it goes.
        drop(flow);
        let gone = eventually(Duration::from_secs(5), async || s.bindings_of("alice").is_empty()).await;
        assert!(gone, "the binding left with its connection on {backend:?}");
        let query = Request::register(&udp, "alice").without("Contact");
        let r = with_credentials(&mut udp, &query, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(200));
        assert!(headers(&r, HeaderName::Contact).is_empty(), "{:?}", headers(&r, HeaderName::Contact));
    }
}
