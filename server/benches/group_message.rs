//! A MESSAGE to a 200-member distribution group (issue 21): how long until every member has
//! it. A sipfront in this process with 201 users, each registered over its own TCP connection
//! from this process; one of them sends `GROUP_BENCH_ROUNDS` messages (default 50), one every
//! 200 ms, to a group of all of them; each member's client answers 200 at once and notes when
//! its copy came. Per message: the time to the sender's 202, to the first member and to the
//! last. Server and clients share this machine's cores.
//!
//!   cargo bench -p sipfront --bench group_message
//!
//! `GROUP_BENCH_MEMBERS` sets the members besides the sender (default 200).

use bytes::Bytes;
use sipfront_proto::digest::{ha1, Algorithm};
use sipfront_proto::{Frame, HeaderName, Limits, Message, Method, StreamFramer};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

mod common;

use common::param;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DOMAIN: &str = "example.test";
const PASSWORD: &str = "bench password";
const GROUP: &str = "everyone@example.test";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let members = env_or("GROUP_BENCH_MEMBERS", 200) as usize;
    let rounds = env_or("GROUP_BENCH_ROUNDS", 50) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    rt.block_on(run(members, rounds));
}

async fn run(members: usize, rounds: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let store = sipfront_storage::open("", dir.path()).await.expect("open the store");
        store.add_domain(DOMAIN).await.expect("add the domain");
        let users: Vec<_> = (0..=members)
            .map(|i| {
                let user = format!("user{i}");
                sipfront_storage::NewUser {
                    display_name: format!("User {i}"),
                    ha1_md5: ha1(Algorithm::Md5, &user, DOMAIN, PASSWORD),
                    ha1_sha256: ha1(Algorithm::Sha256, &user, DOMAIN, PASSWORD),
                    username: user,
                    domain: DOMAIN.into(),
                }
            })
            .collect();
        store.add_users(&users).await.expect("add the users");
        store.add_group(GROUP, "Everyone").await.expect("add the group");
        let rows: Vec<(String, String)> = (0..=members).map(|i| (GROUP.into(), format!("user{i}@{DOMAIN}"))).collect();
        store.add_group_members(&rows).await.expect("add the members");
    }
    let mut config = sipfront::config::Config::default();
    let local: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    config.listen.sip = vec![local];
    config.listen.tls = vec![local];
    config.listen.http = local;
    config.listen.directory = Vec::new();
    // One address registers them all.
    config.auth.max_users_per_ip = u32::try_from(members + 10).unwrap_or(u32::MAX);
    config.archive.enabled = true;
    let server = sipfront::start(&config, dir.path()).await.expect("the server starts");
    let sip = server.tcp[0];

    let (arrived, mut arrivals) = mpsc::unbounded_channel::<(usize, Instant)>();
    let mut sender = Client::connect(sip).await;
    sender.register("user0").await;
    for i in 1..=members {
        let mut member = Client::connect(sip).await;
        member.register(&format!("user{i}")).await;
        let arrived = arrived.clone();
        tokio::spawn(async move { member.answer_messages(arrived).await });
    }
    println!("{members} members and the sender registered");

    let (mut to_accepted, mut to_first, mut to_last) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0;
    for round in 0..rounds {
        let sent = Instant::now();
        let code = sender.message(GROUP, &format!("round {round}")).await;
        assert_eq!(code, 202, "the group takes the message");
        to_accepted.push(sent.elapsed());
        let mut first = None;
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < members {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((r, at))) if r == round => {
                    got += 1;
                    first.get_or_insert(at);
                    if got == members {
                        to_last.push(at - sent);
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        lost += members - got;
        if let Some(f) = first {
            to_first.push(f - sent);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("\n| {rounds} messages to {members} members | p50 | p90 | max |");
    println!("| --- | ---: | ---: | ---: |");
    for (label, mut v) in
        [("202 to the sender", to_accepted), ("first member has it", to_first), ("every member has it", to_last)]
    {
        v.sort_unstable();
        let at = |q: f64| {
            v.get(((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1).copied().unwrap_or_default()
        };
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        println!("| {label} | {} | {} | {} |", ms(at(0.5)), ms(at(0.9)), ms(v.last().copied().unwrap_or_default()));
    }
    println!("\ncopies not received within 10 s: {lost}");
    server.shutdown().await;
}

/// A SIP client over one TCP connection.
struct Client {
    stream: TcpStream,
    framer: StreamFramer,
    local: SocketAddr,
    user: String,
    cseq: u32,
}

impl Client {
    async fn connect(server: SocketAddr) -> Client {
        let stream = TcpStream::connect(server).await.expect("connect");
        let local = stream.local_addr().expect("a local address");
        Client { stream, framer: StreamFramer::new(Limits::default()), local, user: String::new(), cseq: 0 }
    }

    /// The next message; `None` once the server closed the connection (it stops at the end).
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(Frame::Message(bytes)) = self.framer.next_frame().ok()? {
                return Message::parse(Bytes::copy_from_slice(&bytes), &Limits::default()).ok();
            }
            match self.stream.read_buf(self.framer.buffer_mut()).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    }

    fn request(&mut self, method: &str, uri: &str, to: &str, extra: &str, body: &str) -> String {
        self.cseq += 1;
        let l = self.local;
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TCP {l};branch=z9hG4bK{b:016x}\r\nMax-Forwards: 70\r\n\
             From: <sip:{u}@{DOMAIN}>;tag={t:08x}\r\nTo: <{to}>\r\nCall-ID: {c:016x}@bench\r\nCSeq: {n} {method}\r\n\
             {extra}Content-Length: {len}\r\n\r\n{body}",
            b = fastrand::u64(..),
            u = self.user,
            t = fastrand::u32(..),
            c = fastrand::u64(..),
            n = self.cseq,
            len = body.len(),
        )
    }

    async fn final_response(&mut self) -> Message {
        loop {
            let m = self.next().await.expect("a response before the server closes");
            if m.status().is_some_and(|s| s >= 200) {
                return m;
            }
        }
    }

    async fn register(&mut self, user: &str) {
        self.user = user.to_string();
        let contact = format!("Contact: <sip:{user}@{};transport=tcp>\r\nExpires: 3600\r\n", self.local);
        let req = self.request("REGISTER", &format!("sip:{DOMAIN}"), &format!("sip:{user}@{DOMAIN}"), &contact, "");
        self.stream.write_all(req.as_bytes()).await.expect("write");
        let challenge = self.final_response().await;
        assert_eq!(challenge.status(), Some(401));
        let www =
            String::from_utf8_lossy(challenge.header(HeaderName::WwwAuthenticate).expect("a challenge")).into_owned();
        let auth = credentials(&www, user, "REGISTER", &format!("sip:{DOMAIN}"));
        let extra = format!("{contact}Authorization: {auth}\r\n");
        let req = self.request("REGISTER", &format!("sip:{DOMAIN}"), &format!("sip:{user}@{DOMAIN}"), &extra, "");
        self.stream.write_all(req.as_bytes()).await.expect("write");
        let ok = self.final_response().await;
        assert_eq!(ok.status(), Some(200), "{user} registered");
    }

    /// A MESSAGE on the connection its sender registered on (no challenge): the final status.
    async fn message(&mut self, to: &str, body: &str) -> u16 {
        let req =
            self.request("MESSAGE", &format!("sip:{to}"), &format!("sip:{to}"), "Content-Type: text/plain\r\n", body);
        self.stream.write_all(req.as_bytes()).await.expect("write");
        self.final_response().await.status().unwrap_or(0)
    }

    /// Answers every MESSAGE 200, telling which round it was and when it came.
    async fn answer_messages(mut self, arrived: mpsc::UnboundedSender<(usize, Instant)>) {
        while let Some(m) = self.next().await {
            if m.method() != Some(&Method::Message) {
                continue;
            }
            let at = Instant::now();
            let mut r = m.response_to(200);
            r.set_to_tag("member");
            r.ensure_content_length();
            if self.stream.write_all(&r.to_bytes()).await.is_err() {
                return;
            }
            let round = std::str::from_utf8(m.body()).ok().and_then(|b| b.strip_prefix("round ")?.parse().ok());
            if let Some(round) = round {
                let _ = arrived.send((round, at));
            }
        }
    }
}

/// Digest credentials (RFC 2617 style, MD5, qop=auth when offered).
fn credentials(challenge: &str, user: &str, method: &str, uri: &str) -> String {
    use sipfront_proto::digest::{response, Challenge};
    let realm = param(challenge, "realm").expect("a realm");
    let nonce = param(challenge, "nonce").expect("a nonce");
    let cnonce = format!("{:016x}", fastrand::u64(..));
    let c = Challenge {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        method,
        uri: uri.as_bytes(),
        qop: Some((b"auth", b"00000001", cnonce.as_bytes())),
        cnonce: cnonce.as_bytes(),
    };
    let r = response(&ha1(Algorithm::Md5, user, &realm, PASSWORD), &c);
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"{cnonce}\""
    )
}
