//! Digest authentication under attack (issue 17, findings 6 and 7), each attack performed over
//! real sockets and shown to fail: credentials moved to another Request-URI, an RFC 2069
//! response without `qop`, a captured Authorization replayed (at the same member and at
//! another member of a pool), and the answers that would tell an attacker which users exist,
//! which are disabled, or which password is right.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::digest::{ha1, response, Algorithm, Challenge};
use sipfront_proto::{HeaderName, Message};
use sipfront_storage::testing::eventually;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "sea-shells")];

/// The challenge a response carries (either kind).
fn challenge_of(r: &Message) -> String {
    let h = if r.status() == Some(407) { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
    header(r, h)
}

/// `sipfront_auth_failures_total{reason}` of one reason. The metrics are the process's: every
/// server of a test adds to them, so tests compare what they read before and after.
async fn failures(s: &TestServer, reason: &str) -> f64 {
    s.metric(&format!("sipfront_auth_failures_total{{reason=\"{reason}\"}}")).await
}

/// What an attacker can compare of two responses once what is random in each (nonce, tags) is
/// set aside: the status line, the header names in order, and the challenge with its nonce
/// masked.
fn shape(r: &Message) -> (String, Vec<String>, String) {
    let bytes = r.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let names = lines.map(|l| l.split(':').next().unwrap_or_default().to_ascii_lowercase()).collect();
    let challenge = challenge_of(r);
    let nonce = challenge_param(&challenge, "nonce").unwrap_or_default();
    (status, names, challenge.replace(&nonce, "NONCE"))
}

/// An RFC 2069 response (no `qop`, `nc` or `cnonce`), right for `password`.
fn without_qop(challenge: &str, user: &str, password: &str, method: &str, uri: &str) -> String {
    let nonce = challenge_param(challenge, "nonce").unwrap();
    let c = Challenge {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        method,
        uri: uri.as_bytes(),
        qop: None,
        cnonce: b"",
    };
    let r = response(&ha1(Algorithm::Md5, user, DOMAIN, password), &c);
    format!(
        "Digest username=\"{user}\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5"
    )
}

/// The store a test server runs on, opened a second time (as a pool member or the CLI would).
async fn store_of(s: &TestServer, backend: &Backend) -> std::sync::Arc<dyn sipfront_storage::Store> {
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", s.dir.path().join("sipfront.db").display()),
        Backend::Postgres(url) => url.clone(),
    };
    sipfront_storage::open(&url, s.dir.path()).await.unwrap()
}

/// Finding 6: credentials are for one Request-URI (RFC 7616 3.4.6). Alice's response computed
/// for another `uri` (as a captured one would be) is refused 400, for a REGISTER and for a
/// MESSAGE, though it is right for the `uri` it names. A `uri` naming this server by the
/// address the client sent to, as SIPp's does whatever the request, is taken as naming it.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_for_another_uri_are_refused() {
    for backend in backends("digest_uri").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let before = failures(&s, "uri_mismatch").await;
        let mut c = s.udp_client().await;

        let req = Request::register(&c, "alice").set("Expires", "300");
        let challenge = challenge_of(&c.request(&req).await);
        let creds = digest_answer(&challenge, Algorithm::Md5, "alice", "wonderland", "REGISTER", "sip:other.test", 1);
        let r = c.request(&req.clone().next().set("Authorization", &creds)).await;
        assert_eq!(r.status(), Some(400), "REGISTER on {backend:?}");
        assert!(s.bindings_of("alice").is_empty());

        let msg = Request::message(&c, "alice", "bob");
        let challenge = challenge_of(&c.request(&msg).await);
        let elsewhere = format!("sip:carol@{DOMAIN}");
        let creds = digest_answer(&challenge, Algorithm::Md5, "alice", "wonderland", "MESSAGE", &elsewhere, 1);
        let r = c.request(&msg.clone().next().set("Proxy-Authorization", &creds)).await;
        assert_eq!(r.status(), Some(400), "MESSAGE to Bob with credentials for Carol on {backend:?}");
        assert_eq!(failures(&s, "uri_mismatch").await - before, 2.0);

        // The same credentials for the right `uri` pass, and for this server's address.
        let creds = digest_answer(&challenge, Algorithm::Md5, "alice", "wonderland", "MESSAGE", msg.uri(), 2);
        let r = c.request(&msg.clone().next().next().set("Proxy-Authorization", &creds)).await;
        assert_eq!(r.status(), Some(202), "kept for Bob, who is offline");
        let server = format!("sip:{}", s.udp_addr());
        let creds = digest_answer(&challenge, Algorithm::Md5, "alice", "wonderland", "MESSAGE", &server, 3);
        let r = c.request(&msg.clone().with_cseq(4).new_branch().set("Proxy-Authorization", &creds)).await;
        assert_eq!(r.status(), Some(202), "SIPp's `uri`");
    }
}

/// Finding 6: we always challenge with qop="auth", whose nonce-count is what replay protection
/// counts; an RFC 2069 response without it, though right, is challenged again.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_without_qop_is_challenged_not_accepted() {
    for backend in backends("digest_no_qop").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let before = failures(&s, "no_qop").await;
        let mut c = s.udp_client().await;
        let req = Request::register(&c, "alice").set("Expires", "300");
        let challenge = challenge_of(&c.request(&req).await);
        assert!(challenge.contains("qop=\"auth\""), "{challenge}");
        let creds = without_qop(&challenge, "alice", "wonderland", "REGISTER", req.uri());
        for _ in 0..2 {
            let r = c.request(&req.clone().next().set("Authorization", &creds)).await;
            assert_eq!(r.status(), Some(401), "on {backend:?}");
            assert!(!challenge_of(&r).contains("stale"), "{}", challenge_of(&r));
        }
        assert!(s.bindings_of("alice").is_empty());
        assert_eq!(failures(&s, "no_qop").await - before, 2.0);
    }
}

/// Finding 6: an Authorization captured from Alice's REGISTER, replayed (same nonce, same
/// nonce-count) from another address with the attacker's Contact, does not register it: the
/// Contact is not covered by the digest, the nonce-count is.
#[tokio::test(flavor = "multi_thread")]
async fn a_captured_register_authorization_cannot_be_replayed() {
    const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for backend in backends("digest_replay").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let before = failures(&s, "replay").await;
        let mut alice = s.udp_client().await;
        let req = Request::register(&alice, "alice").set("Expires", "300");
        let req = authorized(&mut alice, &req, "alice", "wonderland").await;
        assert_eq!(alice.request(&req).await.status(), Some(200));
        let captured = req.header("Authorization").unwrap().to_string();

        let mut mallory = s.udp_client_from(ATTACKER).await;
        let hijack = Request::register(&mallory, "alice").set("Expires", "300").set("Authorization", &captured);
        let r = mallory.request(&hijack).await;
        assert_eq!(r.status(), Some(401), "on {backend:?}");
        let mut tcp = s.tcp_client().await;
        let hijack = Request::register(&tcp, "alice").set("Expires", "300").set("Authorization", &captured);
        assert_eq!(tcp.request(&hijack).await.status(), Some(401), "over TCP on {backend:?}");
        let contacts: Vec<String> = s.bindings_of("alice").iter().map(|b| b.uri.to_string()).collect();
        assert_eq!(contacts.len(), 1, "only Alice's own: {contacts:?}");
        assert!(contacts[0].contains(&alice.local().to_string()), "{contacts:?}");
        assert_eq!(failures(&s, "replay").await - before, 2.0);
    }
}

/// Finding 6, across a pool: members share `auth.secret`, so each can tell that a nonce is
/// genuine, but only the member that issued it holds its nonce-counts. A MESSAGE with no user
/// in its Request-URI is served (and its credentials checked) by the member it reaches, so a
/// captured one can be taken to any member: there, its nonce is stale (a fresh challenge
/// with stale=true, which the client answers without asking its user), never accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_nonce_is_accepted_only_by_the_member_that_issued_it() {
    for backend in backends("digest_pool_replay").await {
        let member = |id: &'static str, url: String| {
            move |c: &mut sipfront::config::Config| {
                pool_member(id, url)(c);
                c.auth.secret = "the pool's nonce key".into();
            }
        };
        let a = TestServer::with_users(&backend, USERS, member("fe-a", String::new())).await;
        let shared = match &backend {
            Backend::Sqlite => format!("sqlite://{}", a.dir.path().join("sipfront.db").display()),
            Backend::Postgres(url) => url.clone(),
        };
        let b = TestServer::with(member("fe-b", shared)).await;
        for m in [&a, &b] {
            assert!(eventually(Duration::from_secs(5), async || m.server.membership.peers().len() == 1).await);
        }

        // Alice's MESSAGE to the domain itself: no user to be homed, so served where it lands.
        let mut at_a = a.udp_client().await;
        let mut msg = Request::message(&at_a, "alice", "bob");
        msg.start_line = format!("MESSAGE sip:{DOMAIN} SIP/2.0");
        msg = msg.set("To", &format!("<sip:{DOMAIN}>"));
        let msg = authorized(&mut at_a, &msg, "alice", "wonderland").await;
        let accepted = at_a.request(&msg).await.status();
        assert_eq!(accepted, Some(404), "authenticated at A, then nobody to deliver to, on {backend:?}");
        assert_eq!(at_a.request(&msg.clone().new_branch()).await.status(), Some(407), "replayed at A");

        let before = failures(&b, "foreign_nonce").await;
        let mut at_b = b.udp_client().await;
        let replayed = msg.clone().set("Via", &format!("SIP/2.0/UDP {};branch={}", at_b.local(), branch()));
        let r = at_b.request(&replayed).await;
        assert_eq!(r.status(), Some(407), "replayed at B on {backend:?}");
        let fresh = challenge_of(&r);
        assert!(fresh.ends_with(", stale=true"), "the client retries without asking its user: {fresh}");
        assert_eq!(failures(&b, "foreign_nonce").await - before, 1.0);

        // A client that lands on B with A's nonce (or after a restart) answers the new one.
        let creds = digest_answer(&fresh, Algorithm::Md5, "alice", "wonderland", "MESSAGE", replayed.uri(), 1);
        let retry = replayed.clone().next().set("Proxy-Authorization", &creds);
        assert_eq!(at_b.request(&retry).await.status(), Some(404), "B's own nonce is good at B");
    }
}

/// Finding 7: until the password is proven, an unknown user, a known user with a wrong
/// password and a disabled user with the right password get the same answer (status line,
/// headers, challenge), for a REGISTER and for a MESSAGE; only the server's own metric tells
/// them apart.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_disabled_and_wrong_password_answers_look_the_same() {
    for backend in backends("digest_enumeration").await {
        let s = TestServer::with_users(&backend, USERS, |c| {
            c.auth.max_failures = 100;
            c.auth.max_users_per_ip = 100;
        })
        .await;
        // Disabled after the server read every user: it acts on it once it has followed it.
        let log = s.server.directory.changes();
        store_of(&s, &backend).await.set_enabled(&format!("carol@{DOMAIN}"), false).await.unwrap();
        until_named(log, &format!("carol@{DOMAIN}")).await;
        let reasons = ["unknown_user", "bad_response", "disabled"];
        let mut before = Vec::new();
        for reason in reasons {
            before.push(failures(&s, reason).await);
        }
        let mut c = s.udp_client().await;
        let attempts = [("nobody", "wonderland"), ("alice", "guess"), ("carol", "sea-shells")];

        let mut registers = Vec::new();
        for (user, password) in attempts {
            let req = Request::register(&c, user).set("Expires", "300");
            let r = with_credentials(&mut c, &req, user, password).await;
            registers.push(shape(&r));
        }
        assert_eq!(registers[0].0, "SIP/2.0 401 Unauthorized", "{backend:?}");
        assert_eq!(registers[0], registers[1], "unknown user and wrong password on {backend:?}");
        assert_eq!(registers[1], registers[2], "wrong password and disabled user on {backend:?}");
        assert!(s.bindings_of("carol").is_empty(), "a disabled account does not register");

        let mut messages = Vec::new();
        for (user, password) in attempts {
            let msg = Request::message(&c, user, "bob");
            let r = with_credentials(&mut c, &msg, user, password).await;
            messages.push(shape(&r));
        }
        assert_eq!(messages[0].0, "SIP/2.0 407 Proxy Authentication Required", "{backend:?}");
        assert_eq!(messages[0], messages[1], "{backend:?}");
        assert_eq!(messages[1], messages[2], "{backend:?}");

        for (reason, before) in reasons.into_iter().zip(before) {
            assert_eq!(failures(&s, reason).await - before, 2.0, "{reason} on {backend:?}");
        }
    }
}

/// Finding 7: a disabled account's attempts all count as failures, right password or not, so
/// that its lockout comes after as many attempts as a wrong password's does.
#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_account_locks_out_as_a_wrong_password_does() {
    for backend in backends("digest_disabled_lockout").await {
        let s = TestServer::with_users(&backend, USERS, |c| c.auth.max_failures = 3).await;
        // The server read Carol at start: it acts on her change once it has followed it.
        let log = s.server.directory.changes();
        store_of(&s, &backend).await.set_enabled(&format!("carol@{DOMAIN}"), false).await.unwrap();
        until_named(log, &format!("carol@{DOMAIN}")).await;
        let mut c = s.udp_client().await;
        for (user, password) in [("alice", "guess"), ("carol", "sea-shells")] {
            assert_eq!(
                statuses(&mut c, user, password, 4).await,
                [Some(401), Some(401), Some(401), Some(403)],
                "{user} on {backend:?}"
            );
        }
    }
}

/// The statuses of `n` REGISTERs of `user` with `password`, each after its own challenge.
async fn statuses(c: &mut UdpClient, user: &str, password: &str, n: usize) -> Vec<Option<u16>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let req = Request::register(c, user).set("Expires", "300");
        out.push(with_credentials(c, &req, user, password).await.status());
    }
    out
}

/// Finding 7: an expired nonce is answered stale=true before the response is looked at: the
/// same answer for the right password, a wrong one and an unknown user, so that stale=true
/// proves no password; and none of them counts as a failure toward a lockout.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_nonce_is_stale_whatever_the_password() {
    for backend in backends("digest_stale_oracle").await {
        let s = TestServer::with_users(&backend, USERS, |c| {
            c.auth.nonce_lifetime_secs = 1;
            c.auth.max_failures = 1;
        })
        .await;
        let mut c = s.udp_client().await;
        let attempts = [("alice", "wonderland"), ("alice", "guess"), ("nobody", "guess")];
        let mut pending = Vec::new();
        for (user, password) in attempts {
            let req = Request::register(&c, user).set("Expires", "300");
            let challenge = challenge_of(&c.request(&req).await);
            pending.push((req, challenge, user, password));
        }
        // The point of the test: the nonces' 1 s lifetime passes (with a margin).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let mut answers = Vec::new();
        for (req, challenge, user, password) in pending {
            let creds = digest_answer(&challenge, Algorithm::Md5, user, password, "REGISTER", req.uri(), 1);
            let r = c.request(&req.next().set("Authorization", &creds)).await;
            assert!(challenge_of(&r).ends_with(", stale=true"), "{user}/{password}: {}", challenge_of(&r));
            answers.push(shape(&r));
        }
        assert_eq!(answers[0], answers[1], "right and wrong password on {backend:?}");
        assert_eq!(answers[1], answers[2], "wrong password and unknown user on {backend:?}");

        // With max_failures at 1, a counted failure would have locked Alice out from here.
        let req = Request::register(&c, "alice").set("Expires", "300");
        assert_eq!(with_credentials(&mut c, &req, "alice", "wonderland").await.status(), Some(200), "{backend:?}");
    }
}
