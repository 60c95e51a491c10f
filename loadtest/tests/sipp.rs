//! Cross-check against SIPp on the register scenario: the same users at the same rate against
//! the same live sipfront, both must succeed, and the rates they achieve must agree within 10%.
//! Skipped outside CI when sipp is not installed; under CI it must run.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::Server;
use sipfront_loadtest::Scenario;
use std::process::Command;

const USERS: usize = 100;
const RATE: u32 = 200;
const CALLS: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_rate_agrees_with_sipp() {
    if !sipfront_storage::testing::require_program("sipp", "sip-tester") {
        return;
    }
    let Some(reference) = common::reference_dir() else { return };
    let server = Server::start(USERS).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    let lines: String = (0..USERS).map(|n| format!("user{n};pw{n}\n")).collect();
    std::fs::write(&csv, format!("SEQUENTIAL\n{lines}")).unwrap();
    let stat = dir.path().join("stat.csv");

    // SIPp's reg_auth.xml: REGISTER -> 401 -> REGISTER with credentials -> 200.
    let target = server.udp().to_string();
    let (scenario, csv2, stat2) = (reference.join("scenarios/reg_auth.xml"), csv.clone(), stat.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("60")
            .arg("sipp")
            .arg(&target)
            .arg("-sf")
            .arg(&scenario)
            .arg("-inf")
            .arg(&csv2)
            .args(["-i", "127.0.0.1", "-t", "u1", "-r", &RATE.to_string(), "-m", &CALLS.to_string()])
            .args(["-nostdin", "-timeout", "30s", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stats = std::fs::read_to_string(&stat).unwrap_or_default();
    let (sipp_ok, sipp_failed, sipp_secs) = sipp_totals(&stats).unwrap_or_else(|| {
        panic!("no SIPp statistics ({:?}): {}\n{stats}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    let sipp_rate = sipp_ok as f64 / sipp_secs;

    let r = common::run(common::config(Scenario::Register, server.udp(), USERS, RATE.into(), CALLS)).await;
    println!(
        "sipp: {sipp_ok} ok, {sipp_failed} failed in {sipp_secs:.2} s = {sipp_rate:.1}/s; ours: {:.1}/s",
        r.achieved_rate
    );
    assert_eq!((sipp_ok, sipp_failed), (CALLS, 0), "SIPp's registrations all succeed");
    assert_eq!((r.succeeded, r.failed), (CALLS, 0), "ours all succeed");
    let diff = (r.achieved_rate - sipp_rate).abs() / sipp_rate;
    assert!(diff < 0.10, "rates differ by {:.1}%: ours {:.1}/s, sipp {sipp_rate:.1}/s", diff * 100.0, r.achieved_rate);
}

/// Successful calls, failed calls and elapsed seconds from the last line of SIPp's `-stf` file.
fn sipp_totals(stats: &str) -> Option<(u64, u64, f64)> {
    let mut lines = stats.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).and_then(|i| last.get(i).copied());
    let ok = col("SuccessfulCall(C)")?.trim().parse().ok()?;
    let failed = col("FailedCall(C)")?.trim().parse().ok()?;
    // ElapsedTime is in whole seconds: take the epochs ("date\ttime\tepoch") of the start and
    // of this last line instead.
    let epoch = |name: &str| col(name)?.rsplit('\t').next()?.trim().parse::<f64>().ok();
    let secs = epoch("CurrentTime")? - epoch("StartTime")?;
    Some((ok, failed, secs))
}
