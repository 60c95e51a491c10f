//! The operator's dashboard and alerts against a real Prometheus (issue 16): Prometheus runs
//! with `ops/prometheus/` (its intervals shortened, and the member-down alert's `for:`) against
//! two members that carry traffic; every query of `ops/grafana/sipfront.json` parses and returns
//! data; then a member stops and `SipfrontMemberDown` fires for it.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::prometheus::{dashboard_queries, Prometheus};
use common::*;
use sipfront_proto::Method;
use sipfront_storage::testing::{eventually, require_program};
use std::path::Path;
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "caroline")];

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_its_variables() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/grafana/sipfront.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36, "Grafana 10 schema");
    let vars: Vec<&str> =
        dash["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let ids: Vec<u64> = dash["panels"].as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "panel ids are unique");
    assert!(dashboard_queries().len() >= 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_runs_every_dashboard_query_and_fires_member_down() {
    if !require_program("prometheus", "prometheus") {
        return;
    }
    // Two members on one store, and traffic that makes every series the dashboard shows.
    let a = TestServer::with_users(&Backend::Sqlite, USERS, pool_member("fe-a", String::new())).await;
    let shared = format!("sqlite://{}", a.dir.path().join("sipfront.db").display());
    let b = TestServer::with(pool_member("fe-b", shared)).await;
    for m in [&a, &b] {
        assert!(eventually(Duration::from_secs(5), async || m.server.membership.peers().len() == 1).await);
    }
    // Alice connects to the member that is not her home, which relays her requests there.
    let alice_home = sipfront::core::pool::home_among(["fe-a", "fe-b"], &format!("alice@{DOMAIN}")).unwrap();
    let mut alice = online(if alice_home == "fe-a" { &b } else { &a }, "alice", "wonderland").await;
    let mut bob = online(&b, "bob", "builder").await;
    let mut mallory = Phone::tcp(&a).await;
    let guess = Request::register(&mallory, "alice");
    let wrong = authorized(&mut mallory, &guess, "alice", "not the password").await;
    assert_eq!(mallory.request(&wrong).await.status(), Some(401), "a wrong password is challenged again");
    let msg = Request::message(&alice, "alice", "bob");
    alice.send(&msg.to_bytes()).await;
    let got = bob.expect_request(Method::Message).await;
    bob.answer(&got, 200, "bob").await;
    alice.expect_response(200).await;
    // Carol is not signed in: her message is kept for her.
    let kept = alice.request(&Request::message(&alice, "alice", "carol")).await;
    assert_eq!(kept.status(), Some(202));
    let published = bob.request(&publish(&bob, "bob", Some(&pidf_doc("bob", "t", "open", "here")), None, 600)).await;
    assert_eq!(published.status(), Some(200));
    let watch = subscribe(&alice, "alice", "bob", "presence", 600);
    let (_, _) = subscribed(&mut alice, &watch).await;

    let prometheus = Prometheus::start(&[a.server.http, b.server.http]);
    let both_up = eventually(Duration::from_secs(30), async || {
        let r = prometheus.query("sum(up{job=\"sipfront\"})").await;
        r["data"]["result"][0]["value"][1] == "2"
    })
    .await;
    assert!(both_up, "Prometheus scrapes both members");

    for (title, expr) in dashboard_queries() {
        let data = eventually(Duration::from_secs(20), async || {
            let r = prometheus.query(&expr).await;
            r["status"] == "success" && r["data"]["result"].as_array().is_some_and(|v| !v.is_empty())
        })
        .await;
        assert!(data, "panel {title:?}: {expr} gives data: {}", prometheus.query(&expr).await);
    }

    // A member stops: its scrape fails and the alert fires for it.
    let gone = b.server.http.to_string();
    b.server.shutdown().await;
    let fired =
        eventually(Duration::from_secs(30), async || prometheus.firing("SipfrontMemberDown", &gone).await).await;
    assert!(fired, "SipfrontMemberDown fires for {gone}: {}", prometheus.get("/api/v1/alerts").await);
}
