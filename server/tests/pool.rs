//! Pool membership (issue 15, item 1): front ends sharing a store announce themselves, see each
//! other live, say when they leave, and are seen dead once silent for the member timeout;
//! `sipfront pool status` lists them. On SQLite (two front ends on one file) and PostgreSQL.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_storage::testing::eventually;
use std::time::Duration;

/// `pool status` as (member, state) pairs, and the whole JSON.
async fn status(s: &TestServer) -> (Vec<(String, String)>, Vec<serde_json::Value>) {
    let json: Vec<serde_json::Value> = serde_json::from_str(&cli(s, &["pool", "status", "--format", "json"], "").await)
        .expect("JSON from pool status");
    let pairs = json
        .iter()
        .map(|m| (m["member"].as_str().unwrap_or("").to_string(), m["state"].as_str().unwrap_or("").to_string()))
        .collect();
    (pairs, json)
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(m, s)| (m.to_string(), s.to_string())).collect()
}

#[tokio::test]
async fn members_announce_themselves_leave_and_are_seen_dead_when_silent() {
    for backend in backends("pool_members").await {
        let a = TestServer::with_users(&backend, &[("alice", "secret")], pool_member("fe-a", String::new())).await;
        // The others open the same store: A's SQLite file, or the same PostgreSQL database.
        let shared = match &backend {
            Backend::Sqlite => format!("sqlite://{}", a.dir.path().join("sipfront.db").display()),
            Backend::Postgres(url) => url.clone(),
        };
        let b = TestServer::with(pool_member("fe-b", shared.clone())).await;

        let both_live = pairs(&[("fe-a", "live"), ("fe-b", "live")]);
        assert!(
            eventually(Duration::from_secs(5), async || status(&a).await.0 == both_live).await,
            "both members live on {backend:?}: {:?}",
            status(&a).await.1
        );
        let (_, json) = status(&a).await;
        assert_eq!(json[1]["address"], b.tcp_addr().to_string(), "where the others reach B: its SIP listener");
        assert!(json[0]["heartbeat_age_s"].as_str().unwrap().parse::<f64>().unwrap() < 5.0, "{json:?}");

        // What a member holds is in its announcement: Alice registers on A over TCP; A holds
        // her connection, and her home (A or B, whichever the pool gives her) her bindings.
        let mut alice = a.tcp_client().await;
        register(&mut alice, "alice", "secret", None).await;
        assert!(
            eventually(Duration::from_secs(5), async || {
                let (_, json) = status(&a).await;
                let homed = |i: usize| json[i]["users_homed"].as_str().unwrap_or("").parse::<u32>().unwrap_or(9);
                homed(0) + homed(1) == 1 && json[0]["connections"] == "1" && json[1]["connections"] == "0"
            })
            .await,
            "one user homed in the pool, one client connection on A: {:?}",
            status(&a).await.1
        );
        assert_eq!(a.metric("sipfront_pool_members{state=\"live\"}").await, 2.0);

        // A graceful stop says so at once.
        b.server.shutdown().await;
        let b_left = pairs(&[("fe-a", "live"), ("fe-b", "leaving")]);
        assert!(
            eventually(Duration::from_secs(5), async || status(&a).await.0 == b_left).await,
            "B leaving: {:?}",
            status(&a).await.1
        );

        // A member that stops beating without a word (its tasks end, as in a crash) is dead to
        // the others once the member timeout has passed, and only then.
        let c = TestServer::with(pool_member("fe-c", shared)).await;
        let c_live = pairs(&[("fe-a", "live"), ("fe-b", "leaving"), ("fe-c", "live")]);
        assert!(eventually(Duration::from_secs(5), async || status(&a).await.0 == c_live).await);
        drop(c);
        let silenced = tokio::time::Instant::now();
        let c_dead = pairs(&[("fe-a", "live"), ("fe-b", "leaving"), ("fe-c", "dead")]);
        assert!(
            eventually(Duration::from_secs(5), async || status(&a).await.0 == c_dead).await,
            "C dead: {:?}",
            status(&a).await.1
        );
        assert!(silenced.elapsed() >= Duration::from_millis(400), "not dead before the member timeout");
        assert!(
            eventually(Duration::from_secs(3), async || {
                a.metric("sipfront_pool_members{state=\"dead\"}").await == 1.0
                    && a.metric("sipfront_pool_members{state=\"live\"}").await == 1.0
            })
            .await
        );
    }
}
