//! Overload control (issue 18, item 2): when requests pile up waiting, new ones are refused
//! 503 with a spread Retry-After, while refreshes go on and nothing accepted is lost.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")];

#[tokio::test(flavor = "multi_thread")]
async fn new_requests_are_refused_under_overload_and_refreshes_go_on() {
    if !sipfront_storage::testing::require_program("sqlite3", "sqlite3") {
        return;
    }
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.server.max_pending_requests = 3;
        // Longer than the lock below: the waiting messages are kept once it ends.
        c.database.timeout_ms = 6000;
    })
    .await;
    let mut alice = Phone::tcp(&s).await;
    let registration = Request::register(&alice, "alice").set("Expires", "300");
    let r = with_credentials(&mut alice, &registration, "alice", "wonderland").await;
    assert_eq!(r.status(), Some(200));

    // Another process holds the store's write lock: messages kept for Carol (offline) wait.
    let mut locker = hold_sqlite_write_lock(&s, 3).await;
    for _ in 0..3 {
        alice.send(&Request::message(&alice, "alice", "carol").to_bytes()).await;
    }
    let overloaded = sipfront_storage::testing::eventually(Duration::from_secs(2), async || {
        s.metric("sipfront_pending_requests").await >= 3.0
    })
    .await;
    assert!(overloaded, "three requests wait on the store");

    // Something new: refused at once, with a Retry-After of at most 15 s (the backlog's drain
    // time, spread; the store answering nothing, it is long).
    let r = alice.request(&Request::message(&alice, "alice", "bob")).await;
    assert_eq!(r.status(), Some(503), "refused under overload");
    let after: u64 = header(&r, sipfront_proto::HeaderName::RetryAfter).parse().unwrap();
    assert!((1..=15).contains(&after), "Retry-After {after}");
    // A refresh of Alice's registration (its Call-ID) goes on.
    let refresh = registration.clone().set("CSeq", "5 REGISTER").new_branch();
    let r = with_credentials(&mut alice, &refresh, "alice", "wonderland").await;
    assert_eq!(r.status(), Some(200), "a refresh is served under overload");

    // The store comes back: the three waiting messages are kept (202), none lost.
    let _ = locker.wait();
    let mut kept = 0;
    while kept < 3 {
        let r = alice.recv().await;
        if r.status() == Some(202) {
            kept += 1;
        }
    }
    assert!(s.metric("sipfront_overload_refused_total").await >= 1.0);
    let r = alice.request(&Request::message(&alice, "alice", "carol")).await;
    assert_eq!(r.status(), Some(202), "served again");
}
