//! The registrar end to end (RFC 3261 10.3 with digest authentication, RFC 5626 outbound, RFC
//! 5627 GRUU, RFC 3327 Path, RFC 3608 Service-Route), each test on SQLite and on PostgreSQL,
//! through real sockets; and SIPp's authenticated registration scenario against it.

mod common;

use common::*;
use sipfront_proto::digest::Algorithm;
use sipfront_proto::{HeaderName, Message};
use std::time::Duration;

const AOR: &str = "sip:alice@example.test";

/// The Contact values of a 200, as text.
fn contacts(resp: &Message) -> Vec<String> {
    headers(resp, HeaderName::Contact)
}

/// The `expires` a 200 states for the binding whose Contact starts with `<uri>`.
fn expires_of(resp: &Message, uri: &str) -> Option<u32> {
    let c = contacts(resp).into_iter().find(|c| c.starts_with(&format!("<{uri}>")))?;
    c.split(";expires=").nth(1)?.split(';').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn register_is_challenged_with_md5_only_and_then_accepted() {
    for backend in backends("register_md5").await {
        let s = TestServer::with_users(&backend, &[("alice", "wonderland")], |_| {}).await;
        let mut c = s.udp_client().await;
        let req = Request::register(&c, "alice").set("Expires", "600");
        let challenge = c.request(&req).await;
        assert_eq!(challenge.status(), Some(401), "{backend:?}");
        assert_matches_request(&challenge, &req);
        let offered = headers(&challenge, HeaderName::WwwAuthenticate);
        assert_eq!(offered.len(), 1, "MD5 alone by default, one challenge: {offered:?}");
        let nonce = challenge_param(&offered[0], "nonce").expect("a nonce");
        assert_eq!(
            offered[0],
            format!("Digest realm=\"{DOMAIN}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5"),
            "the challenge, exactly"
        );

        // RFC 3261 22.2: the retry is the next CSeq of the same Call-ID, with credentials.
        let retry = req.next();
        let creds = digest_answer(&offered[0], Algorithm::Md5, "alice", "wonderland", "REGISTER", retry.uri(), 1);
        let retry = retry.set("Authorization", &creds);
        let ok = c.request(&retry).await;
        assert_eq!(ok.status(), Some(200), "{backend:?}");
        assert_matches_request(&ok, &retry);
        let contact = format!("sip:alice@{}", c.local());
        assert_eq!(contacts(&ok), vec![format!("<{contact}>;expires=600")], "the binding with its interval");
        let date = header(&ok, HeaderName::Date);
        assert!(date.ends_with(" GMT") && date.len() == 29, "an RFC 1123 Date (RFC 3261 10.3 step 8): {date:?}");
        assert_eq!(s.bindings_of("alice").len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sha256_and_md5_are_offered_in_order_and_both_answers_accepted() {
    for backend in backends("register_sha256").await {
        let s = TestServer::with_users(&backend, &[("alice", "wonderland")], |c| {
            c.auth.algorithms = vec!["SHA-256".into(), "MD5".into()];
        })
        .await;
        let mut c = s.udp_client().await;
        for (answer_with, index) in [(Algorithm::Sha256, 0), (Algorithm::Md5, 1)] {
            let req = Request::register(&c, "alice").set("Expires", "300");
            let challenge = c.request(&req).await;
            assert_eq!(challenge.status(), Some(401));
            let offered = headers(&challenge, HeaderName::WwwAuthenticate);
            assert_eq!(offered.len(), 2, "one challenge per algorithm: {offered:?}");
            assert!(offered[0].ends_with("algorithm=SHA-256"), "SHA-256 first: {offered:?}");
            assert!(offered[1].ends_with("algorithm=MD5"), "then MD5: {offered:?}");
            assert_eq!(challenge_param(&offered[0], "nonce"), challenge_param(&offered[1], "nonce"));
            let retry = req.next();
            let creds = digest_answer(&offered[index], answer_with, "alice", "wonderland", "REGISTER", retry.uri(), 1);
            let ok = c.request(&retry.set("Authorization", &creds)).await;
            assert_eq!(ok.status(), Some(200), "{} answer on {backend:?}", answer_with.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registrar_follows_rfc3261_10_3() {
    for backend in backends("registrar_semantics").await {
        let users = [("a", "pa"), ("b", "pb"), ("c", "pc"), ("d", "pd")];
        let s = TestServer::with_users(&backend, &users, |c| {
            c.registrar.min_expires = 60;
            c.registrar.max_expires = 900;
            c.registrar.max_bindings = 3;
        })
        .await;
        let mut c = s.udp_client().await;
        let at = c.local();

        // The Expires header applies to contacts without an `expires` parameter of their own.
        let req = Request::register(&c, "a")
            .set("Contact", &format!("<sip:one@{at}>;expires=120, <sip:two@{at}>"))
            .set("Expires", "300");
        let ok = with_credentials(&mut c, &req, "a", "pa").await;
        assert_eq!(ok.status(), Some(200), "{backend:?}");
        assert_eq!(expires_of(&ok, &format!("sip:one@{at}")), Some(120), "{:?}", contacts(&ok));
        assert_eq!(expires_of(&ok, &format!("sip:two@{at}")), Some(300), "{:?}", contacts(&ok));

        // Too brief: 423 with Min-Expires, from the header or from a contact parameter.
        for req in [
            Request::register(&c, "a").set("Expires", "30"),
            Request::register(&c, "a").set("Contact", &format!("<sip:three@{at}>;expires=59")),
        ] {
            let r = with_credentials(&mut c, &req, "a", "pa").await;
            assert_eq!(r.status(), Some(423), "{backend:?}");
            assert_eq!(header(&r, HeaderName::MinExpires), "60");
        }

        // Too long: shortened to max_expires.
        let req = Request::register(&c, "a").set("Contact", &format!("<sip:three@{at}>")).set("Expires", "5000");
        let ok = with_credentials(&mut c, &req, "a", "pa").await;
        assert_eq!(expires_of(&ok, &format!("sip:three@{at}")), Some(900), "{:?}", contacts(&ok));

        // A query (no Contact) lists every binding and changes none.
        let query = Request::register(&c, "a").without("Contact");
        let listed = with_credentials(&mut c, &query, "a", "pa").await;
        assert_eq!(listed.status(), Some(200));
        assert_eq!(contacts(&listed).len(), 3, "{:?}", contacts(&listed));
        assert_eq!(s.bindings_of("a").len(), 3);

        // "*" only with Expires: 0 (RFC 3261 10.3 step 6).
        for bad in [
            Request::register(&c, "a").set("Contact", "*"),
            Request::register(&c, "a").set("Contact", "*").set("Expires", "60"),
        ] {
            let r = with_credentials(&mut c, &bad, "a", "pa").await;
            assert_eq!(r.status(), Some(400), "* without Expires: 0");
        }
        assert_eq!(s.bindings_of("a").len(), 3, "a refused * removes nothing");
        let all = Request::register(&c, "a").set("Contact", "*").set("Expires", "0");
        let r = with_credentials(&mut c, &all, "a", "pa").await;
        assert_eq!(r.status(), Some(200));
        assert!(contacts(&r).is_empty(), "nothing left: {:?}", contacts(&r));
        let listed = with_credentials(&mut c, &query.clone().next(), "a", "pa").await;
        assert!(contacts(&listed).is_empty());
        assert!(s.bindings_of("a").is_empty());

        // Step 7: an older CSeq on the same Call-ID is refused and changes nothing.
        let req = Request::register(&c, "b").set("Expires", "300").with_cseq(10);
        assert_eq!(with_credentials(&mut c, &req, "b", "pb").await.status(), Some(200));
        let older = req.clone().with_cseq(9).set("Expires", "600");
        let r = with_credentials(&mut c, &older, "b", "pb").await;
        assert_eq!(r.status(), Some(400), "an older CSeq of the same Call-ID");
        let same = req.clone().set("Expires", "600");
        let r = with_credentials(&mut c, &same, "b", "pb").await;
        assert_eq!(r.status(), Some(400), "the same CSeq again");
        let bound = s.bindings_of("b");
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].cseq, 10, "unchanged");
        assert!(bound[0].remaining(tokio::time::Instant::now()) <= 300, "its interval unchanged");
        let listed = with_credentials(&mut c, &req.clone().with_cseq(11).without("Contact"), "b", "pb").await;
        let only = contacts(&listed);
        assert_eq!(only.len(), 1);
        assert!(expires_of(&listed, &format!("sip:b@{at}")).is_some_and(|e| e <= 300), "{only:?}");

        // At most max_bindings per AOR: a new one replaces the oldest.
        for n in 1..=4 {
            let req = Request::register(&c, "c").set("Contact", &format!("<sip:c{n}@{at}>")).set("Expires", "300");
            let ok = with_credentials(&mut c, &req, "c", "pc").await;
            assert_eq!(ok.status(), Some(200));
            assert_eq!(contacts(&ok).len(), n.min(3), "{:?}", contacts(&ok));
        }
        let query = Request::register(&c, "c").without("Contact");
        let listed = with_credentials(&mut c, &query, "c", "pc").await;
        let mut uris: Vec<String> =
            contacts(&listed).iter().map(|c| c.split('>').next().unwrap_or_default().to_string()).collect();
        uris.sort();
        assert_eq!(
            uris,
            vec![format!("<sip:c2@{at}"), format!("<sip:c3@{at}"), format!("<sip:c4@{at}")],
            "c1 gave way"
        );

        // Expires: 0 on one contact removes only that one.
        let req = Request::register(&c, "c").set("Contact", &format!("<sip:c3@{at}>;expires=0"));
        let ok = with_credentials(&mut c, &req, "c", "pc").await;
        assert_eq!(contacts(&ok).len(), 2, "{:?}", contacts(&ok));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binding_is_gone_at_its_expiry() {
    for backend in backends("registrar_expiry").await {
        let s = TestServer::with_users(&backend, &[("alice", "wonderland")], |c| c.registrar.min_expires = 1).await;
        let mut c = s.udp_client().await;
        let req = Request::register(&c, "alice").set("Expires", "2");
        let ok = with_credentials(&mut c, &req, "alice", "wonderland").await;
        assert_eq!(ok.status(), Some(200), "{backend:?}");
        assert_eq!(expires_of(&ok, &format!("sip:alice@{}", c.local())), Some(2), "{:?}", contacts(&ok));
        assert_eq!(s.bindings_of("alice").len(), 1);
        // The expiry task removes it at its expiry, 2 s after the REGISTER, give or take a poll.
        let gone = eventually(Duration::from_secs(3), async || s.bindings_of("alice").is_empty()).await;
        assert!(gone, "expired within 3 s on {backend:?}: {:?}", s.bindings_of("alice"));
        let listed = with_credentials(&mut c, &req.clone().next().without("Contact"), "alice", "wonderland").await;
        assert_eq!(listed.status(), Some(200));
        assert!(contacts(&listed).is_empty(), "expired: {:?}", contacts(&listed));
        assert!(s.bindings_of("alice").is_empty());
        assert_eq!(s.server.bindings.binding_count(), 0, "removed from the table, not only hidden");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_gruu_path_and_service_route() {
    const INSTANCE: &str = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>";
    for backend in backends("registrar_outbound").await {
        let s = TestServer::with_users(&backend, &[("alice", "wonderland")], |_| {}).await;
        let mut c = s.tcp_client().await;
        let at = c.local;
        let contact = |port: u16| {
            format!("<sip:alice@{}:{port};transport=tcp;ob>;+sip.instance=\"{INSTANCE}\";reg-id=1", at.ip())
        };
        let req = Request::register(&c, "alice")
            .set("Contact", &contact(at.port()))
            .set("Supported", "outbound, gruu")
            .set("Expires", "300");
        let ok = with_credentials(&mut c, &req, "alice", "wonderland").await;
        assert_eq!(ok.status(), Some(200), "{backend:?}");
        assert!(ok.list_has(HeaderName::Require, "outbound"), "RFC 5626 6: Require: outbound");
        let bound = contacts(&ok);
        assert_eq!(bound.len(), 1, "{bound:?}");
        let urn = INSTANCE.trim_matches(['<', '>']);
        assert!(bound[0].contains(&format!(";pub-gruu=\"{AOR};gr={urn}\"")), "RFC 5627 pub-gruu: {}", bound[0]);
        assert!(bound[0].contains(";temp-gruu=\"sip:"), "RFC 5627 temp-gruu: {}", bound[0]);
        assert!(bound[0].contains("@example.test;gr\""), "a temp-gruu of our domain: {}", bound[0]);
        assert!(bound[0].contains(";expires=300"), "{}", bound[0]);
        let route = header(&ok, HeaderName::ServiceRoute);
        assert_eq!(route, format!("<sip:{};transport=tcp;lr>", s.tcp_addr()), "RFC 3608 Service-Route");

        // A refresh of the same instance and reg-id replaces the binding, even with another URI.
        let refresh = req.clone().next().set("Contact", &contact(at.port() + 1));
        let ok = with_credentials(&mut c, &refresh, "alice", "wonderland").await;
        assert_eq!(ok.status(), Some(200));
        let bound = contacts(&ok);
        assert_eq!(bound.len(), 1, "replaced, not added: {bound:?}");
        assert!(
            bound[0].starts_with(&format!("<sip:alice@{}:{};transport=tcp;ob>", at.ip(), at.port() + 1)),
            "{bound:?}"
        );
        assert_eq!(s.bindings_of("alice").len(), 1);

        // Path (RFC 3327 5.3): stored and echoed in order.
        let mut u = s.udp_client().await;
        let paths = ["<sip:edge1.example.test;lr>", "<sip:edge2.example.test;lr>"];
        let mut req = Request::register(&u, "alice").set("Expires", "300");
        let at = req.headers.len() - 1;
        for (i, p) in paths.iter().enumerate() {
            req.headers.insert(at + i, ("Path".into(), Some(p.to_string())));
        }
        let ok = with_credentials(&mut u, &req, "alice", "wonderland").await;
        assert_eq!(ok.status(), Some(200));
        assert_eq!(headers(&ok, HeaderName::Path), paths, "Path echoed in the 200");
        assert!(!ok.list_has(HeaderName::Require, "outbound"), "no reg-id, no outbound");
        assert_eq!(header(&ok, HeaderName::ServiceRoute), format!("<sip:{};lr>", s.udp_addr()));
        let with_path = s.bindings_of("alice").into_iter().find(|b| !b.path.is_empty()).expect("the UDP binding");
        assert_eq!(with_path.path.iter().map(|p| p.to_string()).collect::<Vec<_>>(), paths);
    }
}

/// SIPp's reference scenario (401, then REGISTER with credentials) for 500 users at 200 per
/// second: every registration succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn sipp_registers_500_users_with_digest_auth() {
    if !require_program("sipp", "sip-tester") {
        return;
    }
    for backend in backends("registrar_sipp").await {
        let users: Vec<(String, String)> = (0..500).map(|i| (format!("user{i}"), format!("pw{i}"))).collect();
        let refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
        let s = TestServer::with_users(&backend, &refs, |_| {}).await;
        let csv = s.dir.path().join("users.csv");
        let mut text = String::from("SEQUENTIAL\n");
        for (u, p) in &users {
            text.push_str(&format!("{u};{p}\n"));
        }
        std::fs::write(&csv, text).expect("write users.csv");
        // A copy of the reference scenario (shared/reference/kamailio/scenarios/reg_auth.xml).
        let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/reg_auth.xml");
        let stats = s.dir.path().join("reg-stats.csv");
        let local_port = free_udp_port().to_string();
        let mut cmd = std::process::Command::new("sipp");
        cmd.current_dir(s.dir.path()).arg(s.udp_addr().to_string()).args(["-sf", scenario]).arg("-inf").arg(&csv);
        cmd.args(["-m", "500", "-r", "200", "-l", "200", "-timeout", "60s", "-timeout_error", "-nostdin"]);
        cmd.args(["-i", "127.0.0.1", "-p", &local_port, "-trace_stat", "-fd", "1", "-stf"]).arg(&stats);
        let (status, out, err) = run_tool(cmd, Duration::from_secs(90)).await;
        let csv = std::fs::read_to_string(&stats).unwrap_or_default();
        let screen = screen(&out);
        assert_eq!(status.code(), Some(0), "SIPp on {backend:?}\n{screen}\n{err}");
        assert_eq!(
            (sipp_column(&csv, "SuccessfulCall(C)"), sipp_column(&csv, "FailedCall(C)")),
            (Some(500), Some(0)),
            "SIPp on {backend:?}: successful and failed registrations\n{screen}"
        );
        assert_eq!(s.server.bindings.aor_count(), 500, "every user is bound");
        s.assert_answers_options().await;
    }
}
