//! Attacks from the security review (issue 17), each performed over real sockets and shown to
//! fail.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::{HeaderName, Method};
use sipfront_storage::testing::eventually;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// Finding 13: a MESSAGE sent over UDP without Content-Length (allowed there: the body is the
/// rest of the datagram) whose body is a whole SIP request. Relayed onto the recipient's TCP
/// connection without a Content-Length, the body would frame as a second message "from the
/// server". It arrives as one message, its body whole, with the right Content-Length.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_holding_a_request_is_not_smuggled_onto_a_stream() {
    for backend in backends("security_smuggling").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let mut bob = online(&s, "bob", "builder").await;
        let inner = format!(
            "BYE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP evil.invalid;branch=z9hG4bKsmuggled\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{DOMAIN}>;tag=x\r\nTo: <sip:bob@{DOMAIN}>;tag=y\r\nCall-ID: smuggled\r\nCSeq: 2 BYE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let mut alice = s.udp_client().await;
        let mut msg = Request::message(&alice, "alice", "bob");
        msg.body = inner.clone();
        let mut msg = authorized(&mut alice, &msg, "alice", "wonderland").await;
        msg.headers.retain(|(name, _)| !name.eq_ignore_ascii_case("Content-Length"));
        let bytes = msg.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.split("\r\n\r\n").next().unwrap().contains("Content-Length"), "sent without one");
        alice.send(&bytes).await;

        let got = bob.expect_request(Method::Message).await;
        assert_eq!(got.body(), inner.as_bytes(), "the body arrives whole, as a body");
        assert_eq!(header(&got, HeaderName::ContentLength), inner.len().to_string());
        bob.answer(&got, 200, "bob").await;
        let Phone::Tcp(stream) = &mut bob else { unreachable!() };
        assert!(stream.next_frame(QUIET).await.is_none(), "no second request on Bob's connection");
    }
}

/// Finding 8: every tag, branch, entity tag, nonce and key the server makes comes from a
/// cryptographically secure generator (`sipfront_proto::random`, or `getrandom` for keys);
/// no fast, predictable generator is used anywhere in the server or its protocol crate.
#[test]
fn no_predictable_random_generator_in_the_server() {
    let root = sipfront_storage::testing::workspace_root();
    let mut offenders = Vec::new();
    for dir in ["server/src", "proto/src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        if ["fastrand", "SmallRng", "StdRng::seed_from_u64"].iter().any(|w| line.contains(w)) {
                            offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "predictable generators:\n{}", offenders.join("\n"));
    for cargo in ["server/Cargo.toml", "proto/Cargo.toml"] {
        let text = std::fs::read_to_string(root.join(cargo)).unwrap();
        let deps = text.split("[dev-dependencies]").next().unwrap();
        assert!(!deps.contains("fastrand"), "{cargo} depends on fastrand");
    }
}

/// What a MESSAGE from `from` to `to` on `phone`, without credentials, gets: delivered (200,
/// the connection speaks for the sender) or challenged (407).
async fn unchallenged_message(phone: &mut Phone, from: &str, to: &str, to_phone: &mut Phone) -> u16 {
    let msg = Request::message(phone, from, to);
    phone.send(&msg.to_bytes()).await;
    tokio::select! {
        r = phone.recv() => {
            assert_eq!(r.status(), Some(407), "not relayed, so challenged");
            407
        }
        got = to_phone.expect_request(Method::Message) => {
            to_phone.answer(&got, 200, "to").await;
            phone.expect_response(200).await;
            200
        }
    }
}

/// Finding 2: a connection that REGISTERed speaks for its user (no challenge for its requests)
/// only while the account is as it was and the connection holds a registration: a password
/// change, a disabled account or an unregistration ends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_speaks_for_its_user_only_while_the_account_and_registration_last() {
    for backend in backends("security_flow_identity").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let mut bob = online(&s, "bob", "builder").await;

        // A password change: the connection must authenticate again.
        let mut alice = online(&s, "alice", "wonderland").await;
        assert_eq!(unchallenged_message(&mut alice, "alice", "bob", &mut bob).await, 200, "{backend:?}");
        cli(&s, &["user", "passwd", &format!("alice@{DOMAIN}"), "--password-stdin"], "looking-glass\n").await;
        let challenged = eventually(std::time::Duration::from_secs(5), async || {
            unchallenged_message(&mut alice, "alice", "bob", &mut bob).await == 407
        })
        .await;
        assert!(challenged, "after a password change, on {backend:?}");

        // An unregistration.
        let mut alice = online(&s, "alice", "looking-glass").await;
        assert_eq!(unchallenged_message(&mut alice, "alice", "bob", &mut bob).await, 200);
        let bye = Request::register(&alice, "alice").set("Expires", "0");
        assert_eq!(with_credentials(&mut alice, &bye, "alice", "looking-glass").await.status(), Some(200));
        assert_eq!(unchallenged_message(&mut alice, "alice", "bob", &mut bob).await, 407, "after unregistering");

        // A disabled account.
        let mut alice = online(&s, "alice", "looking-glass").await;
        cli(&s, &["user", "disable", &format!("alice@{DOMAIN}")], "").await;
        let challenged = eventually(std::time::Duration::from_secs(5), async || {
            unchallenged_message(&mut alice, "alice", "bob", &mut bob).await == 407
        })
        .await;
        assert!(challenged, "after the account is disabled, on {backend:?}");
    }
}

/// A call from Alice to Bob through the proxy, answered and acknowledged: Alice's and Bob's
/// sides of the dialog, and the INVITE as Bob got it.
async fn call(alice: &mut Phone, bob: &mut Phone) -> (Dialog, Dialog, sipfront_proto::Message) {
    let inv = invite(alice, "alice", "bob");
    alice.send(&inv.to_bytes()).await;
    let at_bob = bob.expect_request(Method::Invite).await;
    bob.answer(&at_bob, 200, "bt").await;
    let ok = loop {
        let r = alice.recv().await;
        if r.status() == Some(200) {
            break r;
        }
    };
    let mut caller = Dialog::caller(&inv, &ok);
    alice.send(&caller.request("ACK", alice).to_bytes()).await;
    bob.expect_request(Method::Ack).await;
    (caller, Dialog::callee(&at_bob, "bt"), at_bob)
}

/// Finding 1: a dialog's route token routes that dialog only, from its parties as
/// themselves, for its life: a forged From, another Call-ID or an expired token is refused;
/// a stray 2xx is forwarded only for the dialog its Via token names. The in-dialog MESSAGE is
/// archived with the party that sent it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dialog_route_serves_its_dialog_and_parties_only() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    let (mut caller, mut callee, at_bob) = call(&mut alice, &mut bob).await;

    // Bob says he is Carol.
    let mut forged = callee.request("MESSAGE", &bob).set("From", &format!("<sip:carol@{DOMAIN}>;tag=bt"));
    forged.body = "I am Carol".into();
    let r = bob.request(&forged).await;
    assert_eq!(r.status(), Some(403), "a From that is not Bob's");
    // Alice uses the route for another dialog (another Call-ID).
    let other = caller.request("MESSAGE", &alice).set("Call-ID", "another-dialog@x");
    let r = alice.request(&other).await;
    assert_eq!(r.status(), Some(403), "the token is for its own dialog");
    // Bob, as himself, reaches Alice; the archive names him.
    let mut honest = callee.request("MESSAGE", &bob).set("Content-Type", "text/plain");
    honest.body = "it is Bob".into();
    bob.send(&honest.to_bytes()).await;
    let got = alice.expect_request(Method::Message).await;
    alice.answer(&got, 200, "x").await;
    bob.expect_response(200).await;
    let store = s.server.directory.store().clone();
    let archived = eventually(std::time::Duration::from_secs(5), async || {
        let rows = store.search_archive(&format!("bob@{DOMAIN}"), None, 0, i64::MAX, 10).await.unwrap();
        rows.len() == 1 && rows[0].sender == format!("bob@{DOMAIN}")
    })
    .await;
    assert!(archived, "archived once, from Bob");

    // A 2xx carrying the proxy's Via for this call but another Call-ID is not forwarded.
    let mut stray = at_bob.response_to(200);
    stray.set_to_tag("bt");
    stray.set_header(HeaderName::CallId, "another-dialog@x");
    stray.ensure_content_length();
    bob.send(&stray.to_bytes()).await;
    let forwarded = tokio::time::timeout(QUIET, alice.recv()).await;
    assert!(forwarded.is_err(), "the stray 2xx of another dialog reached Alice: {forwarded:?}");

    // A token past its life: 481.
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| c.proxy.dialog_max_hours = 0).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    let (mut caller, _, _) = call(&mut alice, &mut bob).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = alice.request(&caller.request("MESSAGE", &alice)).await;
    assert_eq!(r.status(), Some(481), "the dialog's route expired");
}

/// Finding 5: a user part names its account whatever its ASCII case, everywhere. Alice blocks
/// Bob; Bob subscribing to `ALICE` is blocked too (it fell to the default policy before).
/// Alice registering as `ALICE` is reached as `alice`, and a subscription to nobody is 404.
#[tokio::test(flavor = "multi_thread")]
async fn a_case_variant_of_a_user_is_that_user() {
    for backend in backends("case_variant_is_the_user").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let store = s.server.directory.store().clone();
        store
            .set_rule(&format!("alice@{DOMAIN}"), &format!("bob@{DOMAIN}"), sipfront_storage::RuleAction::Block)
            .await
            .unwrap();
        let mut bob = online(&s, "bob", "builder").await;
        for target in ["alice", "ALICE", "aLiCe"] {
            let r = bob.request(&subscribe(&bob, "bob", target, "presence", 600)).await;
            assert_eq!(r.status(), Some(403), "Bob subscribing to {target}, on {backend:?}");
        }
        let r = bob.request(&subscribe(&bob, "bob", "nobody", "presence", 600)).await;
        assert_eq!(r.status(), Some(404), "nobody to watch");

        // Alice registers with her user part in capitals: she is bound as alice.
        let mut alice = Phone::tcp(&s).await;
        let req = Request::register(&alice, "ALICE").set("Expires", "300");
        let r = with_credentials(&mut alice, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(200), "ALICE registers as alice");
        for to in ["alice", "Alice"] {
            let msg = Request::message(&bob, "bob", to);
            bob.send(&msg.to_bytes()).await;
            let got = alice.expect_request(Method::Message).await;
            alice.answer(&got, 200, "a").await;
            bob.expect_response(200).await;
        }
    }
}

/// The in-dialog SUBSCRIBE of the subscription `sub` (the request) and `ok` (its 200) set up,
/// sent by `by` from `from` (the From as `sub` had it when `from` is `None`), CSeq `cseq`.
fn resubscribe(by: &Phone, sub: &Request, ok: &sipfront_proto::Message, from: Option<&str>, cseq: u32) -> Request {
    let mut r = Request::new("SUBSCRIBE", by.transport(), by.local_addr())
        .set("From", from.unwrap_or(sub.header("From").unwrap()))
        .set("To", &header(ok, HeaderName::To))
        .set("Call-ID", sub.header("Call-ID").unwrap())
        .set("CSeq", &format!("{cseq} SUBSCRIBE"))
        .set("Event", "presence")
        .set("Expires", "600")
        .set("Contact", sub.header("Contact").unwrap());
    r.start_line = format!("SUBSCRIBE {} SIP/2.0", contact_of(ok));
    r
}

/// Finding 3: a subscription is refreshed by its subscriber only, proven as for a new one;
/// another user holding the dialog's identifiers is refused, an unproven sender challenged,
/// a wrong From tag is no dialog of ours; a watcher disabled since cannot refresh.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_subscriber_refreshes_a_subscription() {
    const THREE: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")];
    for backend in backends("subscriber_refreshes").await {
        let s = TestServer::with_users(&backend, THREE, |_| {}).await;
        let _alice = online(&s, "alice", "wonderland").await;
        let mut bob = online(&s, "bob", "builder").await;
        let sub = subscribe(&bob, "bob", "alice", "presence", 600);
        let (ok, _) = subscribed(&mut bob, &sub).await;

        let mut carol = online(&s, "carol", "singer").await;
        let r = carol.request(&resubscribe(&carol, &sub, &ok, None, 2)).await;
        assert_eq!(r.status(), Some(403), "Carol's connection does not speak for Bob");
        let mut stranger = Phone::udp(&s).await;
        let r = stranger.request(&resubscribe(&stranger, &sub, &ok, None, 3)).await;
        assert_eq!(r.status(), Some(407), "an unproven sender is challenged");
        let carols = format!("<sip:carol@{DOMAIN}>;tag=c1");
        let r = carol.request(&resubscribe(&carol, &sub, &ok, Some(&carols), 4)).await;
        assert_eq!(r.status(), Some(481), "another From tag is another dialog");

        // Bob himself refreshes.
        let refresh = resubscribe(&bob, &sub, &ok, None, 5);
        let (refreshed, _) = subscribed(&mut bob, &refresh).await;
        assert_eq!(refreshed.status(), Some(200));

        // Bob's account is disabled: his connection no longer speaks for him, and his credentials
        // are refused.
        let changes = s.server.directory.changes();
        s.server.directory.store().set_enabled(&format!("bob@{DOMAIN}"), false).await.unwrap();
        until_named(changes, &format!("bob@{DOMAIN}")).await;
        // The core hears of the change on its own task: its connection is soon challenged.
        let mut cseq = 6;
        let challenged = eventually(std::time::Duration::from_secs(5), async || {
            cseq += 1;
            let r = bob.request(&resubscribe(&bob, &sub, &ok, None, cseq)).await;
            r.status() == Some(407)
        })
        .await;
        assert!(challenged, "the connection no longer speaks for Bob, on {backend:?}");
        let refresh = resubscribe(&bob, &sub, &ok, None, cseq + 1);
        let r = with_credentials(&mut bob, &refresh, "bob", "builder").await;
        assert_ne!(r.status(), Some(200), "a disabled watcher does not refresh, on {backend:?}");
    }
}

/// Finding 4: when a presentity's rules change but cannot be read (the store fails), its
/// watchers see nothing (pending) until they can, and a refresh meanwhile extends nothing
/// (503); once the store answers, the rules apply again.
#[tokio::test(flavor = "multi_thread")]
async fn rules_that_cannot_be_read_show_nothing() {
    for backend in backends("rules_fail_closed").await {
        if matches!(backend, Backend::Sqlite) && !sipfront_storage::testing::require_program("sqlite3", "sqlite3") {
            continue;
        }
        let s = TestServer::with_users(&backend, USERS, |c| c.database.timeout_ms = 500).await;
        let mut alice = online(&s, "alice", "wonderland").await;
        alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t", "open", "here")), None, 600)).await;
        let mut bob = online(&s, "bob", "builder").await;
        let sub = subscribe(&bob, "bob", "alice", "presence", 600);
        let (ok, n) = subscribed(&mut bob, &sub).await;
        assert!(state(&n).starts_with("active"), "{}", state(&n));

        backend_sql(&backend, &s, "ALTER TABLE presence_rules RENAME TO presence_rules_away").await;
        // Something of Alice's changes: her rules are read again, and cannot be.
        s.server.directory.store().set_enabled(&format!("alice@{DOMAIN}"), true).await.unwrap();
        let n = notified(&mut bob).await;
        assert!(state(&n).starts_with("pending"), "fails closed: {}", state(&n));
        assert!(doc(&n).tuples.is_empty(), "nothing shown");
        let refresh = resubscribe(&bob, &sub, &ok, None, 2);
        let r = bob.request(&refresh).await;
        assert_eq!(r.status(), Some(503), "a refresh meanwhile extends nothing");

        backend_sql(&backend, &s, "ALTER TABLE presence_rules_away RENAME TO presence_rules").await;
        let n = notified(&mut bob).await;
        assert!(state(&n).starts_with("active"), "read again: {}", state(&n));
        assert_eq!(doc(&n).tuples[0].note.as_deref(), Some("here"));
    }
}

/// Runs `sql` on the database of `s` (on `backend`) behind the server's back, with `sqlite3`
/// or `psql`.
async fn backend_sql(backend: &Backend, s: &TestServer, sql: &str) {
    let mut cmd = match backend {
        Backend::Sqlite => std::process::Command::new("sqlite3"),
        Backend::Postgres(_) => std::process::Command::new(psql()),
    };
    match backend {
        Backend::Sqlite => cmd.arg(s.dir.path().join("sipfront.db")).arg(sql),
        Backend::Postgres(url) => cmd.arg(url).args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql]),
    };
    let (status, out, err) = run_tool(cmd, WAIT).await;
    assert!(status.success(), "{sql}: {status}\n{out}\n{err}");
}

/// Finding 10: what a user or an attacker can make the server hold is capped. A presentity
/// holds at most `presence.max_publications_per_presentity` publications (403 beyond, a
/// refresh still served); a fetch of any Request-URI caches nothing for a user that does not
/// exist (404); a connection that does not read holds at most
/// `transport.connection_queue_bytes` queued for it (plus one message), the rest dropped and
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn what_one_user_or_connection_holds_is_capped() {
    const CAP: usize = 64 * 1024;
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.presence.max_publications_per_presentity = 3;
        c.transport.connection_queue_bytes = CAP;
    })
    .await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut etags = Vec::new();
    for i in 0..3 {
        let r = alice
            .request(&publish(&alice, "alice", Some(&pidf_doc("alice", &format!("t{i}"), "open", "here")), None, 600))
            .await;
        assert_eq!(r.status(), Some(200));
        etags.push(header(&r, HeaderName::SipETag));
    }
    let r = alice.request(&publish(&alice, "alice", Some(&pidf_doc("alice", "t9", "open", "here")), None, 600)).await;
    assert_eq!(r.status(), Some(403), "a fourth publication");
    let r = alice.request(&publish(&alice, "alice", None, Some(&etags[0]), 600)).await;
    assert_eq!(r.status(), Some(200), "a refresh of one held");
    assert_eq!(s.metric("sipfront_over_capacity_total").await, 1.0);

    let mut bob = online(&s, "bob", "builder").await;
    for _ in 0..20 {
        let r = bob.request(&subscribe(&bob, "bob", &format!("nobody{}", token(8)), "presence", 0)).await;
        assert_eq!(r.status(), Some(404), "a fetch of nobody");
    }

    // Alice stops reading; Bob sends her 12 MB of messages: more than the kernel's buffers and
    // her queue hold together.
    let body = "x".repeat(60_000);
    for _ in 0..200 {
        let mut msg = Request::message(&bob, "bob", "alice");
        msg.body = body.clone();
        bob.send(&msg.to_bytes()).await;
    }
    let dropped = eventually(std::time::Duration::from_secs(20), async || {
        let (_, m) = s.http_get("/metrics").await;
        m.lines().any(|l| l.starts_with("sipfront_send_failures_total{") && l.contains("queue_full"))
    })
    .await;
    assert!(dropped, "messages beyond the queue's bytes are dropped and counted");
    let fullest = s.metric("sipfront_connection_write_queue_max_bytes").await;
    assert!(fullest > 0.0 && fullest <= (CAP + 61_000) as f64, "the fullest queue holds {fullest} bytes");
    s.assert_answers_options().await;
    drop(alice);
}

/// Finding 11: a connection whose peer does not authenticate is closed a fixed time after it
/// opened (`transport.unauthenticated_timeout_secs`), keep-alives or not; one that registered,
/// or sent a request that passed digest authentication, stays.
#[tokio::test(flavor = "multi_thread")]
async fn connections_that_never_authenticate_are_closed() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| c.transport.unauthenticated_timeout_secs = 1).await;
    let started = std::time::Instant::now();
    let mut idler = SipStream::tcp(s.server.tcp[0]).await;
    let registered = online(&s, "alice", "wonderland").await;
    let mut sender = Phone::tcp(&s).await;
    // Bob, not signed in anywhere, leaves himself a note: kept for him (202), after the digest.
    let msg = Request::message(&sender, "bob", "bob");
    let r = with_credentials(&mut sender, &msg, "bob", "builder").await;
    assert_eq!(r.status(), Some(202), "an authenticated MESSAGE, answered");

    // The idler pings every 200 ms: each ping is answered, but does not keep it open.
    let closed = loop {
        if !idler.try_write(b"\r\n\r\n").await {
            break true;
        }
        if started.elapsed() > std::time::Duration::from_secs(5) {
            break false;
        }
        let quiet = idler.next_frame(std::time::Duration::from_millis(200)).await.is_none();
        // Closed (or quiet): a closed one refuses the next write, or reads nothing.
        if quiet
            && started.elapsed() > std::time::Duration::from_secs(1)
            && (!idler.try_write(b"\r\n\r\n").await || idler.next_frame(QUIET).await.is_none())
        {
            break true;
        }
    };
    assert!(closed, "the unauthenticated connection is closed");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "not before its time");
    let (_, metrics) = s.http_get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("sipfront_connections_closed_total{reason=\"unauthenticated\"} ")),
        "{metrics}"
    );

    // The other two are still served.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for mut phone in [registered, sender] {
        let r = phone.request(&Request::options(Transport::Tcp, phone.local_addr())).await;
        assert_eq!(r.status(), Some(200), "an authenticated connection stays open");
    }
}

/// Finding 12: an unauthenticated request over UDP (its source may be spoofed) is challenged
/// once, statelessly: no retransmission of the challenge for an INVITE nobody ACKs, and
/// nothing kept; the ACK of the challenge is absorbed; a retransmitted request gets a fresh
/// challenge.
#[tokio::test(flavor = "multi_thread")]
async fn a_challenge_over_udp_is_sent_once_and_kept_nowhere() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.transaction.t1_ms = 50;
        c.transaction.t2_ms = 200;
    })
    .await;
    let victim = s.udp_client().await;
    let invite = invite_over_udp(&victim, "alice", "bob");
    victim.send(&invite).await;
    let mut answers = Vec::new();
    // With T1 at 50 ms, a kept 407 would be sent again at 50, 150, 350, 550... ms.
    while let Some((bytes, _)) = victim.recv(std::time::Duration::from_millis(900)).await {
        answers.push(parse(&bytes));
    }
    let challenges: Vec<_> = answers.iter().filter(|m| m.status() == Some(407)).collect();
    assert_eq!(
        challenges.len(),
        1,
        "one challenge for one request: {:?}",
        answers.iter().map(|m| m.status()).collect::<Vec<_>>()
    );

    // The ACK of the challenge is absorbed (nothing answers it, nothing is relayed), and the
    // same INVITE again is challenged afresh.
    let ack = ack_for_challenge(&invite, challenges[0]);
    victim.send(&ack).await;
    assert!(victim.recv(QUIET).await.is_none(), "the ACK gets no answer");
    victim.send(&invite).await;
    let again = parse(&victim.recv(WAIT).await.expect("a fresh challenge").0);
    assert_eq!(again.status(), Some(407));
    assert_ne!(header(&again, HeaderName::To), header(challenges[0], HeaderName::To), "a fresh one");
    s.assert_answers_options().await;
}

/// Finding 9: a flood of fresh UDP requests (each keeps a server transaction for 64*T1) fills
/// the table only up to `transaction.max_server_transactions`; beyond it each is answered 503
/// with Retry-After, statelessly, and counted; once the kept ones expire, requests are served.
#[tokio::test(flavor = "multi_thread")]
async fn server_transactions_are_capped() {
    const CAP: usize = 20;
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.transaction.max_server_transactions = CAP;
        c.transaction.t1_ms = 50; // kept 3.2 s
    })
    .await;
    let flood = s.udp_client().await;
    for _ in 0..3 * CAP {
        flood.send(&Request::options(Transport::Udp, flood.local()).to_bytes()).await;
    }
    let (mut served, mut refused) = (0, 0);
    while let Some((bytes, _)) = flood.recv(QUIET).await {
        let answer = parse(&bytes);
        match answer.status() {
            Some(200) => served += 1,
            Some(503) => {
                refused += 1;
                assert_eq!(header(&answer, HeaderName::RetryAfter), "5");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(served + refused, 3 * CAP, "every request answered once");
    // Requests racing on two threads may each see one place left.
    assert!((CAP..=CAP + 2).contains(&served), "{served} served with room for {CAP}");
    assert_eq!(s.metric("sipfront_server_transactions_max").await, CAP as f64);
    assert!(s.metric("sipfront_server_transactions").await >= CAP as f64);
    assert_eq!(s.metric("sipfront_over_capacity_total").await, refused as f64);

    // Kept transactions expire (Timer J) and make room again.
    let served_again = eventually(std::time::Duration::from_secs(10), async || {
        let client = s.udp_client().await;
        client.send(&Request::options(Transport::Udp, client.local()).to_bytes()).await;
        client.recv(WAIT).await.is_some_and(|(b, _)| status_of(&b) == Some(200))
    })
    .await;
    assert!(served_again, "served once the table has room");
}

/// An INVITE from `from` to `to` over UDP, without credentials, as raw bytes.
fn invite_over_udp(client: &UdpClient, from: &str, to: &str) -> Vec<u8> {
    let local = client.local();
    format!(
        "INVITE sip:{to}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
         From: <sip:{from}@{DOMAIN}>;tag=f1\r\nTo: <sip:{to}@{DOMAIN}>\r\nCall-ID: reflect@{local}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:{from}@{local}>\r\nContent-Length: 0\r\n\r\n",
        token(10)
    )
    .into_bytes()
}

/// The ACK of a non-2xx answer to `invite` (RFC 3261 17.1.1.3): its branch, the answer's To.
fn ack_for_challenge(invite: &[u8], answer: &sipfront_proto::Message) -> Vec<u8> {
    let text = String::from_utf8_lossy(invite);
    let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap().to_string();
    let uri = text.lines().next().unwrap().split(' ').nth(1).unwrap();
    format!(
        "ACK {uri} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n{}\r\nTo: {}\r\n{}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        line("Via:"),
        line("From:"),
        header(answer, HeaderName::To),
        line("Call-ID:")
    )
    .into_bytes()
}

/// Issue 18, item 1: a source sending past `flood.max_requests` is banned: its datagrams get
/// no answer, its new connections are refused, while another source is served throughout;
/// the ban ends on time.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_source_is_banned_and_others_are_served() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.flood.max_requests = 20;
        c.flood.window_ms = 1000;
        c.flood.ban_secs = 2;
        c.flood.allow = vec![];
    })
    .await;
    let flooder = s.udp_client_from("127.0.0.2".parse().unwrap()).await;
    let honest = s.udp_client().await;
    for _ in 0..100 {
        flooder.send(&Request::options(Transport::Udp, flooder.local()).to_bytes()).await;
    }
    let mut answered = 0;
    while flooder.recv(QUIET).await.is_some() {
        answered += 1;
    }
    assert_eq!(answered, 20, "answered up to the limit, then nothing");
    let r = honest.transact(&Request::options(Transport::Udp, honest.local())).await;
    assert_eq!(r.status(), Some(200), "another source is served");
    assert_eq!(s.metric("sipfront_flood_bans_total").await, 1.0);
    assert_eq!(s.metric("sipfront_flood_banned_sources").await, 1.0);

    // A connection from the banned source is refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut conn = socket.connect(s.tcp_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = conn.write_all(&Request::options(Transport::Tcp, conn.local_addr().unwrap()).to_bytes()).await;
    let read = tokio::time::timeout(WAIT, conn.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "the connection is closed unanswered: {read:?}");

    // The ban ends.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = flooder.transact(&Request::options(Transport::Udp, flooder.local())).await;
    assert_eq!(r.status(), Some(200), "served again after the ban");
}

/// Finding 14: a raw control character in a header value (here a NUL in the Subject) is
/// refused and counted, over a real socket; the same character as a quoted-pair inside a
/// quoted display name is valid (RFC 4475 3.1.1.4) and the request is served.
#[tokio::test(flavor = "multi_thread")]
async fn control_characters_follow_the_grammar_on_the_wire() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let client = s.udp_client().await;
    let raw = Request::options(Transport::Udp, client.local()).set("Subject", "hello\0there").to_bytes();
    client.send(&raw).await;
    assert!(client.recv(QUIET).await.is_none(), "dropped: its headers cannot be trusted to answer");
    let (_, metrics) = s.http_get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("sipfront_parse_errors_total{") && l.contains("control_character")),
        "{metrics}"
    );
    let quoted = Request::options(Transport::Udp, client.local());
    let from = quoted.header("From").unwrap().to_string();
    let quoted = quoted.set("From", &format!("\"caller\\\0name\" {from}"));
    let r = client.transact(&quoted).await;
    assert_eq!(r.status(), Some(200), "a quoted-pair of NUL in a display name is valid");
}
