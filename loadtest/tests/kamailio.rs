//! The same scenarios against Kamailio, set up as our peer in shared/reference/kamailio
//! (127.0.0.1:5070, digest auth against SQLite, user0..user10099 @ example.test, pw<N>).
//! Skipped outside CI when kamailio is not installed; under CI it must run.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use sipfront_loadtest::{Scenario, TransportKind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// kamailio.cfg keeps its database and control socket under /tmp/kam-anchor, so RUN must be it.
const RUN: &str = "/tmp/kam-anchor";

/// A Kamailio started by this test (stopped on drop), or one that was already running (left
/// alone).
struct Kamailio {
    scripts: PathBuf,
    ours: bool,
    _copy: tempfile::TempDir,
}

impl Kamailio {
    fn start(reference: &Path) -> Kamailio {
        // The scripts write their SIPp CSV files beside themselves: work on a copy.
        let copy = tempfile::tempdir().unwrap();
        let status = Command::new("cp").arg("-r").arg(reference).arg(copy.path()).status().unwrap();
        assert!(status.success());
        let scripts = copy.path().join("kamailio");
        let pid_file = Path::new(RUN).join("kamailio.pid");
        let running = std::fs::read_to_string(&pid_file)
            .ok()
            .is_some_and(|pid| Command::new("kill").args(["-0", pid.trim()]).status().is_ok_and(|s| s.success()));
        if running {
            println!("kamailio already running ({}): using it", pid_file.display());
            return Kamailio { scripts, ours: false, _copy: copy };
        }
        for script in ["mkdb.sh", "start_kamailio.sh"] {
            let out = Command::new("bash").arg(scripts.join(script)).env("RUN", RUN).output().unwrap();
            println!("{script}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{script} failed");
        }
        Kamailio { scripts, ours: true, _copy: copy }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if self.ours {
            let _ = Command::new("bash").arg(self.scripts.join("stop_kamailio.sh")).env("RUN", RUN).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_against_kamailio() {
    if !sipfront_storage::testing::require_program("kamailio", "kamailio") {
        return;
    }
    let Some(reference) = common::reference_dir() else { return };
    let _kamailio = Kamailio::start(&reference);
    let target = "127.0.0.1:5070".parse().unwrap();

    let r = common::run(common::config(Scenario::Register, target, 100, 200.0, 200)).await;
    assert_eq!((r.succeeded, r.failed), (200, 0), "register over UDP");
    assert_eq!(r.transactions["register.initial"].statuses.get("401"), Some(&200));

    let mut c = common::config(Scenario::Register, target, 50, 200.0, 100);
    c.transport = TransportKind::Tcp;
    c.local_ips = sipfront_loadtest::config::parse_local_ips("127.0.0.2-127.0.0.3").unwrap();
    let r = common::run(c).await;
    assert_eq!((r.succeeded, r.failed), (100, 0), "register over TCP");

    // Users 200.. so that these receivers' bindings are not the ones registered above.
    let mut c = common::config(Scenario::Message, target, 20, 200.0, 200);
    c.set_pattern_users(20, 200, "pw{n}");
    let r = common::run(c).await;
    assert_eq!((r.succeeded, r.failed), (200, 0), "message over UDP");
    assert_eq!(r.transactions["message.initial"].statuses.get("407"), Some(&200));
    assert_eq!(r.deliveries, 200);

    // Presence: users 400..419, 10 presentities and 10 watchers of 3 each, 100 PUBLISHes;
    // with digest auth over UDP, then without (port 5071) over TCP. Kamailio has no resource
    // lists in this configuration: single subscriptions only.
    for (port, transport, first) in [(5070, TransportKind::Udp, 400), (5071, TransportKind::Tcp, 420)] {
        let target = format!("127.0.0.1:{port}").parse().unwrap();
        let mut c = common::config(Scenario::Presence, target, 20, 100.0, 100);
        c.set_pattern_users(20, first, "pw{n}");
        c.transport = transport;
        c.watch = 3;
        let r = common::run(c).await;
        let what = format!("presence on {port} over {transport:?}");
        assert_eq!(r.transactions["subscribe"].ok, 30, "{what}: 10 watchers x 3 subscriptions");
        assert_eq!((r.succeeded, r.failed), (100, 0), "{what}: every PUBLISH succeeded");
        let challenged = r.transactions["publish.initial"].statuses.get("407").copied().unwrap_or(0);
        assert_eq!(challenged, if port == 5070 { 100 } else { 0 }, "{what}: challenged on 5070 only");
        // Kamailio notifies every change at once: three watchers per PUBLISH.
        assert!(r.measured_notifies >= 300, "{what}: three per PUBLISH while measuring: {}", r.measured_notifies);
        assert!(r.notifies >= r.measured_notifies + 30, "{what}: and one per subscription before: {}", r.notifies);
        assert_eq!(r.transactions["unsubscribe"].ok, 30, "{what}: every subscription ended");
        assert_eq!(r.notify_states["terminated"], 30, "{what}");
        assert_eq!(r.unmatched_notifies + r.timeouts + r.transport_errors, 0, "{what}");
    }

    // The user model, 10 minutes of it a second for 3 s: users 460..479 with digest auth over
    // UDP, 480..499 without over TCP (with keep-alives).
    for (port, transport, first) in [(5070, TransportKind::Udp, 460), (5071, TransportKind::Tcp, 480)] {
        let target = format!("127.0.0.1:{port}").parse().unwrap();
        let mut c = common::model_config(target, transport, 20);
        c.set_pattern_users(20, first, "pw{n}");
        let r = common::run(c).await;
        let what = format!("model on {port} over {transport:?}");
        common::assert_half_an_hour_of_the_model(&r, &what);
        assert!(r.measured_notifies >= 120 + 25, "{what}: 3 per PUBLISH and one per fetch: {}", r.measured_notifies);
        if transport == TransportKind::Tcp {
            assert_eq!((r.keepalives, r.pongs), (120, 120), "{what}: every 5 minutes, each answered");
        }
        assert_eq!(r.unmatched_notifies + r.timeouts + r.transport_errors, 0, "{what}");
    }

    // The binary, with its JSON report: users 440..459.
    let r = common::sipfront_load(
        "presence --target 127.0.0.1:5070 --users 20 --user-offset 440 --watch 2 --rate 100 --count 50 --timeout 5",
    )
    .report();
    assert_eq!((r.succeeded, r.transactions["subscribe"].ok), (50, 20));
    assert!(r.measured_notifies >= 100 && r.notify_rate > 0.0, "two watchers per PUBLISH: {}", r.measured_notifies);

    the_binary_runs_the_model();
}

/// `sipfront-load model` with its JSON report (one Kamailio for every run: tests of their
/// own would start and stop it under each other).
fn the_binary_runs_the_model() {
    // Users 500..509 over TCP without auth, an hour of the model in 2 s.
    let r = common::sipfront_load(
        "model --target 127.0.0.1:5071 --transport tcp --users 10 --user-offset 500 --watch 2 \
         --duration 2 --time-scale 1800 --timeout 5",
    )
    .report();
    assert_eq!(r.config.model.time_scale, 1800.0);
    // In an hour of the model, 10 users: 40 registrations, 40 PUBLISHes, 20 IM sessions of
    // 10, 120 keep-alives, 25 fetches, 40 subscription refreshes.
    assert_eq!((r.planned, r.succeeded, r.failed), (40 + 40 + 200 + 25 + 40, 345, 0));
    assert_eq!((r.keepalives, r.pongs), (120, 120));
}
