//! Federation (issue 20) with an independent peer: Kamailio 5.6 with its tls module (Debian's
//! `kamailio-tls-modules`) is the partner domain `k.test`, a registrar and proxy for its own
//! users with a mutual-TLS edge (`tests/kamailio/federation.cfg` and `tls.cfg`), and sipfront
//! is `a.test`. Users of each exchange pager-mode MESSAGE both ways, over connections each side
//! opens with its own certificate, and a refusal of either side reaches the other's user.
//!
//! Without Kamailio or its tls module the test is skipped (a failure under CI, where `.ci/run`
//! installs both). `SIPFRONT_LOG_LEVEL=debug` shows a.test's log in the test's output; Kamailio's
//! is printed when the test fails.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::dns::TestDns;
use common::federation::*;
use common::*;
use sipfront_proto::{HeaderName, Message, Method};
use sipfront_storage::{FederationAction, FederationDomain};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kamailio's configuration, with `@NAME@` fields for what each run chooses.
const CONFIG: &str = include_str!("kamailio/federation.cfg");
const TLS_CONFIG: &str = include_str!("kamailio/tls.cfg");

/// How long Kamailio may take to answer its first request after it is started.
const KAMAILIO_START: Duration = Duration::from_secs(15);

/// Where Debian installs Kamailio's modules (`/usr/lib/<multiarch>/kamailio/modules`), if its
/// tls module is among them.
fn kamailio_modules() -> Option<PathBuf> {
    let multiarch = std::fs::read_dir("/usr/lib").ok()?.filter_map(|e| Some(e.ok()?.path()));
    std::iter::once(PathBuf::from("/usr/lib"))
        .chain(multiarch)
        .map(|lib| lib.join("kamailio/modules"))
        .find(|modules| modules.join("tls.so").is_file())
}

/// `template` with every `@NAME@` of `fields` replaced; none may be left.
fn fill(template: &str, fields: &[(&str, String)]) -> String {
    let text = fields.iter().fold(template.to_string(), |t, (name, value)| t.replace(&format!("@{name}@"), value));
    // A field is a word of capitals between two `@`; an address (`user@host`) is not.
    let between: Vec<&str> = text.split('@').collect();
    let inner = between.get(1..between.len().saturating_sub(1)).unwrap_or_default();
    let left = inner.iter().copied().find(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
    assert!(left.is_none(), "@{}@ is not filled in", left.unwrap_or_default());
    text
}

/// A port on 127.0.0.1 free for both UDP and TCP now (Kamailio listens on both).
fn free_sip_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Kamailio as the partner domain `k.test`, running in a directory of its own; stopped when
/// dropped, however the test ends, and its log printed if the test failed.
struct Kamailio {
    child: Child,
    dir: tempfile::TempDir,
    /// k.test's users register and send here, over UDP or TCP.
    sip: SocketAddr,
    /// The federation edge, TLS only.
    tls: SocketAddr,
}

impl Kamailio {
    /// Starts Kamailio with its modules in `modules`, a certificate for `k.test` issued by
    /// `own`, trusting only `partner` (a.test's authority), relaying a.test's requests to
    /// `partner_edge`; returns once it answers.
    async fn start(modules: &Path, own: &Ca, partner: &Ca, partner_edge: SocketAddr) -> Kamailio {
        let dir = tempfile::tempdir().unwrap();
        // Kamailio presents the same certificate as a server and as a client: one naming
        // k.test, as sipfront checks of both.
        own.issue(&["k.test", "sip.k.test"], &dir.path().join("k.test"), false);
        std::fs::write(dir.path().join("a.test-ca.pem"), partner.pem()).unwrap();
        let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, free_sip_port()));
        let tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let fields = [
            ("DIR", dir.path().display().to_string()),
            ("MODULES", format!("{}/", modules.display())),
            ("SIP_PORT", sip.port().to_string()),
            ("TLS_PORT", tls.port().to_string()),
            ("PARTNER_EDGE", partner_edge.to_string()),
        ];
        let config = dir.path().join("kamailio.cfg");
        std::fs::write(&config, fill(CONFIG, &fields)).unwrap();
        std::fs::write(dir.path().join("tls.cfg"), fill(TLS_CONFIG, &fields)).unwrap();

        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        // Debian puts it in /usr/sbin, which is not on every user's PATH.
        let program = if Path::new("/usr/sbin/kamailio").is_file() { "/usr/sbin/kamailio" } else { "kamailio" };
        let mut cmd = Command::new(program);
        // -DD: in the foreground, its workers forked; -E: log to standard error.
        cmd.arg("-f").arg(&config).args(["-DD", "-E", "-m", "64", "-M", "8"]);
        cmd.arg("-Y").arg(dir.path()).arg("-P").arg(dir.path().join("kamailio.pid"));
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let child = cmd.spawn().expect("start kamailio");
        let mut kamailio = Kamailio { child, dir, sip, tls };
        kamailio.until_answering().await;
        kamailio
    }

    /// Waits until Kamailio answers a request (any answer) on its SIP port.
    async fn until_answering(&mut self) {
        let probe = UdpClient::new(self.sip).await;
        let answered = eventually(KAMAILIO_START, async || {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true; // it exited: no use waiting
            }
            probe.send(&Request::options(Transport::Udp, probe.local()).to_bytes()).await;
            probe.recv(Duration::from_millis(300)).await.is_some_and(|(bytes, _)| status_of(&bytes).is_some())
        })
        .await;
        let running = matches!(self.child.try_wait(), Ok(None));
        assert!(answered && running, "kamailio answers on {} within {KAMAILIO_START:?}", self.sip);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// A k.test user's phone, registered at Kamailio over TCP (no authentication there).
    async fn online(&self, user: &str) -> Phone {
        let mut phone = Phone::Tcp(SipStream::tcp(self.sip).await);
        let req = in_domain(Request::register(&phone, user).set("Expires", "300"), "k.test");
        let r = phone.request(&req).await;
        assert_eq!(r.status(), Some(200), "{user}@k.test registers at kamailio");
        phone
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        use rustix::process::{kill_process, Pid, Signal};
        // On SIGTERM Kamailio's main process stops its workers and exits. It stays in the
        // test's process group, so that a test runner stopping the test stops Kamailio too.
        if let Some(main) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(main, Signal::TERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                // Hung: its workers (their ids are theirs while it lives to reap them), then it.
                for worker in children_of(self.child.id()) {
                    let _ = kill_process(worker, Signal::KILL);
                }
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("kamailio's log ({}):\n{}", self.dir.path().display(), self.log());
        }
    }
}

/// The processes whose parent is `parent`, from `/proc/<pid>/stat` (its fourth field, after
/// the command name in parentheses).
fn children_of(parent: u32) -> Vec<rustix::process::Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let child = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        if ppid != parent {
            return None;
        }
        rustix::process::Pid::from_raw(pid)
    };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter_map(child).collect()
}

/// With `SIPFRONT_LOG_LEVEL` set (`debug`), a.test's log goes to the test's output.
fn log_to_test_output() {
    if let Ok(level) = std::env::var("SIPFRONT_LOG_LEVEL") {
        let filter = tracing_subscriber::EnvFilter::new(level);
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// The next final response `phone` receives (provisional ones are passed over).
async fn final_response(phone: &mut Phone) -> Message {
    loop {
        let m = phone.recv().await;
        assert!(m.status().is_some(), "expected a response, got {:?}", m.method());
        if m.status().is_some_and(|s| s >= 200) {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kamailio_as_a_partner_domain_exchanges_messages_both_ways() {
    if !require_program("kamailio", "kamailio") {
        return;
    }
    let Some(modules) = kamailio_modules() else {
        skip("kamailio's tls module not installed (kamailio-tls-modules)");
        return;
    };
    log_to_test_output();
    let (ca_a, ca_k) = (Ca::new("a.test"), Ca::new("k.test"));
    // No DNS record anywhere: a.test reaches k.test by its explicit entry.
    let dns = TestDns::start(Vec::new()).await;
    let a = Org::start("a.test", &ca_a, &[&ca_k], dns.addr, &["alice"]).await;
    let kamailio = Kamailio::start(&modules, &ca_k, &ca_a, a.server.tls_addr()).await;
    let k_edge = kamailio.tls.to_string();
    let entry = FederationDomain { domain: "k.test".into(), action: FederationAction::Allow, via: Some(k_edge) };
    a.store.set_federation_domain(&entry).await.unwrap();
    a.settle().await;
    let mut alice = a.online("alice").await;
    let mut kate = kamailio.online("kate").await;

    // k.test -> a.test first, so that the connection is Kamailio's own: it presents k.test's
    // certificate as a TLS client, which sipfront must find naming the From domain.
    let hello = message(&kate, "kate@k.test", "alice@a.test", "hello from k.test");
    kate.send(&hello.to_bytes()).await;
    let got = alice.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"hello from k.test");
    assert!(header(&got, HeaderName::From).contains("kate@k.test"), "the sender as she is");
    let vias = headers(&got, HeaderName::Via).join(", ");
    assert!(vias.contains(&format!("SIP/2.0/TLS {}", kamailio.tls)), "through Kamailio's edge: {vias}");
    alice.answer(&got, 200, "alice1").await;
    assert_eq!(final_response(&mut kate).await.status(), Some(200), "alice's 200 back through Kamailio");

    // a.test -> k.test: to Kamailio's edge over TLS, looked up in its location table.
    let reply = message(&alice, "alice@a.test", "kate@k.test", "hello from a.test");
    alice.send(&reply.to_bytes()).await;
    let got = kate.expect_request(Method::Message).await;
    assert_eq!(got.body(), b"hello from a.test");
    assert!(header(&got, HeaderName::From).contains("alice@a.test"), "the sender as she is");
    let vias = headers(&got, HeaderName::Via).join(", ");
    assert!(vias.contains(&format!("SIP/2.0/TLS {}", a.server.tls_addr())), "through a.test's edge: {vias}");
    kate.answer(&got, 200, "kate1").await;
    assert_eq!(final_response(&mut alice).await.status(), Some(200), "kate's 200 back to alice");
    assert_eq!(dns.queries("_sipfederationtls._tcp.k.test"), 0, "the explicit entry, not DNS");

    // Kamailio's refusal reaches alice: k.test has no such user.
    let r = send(&mut alice, "alice@a.test", "nobody@k.test").await;
    assert_eq!(r.status(), Some(404), "Kamailio's answer, relayed: {:?}", r.reason());

    // sipfront's refusal reaches kate: alice no longer federates.
    a.store.set_user_federation("alice@a.test", false).await.unwrap();
    a.settle().await;
    let refused = message(&kate, "kate@k.test", "alice@a.test", "still there?");
    kate.send(&refused.to_bytes()).await;
    let r = final_response(&mut kate).await;
    assert_eq!(r.status(), Some(403), "refused at a.test: {:?}", r.reason());
    assert!(header(&r, HeaderName::Warning).contains("sipfront"), "sipfront's Warning, relayed");
    assert!(tokio::time::timeout(QUIET, alice.recv()).await.is_err(), "nothing reached alice");
    assert!(a.server.metric("sipfront_federation_requests_total").await >= 3.0);
}
