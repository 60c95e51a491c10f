//! The registrar and its store while both run: account changes made with the CLI reach a
//! running server within seconds, and a store that is down (PostgreSQL) or locked (SQLite) is
//! answered with 503 and Retry-After for requests that need it, and healed by itself.

mod common;

use common::*;
use sipfront_proto::{HeaderName, Message};
use std::time::Duration;

/// The status of a REGISTER of `user` with `password` over UDP.
async fn register_status(s: &TestServer, user: &str, password: &str) -> Option<u16> {
    let mut c = s.udp_client().await;
    let req = Request::register(&c, user).set("Expires", "300");
    with_credentials(&mut c, &req, user, password).await.status()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_changes_reach_a_running_server_within_seconds() {
    for backend in backends("store_cli").await {
        // Polling below fails attempts on purpose: no lockout for them.
        let s = TestServer::with_users(&backend, &[("alice", "old-secret")], |c| c.auth.max_failures = 1000).await;
        assert_eq!(register_status(&s, "alice", "old-secret").await, Some(200), "{backend:?}");

        cli(&s, &["user", "passwd", "alice@example.test", "--password-stdin"], "new-secret\n").await;
        let changed =
            eventually(Duration::from_secs(5), async || register_status(&s, "alice", "new-secret").await == Some(200))
                .await;
        assert!(changed, "the new password works on {backend:?}");
        assert_eq!(register_status(&s, "alice", "old-secret").await, Some(401), "the old one no longer does");

        cli(&s, &["user", "disable", "alice@example.test"], "").await;
        // Answered as a wrong password would be: a 403 after the right one only would confirm
        // the password (issue 17, finding 7).
        let disabled =
            eventually(Duration::from_secs(5), async || register_status(&s, "alice", "new-secret").await == Some(401))
                .await;
        assert!(disabled, "a disabled user is challenged again, right password or not, on {backend:?}");

        cli(&s, &["user", "add", "carol@example.test", "--password-stdin"], "sea-shells\n").await;
        let added =
            eventually(Duration::from_secs(5), async || register_status(&s, "carol", "sea-shells").await == Some(200))
                .await;
        assert!(added, "a user added while the server runs registers on {backend:?}");
    }
}

/// The final response to a REGISTER with credentials, waiting as long as the store may take
/// to fail (its pool's acquire timeout is 5 s).
async fn register_patiently(s: &TestServer, user: &str, password: &str) -> Message {
    let mut c = s.udp_client().await;
    let req = Request::register(&c, user).set("Expires", "300");
    let req = authorized(&mut c, &req, user, password).await;
    c.send(&req.to_bytes()).await;
    loop {
        let (bytes, _) = c.recv(Duration::from_secs(15)).await.expect("an answer, even while the store is down");
        let resp = parse(&bytes);
        if resp.status().is_some_and(|s| s >= 200) {
            return resp;
        }
    }
}

/// On PostgreSQL the database is made truly unavailable: connections to it are refused and
/// the server's are cut. SQLite has its own test, `locked_sqlite_is_503_and_heals_by_itself`.
#[tokio::test(flavor = "multi_thread")]
async fn store_outage_is_503_and_heals_by_itself() {
    let Some(url) = sipfront_storage::testing::fresh_postgres("store_outage").await else { return };
    let db = url.rsplit('/').next().expect("a database name").to_string();
    let s =
        TestServer::with_users(&Backend::Postgres(url), &[("alice", "wonderland"), ("carol", "singer")], |_| {}).await;
    // Bob arrives after the start, when every user was read: he is not in the cache.
    cli(&s, &["user", "add", "bob@example.test", "--password-stdin"], "builder\n").await;
    assert_eq!(register_status(&s, "alice", "wonderland").await, Some(200), "Alice's credentials are cached");
    assert_eq!(s.http_get("/readyz").await.0, 200);

    admin(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false")).await;
    admin(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")).await;

    // Bob's REGISTER needs the store.
    let r = register_patiently(&s, "bob", "builder").await;
    assert_eq!(r.status(), Some(503), "store down");
    let retry: u32 = header(&r, HeaderName::RetryAfter).parse().expect("a numeric Retry-After");
    assert!(retry > 0);
    assert!(s.metric("sipfront_store_errors_total").await >= 1.0);
    // Alice is: the cache keeps serving what it has.
    assert_eq!(register_status(&s, "alice", "wonderland").await, Some(200), "a cached user registers meanwhile");
    // So does Carol, who had not registered yet: every user was read at start (a storm of
    // first registrations after a restart waits on no store).
    assert_eq!(register_status(&s, "carol", "singer").await, Some(200), "a user read at start registers meanwhile");
    let unready = eventually(Duration::from_secs(10), async || s.http_get("/readyz").await.0 == 503).await;
    assert!(unready, "/readyz reports the store down");

    admin(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true")).await;
    let healed = eventually(Duration::from_secs(20), async || {
        register_patiently(&s, "bob", "builder").await.status() == Some(200)
    })
    .await;
    assert!(healed, "Bob registers once the store is back, with nothing restarted");
    let ready = eventually(Duration::from_secs(10), async || s.http_get("/readyz").await.0 == 200).await;
    assert!(ready, "/readyz is 200 again");
}

/// On SQLite the database is locked by another process. Nothing else makes an embedded
/// database in WAL mode unavailable to a running server: its readers never wait for a writer,
/// its pool connections' shared locks keep any other connection from taking an exclusive one,
/// and a file already open stays readable whatever happens to its permissions or name. While
/// another process holds the WAL index's read-mark locks no read can start (SQLite itself
/// retries for about 10 s, then fails with SQLITE_PROTOCOL), so a request that needs the store
/// is answered 503 after `database.timeout_ms`, and readiness (a real read) fails too.
#[tokio::test(flavor = "multi_thread")]
async fn locked_sqlite_is_503_and_heals_by_itself() {
    let s = TestServer::with_users(&Backend::Sqlite, &[("alice", "wonderland")], |c| c.database.timeout_ms = 500).await;
    // Bob arrives after the start, when every user was read: he is not in the cache.
    cli(&s, &["user", "add", "bob@example.test", "--password-stdin"], "builder\n").await;
    assert_eq!(register_status(&s, "alice", "wonderland").await, Some(200), "Alice's credentials are cached");
    assert_eq!(s.http_get("/readyz").await.0, 200);
    let errors = s.metric("sipfront_store_errors_total").await;

    let Some(mut lock) = sipfront_storage::testing::SqliteLock::take(&s.dir.path().join("sipfront.db")) else { return };
    let unready = eventually(Duration::from_secs(6), async || s.http_get("/readyz").await.0 == 503).await;
    assert!(unready, "/readyz reports the store unavailable");
    let asked = std::time::Instant::now();
    let r = register_patiently(&s, "bob", "builder").await;
    assert_eq!(r.status(), Some(503), "store locked");
    assert!(asked.elapsed() < Duration::from_secs(3), "answered after the timeout, not SQLite's own 10 s");
    let retry: u32 = header(&r, HeaderName::RetryAfter).parse().expect("a numeric Retry-After");
    assert!(retry > 0);
    assert!(s.metric("sipfront_store_errors_total").await > errors);
    assert_eq!(register_status(&s, "alice", "wonderland").await, Some(200), "a cached user registers meanwhile");

    lock.release();
    let healed = eventually(Duration::from_secs(10), async || {
        register_patiently(&s, "bob", "builder").await.status() == Some(200)
    })
    .await;
    assert!(healed, "Bob registers once the lock is gone, with nothing restarted");
    let ready = eventually(Duration::from_secs(6), async || s.http_get("/readyz").await.0 == 200).await;
    assert!(ready, "/readyz is 200 again");
}

/// A users file with quotes, commas, spaces and a line break inside quotes, UTF-8, a header and
/// a comment: `user import` stores exactly those passwords and display names.
#[tokio::test(flavor = "multi_thread")]
async fn a_tricky_users_file_imports_exactly_its_passwords() {
    for backend in backends("store_tricky_import").await {
        // Polling below fails attempts on purpose: no lockout for them.
        let s = TestServer::with_users(&backend, &[], |c| c.auth.max_failures = 1000).await;
        let file = s.dir.path().join("users.csv");
        std::fs::write(
            &file,
            "aor,password,display name\r\n\
             # a comment, \"with quotes\"\r\n\
             zoe@example.test,\" p,w\"\"x \",\"Zo\u{eb} \"\"Z\"\" O'Brien,\r\n Jr.\"\r\n\
             \r\n\
             sip:bjorn@Example.TEST,p\u{e5}ssw\u{f6}rd\r\n\
             carol@example.test,  two spaces  ,Carol\r\n",
        )
        .expect("write users.csv");
        let out = cli(&s, &["user", "import", file.to_str().expect("a UTF-8 path")], "").await;
        assert_eq!(out, "imported 3 users\n", "{backend:?}");

        let store = s.server.directory.store().clone();
        let zoe = store.user("zoe@example.test").await.expect("the store").expect("zoe");
        assert_eq!(zoe.display_name, "Zo\u{eb} \"Z\" O'Brien,\r\n Jr.");
        for (user, password) in [("zoe", " p,w\"x "), ("bjorn", "p\u{e5}ssw\u{f6}rd"), ("carol", "  two spaces  ")] {
            let registered =
                eventually(Duration::from_secs(5), async || register_status(&s, user, password).await == Some(200))
                    .await;
            assert!(registered, "{user} registers with {password:?} on {backend:?}");
        }
        assert_eq!(register_status(&s, "carol", "two spaces").await, Some(401), "the spaces are the password's");
    }
}
