//! The open-file limit (issue 19): each TCP or TLS connection is a descriptor, so the server
//! raises its soft limit to the hard one at start, warns when even that cannot hold
//! `transport.max_connections`, and refuses connections past what it can hold as over its cap
//! (counted) instead of failing in accept().

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A metric's value in a `/metrics` text (the first series of that name).
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_soft_file_limit_is_raised_and_a_low_hard_limit_caps_connections() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (sip, http): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().expect("an address"),
        format!("127.0.0.1:{}", free_port()).parse().expect("an address"),
    );
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("a log file");
    // As a shell's ulimit leaves them: a soft limit of 100 descriptors, a hard one of 300.
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 100 && ulimit -Hn 300 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_sipfront"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--sip-addr", &sip.to_string(), "--tls-addr", "127.0.0.1:0", "--http-addr", &http.to_string()])
        .env("SIPFRONT_LISTEN_DIRECTORY", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start sipfront serve");
    let server = Server { child, log: log_path };
    let pid = server.child.id();
    {
        let ready = sipfront_storage::testing::eventually(Duration::from_secs(15), async || {
            http_get(http, "/readyz").await.is_ok_and(|r| r.0 == 200)
        })
        .await;
        assert!(ready, "the server starts");

        // The soft limit is now the hard one.
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("the server's limits");
        let files: Vec<&str> = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a line for files")
            .split_whitespace()
            .collect();
        assert_eq!((files[3], files[4]), ("300", "300"), "{limits}");

        // 300 descriptors hold 44 connections beside everything else: that is the cap now.
        let metrics = http_get(http, "/metrics").await.expect("/metrics").1;
        assert_eq!(value(&metrics, "sipfront_connections_max"), Some(44.0));

        // The 45th connection on is refused (closed at once), the first 44 are kept.
        let mut streams = Vec::new();
        for _ in 0..50 {
            streams.push(tokio::net::TcpStream::connect(sip).await.expect("connect"));
        }
        // Each read at once: a refused connection reads its end, a kept one reads nothing.
        let reads: Vec<_> = streams
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    let read = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
                    (matches!(read, Ok(Ok(0) | Err(_))), s)
                })
            })
            .collect();
        let mut closed = 0;
        let mut kept = Vec::new();
        for r in reads {
            let (was_closed, s) = r.await.expect("a read");
            closed += usize::from(was_closed);
            kept.push(s);
        }
        assert_eq!(closed, 6, "connections past the cap are refused, the others kept");
        let metrics = http_get(http, "/metrics").await.expect("/metrics").1;
        let refused = metrics
            .lines()
            .find(|l| l.starts_with("sipfront_connections_refused_total") && l.contains("reason=\"max_connections\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(refused, Some(6.0), "each refusal counted");
    }
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(
        log.contains("the open-file limit is below transport.max_connections"),
        "the operator is told that 300 descriptors cannot hold 200,000 connections:\n{log}"
    );
}

/// The server process, stopped when the test ends; its log shown if the test failed.
struct Server {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("server log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}
