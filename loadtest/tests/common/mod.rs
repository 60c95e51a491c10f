//! What the tests share: a live sipfront in this process with N pattern users, and where the
//! tests that need an outside program (Kamailio, SIPp) find it.

#![allow(dead_code)] // each test binary uses a different part of this module

use sipfront::config::Config as ServerConfig;
use sipfront::RunningServer;
use sipfront_loadtest::{Config, Report, Scenario, TransportKind};
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
        Server::start_in(provisioned(users).await).await
    }

    /// A sipfront on the store already in `dir`.
    pub async fn start_in(dir: tempfile::TempDir) -> Server {
        Server::start_with(dir, |_| {}).await
    }

    /// The first member of a new pool, its store holding `users` users (see [`provisioned`]).
    pub async fn start_member(users: usize, id: &str) -> Server {
        Server::start_with(provisioned(users).await, |c| pool_member(c, id)).await
    }

    /// Another member of `first`'s pool, on its store.
    pub async fn join(first: &Server, id: &str) -> Server {
        let url = format!("sqlite://{}", first.dir.path().join("sipfront.db").display());
        let dir = tempfile::tempdir().expect("a temporary directory");
        Server::start_with(dir, |c| {
            pool_member(c, id);
            c.database.url = url;
        })
        .await
    }

    /// A sipfront on the store in `dir` (unless `configure` names another), configured so.
    pub async fn start_with(dir: tempfile::TempDir, configure: impl FnOnce(&mut ServerConfig)) -> Server {
        let mut c = ServerConfig::default();
        c.listen.sip = vec![LOCALHOST];
        c.listen.tls = vec![LOCALHOST];
        c.listen.http = LOCALHOST;
        c.listen.directory = vec![LOCALHOST];
        c.server.workers = 2;
        c.server.drain_timeout_secs = 1;
        configure(&mut c);
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

    /// Where clients over `transport` reach it.
    pub fn addr(&self, transport: TransportKind) -> SocketAddr {
        match transport {
            TransportKind::Udp => self.udp(),
            TransportKind::Tcp => self.tcp(),
            TransportKind::Tls => self.tls(),
        }
    }

    /// Gives every user the contact list `c`'s resource-list subscriptions stand for (what
    /// `--provision` imports), straight into the store.
    pub async fn contact_lists(&self, c: &Config) {
        let store = sipfront_storage::open("", self.dir.path()).await.expect("open the store");
        let aor = |i: usize| format!("user{i}@{DOMAIN}");
        for (owner, contacts) in sipfront_loadtest::scenario::contact_lists(c) {
            for contact in contacts {
                let contact = sipfront_storage::Contact {
                    owner: aor(owner),
                    contact: aor(contact),
                    display_name: String::new(),
                    group: String::new(),
                };
                store.add_contact(&contact).await.expect("add the contact");
            }
        }
    }

    /// The self-signed certificate sipfront made at start (its names include 127.0.0.1).
    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("tls").join("cert.pem")
    }
}

/// A data directory whose store holds `user0..user{n-1}` @ DOMAIN with passwords `pw{n}`.
pub async fn provisioned(users: usize) -> tempfile::TempDir {
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
    dir
}

/// Pool settings for tests: quick heartbeats, a short member timeout, one shared secret.
fn pool_member(c: &mut ServerConfig, id: &str) {
    c.pool.member_id = id.into();
    c.pool.heartbeat_ms = 100;
    c.pool.member_timeout_ms = 600;
    c.pool.secret = "the pool's own secret".into();
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

/// The user model over `transport`, 10 minutes of it a second for 3 s, 3 contacts each.
pub fn model_config(target: SocketAddr, transport: TransportKind, users: usize) -> Config {
    let mut c = config(Scenario::Model, target, users, 1.0, 1);
    c.transport = transport;
    c.watch = 3;
    c.bound = sipfront_loadtest::Bound::Seconds(3.0);
    c.model.time_scale = 600.0;
    c
}

/// What half an hour of the model (a [`model_config`] run of 20 users) must have done: 60
/// subscriptions; 40 registrations (every 15 min), 60 subscription refreshes (every 30 min),
/// 40 PUBLISHes (4/h), 20 IM sessions of 10 MESSAGEs (2/h), 25 fetches (60/day), each
/// MESSAGE delivered.
pub fn assert_half_an_hour_of_the_model(r: &Report, what: &str) {
    let ok = |kind: &str| r.transactions.get(kind).map_or(0, |t| t.ok);
    assert_eq!(ok("subscribe"), 60, "{what}");
    assert_eq!((ok("reregister"), ok("resubscribe"), ok("publish")), (40, 60, 40), "{what}");
    assert_eq!((ok("message"), ok("fetch")), (200, 25), "{what}");
    assert_eq!((r.planned, r.succeeded, r.failed), (365, 365, 0), "{what}");
    assert_eq!(r.deliveries, 200, "{what}: every MESSAGE reached its contact");
}

/// A run of the `sipfront-load` binary: what it printed, and its JSON report.
pub struct BinaryRun {
    pub stdout: String,
    pub json: String,
}

impl BinaryRun {
    pub fn report(&self) -> Report {
        serde_json::from_str(&self.json).expect("the report parses")
    }
}

/// Runs `sipfront-load ARGS --json FILE` (ARGS split at white space), prints what it said and
/// requires that it succeeded.
pub fn sipfront_load(args: &str) -> BinaryRun {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let json = dir.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipfront-load"))
        .args(args.split_whitespace())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run sipfront-load");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sipfront-load {args}");
    BinaryRun { stdout, json: std::fs::read_to_string(&json).expect("the JSON report") }
}

/// [`sipfront_load`] off the async runtime (a server in this process must go on answering).
pub async fn sipfront_load_async(args: String) -> BinaryRun {
    tokio::task::spawn_blocking(move || sipfront_load(&args)).await.expect("the sipfront-load task")
}

pub async fn run(config: Config) -> Report {
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let report = sipfront_loadtest::run(config, rx, false).await.expect("the run starts");
    print!("{}", report.table());
    report
}

/// `shared/reference/kamailio` (Kamailio set up as our peer, and its SIPp scenarios):
/// `SIPFRONT_KAMAILIO_REFERENCE`, or `../shared` beside the repository (where CI's fresh clone
/// has it). Nothing else is looked at: a test reaches nothing outside the repository and
/// `../shared`. When it is not there the test is skipped (a failure under CI).
pub fn reference_dir() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("SIPFRONT_KAMAILIO_REFERENCE") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => sipfront_storage::testing::workspace_root().join("../shared/reference/kamailio"),
    };
    let found = dir.join("kamailio.cfg").is_file();
    if !found {
        sipfront_storage::testing::skip(&format!("no Kamailio reference set-up ({} not found)", dir.display()));
    }
    found.then_some(dir)
}
