//! Real SIP tools from Debian against a real server: sipsak's OPTIONS probe over UDP and TCP,
//! and a bounded SIPp OPTIONS load of 10,000 requests that must all succeed. A missing tool
//! skips the test with a message, except in CI, where it fails.

mod common;

use common::{free_udp_port, require_program, run_tool, screen, sipp_column, TestServer, DOMAIN};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn sipsak_probe_over_udp_and_tcp() {
    if !require_program("sipsak", "sipsak") {
        return;
    }
    let s = TestServer::start().await;
    for (transport, addr) in [("udp", s.udp_addr()), ("tcp", s.tcp_addr())] {
        let mut cmd = Command::new("sipsak");
        // -vv prints the reply, so that a failure shows what the server said.
        cmd.args(["-vv", "-E", transport, "-s", &format!("sip:probe@{addr}")]);
        let (status, out, err) = run_tool(cmd, Duration::from_secs(30)).await;
        assert!(status.success(), "sipsak over {transport}: {status}\n{out}\n{err}");
        assert!(out.contains("200 OK") || out.contains("SIP/2.0 200"), "sipsak saw the 200:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sipp_sends_10000_options_and_every_one_succeeds() {
    if !require_program("sipp", "sip-tester") {
        return;
    }
    let s = TestServer::start().await;
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/options.xml");
    let stats = s.dir.path().join("options-stats.csv");
    let local_port = free_udp_port().to_string();
    let mut cmd = Command::new("sipp");
    cmd.current_dir(s.dir.path()).arg(s.udp_addr().to_string()).args(["-sf", scenario]).args([
        "-m",
        "10000", // calls in all, then stop
        "-r",
        "5000", // new calls per second
        "-l",
        "500", // at most this many outstanding
        "-timeout",
        "60s",
        "-timeout_error", // a hung run fails instead of passing
        "-nostdin",
        "-i",
        "127.0.0.1",
        "-p",
        &local_port,
    ]);
    cmd.args(["-trace_stat", "-fd", "1", "-stf"]).arg(&stats);
    let (status, out, err) = run_tool(cmd, Duration::from_secs(90)).await;
    let csv = std::fs::read_to_string(&stats).unwrap_or_default();
    let (ok, failed) = (sipp_column(&csv, "SuccessfulCall(C)"), sipp_column(&csv, "FailedCall(C)"));
    let screen = screen(&out);
    assert_eq!(status.code(), Some(0), "SIPp exit code 0 means every call succeeded\n{screen}\n{err}");
    assert_eq!((ok, failed), (Some(10_000), Some(0)), "SIPp statistics: successful and failed calls\n{screen}");
    s.assert_answers_options().await;
}

/// Real SIP peers on both ends of the proxy: a SIPp caller (407 challenge, INVITE with
/// credentials, ACK, an in-dialog MESSAGE and BYE through our Record-Route) and a SIPp callee
/// registered as Bob's contact. 50 sessions, every one completes on both sides.
#[tokio::test(flavor = "multi_thread")]
async fn sipp_sessions_run_through_the_proxy_on_both_sides() {
    if !require_program("sipp", "sip-tester") {
        return;
    }
    let s =
        TestServer::with_users(&common::Backend::Sqlite, &[("alice", "wonderland"), ("bob", "builder")], |_| {}).await;
    let (uac_port, uas_port) = (free_udp_port().to_string(), free_udp_port().to_string());
    // Bob's binding is the SIPp callee.
    let mut bob = s.udp_client().await;
    common::register(&mut bob, "bob", "builder", Some(&format!("<sip:bob@127.0.0.1:{uas_port}>"))).await;
    let csv = s.dir.path().join("callers.csv");
    std::fs::write(&csv, "SEQUENTIAL\nalice;wonderland;bob\n").expect("write callers.csv");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios");
    let sipp = |scenario: &str, port: &str, stats: &str| {
        let mut cmd = Command::new("sipp");
        cmd.current_dir(s.dir.path()).arg(s.udp_addr().to_string()).arg("-sf").arg(format!("{dir}/{scenario}"));
        cmd.args(["-m", "50", "-timeout", "60s", "-timeout_error", "-nostdin", "-i", "127.0.0.1", "-p", port]);
        cmd.args(["-trace_stat", "-fd", "1", "-stf"]).arg(s.dir.path().join(stats));
        cmd
    };
    let uas = tokio::spawn(run_tool(sipp("invite_uas.xml", &uas_port, "uas.csv"), Duration::from_secs(90)));
    let mut uac = sipp("invite_uac.xml", &uac_port, "uac.csv");
    uac.arg("-inf").arg(&csv).args(["-r", "10", "-l", "20"]);
    let (status, out, err) = run_tool(uac, Duration::from_secs(90)).await;
    assert_eq!(status.code(), Some(0), "the SIPp caller\n{}\n{err}", screen(&out));
    let (uas_status, uas_out, uas_err) = uas.await.expect("the callee's task");
    assert_eq!(uas_status.code(), Some(0), "the SIPp callee\n{}\n{uas_err}", screen(&uas_out));
    for stats in ["uac.csv", "uas.csv"] {
        let csv = std::fs::read_to_string(s.dir.path().join(stats)).unwrap_or_default();
        assert_eq!(
            (sipp_column(&csv, "SuccessfulCall(C)"), sipp_column(&csv, "FailedCall(C)")),
            (Some(50), Some(0)),
            "{stats}"
        );
    }
    assert_eq!(s.metric("sipfront_proxied_invites_total").await, 50.0);
}

/// Two real baresip clients (Debian's `baresip-core`, with its presence module) on our server
/// over UDP: both register, each publishes its presence and watches the other, Alice sends Bob
/// a MESSAGE; Bob sees Alice come online and, when she quits (un-PUBLISH), go offline.
#[tokio::test(flavor = "multi_thread")]
async fn baresip_clients_register_publish_watch_and_message() {
    if !require_program("baresip", "baresip-core") {
        return;
    }
    let s = TestServer::with_users(&common::Backend::Sqlite, &[("alice", "wonderland"), ("bob", "builder")], |c| {
        c.presence.notify_interval_ms = 200;
    })
    .await;
    // Where Debian's baresip-core keeps its modules: /usr/lib/baresip or /usr/lib/<arch>/baresip.
    let arch_dirs = std::fs::read_dir("/usr/lib").into_iter().flatten().flatten().map(|e| e.path());
    let modules = std::iter::once("/usr/lib".into())
        .chain(arch_dirs)
        .map(|lib: std::path::PathBuf| lib.join("baresip/modules"))
        .find(|d| d.join("presence.so").exists())
        .expect("baresip's presence module (Debian package baresip-core)");
    let modules = modules.display();
    // baresip listens on the port given and on the next one (TLS): pick two free in a row.
    let free_pair = || loop {
        let p = free_udp_port();
        let both = [p, p + 1].iter().all(|q| {
            std::net::TcpListener::bind(("127.0.0.1", *q)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", *q)).is_ok()
        });
        if both && p < 65_000 {
            return p;
        }
    };
    let server = s.udp_addr();
    let setup = |user: &str, password: &str, other: &str| {
        let dir = s.dir.path().join(format!("baresip-{user}"));
        std::fs::create_dir_all(&dir).expect("a baresip directory");
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{}\nsip_trans_def udp\ndns_server 127.0.0.1:53\nmodule_path {modules}\n\
             module g711.so\nmodule ausine.so\nmodule_app account.so\nmodule_app contact.so\nmodule_app menu.so\n\
             module_app presence.so\naudio_player ausine,\naudio_source ausine,\n",
            free_pair()
        );
        std::fs::write(dir.join("config"), config).expect("config");
        let account =
            format!("<sip:{user}@{DOMAIN}>;auth_pass={password};outbound=\"sip:{server}\";regint=600;pubint=600\n");
        std::fs::write(dir.join("accounts"), account).expect("accounts");
        std::fs::write(dir.join("contacts"), format!("\"{other}\" <sip:{other}@{DOMAIN}>;presence=p2p\n"))
            .expect("contacts");
        dir
    };
    let (bob_dir, alice_dir) = (setup("bob", "builder", "alice"), setup("alice", "wonderland", "bob"));
    let mut bob = Command::new("baresip");
    bob.arg("-f").arg(&bob_dir).args(["-t", "12"]);
    let bob = tokio::spawn(run_tool(bob, Duration::from_secs(30)));
    // Alice starts once Bob is registered and watching her (his contact has presence=p2p), so
    // that he sees her come online and receives her MESSAGE.
    let ready = common::eventually(Duration::from_secs(8), async || {
        !s.bindings_of("bob").is_empty() && s.metric("sipfront_subscriptions").await >= 1.0
    })
    .await;
    assert!(ready, "Bob's baresip registered and subscribed to Alice");
    let mut alice = Command::new("baresip");
    alice.arg("-f").arg(&alice_dir).args(["-t", "6", "-e", &format!("/message sip:bob@{DOMAIN} hello-from-alice")]);
    let (_, alice_out, alice_err) = run_tool(alice, Duration::from_secs(30)).await;
    let (_, bob_out, bob_err) = bob.await.expect("bob's task");
    let clean = |s: &str| s.replace('\u{1b}', "");
    let (alice_out, bob_out) = (clean(&alice_out), clean(&bob_out));
    assert!(alice_out.contains("200 OK (sipfront"), "Alice registered:\n{alice_out}\n{alice_err}");
    assert!(bob_out.contains("200 OK (sipfront"), "Bob registered:\n{bob_out}\n{bob_err}");
    let online = bob_out.find("Online").unwrap_or_else(|| panic!("Bob saw Alice online:\n{bob_out}"));
    assert!(bob_out[online..].contains("Offline"), "then offline when she quit:\n{bob_out}");
    let text = s.http_get("/metrics").await.1;
    assert!(
        metric_of(&text, "sipfront_messages_total{result=\"200\"}") >= 1.0,
        "the MESSAGE was delivered:\n{bob_out}"
    );
    assert!(metric_of(&text, "sipfront_publish_total{result=\"created\"}") >= 2.0, "both published");
    assert!(metric_of(&text, "sipfront_notify_total{result=\"200\"}") >= 2.0, "NOTIFYs acknowledged");
}

fn metric_of(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}
