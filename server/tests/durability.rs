//! What was acknowledged is not lost when the server stops (issue 18, item 5).

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::Method;
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// Messages delivered while the store is locked wait in the archive queue; a stop (what
/// SIGTERM does) writes every one of them before the process ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_writes_out_the_archive_queue() {
    if !sipfront_storage::testing::require_program("sqlite3", "sqlite3") {
        return;
    }
    const N: usize = 50;
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| c.server.drain_timeout_secs = 10).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    // Another process holds the database's write lock for three seconds.
    let mut locker = hold_sqlite_write_lock(&s, 3).await;
    for i in 0..N {
        let mut msg = Request::message(&alice, "alice", "bob");
        msg.body = format!("message {i}");
        alice.send(&msg.to_bytes()).await;
        let got = bob.expect_request(Method::Message).await;
        bob.answer(&got, 200, "b").await;
        alice.expect_response(200).await;
    }
    let TestServer { server, dir, .. } = s;
    server.shutdown().await;
    let _ = locker.wait();
    let store = sipfront_storage::open("", dir.path()).await.unwrap();
    let rows = store.search_archive("alice@example.test", None, 0, i64::MAX, 1000).await.unwrap();
    assert_eq!(rows.len(), N, "every delivered message archived");
}

/// Issue 18, item 4: the store goes away. What needs it is answered 503 with Retry-After
/// within `database.timeout_ms` (no request hangs), what memory serves goes on, readiness
/// follows the store, and when it returns nothing accepted is missing: the message delivered
/// meanwhile is archived, and messages for an absent user are kept again.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_is_answered_503_and_loses_nothing() {
    const THREE: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")];
    let Some(url) = sipfront_storage::testing::fresh_postgres("store_outage").await else { return };
    let db = url.rsplit('/').next().unwrap().to_string();
    let backend = Backend::Postgres(url.clone());
    let s = TestServer::with_users(&backend, THREE, |c| c.database.timeout_ms = 1000).await;
    let mut alice = online(&s, "alice", "wonderland").await;
    let mut bob = online(&s, "bob", "builder").await;
    // Carol is known (cached) but away.
    let r = alice.request(&Request::message(&alice, "alice", "carol")).await;
    assert_eq!(r.status(), Some(202));

    admin(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false")).await;
    admin(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")).await;
    let down =
        sipfront_storage::testing::eventually(Duration::from_secs(10), async || !s.server.readiness.store_ok()).await;
    assert!(down, "readiness sees the store gone");
    let (status, _) = s.http_get("/readyz").await;
    assert_eq!(status, 503, "/readyz while the store is gone");

    // Bob is here: delivered from memory (and archived once the store is back).
    let mut msg = Request::message(&alice, "alice", "bob");
    msg.body = "during the outage".into();
    alice.send(&msg.to_bytes()).await;
    let got = bob.expect_request(Method::Message).await;
    bob.answer(&got, 200, "b").await;
    alice.expect_response(200).await;
    // Carol is away: keeping it needs the store. 503, promptly.
    let asked = std::time::Instant::now();
    let r = alice.request(&Request::message(&alice, "alice", "carol")).await;
    assert_eq!(r.status(), Some(503), "refused, not accepted and lost");
    assert!(header(&r, sipfront_proto::HeaderName::RetryAfter).parse::<u32>().is_ok());
    assert!(asked.elapsed() < Duration::from_millis(2900), "within the store timeout, not hanging");

    admin(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true")).await;
    let back =
        sipfront_storage::testing::eventually(Duration::from_secs(20), async || s.server.readiness.store_ok()).await;
    assert!(back, "readiness sees the store again");
    let store = s.server.directory.store().clone();
    let archived = sipfront_storage::testing::eventually(Duration::from_secs(20), async || {
        store
            .search_archive("alice@example.test", Some("bob@example.test"), 0, i64::MAX, 10)
            .await
            .is_ok_and(|rows| rows.iter().any(|r| r.body == b"during the outage"))
    })
    .await;
    assert!(archived, "the message delivered during the outage is archived");
    let r = alice.request(&Request::message(&alice, "alice", "carol")).await;
    assert_eq!(r.status(), Some(202), "kept again");
    let mut carol = Phone::tcp(&s).await;
    register(&mut carol, "carol", "singer", None).await;
    for _ in 0..2 {
        let got = carol.expect_request(Method::Message).await;
        carol.answer(&got, 200, "c").await;
    }
}

/// Issue 18, item 5: in `archive.critical` mode a MESSAGE is relayed only once its archive row
/// is committed, so killing the process (SIGKILL) the instant after the last delivery loses no
/// delivered message's row.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_in_critical_mode_loses_no_delivered_message_from_the_archive() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sipfront = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sipfront"));
        c.arg("--data-dir").arg(&data).args(args).env_remove("SIPFRONT_DATABASE_URL");
        c
    };
    for (user, password) in USERS {
        let mut add = sipfront(&["user", "add", &format!("{user}@{DOMAIN}"), "--password-stdin"]);
        add.stdin(std::process::Stdio::piped());
        let mut child = add.spawn().unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        assert!(child.wait().unwrap().success());
    }
    // A port free for UDP and for TCP alike (the server listens on both).
    let port = loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = sipfront(&[
        "serve",
        "--sip-addr",
        &addr.to_string(),
        "--tls-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ])
    .env("SIPFRONT_ARCHIVE_CRITICAL", "true")
    .env("SIPFRONT_LISTEN_DIRECTORY", "127.0.0.1:0")
    .env("SIPFRONT_LOG_LEVEL", "warn")
    .spawn()
    .unwrap();
    let up = sipfront_storage::testing::eventually(Duration::from_secs(30), async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "the server listens (exited: {:?})", server.try_wait());
    let mut alice = SipStream::tcp(addr).await;
    let mut bob = SipStream::tcp(addr).await;
    register(&mut alice, "alice", "wonderland", None).await;
    register(&mut bob, "bob", "builder", None).await;

    let mut delivered = 0;
    for i in 0..N {
        let mut msg = Request::message(&alice, "alice", "bob");
        msg.body = format!("critical {i}");
        alice.write(&msg.to_bytes()).await;
        let Some(sipfront_proto::Frame::Message(bytes)) = bob.next_frame(WAIT).await else {
            panic!("message {i} not delivered")
        };
        let got = parse(&bytes);
        let mut ok = got.response_to(200);
        ok.set_to_tag("b");
        ok.ensure_content_length();
        bob.write(&ok.to_bytes()).await;
        if alice.recv_response().await.status() == Some(200) {
            delivered += 1;
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();

    let store = sipfront_storage::open("", &data).await.unwrap();
    let rows = store.search_archive(&format!("alice@{DOMAIN}"), None, 0, i64::MAX, 1000).await.unwrap();
    assert_eq!(delivered, N);
    assert_eq!(rows.len(), delivered, "every delivered message has its archive row");
}

/// Issue 18, item 6: a single node stopped gracefully and started again keeps its UDP users
/// reachable, its publications (with their entity tags) and its subscriptions: the watcher
/// hears of the next change without subscribing again.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_udp_bindings_publications_and_subscriptions() {
    const THREE: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")];
    // The member id is what the state is saved under: by default host and SIP port, and the
    // test's port changes with the restart.
    let s = TestServer::with_users(&Backend::Sqlite, THREE, |c| c.pool.member_id = "single".into()).await;
    let mut bob = Phone::udp(&s).await;
    register(&mut bob, "bob", "builder", None).await;
    let first = publish(&bob, "bob", Some(&pidf_doc("bob", "t1", "open", "before")), None, 600);
    let r = with_credentials(&mut bob, &first, "bob", "builder").await;
    assert_eq!(r.status(), Some(200));
    let etag = header(&r, sipfront_proto::HeaderName::SipETag);
    let mut alice = Phone::udp(&s).await;
    register(&mut alice, "alice", "wonderland", None).await;
    let sub = subscribe(&alice, "alice", "bob", "presence", 600);
    let sub = authorized(&mut alice, &sub, "alice", "wonderland").await;
    let (_, n) = subscribed(&mut alice, &sub).await;
    assert_eq!(doc(&n).tuples[0].note.as_deref(), Some("before"));
    // Carol watches Bob over TCP: her connection will not survive the restart.
    let mut carol_tcp = online(&s, "carol", "singer").await;
    let carols = subscribe(&carol_tcp, "carol", "bob", "presence", 600);
    let (carols_ok, _) = subscribed(&mut carol_tcp, &carols).await;

    // Stopped (SIGTERM does this) and started again on the same data.
    let TestServer { server, config, dir } = s;
    server.shutdown().await;
    let server = sipfront::start(&config, dir.path()).await.expect("started again");
    let s = TestServer { server, config, dir };
    alice.retarget(s.udp_addr());
    bob.retarget(s.udp_addr());

    // Bob's binding is back: Carol's message reaches him.
    let mut carol = Phone::udp(&s).await;
    let msg = Request::message(&carol, "carol", "bob");
    let msg = authorized(&mut carol, &msg, "carol", "singer").await;
    carol.send(&msg.to_bytes()).await;
    let got = bob.expect_request(Method::Message).await;
    bob.answer(&got, 200, "b").await;
    carol.expect_response(200).await;

    // Bob changes his publication by its entity tag: Alice, who did not subscribe again, hears.
    let change = publish(&bob, "bob", Some(&pidf_doc("bob", "t1", "closed", "after")), Some(&etag), 600);
    let r = with_credentials(&mut bob, &change, "bob", "builder").await;
    assert_eq!(r.status(), Some(200), "the entity tag is known after the restart");
    let n = notified(&mut alice).await;
    assert_eq!(doc(&n).tuples[0].note.as_deref(), Some("after"), "the subscription lives on");

    // Carol connects again and refreshes her subscription on the new connection (a target
    // refresh): her NOTIFYs come there.
    drop(carol_tcp);
    let mut carol_tcp = online(&s, "carol", "singer").await;
    let mut refresh =
        carols.clone().set("To", &header(&carols_ok, sipfront_proto::HeaderName::To)).set("CSeq", "2 SUBSCRIBE");
    refresh.start_line = format!("SUBSCRIBE {} SIP/2.0", contact_of(&carols_ok));
    let (ok, n) = subscribed(&mut carol_tcp, &refresh.new_branch()).await;
    assert_eq!(ok.status(), Some(200), "the restored subscription is refreshed");
    assert_eq!(doc(&n).tuples[0].note.as_deref(), Some("after"));
}
