//! The model scenario against a live sipfront, over UDP and TCP, time-compressed.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::{assert_half_an_hour_of_the_model, config, model_config, run, sipfront_load_async, Server};
use sipfront_loadtest::{Scenario, TransportKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_model_ten_minutes_a_second() {
    for transport in [TransportKind::Udp, TransportKind::Tcp] {
        let server = Server::start(20).await;
        let r = run(model_config(server.addr(transport), transport, 20)).await;
        let what = format!("{transport:?}");
        assert_half_an_hour_of_the_model(&r, &what);
        // A fetch is answered by one NOTIFY that ends it; the teardown's too.
        assert_eq!(r.notify_states["terminated"], 25 + 60, "{what}");
        if transport == TransportKind::Tcp {
            assert_eq!(r.keepalives, 120, "{what}: every 5 minutes");
            assert_eq!(r.pongs, r.keepalives, "{what}: each answered");
        }
        assert_eq!(r.unmatched_notifies + r.timeouts + r.unexpected_responses + r.transport_errors, 0, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_model_with_resource_lists_over_tls() {
    let server = Server::start(10).await;
    // Each user's list: the two users after it, as the model's contacts.
    let mut c = config(Scenario::Model, server.tls(), 10, 1.0, 1);
    (c.resource_lists, c.watch) = (true, 2);
    server.contact_lists(&c).await;
    let target = server.tls().to_string();
    let r = sipfront_load_async(format!(
        "model --target {target} --transport tls --users 10 --watch 2 --resource-lists \
         --duration 2 --time-scale 1800 --timeout 5"
    ))
    .await
    .report();
    assert_eq!(r.transactions["subscribe"].ok, 10, "one list subscription each");
    // An hour of the model: 40 registrations, 40 PUBLISHes, 200 MESSAGEs, 25 fetches, and
    // 20 refreshes of the 10 list subscriptions.
    assert_eq!((r.planned, r.succeeded, r.failed), (40 + 40 + 200 + 25 + 20, 325, 0));
    assert_eq!((r.keepalives, r.pongs), (120, 120));
    assert!(r.measured_notifies >= 25 + 10, "fetches and list changes: {}", r.measured_notifies);
    assert_eq!(r.unmatched_notifies, 0);
}
