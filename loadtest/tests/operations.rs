//! The operator's side end to end (issue 16): Prometheus, with `ops/prometheus/` as shipped (its
//! intervals shortened), scrapes a pool of two members while `sipfront-load` runs the user model
//! against each; Prometheus shows that traffic on both members and every dashboard query gives
//! data; when a member stops, the member-down alert fires for it.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;
#[path = "../../server/tests/common/prometheus.rs"]
mod prometheus;

use common::{sipfront_load_async, Server};
use prometheus::{dashboard_queries, Prometheus};
use sipfront_storage::testing::{eventually, require_program};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_shows_the_load_on_each_member_and_fires_member_down() {
    if !require_program("prometheus", "prometheus") {
        return;
    }
    let a = Server::start_member(40, "fe-a").await;
    let b = Server::join(&a, "fe-b").await;
    for m in [&a, &b] {
        assert!(eventually(Duration::from_secs(5), async || m.server.membership.peers().len() == 1).await);
    }
    let prometheus = Prometheus::start(&[a.server.http, b.server.http]);
    let both_up =
        eventually(Duration::from_secs(30), async || prometheus.value("sum(up{job=\"sipfront\"})").await == Some(2.0))
            .await;
    assert!(both_up, "Prometheus scrapes both members");

    // Twenty users on each member, over TCP: their homes are spread over both, so requests
    // also cross between the members. Ten minutes of the model a second, for 4 s.
    let model = |target: std::net::SocketAddr, offset: usize| {
        format!(
            "model --target {target} --transport tcp --users 20 --user-offset {offset} --watch 3 \
             --duration 4 --time-scale 600 --timeout 5"
        )
    };
    let (ra, rb) = tokio::join!(sipfront_load_async(model(a.tcp(), 0)), sipfront_load_async(model(b.tcp(), 20)));
    for (member, run) in [("fe-a", ra.report()), ("fe-b", rb.report())] {
        assert_eq!(run.failed, 0, "{member}: nothing failed");
        assert!(run.transactions["message"].ok > 0 && run.deliveries > 0, "{member}: messages went through");
    }

    // Prometheus saw each kind of request on each member, NOTIFYs sent, and relays between them.
    for m in [&a, &b] {
        let instance = m.server.http.to_string();
        let requests = |method: &str| {
            format!("sum(increase(sipfront_requests_total{{instance=\"{instance}\", method=\"{method}\"}}[2m]))")
        };
        let mut queries: Vec<String> = ["REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE"].map(requests).into();
        queries.push(format!("sum(increase(sipfront_notify_total{{instance=\"{instance}\"}}[2m]))"));
        for query in queries {
            let seen =
                eventually(Duration::from_secs(20), async || prometheus.value(&query).await.is_some_and(|v| v > 0.0))
                    .await;
            assert!(seen, "{query}: {}", prometheus.query(&query).await);
        }
    }
    let relayed = "sum(sipfront_pool_relayed_total)";
    assert!(prometheus.value(relayed).await.is_some_and(|v| v > 0.0), "requests crossed between the members");
    for (title, expr) in dashboard_queries() {
        let r = prometheus.query(&expr).await;
        let data = r["status"] == "success" && r["data"]["result"].as_array().is_some_and(|v| !v.is_empty());
        assert!(data, "panel {title:?}: {expr} gives data: {r}");
    }

    // A member stops: its scrape fails and the alert fires for it, not for the other.
    let (gone, alive) = (b.server.http.to_string(), a.server.http.to_string());
    b.server.shutdown().await;
    let fired =
        eventually(Duration::from_secs(30), async || prometheus.firing("SipfrontMemberDown", &gone).await).await;
    assert!(fired, "SipfrontMemberDown fires for {gone}: {}", prometheus.get("/api/v1/alerts").await);
    assert!(!prometheus.firing("SipfrontMemberDown", &alive).await, "and not for {alive}");
}
