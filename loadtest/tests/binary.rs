//! The `sipfront-load` binary: its JSON report, its refusal of remote targets, Ctrl-C.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::{sipfront_load_async, Server};
use sipfront_loadtest::Report;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sipfront-load");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_holds_every_figure() {
    let server = Server::start(50).await;
    let target = server.udp().to_string();
    let run = sipfront_load_async(format!(
        "register --target {target} --users 50 --rate 200 --count 200 --local-ips 127.0.0.2-127.0.0.3"
    ))
    .await;
    let (stdout, text) = (&run.stdout, &run.json);
    assert!(stdout.contains("register.auth") && stdout.contains("p99.9 ms"), "the final table");
    assert!(!stdout.contains('\u{1b}'), "no progress bar when stdout is not a terminal");

    let report = run.report();
    assert_eq!((report.succeeded, report.failed), (200, 0));
    assert_eq!(report.config.local_ips.len(), 2);
    assert!(report.machine.nproc >= 1 && !report.machine.kernel.is_empty());
    let (from, until) = (report.measured_from_unix_ms.unwrap(), report.measured_until_unix_ms.unwrap());
    assert!(report.started_unix_ms <= from && from < until, "the measured phase's window: {from}..{until}");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(v["transactions"]["register"]["latency_ms"][p].as_f64().unwrap() > 0.0, "{p}");
    }
    assert_eq!(v["transactions"]["register.initial"]["statuses"]["401"], 200);
    assert_eq!(v["config"]["scenario"], "register");
    assert!(v["achieved_rate"].as_f64().unwrap() > 150.0);
}

#[test]
fn refuses_remote_targets() {
    let out = Command::new(BIN).args(["register", "--target", "192.0.2.1:5060", "--count", "1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_prints_the_partial_report() {
    let server = Server::start(10).await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("partial.json");
    let child = Command::new(BIN)
        .args(["register", "--target", &server.udp().to_string(), "--users", "10", "--rate", "100"])
        .args(["--duration", "60", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted in the middle of the run: once it is under way (every user registered)...
    let started = sipfront_storage::testing::eventually(std::time::Duration::from_secs(10), async || {
        server.server.bindings.binding_count() == 10
    })
    .await;
    assert!(started, "sipfront-load registered every user");
    // ...and has gone on for a second at 100/s, which is the point of this wait.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert_eq!(out.status.code(), Some(130));
    assert!(stdout.contains("INTERRUPTED"));
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report.interrupted);
    assert!(report.succeeded > 50 && report.succeeded < 6000, "{}", report.succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_reports_each_step_and_the_highest_passing_rate() {
    let server = Server::start(50).await;
    let target = server.udp().to_string();
    let run = sipfront_load_async(format!(
        "register --target {target} --users 50 --ramp 100:100:300 --step-duration 0.5 --max-p99-ms 2000"
    ))
    .await;
    assert!(run.stdout.contains("highest passing rate: 300/s"), "the table says it");

    let report = run.report();
    let ramp = report.ramp.expect("a ramp section");
    let rates: Vec<f64> = ramp.steps.iter().map(|s| s.rate).collect();
    assert_eq!(rates, vec![100.0, 200.0, 300.0]);
    assert_eq!(ramp.steps.iter().map(|s| s.succeeded).collect::<Vec<_>>(), vec![50, 100, 150]);
    assert!(ramp.steps.iter().all(|s| s.passed && s.verdict == "ok" && s.p99_ms > 0.0));
    assert_eq!(ramp.highest_passing_rate, Some(300.0));
    assert_eq!((report.planned, report.succeeded, report.failed), (300, 300, 0));
    assert_eq!(report.config.ramp.unwrap().step_secs, 0.5);

    // Options of a ramp without --ramp are refused (before anything is sent: the target is
    // TEST-NET-1, which is refused too, but later and with another message).
    let out = Command::new(BIN)
        .args(["register", "--target", "192.0.2.1:5060", "--step-duration", "1", "--count", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ramp"), "{}", String::from_utf8_lossy(&out.stderr));
}
