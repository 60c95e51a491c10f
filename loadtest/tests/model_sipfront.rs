//! The model scenario against a live sipfront, over UDP and TCP, time-compressed.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::{config, run, Server};
use sipfront_loadtest::{Bound, Scenario, TransportKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_model_ten_minutes_a_second() {
    for transport in [TransportKind::Udp, TransportKind::Tcp] {
        let server = Server::start(20).await;
        let target = if transport == TransportKind::Udp { server.udp() } else { server.tcp() };
        let mut c = config(Scenario::Model, target, 20, 1.0, 1);
        c.transport = transport;
        c.watch = 3;
        c.bound = Bound::Seconds(3.0);
        c.model.time_scale = 600.0;
        let r = run(c).await;
        let what = format!("{transport:?}");
        let ok = |kind: &str| r.transactions.get(kind).map_or(0, |t| t.ok);
        // 20 users x 3 contacts; in 3 s at 600x (30 minutes of the model): 40 registrations
        // (every 15 min), 60 subscription refreshes (every 30 min), 40 PUBLISHes (4/h), 20 IM
        // sessions of 10 MESSAGEs (2/h), 25 fetches (60/day).
        assert_eq!(ok("subscribe"), 60, "{what}");
        assert_eq!((ok("reregister"), ok("resubscribe"), ok("publish")), (40, 60, 40), "{what}");
        assert_eq!((ok("message"), ok("fetch")), (200, 25), "{what}");
        assert_eq!((r.planned, r.succeeded, r.failed), (365, 365, 0), "{what}");
        assert_eq!(r.deliveries, 200, "{what}: every MESSAGE reached its contact");
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
    {
        // Each user's list: the two users after it, as the model's contacts.
        let store = sipfront_storage::open("", server.dir.path()).await.unwrap();
        for u in 0..10 {
            for k in 1..=2 {
                let contact = sipfront_storage::Contact {
                    owner: format!("user{u}@{}", common::DOMAIN),
                    contact: format!("user{}@{}", (u + k) % 10, common::DOMAIN),
                    display_name: String::new(),
                    group: String::new(),
                };
                store.add_contact(&contact).await.unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("model.json");
    let (target, json2) = (server.tls().to_string(), json.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sipfront-load"))
            .args(["model", "--target", &target, "--transport", "tls", "--users", "10", "--watch", "2"])
            .args(["--resource-lists", "--duration", "2", "--time-scale", "1800", "--timeout", "5", "--json"])
            .arg(&json2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    println!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let r: sipfront_loadtest::Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r.transactions["subscribe"].ok, 10, "one list subscription each");
    // An hour of the model: 40 registrations, 40 PUBLISHes, 200 MESSAGEs, 25 fetches, and
    // 20 refreshes of the 10 list subscriptions.
    assert_eq!((r.planned, r.succeeded, r.failed), (40 + 40 + 200 + 25 + 20, 325, 0));
    assert_eq!((r.keepalives, r.pongs), (120, 120));
    assert!(r.measured_notifies >= 25 + 10, "fetches and list changes: {}", r.measured_notifies);
    assert_eq!(r.unmatched_notifies, 0);
}
