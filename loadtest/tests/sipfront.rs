//! Small bounded runs of every scenario against a live sipfront, over UDP, TCP and TLS.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::{config, run, Server};
use sipfront_loadtest::{Scenario, TransportKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_over_udp() {
    let server = Server::start(100).await;
    let mut c = config(Scenario::Register, server.udp(), 100, 200.0, 200);
    c.local_ips = sipfront_loadtest::config::parse_local_ips("127.0.0.2-127.0.0.5").unwrap();
    let r = run(c).await;
    assert_eq!((r.started, r.succeeded, r.failed, r.unfinished), (200, 200, 0, 0));
    let reg = &r.transactions["register"];
    assert_eq!(reg.statuses.get("200"), Some(&200));
    assert_eq!(r.transactions["register.initial"].statuses.get("401"), Some(&200));
    assert_eq!(r.transactions["register.auth"].ok, 200);
    assert!(reg.latency_ms.p50 > 0.0 && reg.latency_ms.p50 <= reg.latency_ms.max);
    assert!(r.achieved_rate > 150.0 && r.achieved_rate < 230.0, "{}", r.achieved_rate);
    assert_eq!(r.timeouts + r.malformed + r.unexpected_responses + r.transport_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_over_tcp() {
    let server = Server::start(50).await;
    let mut c = config(Scenario::Register, server.tcp(), 50, 200.0, 100);
    c.transport = TransportKind::Tcp;
    let r = run(c).await;
    assert_eq!((r.succeeded, r.failed), (100, 0));
    assert_eq!(r.retransmissions, 0, "no retransmissions over TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_udp() {
    let server = Server::start(20).await;
    let r = run(config(Scenario::Message, server.udp(), 20, 200.0, 200)).await;
    assert_eq!(r.transactions["setup.register"].ok, 20);
    assert_eq!((r.succeeded, r.failed), (200, 0));
    // Over UDP every MESSAGE is challenged (RFC 3261 22.3), then relayed to its receiver.
    assert_eq!(r.transactions["message.initial"].statuses.get("407"), Some(&200));
    assert_eq!(r.deliveries, 200, "every message reached its receiver once");
    assert_eq!(r.config.message_bytes, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_tcp() {
    let server = Server::start(20).await;
    let mut c = config(Scenario::Message, server.tcp(), 20, 200.0, 100);
    c.transport = TransportKind::Tcp;
    let r = run(c).await;
    assert_eq!((r.succeeded, r.failed), (100, 0));
    assert_eq!(r.deliveries, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_message_over_tls() {
    let server = Server::start(20).await;
    // The server's certificate is self-signed: accepted without --tls-ca.
    let mut c = config(Scenario::Register, server.tls(), 20, 200.0, 100);
    c.transport = TransportKind::Tls;
    c.local_ips = sipfront_loadtest::config::parse_local_ips("127.0.0.2-127.0.0.3").unwrap();
    let r = run(c).await;
    assert_eq!((r.succeeded, r.failed), (100, 0), "register over TLS");
    assert_eq!(r.transactions["register.initial"].statuses.get("401"), Some(&100));
    assert_eq!(r.retransmissions + r.transport_errors + r.malformed, 0);

    let mut c = config(Scenario::Message, server.tls(), 20, 200.0, 100);
    c.transport = TransportKind::Tls;
    let r = run(c).await;
    assert_eq!((r.succeeded, r.failed), (100, 0), "message over TLS");
    assert_eq!(r.deliveries, 100, "relayed to the receivers over their TLS connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ca_verifies_the_server() {
    let (server, other) = (Server::start(10).await, Server::start(1).await);
    let mut c = config(Scenario::Register, server.tls(), 10, 100.0, 20);
    c.transport = TransportKind::Tls;
    c.tls_ca = Some(server.cert());
    let r = run(c.clone()).await;
    assert_eq!((r.succeeded, r.failed), (20, 0), "verified against its own certificate");

    // Another server's certificate: no handshake completes, every transaction fails, counted.
    c.tls_ca = Some(other.cert());
    let r = run(c.clone()).await;
    assert_eq!((r.succeeded, r.failed, r.unfinished), (0, 20, 0));
    assert!(r.transport_errors >= 20, "{}", r.transport_errors);

    // The right certificate but a name it does not hold.
    c.tls_ca = Some(server.cert());
    c.tls_server_name = Some("sip.example.org".into());
    let r = run(c).await;
    assert_eq!((r.succeeded, r.failed), (0, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_over_udp_and_tcp() {
    for transport in [TransportKind::Udp, TransportKind::Tcp] {
        let server = Server::start(20).await;
        let target = server.addr(transport);
        // 10 presentities, 10 watchers of 3 each.
        let mut c = config(Scenario::Presence, target, 20, 100.0, 100);
        c.transport = transport;
        c.watch = 3;
        let r = run(c).await;
        assert_eq!(r.transactions["subscribe"].ok, 30, "{transport:?}: 10 watchers x 3 subscriptions");
        assert_eq!((r.succeeded, r.failed), (100, 0), "{transport:?}: every PUBLISH succeeded");
        // One immediate NOTIFY per subscription, then changes (coalesced by the server's 1 s
        // throttle, so at least one per watcher and presentity), then one `terminated` each
        // when the run ends the subscriptions.
        assert!(r.measured_notifies >= 30, "{transport:?}: NOTIFYs while measuring: {}", r.measured_notifies);
        assert!(r.notifies >= r.measured_notifies + 60, "set-up and teardown ones apart: {}", r.notifies);
        assert_eq!(r.transactions["unsubscribe"].ok, 30);
        assert_eq!(r.notify_states["terminated"], 30);
        assert!(r.notify_rate > 0.0);
        assert_eq!(r.timeouts + r.malformed + r.unexpected_responses + r.transport_errors + r.unmatched_notifies, 0);
    }
}
