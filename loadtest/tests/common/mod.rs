//! What the tests share: a live sipfront in this process with N pattern users, and the rules
//! for tests that need an outside program (Kamailio, SIPp).

#![allow(dead_code)] // each test binary uses a different part of this module

use sipfront::config::Config as ServerConfig;
use sipfront::RunningServer;
use sipfront_loadtest::{Config, Report, Scenario};
use std::net::{Ipv4Addr, SocketAddr};

pub const DOMAIN: &str = "example.test";
const LOCALHOST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A sipfront on kernel-chosen loopback ports whose store holds `user0..user{n-1}` @ DOMAIN
/// with passwords `pw{n}`.
pub struct Server {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(users: usize) -> Server {
        use sipfront_proto::digest::{ha1, Algorithm};
        let dir = tempfile::tempdir().expect("a temporary directory");
        {
            let store = sipfront_storage::open("", dir.path()).await.expect("open the store");
            store.add_domain(DOMAIN).await.expect("add the domain");
            let new: Vec<_> = (0..users)
                .map(|n| {
                    let (user, pw) = (format!("user{n}"), format!("pw{n}"));
                    sipfront_storage::NewUser {
                        domain: DOMAIN.into(),
                        display_name: String::new(),
                        ha1_md5: ha1(Algorithm::Md5, &user, DOMAIN, &pw),
                        ha1_sha256: ha1(Algorithm::Sha256, &user, DOMAIN, &pw),
                        username: user,
                    }
                })
                .collect();
            store.add_users(&new).await.expect("add the users");
        }
        Server::start_in(dir).await
    }

    /// A sipfront on the store already in `dir`.
    pub async fn start_in(dir: tempfile::TempDir) -> Server {
        let mut c = ServerConfig::default();
        c.listen.sip = vec![LOCALHOST];
        c.listen.tls = vec![LOCALHOST];
        c.listen.http = LOCALHOST;
        c.server.workers = 2;
        c.server.drain_timeout_secs = 1;
        let server = sipfront::start(&c, dir.path()).await.expect("sipfront starts");
        Server { server, dir }
    }

    pub fn udp(&self) -> SocketAddr {
        self.server.udp[0]
    }

    pub fn tcp(&self) -> SocketAddr {
        self.server.tcp[0]
    }

    pub fn tls(&self) -> SocketAddr {
        self.server.tls[0]
    }

    /// The self-signed certificate sipfront made at start (its names include 127.0.0.1).
    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("tls").join("cert.pem")
    }
}

/// A small bounded run's configuration: `count` transactions at `rate`, short timeouts.
pub fn config(scenario: Scenario, target: SocketAddr, users: usize, rate: f64, count: u64) -> Config {
    let mut c = Config::new(scenario, target);
    c.set_pattern_users(users, 0, "pw{n}");
    c.rate = rate;
    c.bound = sipfront_loadtest::Bound::Count(count);
    c.timeout_ms = 5_000;
    c
}

pub async fn run(config: Config) -> Report {
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let report = sipfront_loadtest::run(config, rx, false).await.expect("the run starts");
    print!("{}", report.table());
    report
}

/// Whether an outside program is here; if not, outside CI the test is skipped (with a line
/// saying so) and under CI it fails, since CI installs it.
pub fn have(program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
        || std::path::Path::new("/usr/sbin").join(program).is_file();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed (Debian package {package}), and CI is set"
        );
        println!("skipped: {program} not installed");
    }
    found
}

/// `shared/reference/kamailio` (Kamailio set up as our peer, and its SIPp scenarios): beside the
/// repository (CI's fresh clone has shared/ next to it), or where the workspace keeps it.
pub fn reference_dir() -> Option<std::path::PathBuf> {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("SIPFRONT_KAMAILIO_REFERENCE").map(std::path::PathBuf::from),
        Some(here.join("../../shared/reference/kamailio")),
        Some(here.join("../shared/reference/kamailio")),
        Some("/work/shared/reference/kamailio".into()),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.join("kamailio.cfg").is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "shared/reference/kamailio not found beside the repository, and CI is set"
        );
        println!("skipped: shared/reference/kamailio not found");
    }
    found
}
