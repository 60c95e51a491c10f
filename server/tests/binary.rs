//! The `sipfront` binary as an operator runs it: `sipfront config`, a bad environment value,
//! and `sipfront serve` with no arguments in a fresh directory on the default ports.

mod common;

use common::{Request, Transport, UdpClient};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The binary with none of the caller's `SIPFRONT_*` variables.
fn sipfront(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipfront"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SIPFRONT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn config_prints_toml() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cmd = sipfront(dir.path());
    cmd.arg("config")
        .env("SIPFRONT_TRANSACTION_T1_MS", "250")
        .env("SIPFRONT_AUTH_SECRET", "s3cret-auth")
        .env("SIPFRONT_DATABASE_URL", "postgres://sipfront:hunter2@db.invalid/sipfront");
    let (status, out, err) = common::run_tool(cmd, Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {err}");
    // Secrets are not printed (issue 17, finding 15).
    assert!(!out.contains("s3cret-auth") && !out.contains("hunter2"), "{out}");
    assert!(out.contains("postgres://sipfront:<redacted>@db.invalid/sipfront"), "{out}");
    let parsed: toml::Value = toml::from_str(&out).unwrap_or_else(|e| panic!("not TOML ({e}):\n{out}"));
    assert_eq!(parsed["transaction"]["t1_ms"].as_integer(), Some(250), "the environment applied");
    assert!(parsed["listen"]["sip"].as_array().is_some_and(|a| !a.is_empty()), "{out}");
    assert!(parsed["listen"]["http"].as_str().is_some(), "{out}");
    assert!(!dir.path().join("data").exists(), "`config` creates nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_environment_value_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for sub in ["config", "serve"] {
        let mut cmd = sipfront(dir.path());
        cmd.arg(sub).env("SIPFRONT_TRANSACTION_T1_MS", "fast");
        let (status, _, err) = common::run_tool(cmd, Duration::from_secs(10)).await;
        assert!(!status.success(), "`{sub}` refuses it");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {err:?}");
        assert!(lines[0].contains("SIPFRONT_TRANSACTION_T1_MS") && lines[0].contains("fast"), "{err:?}");
    }
}

/// Fails with a clear message if another process has a default port.
fn assert_default_ports_free() {
    let taken = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            panic!("{what} is taken on this machine ({e}); this test needs the default ports 5060, 5061, 5443 and 9090 free");
        }
    };
    taken("UDP 5060", std::net::UdpSocket::bind("0.0.0.0:5060").map(drop));
    taken("TCP 5060", std::net::TcpListener::bind("0.0.0.0:5060").map(drop));
    taken("TCP 5061", std::net::TcpListener::bind("0.0.0.0:5061").map(drop));
    taken("TCP 5443", std::net::TcpListener::bind("0.0.0.0:5443").map(drop));
    taken("TCP 127.0.0.1:9090", std::net::TcpListener::bind("127.0.0.1:9090").map(drop));
}

/// Retries `attempt` until it succeeds or `limit` passes (the server is starting).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut attempt: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(t) = attempt().await {
            return Some(t);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The child's exit status, if it exits within `limit`.
async fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_no_arguments_starts_on_the_default_ports_and_stops_on_sigterm() {
    assert_default_ports_free();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
    let mut child = sipfront(dir.path())
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start sipfront serve");
    let log_text = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();

    let cert = dir.path().join("data").join("tls").join("cert.pem");
    let answered = async move {
        let udp: SocketAddr = "127.0.0.1:5060".parse().expect("an address");
        let options = eventually(Duration::from_secs(10), || async {
            let client = UdpClient::new(udp).await;
            client.send(&Request::options(Transport::Udp, client.local()).to_bytes()).await;
            let (bytes, _) = client.recv(Duration::from_millis(200)).await?;
            common::parse(&bytes).status()
        })
        .await;
        assert_eq!(options, Some(200), "UDP OPTIONS on 5060");

        assert!(cert.is_file(), "a self-signed certificate in ./data/tls/cert.pem");
        let tls: SocketAddr = "127.0.0.1:5061".parse().expect("an address");
        let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect to 5061");
        let name = rustls::pki_types::ServerName::IpAddress(tls.ip().into());
        tokio::time::timeout(common::WAIT, common::tls_connector(&cert).connect(name, tcp))
            .await
            .expect("TLS handshake in time")
            .expect("TLS handshake on 5061 with the certificate in ./data");

        let http: SocketAddr = "127.0.0.1:9090".parse().expect("an address");
        assert_eq!(common::http_get(http, "/healthz").await.ok().map(|r| r.0), Some(200), "/healthz on 9090");
    };
    // Whatever happens above, the server must not outlive the test.
    let outcome = tokio::spawn(answered).await;
    let kill = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("run kill");
    assert!(kill.success(), "SIGTERM sent");
    let exited = exit_within(&mut child, Duration::from_secs(12)).await;
    if let Err(panic) = outcome {
        let _ = child.kill();
        panic!("{panic:?}\nserver log:\n{}", log_text());
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no exit within the drain timeout after SIGTERM\n{}", log_text())
    });
    assert!(status.success(), "exit 0 after SIGTERM, got {status}\n{}", log_text());
}

#[test]
fn db_migrate_creates_the_schema_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_sipfront"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["db", "migrate"])
            .env_remove("SIPFRONT_DATABASE_URL")
            .output()
            .expect("run sipfront db migrate");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("schema up to date"));
    }
    assert!(dir.path().join("sipfront.db").exists());
}

/// A first `serve` on a new data directory and CLI commands started with it all succeed: the
/// store is migrated once, under a lock, and every command waits for it (issue 18, item 3).
#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_racing_a_first_start_all_succeed() {
    for round in 0..5 {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        let mut server = sipfront(dir.path())
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--sip-addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env("SIPFRONT_LISTEN_DIRECTORY", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipfront serve");
        let adds: Vec<_> = (0..3)
            .map(|i| {
                let mut cmd = sipfront(dir.path());
                cmd.arg("--data-dir").arg(&data).args([
                    "user",
                    "add",
                    &format!("u{i}@example.test"),
                    "--password-stdin",
                ]);
                cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
                let mut child = cmd.spawn().expect("start sipfront user add");
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(b"secret\n").expect("the password");
                child
            })
            .collect();
        let outcomes: Vec<_> = adds.into_iter().map(|c| c.wait_with_output().expect("user add ends")).collect();
        let _ = server.kill();
        let _ = server.wait();
        for out in outcomes {
            assert!(out.status.success(), "round {round}: user add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
