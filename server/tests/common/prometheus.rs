//! Prometheus for tests (issue 16): `ops/prometheus/` as shipped, run by the real `prometheus`
//! against members given, and asked through its HTTP API; and the dashboard's queries. Shared
//! by the server's dashboard test and the load harness's end-to-end test, which includes this
//! file by its path.

#![allow(dead_code, clippy::unwrap_used)] // a test fails loudly where a value is missing

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Prometheus, stopped when dropped.
pub struct Prometheus {
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
    pub fn start(members: &[SocketAddr]) -> Prometheus {
        let ops = sipfront_storage::testing::workspace_root().join("ops/prometheus");
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
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let Ok(mut s) = tokio::net::TcpStream::connect(self.addr).await else { return serde_json::Value::Null };
        let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes()).await;
        let mut text = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text)).await;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    pub async fn query(&self, promql: &str) -> serde_json::Value {
        self.get(&format!("/api/v1/query?query={}", encode(promql))).await
    }

    /// Whether `alert` is firing for `instance`.
    pub async fn firing(&self, alert: &str, instance: &str) -> bool {
        let r = self.get("/api/v1/alerts").await;
        r["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == alert && a["labels"]["instance"] == instance && a["state"] == "firing"
            })
        })
    }

    /// The value of a query's first series, if it has one.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql).await;
        r["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok())
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
pub fn dashboard_queries() -> Vec<(String, String)> {
    let path = sipfront_storage::testing::workspace_root().join("ops/grafana/sipfront.json");
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
