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
    let db = s.dir.path().join("sipfront.db");
    let mut locker = std::process::Command::new("sqlite3")
        .arg(&db)
        .args(["BEGIN IMMEDIATE;", ".shell sleep 3", "COMMIT;"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
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
