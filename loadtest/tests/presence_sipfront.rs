//! The presence scenario against a live sipfront: resource lists (RFC 4662) over UDP, TCP and
//! TLS, single subscriptions over TLS, a ramp, and the binary with its JSON report.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::{config, run, sipfront_load_async, Server};
use sipfront_loadtest::ramp::Ramp;
use sipfront_loadtest::{Scenario, TransportKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_lists_over_udp_tcp_and_tls() {
    for transport in [TransportKind::Udp, TransportKind::Tcp, TransportKind::Tls] {
        let server = Server::start(20).await;
        let mut c = config(Scenario::Presence, server.addr(transport), 20, 100.0, 100);
        c.transport = transport;
        c.resource_lists = true;
        c.watch = 3;
        server.contact_lists(&c).await;
        let r = run(c).await;
        let what = format!("{transport:?}");
        assert_eq!(r.transactions["subscribe"].ok, 10, "{what}: one list subscription per watcher");
        assert_eq!((r.succeeded, r.failed), (100, 0), "{what}: every PUBLISH succeeded");
        // Full state at once, then partial state as members change (throttled by the server,
        // so at least one per list), then `terminated` when the run ends them.
        assert!(r.measured_notifies >= 10, "{what}: list NOTIFYs while measuring: {}", r.measured_notifies);
        // Each partial-state NOTIFY names the members that changed: at least one each.
        assert!(r.measured_states >= r.measured_notifies, "{what}: {} states", r.measured_states);
        assert!(r.notifies >= r.measured_notifies + 20, "{what}: {}", r.notifies);
        assert_eq!(r.notify_states["terminated"], 10, "{what}");
        assert_eq!(r.unmatched_notifies + r.timeouts + r.unexpected_responses + r.transport_errors, 0, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_subscriptions_over_tls() {
    let server = Server::start(30).await;
    let mut c = config(Scenario::Presence, server.tls(), 30, 100.0, 100);
    c.transport = TransportKind::Tls;
    c.presentities = Some(10);
    c.watch = 5;
    let r = run(c).await;
    assert_eq!(r.transactions["subscribe"].ok, 100, "20 watchers x 5");
    assert_eq!((r.succeeded, r.failed), (100, 0));
    assert!(r.measured_notifies >= 100, "{}", r.measured_notifies);
    assert_eq!(r.measured_states, r.measured_notifies, "one PIDF per NOTIFY");
    assert_eq!(r.notify_states["terminated"], 100);
    assert_eq!(r.unmatched_notifies + r.timeouts + r.transport_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_ramp_counts_notifies_per_step() {
    let server = Server::start(20).await;
    let mut c = config(Scenario::Presence, server.udp(), 20, 100.0, 1);
    c.watch = 3;
    c.ramp = Some(Ramp { step_secs: 0.5, max_p99_ms: 2000.0, ..Ramp::parse("50:50:100").unwrap() });
    let r = run(c).await;
    let ramp = r.ramp.unwrap();
    assert_eq!(ramp.highest_passing_rate, Some(100.0));
    assert_eq!(ramp.steps.iter().map(|s| s.succeeded).collect::<Vec<_>>(), vec![25, 50]);
    assert!(ramp.steps.iter().all(|s| s.notifies >= 30 && s.notify_rate > 0.0), "{:?}", ramp.steps);
    assert_eq!(r.transactions["unsubscribe"].ok, 30, "ended once, after the last step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_presence_with_resource_lists() {
    let server = Server::start(20).await;
    let mut c = config(Scenario::Presence, server.tcp(), 20, 100.0, 100);
    (c.resource_lists, c.watch) = (true, 3);
    server.contact_lists(&c).await;
    let target = server.tcp().to_string();
    let run = sipfront_load_async(format!(
        "presence --target {target} --transport tcp --users 20 --resource-lists --watch 3 --rate 100 --count 100"
    ))
    .await;
    assert!(run.stdout.contains("NOTIFY received"), "the table counts NOTIFYs");
    let report = run.report();
    assert!(report.config.resource_lists);
    assert_eq!((report.succeeded, report.transactions["subscribe"].ok), (100, 10));
    assert!(report.notify_rate > 0.0 && report.notify_states["active"] >= 20);
}
