//! The operator's endpoints: `/metrics` in Prometheus text with the names dashboards use,
//! `/healthz`, `/readyz` true while serving and false once draining; and a graceful shutdown
//! that ends.

mod common;

use common::{Request, TestServer, Transport};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_readiness() {
    let s = TestServer::start().await;
    // Some traffic, so that the per-request series exist.
    s.assert_answers_options().await;
    let mut tcp = s.tcp_client().await;
    tcp.transact(&Request::options(Transport::Tcp, tcp.local)).await;

    let (status, body) = s.http_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "sipfront_requests_total",
        "sipfront_responses_total",
        "sipfront_transaction_duration_seconds",
        "sipfront_connections_open",
    ] {
        assert!(body.contains(name), "/metrics has {name}:\n{body}");
    }
    assert!(
        body.lines().any(|l| l.starts_with("sipfront_requests_total{")
            && l.contains("method=\"OPTIONS\"")
            && l.contains("transport=\"udp\"")),
        "requests by method and transport:\n{body}"
    );
    assert!(common::metric_sum(&body, "sipfront_requests_total") >= 2.0);
    // The process's own figures, under the names every exporter uses, and the server's state.
    for name in
        ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]
    {
        assert!(body.lines().any(|l| l.starts_with(&format!("{name} "))), "/metrics has {name}:\n{body}");
    }
    assert_eq!(common::metric_sum(&body, "sipfront_ready"), 1.0);
    assert_eq!(common::metric_sum(&body, "sipfront_store_up"), 1.0);
    assert_eq!(common::metric_sum(&body, "sipfront_build_info"), 1.0);
    // Store operations are timed (the pool heartbeat is one, every second).
    let timed = sipfront_storage::testing::eventually(std::time::Duration::from_secs(5), async || {
        s.http_get("/metrics").await.1.contains("sipfront_store_operation_seconds_bucket{op=\"heartbeat\"")
    })
    .await;
    assert!(timed, "sipfront_store_operation_seconds by operation");

    assert_eq!(s.http_get("/healthz").await.0, 200);
    assert_eq!(s.http_get("/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(s.http_get("/nothing-here").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_once_shutdown_begins_and_shutdown_completes() {
    let s = TestServer::with(|c| c.server.drain_timeout_secs = 1).await;
    assert_eq!(s.http_get("/readyz").await.0, 200);
    let (http, udp_addr, readiness) = (s.server.http, s.udp_addr(), s.server.readiness.clone());
    let client = common::UdpClient::new(udp_addr).await;

    let common::TestServer { server, dir: _dir, .. } = s;
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    // Readiness drops first of all, so that a load balancer stops sending before listeners close.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while readiness.get() {
        assert!(tokio::time::Instant::now() < deadline, "readiness drops");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    match common::http_get(http, "/readyz").await {
        Ok((status, _)) => assert_eq!(status, 503, "not ready while draining"),
        Err(e) => println!("/readyz refused while draining: {e}"),
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown completes within the drain timeout")
        .expect("the shutdown task");
    println!("shutdown took {:?}", started.elapsed());
    assert!(common::http_get(http, "/healthz").await.is_err(), "the HTTP listener is closed");
    client.send(&Request::options(Transport::Udp, client.local()).to_bytes()).await;
    assert!(client.recv(common::QUIET).await.is_none(), "SIP listeners are closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_in_flight_transactions_up_to_the_drain_timeout() {
    // A client transaction to a silent peer lasts 64*T1 = 3.2 s; the drain gives it 1 s.
    let s = TestServer::with(|c| {
        c.server.drain_timeout_secs = 1;
        c.transaction.t1_ms = 50;
        c.transaction.t2_ms = 400;
    })
    .await;
    let peer = common::UdpClient::new(s.udp_addr()).await;
    let mut req = sipfront_proto::Message::request(sipfront_proto::Method::Options, format!("sip:p@{}", peer.local()));
    use sipfront_proto::HeaderName as H;
    req.push_header(
        H::Via,
        format!("SIP/2.0/UDP {};branch={}", s.udp_addr(), sipfront::transaction::key::new_branch()),
    );
    req.push_header(H::From, "<sip:sipfront@127.0.0.1>;tag=1");
    req.push_header(H::To, format!("<sip:p@{}>", peer.local()));
    req.push_header(H::CallId, "drain@test");
    req.push_header(H::CSeq, "1 OPTIONS");
    let target = sipfront::transport::Target {
        transport: sipfront::transport::Transport::Udp,
        remote: peer.local(),
        flow: None,
        local: None,
    };
    let _tx = s.server.transactions.request(req, target);
    peer.recv(common::WAIT).await.expect("the request reaches the peer");

    let started = std::time::Instant::now();
    let http = s.server.http;
    let shutdown = tokio::spawn(s.server.shutdown());
    // The HTTP endpoint answers through the drain: Prometheus still scrapes, probes see 503.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(common::http_get(http, "/readyz").await.expect("answered while draining").0, 503);
    let (status, metrics) = common::http_get(http, "/metrics").await.expect("scraped while draining");
    assert_eq!(status, 200);
    assert!(metrics.contains("sipfront_ready 0"), "{metrics}");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown completes")
        .expect("the shutdown task");
    let took = started.elapsed();
    assert!(common::http_get(http, "/healthz").await.is_err(), "and it closes when the drain ends");
    assert!(took >= Duration::from_millis(800), "it waited for the transaction ({took:?})");
    assert!(took < Duration::from_millis(3000), "but no longer than the drain timeout ({took:?})");
}
