//! Directory searches through the HTTPS endpoint (issue 21: OCS plans for 27 searches/s at
//! peak; the aim is far above 100/s, with p99 under 10 ms at 1,000/s): a sipfront in this
//! process with 100,000 users in its SQLite store, and clients on keep-alive TLS connections
//! doing what a real one does: a request, its 401, then Digest (RFC 7616, qop=auth) with the
//! nonce-count going up, a new connection whenever the server closes one (every 100 requests).
//! Each answer carries the presence of each entry, as the callers' rules allow.
//!
//!   cargo bench -p sipfront --bench directory_https
//!
//! Two runs: open loop at `DIRECTORY_BENCH_RATE` searches/s (default 1,000) for
//! `DIRECTORY_BENCH_SECS` seconds (default 10), latency counted from when each search was due
//! (a late answer delays the next search on its connection, and that wait counts); then closed
//! loop, as fast as `DIRECTORY_BENCH_CONNECTIONS` connections (default 16) go, for the same
//! time. `DIRECTORY_BENCH_USERS` sets the users (default 100,000). Server and clients share
//! this machine's cores.

use sipfront_proto::digest::{ha1, response, Algorithm, Challenge};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::param;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DOMAIN: &str = "example.test";
const PASSWORD: &str = "bench password";
/// Callers: fewer than `auth.max_users_per_ip` (all come from 127.0.0.1).
const CALLERS: usize = 8;

#[rustfmt::skip]
const FIRST: &[&str] = &[
    "Alice", "Alan", "Albert", "Alexandra", "Amélie", "Ana", "Anders", "Anna", "Antoine", "Barbara", "Beatriz", "Benoît",
    "Björn", "Carlos", "Caroline", "Chloé", "Christian", "Daniel", "David", "Dorota", "Élodie", "Emma", "Erik", "Fatima",
    "François", "Gábor", "Hannah", "Hélène", "Ingrid", "Isabel", "Jakub", "James", "Jan", "José", "Julia", "Jürgen",
    "Karin", "Lars", "Laura", "Marco", "María", "Mark", "Martin", "Michael", "Nils", "Olga", "Oskar", "Paul", "Pedro",
    "Peter", "Rachel", "René", "Sarah", "Søren", "Thomas", "Zoë",
];

#[rustfmt::skip]
const LAST: &[&str] = &[
    "Andersson", "Bauer", "Becker", "Bernard", "Brown", "Castro", "Dubois", "Fischer", "García", "González", "Hansen",
    "Hoffmann", "Jansen", "Johansson", "Johnson", "Jones", "Kowalski", "Larsen", "Laurent", "Lefèvre", "López", "Martin",
    "Meyer", "Moreau", "Müller", "Nielsen", "Nowak", "Olsen", "Petit", "Pérez", "Richter", "Rossi", "Russo", "Sánchez",
    "Schmidt", "Schneider", "Smith", "Svensson", "Szabó", "Taylor", "Thomas", "Wagner", "Weber", "Williams", "Åberg",
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let users = env_or("DIRECTORY_BENCH_USERS", 100_000) as usize;
    let rate = env_or("DIRECTORY_BENCH_RATE", 1000);
    let secs = env_or("DIRECTORY_BENCH_SECS", 10);
    let connections = env_or("DIRECTORY_BENCH_CONNECTIONS", 16) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    rt.block_on(run(users, rate, Duration::from_secs(secs), connections));
}

async fn run(users: usize, rate: u64, run_for: Duration, connections: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    provision(dir.path(), users).await;
    println!("{users} users provisioned in {:.1} s", started.elapsed().as_secs_f64());
    let mut config = sipfront::config::Config::default();
    let local: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    config.listen.sip = vec![local];
    config.listen.tls = vec![local];
    config.listen.http = local;
    config.listen.directory = vec![local];
    let started = Instant::now();
    let server = sipfront::start(&config, dir.path()).await.expect("the server starts");
    println!("server up in {:.1} s", started.elapsed().as_secs_f64());
    let target = Target {
        addr: server.directory_search[0],
        connector: connector(&dir.path().join("tls").join("cert.pem")),
        host: format!("{DOMAIN}:{}", server.directory_search[0].port()),
    };
    let target = Arc::new(target);

    println!("\n| run | searches | searches/s | p50 | p99 | p99.9 | max | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let per_connection = Duration::from_secs_f64(connections as f64 / rate as f64);
    let open = load(&target, connections, Some(per_connection), run_for).await;
    open.print(&format!("open loop, {rate}/s"));
    let closed = load(&target, connections, None, run_for).await;
    closed.print(&format!("closed loop, {connections} connections"));
    server.shutdown().await;
}

/// The store: one domain, `n` users named like people, all with [`PASSWORD`].
async fn provision(dir: &Path, n: usize) {
    let store = sipfront_storage::open("", dir).await.expect("open the store");
    store.add_domain(DOMAIN).await.expect("add the domain");
    let mut rng = fastrand::Rng::with_seed(21);
    let mut batch = Vec::with_capacity(5000);
    for i in 0..n {
        let (first, last) = (FIRST[rng.usize(..FIRST.len())], LAST[rng.usize(..LAST.len())]);
        let user = format!("user{i}");
        batch.push(sipfront_storage::NewUser {
            display_name: format!("{first} {last}"),
            ha1_md5: ha1(Algorithm::Md5, &user, DOMAIN, PASSWORD),
            ha1_sha256: ha1(Algorithm::Sha256, &user, DOMAIN, PASSWORD),
            username: user,
            domain: DOMAIN.into(),
        });
        if batch.len() == 5000 || i + 1 == n {
            store.add_users(&batch).await.expect("add the users");
            batch.clear();
        }
    }
}

struct Target {
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    host: String,
}

fn connector(cert: &Path) -> tokio_rustls::TlsConnector {
    let config = sipfront::transport::tls::client_trusting(&cert.to_string_lossy()).expect("the server's certificate");
    tokio_rustls::TlsConnector::from(config)
}

/// A query as a search box sends them: a first name's first 1 to 3 letters, or a first name
/// and the start of a last name.
fn query(rng: &mut fastrand::Rng) -> String {
    let first = ascii(FIRST[rng.usize(..FIRST.len())]).to_ascii_lowercase();
    let last = ascii(LAST[rng.usize(..LAST.len())]).to_ascii_lowercase();
    match rng.u8(..4) {
        0 => first[..1].to_string(),
        1 => first[..2.min(first.len())].to_string(),
        2 => first[..3.min(first.len())].to_string(),
        _ => format!("{first}+{}", &last[..2.min(last.len())]),
    }
}

/// ASCII letters of a name (the query a keyboard without accents types; the index folds them).
fn ascii(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphabetic).collect()
}

#[derive(Default)]
struct Results {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Results {
    fn print(mut self, label: &str) {
        self.latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len().max(1)) - 1;
            self.latencies.get(i).copied().unwrap_or_default()
        };
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {label} | {} | {:.0} | {} | {} | {} | {} | {} |",
            self.latencies.len(),
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(0.999)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.errors
        );
    }
}

/// `connections` clients for `run_for`: each sends a search every `every` (open loop), or the
/// next as soon as the last is answered (`None`).
async fn load(target: &Arc<Target>, connections: usize, every: Option<Duration>, run_for: Duration) -> Results {
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let target = target.clone();
            tokio::spawn(async move { client(&target, i, every, started, run_for).await })
        })
        .collect();
    let mut all = Results::default();
    for t in tasks {
        let r = t.await.expect("a client task");
        all.latencies.extend(r.latencies);
        all.errors += r.errors;
    }
    all.elapsed = started.elapsed();
    all
}

/// One client's connection (and its successors): searches until `run_for` has passed.
async fn client(target: &Target, i: usize, every: Option<Duration>, started: Instant, run_for: Duration) -> Results {
    let caller = format!("user{}", i % CALLERS);
    let mut rng = fastrand::Rng::with_seed(i as u64);
    let mut out = Results::default();
    // Spread the connections' first searches over one interval.
    let mut due = started + every.map_or(Duration::ZERO, |e| e.mul_f64(i as f64 / 16.0));
    let mut conn: Option<Connection> = None;
    while started.elapsed() < run_for {
        if every.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        let begin = if every.is_some() { due } else { Instant::now() };
        let path = format!("/directory/v1/search?q={}&limit=20", query(&mut rng));
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(target, &caller, &path).await {
                Some(c) => conn.insert(c),
                None => {
                    out.errors += 1;
                    due += every.unwrap_or_default();
                    continue;
                }
            },
        };
        match c.search(target, &caller, &path).await {
            Some((200, keep)) => {
                out.latencies.push(begin.elapsed());
                if !keep {
                    conn = None;
                }
            }
            _ => {
                out.errors += 1;
                conn = None;
            }
        }
        due += every.unwrap_or_default();
    }
    out
}

struct Connection {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    challenge: String,
    nc: u32,
}

impl Connection {
    /// Connects and reads a challenge (a first request without credentials, answered 401).
    async fn open(target: &Target, _caller: &str, path: &str) -> Option<Connection> {
        let tcp = TcpStream::connect(target.addr).await.ok()?;
        let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
        let tls = target.connector.connect(name, tcp).await.ok()?;
        let mut c = Connection { tls, challenge: String::new(), nc: 0 };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", target.host);
        c.tls.write_all(req.as_bytes()).await.ok()?;
        let (status, head, _) = read(&mut c.tls).await?;
        if status != 401 {
            return None;
        }
        c.challenge = head.lines().find_map(|l| l.strip_prefix("WWW-Authenticate: "))?.to_string();
        Some(c)
    }

    /// One authenticated search: its status and whether the connection stays open.
    async fn search(&mut self, target: &Target, user: &str, path: &str) -> Option<(u16, bool)> {
        self.nc += 1;
        let auth = credentials(&self.challenge, user, path, self.nc)?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\r\n", target.host);
        self.tls.write_all(req.as_bytes()).await.ok()?;
        let (status, head, _) = read(&mut self.tls).await?;
        let keep = !head.to_ascii_lowercase().contains("connection: close");
        Some((status, keep))
    }
}

/// Digest credentials (RFC 7616, MD5, qop=auth) for one request.
fn credentials(challenge: &str, user: &str, uri: &str, nc: u32) -> Option<String> {
    let realm = param(challenge, "realm")?;
    let nonce = param(challenge, "nonce")?;
    let (nc, cnonce) = (format!("{nc:08x}"), format!("{:016x}", fastrand::u64(..)));
    let c = Challenge {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        method: "GET",
        uri: uri.as_bytes(),
        qop: Some((b"auth", nc.as_bytes(), cnonce.as_bytes())),
        cnonce: cnonce.as_bytes(),
    };
    let r = response(&ha1(Algorithm::Md5, user, &realm, PASSWORD), &c);
    Some(format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    ))
}

/// One response: status, head and body.
async fn read(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> Option<(u16, String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().to_string()))?
        .parse()
        .ok()?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((status, head, body))
}
