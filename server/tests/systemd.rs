//! The systemd unit (issue 16): `ops/systemd/sipfront.service` passes `systemd-analyze verify`,
//! and `sipfront serve` speaks the notification protocol its `Type=notify` relies on: READY=1
//! once it listens and its store answered, STOPPING=1 when SIGTERM starts the drain.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

use sipfront_storage::testing::require_program;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_unit_file_verifies() {
    if !require_program("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/systemd/sipfront.service")).unwrap();
    // The unit names the installed binary; here, the one just built.
    let unit = unit.replace("/usr/local/bin/sipfront", env!("CARGO_BIN_EXE_sipfront"));
    let path = dir.path().join("sipfront.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(!said.contains("sipfront.service:"), "no remark on the unit: {said}");
}

#[test]
fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipfront"))
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["serve", "--sip-addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("SIPFRONT_LISTEN_DIRECTORY", "127.0.0.1:0")
        .env("SIPFRONT_LOG_LEVEL", "warn")
        .env("SIPFRONT_SERVER_DRAIN_TIMEOUT_SECS", "1")
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let n = socket.recv(&mut buf).expect("a notification of the stop");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(child.wait().unwrap().success(), "a drained stop exits 0");
}
