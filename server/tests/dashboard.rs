//! The operator's dashboard and alerts against a real Prometheus (issue 16): Prometheus runs
//! with `ops/prometheus/` (its intervals shortened, and the member-down alert's `for:`) against
//! two members that carry traffic; every query of `ops/grafana/sipfront.json` parses and returns
//! data; then a member stops and `SipfrontMemberDown` fires for it.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::Method;
use sipfront_storage::testing::{eventually, require_program};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "caroline")];

/// Prometheus, stopped when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// `ops/prometheus/` as shipped, but scraping and evaluating every second, the member-down
    /// alert's `for:` at 2 s, and the members given.
    fn start(members: &[SocketAddr]) -> Prometheus {
        let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("members")).unwrap();
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        let targets: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
        std::fs::write(dir.path().join("members/test.json"), format!("[{{\"targets\": [{}]}}]", targets.join(", ")))
            .unwrap();
        let config = std::fs::read_to_string(ops.join("prometheus.yml")).unwrap().replace("5s", "1s");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        for rules in ["sipfront-alerts.yml", "sipfront-recording.yml"] {
            let text = std::fs::read_to_string(ops.join("rules").join(rules)).unwrap();
            let text = text.replacen(
                "expr: up{job=\"sipfront\"} == 0\n        for: 30s",
                "expr: up{job=\"sipfront\"} == 0\n        for: 2s",
                1,
            );
            std::fs::write(dir.path().join("rules").join(rules), text).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus { child, addr, _dir: dir }
    }

    /// The API's answer to `path` (HTTP/1.0: no chunked body).
    async fn get(&self, path: &str) -> serde_json::Value {
        let Ok(mut s) = tokio::net::TcpStream::connect(self.addr).await else { return serde_json::Value::Null };
        let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes()).await;
        let mut text = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text)).await;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    async fn query(&self, promql: &str) -> serde_json::Value {
        self.get(&format!("/api/v1/query?query={}", encode(promql))).await
    }
}

/// Percent-encoding for a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression of the dashboard, its variables given values as Grafana would.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/grafana/sipfront.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap().replace("$instance", ".*").replace("$__rate_interval", "30s");
            out.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

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
    let mut alice = online(&a, "alice", "wonderland").await;
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
    let fired = eventually(Duration::from_secs(30), async || {
        let r = prometheus.get("/api/v1/alerts").await;
        r["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "SipfrontMemberDown"
                    && a["labels"]["instance"] == gone.as_str()
                    && a["state"] == "firing"
            })
        })
    })
    .await;
    assert!(fired, "SipfrontMemberDown fires for {gone}: {}", prometheus.get("/api/v1/alerts").await);
}
