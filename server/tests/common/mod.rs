//! What every end-to-end test needs: an in-process server on loopback ports chosen by the
//! kernel, with its own data directory and configuration, and small SIP clients over UDP, TCP
//! and TLS that speak to it through real sockets.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod dns;
pub mod federation;
pub mod prometheus;

use bytes::Bytes;
use sipfront::config::Config;
use sipfront::RunningServer;
use sipfront_proto::{Frame, HeaderName, Limits, Message, StreamFramer};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

// Skipping a test (visibly, and never under CI), finding an outside program, and waiting for a
// condition: one implementation for every crate's tests.
#[allow(unused_imports)] // each test binary uses a different part of them
pub use sipfront_storage::testing::{eventually, require_program, skip};

/// How long a test waits for an answer that should come at once.
pub const WAIT: Duration = Duration::from_secs(3);
/// How long a test listens to be sure nothing comes.
pub const QUIET: Duration = Duration::from_millis(300);

pub const LOCALHOST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A configuration for tests: every listener on `127.0.0.1:0`, two workers, a short drain.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.listen.sip = vec![LOCALHOST];
    c.listen.tls = vec![LOCALHOST];
    c.listen.http = LOCALHOST;
    c.listen.directory = vec![LOCALHOST];
    c.server.workers = 2;
    c.server.drain_timeout_secs = 2;
    c
}

/// A server running in this process, and the directory it keeps its files in.
pub struct TestServer {
    pub server: RunningServer,
    pub config: Config,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    /// Starts a server with [`test_config`] changed by `adjust`.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config();
        adjust(&mut config);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let server = sipfront::start(&config, dir.path()).await.expect("server starts");
        TestServer { server, config, dir }
    }

    /// Starts a server whose store serves `domain` with one user, `user` with `password`.
    pub async fn with_user(domain: &str, user: &str, password: &str) -> TestServer {
        use sipfront_proto::digest::{ha1, Algorithm};
        let dir = tempfile::tempdir().expect("a temporary directory");
        {
            let store = sipfront_storage::open("", dir.path()).await.expect("open the store");
            store.add_domain(domain).await.expect("add the domain");
            let new = sipfront_storage::NewUser {
                username: user.into(),
                domain: domain.into(),
                display_name: String::new(),
                ha1_md5: ha1(Algorithm::Md5, user, domain, password),
                ha1_sha256: ha1(Algorithm::Sha256, user, domain, password),
            };
            store.add_user(&new).await.expect("add the user");
        }
        let config = test_config();
        let server = sipfront::start(&config, dir.path()).await.expect("server starts");
        TestServer { server, config, dir }
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.server.udp[0]
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.server.tcp[0]
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.server.tls[0]
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls").join("cert.pem")
    }

    pub async fn udp_client(&self) -> UdpClient {
        UdpClient::new(self.udp_addr()).await
    }

    pub async fn tcp_client(&self) -> SipStream<TcpStream> {
        SipStream::tcp(self.tcp_addr()).await
    }

    pub async fn tls_client(&self) -> SipStream<tokio_rustls::client::TlsStream<TcpStream>> {
        SipStream::tls(self.tls_addr(), &self.cert_path()).await
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.server.http, path).await.expect("HTTP answer")
    }

    /// The sum of every series of the metric `name` in `/metrics` (0 if it has none yet).
    pub async fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.http_get("/metrics").await;
        assert_eq!(status, 200, "/metrics");
        metric_sum(&body, name)
    }

    /// Sends OPTIONS over a fresh UDP socket and expects 200: the server is still well.
    pub async fn assert_answers_options(&self) {
        let client = self.udp_client().await;
        let resp = client.transact(&Request::options(Transport::Udp, client.local())).await;
        assert_eq!(resp.status(), Some(200), "the server still answers OPTIONS");
    }
}

/// The sum of every series of `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// A request as text, built field by field so that a test can break any part of it.
#[derive(Clone, Debug)]
pub struct Request {
    pub start_line: String,
    /// Header lines in order; a `None` value is worked out when written (Content-Length).
    pub headers: Vec<(String, Option<String>)>,
    pub body: String,
}

impl Request {
    /// A well-formed request from `sent_by`, with a fresh branch, tag and Call-ID.
    pub fn new(method: &str, transport: Transport, sent_by: SocketAddr) -> Request {
        let host = match sent_by {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let h = |n: &str, v: String| (n.to_string(), Some(v));
        Request {
            start_line: format!("{method} sip:probe@{host} SIP/2.0"),
            headers: vec![
                h("Via", format!("SIP/2.0/{} {host}:{};branch={}", transport.via_name(), sent_by.port(), branch())),
                h("Max-Forwards", "70".into()),
                h("From", format!("<sip:test@{host}>;tag={}", token(8))),
                h("To", format!("<sip:probe@{host}>")),
                h("Call-ID", format!("{}@test", token(16))),
                h("CSeq", format!("1 {method}")),
                ("Content-Length".to_string(), None),
            ],
            body: String::new(),
        }
    }

    pub fn options(transport: Transport, sent_by: SocketAddr) -> Request {
        Request::new("OPTIONS", transport, sent_by)
    }

    /// Sets the first header called `name` to `value`, or adds it before Content-Length.
    pub fn set(mut self, name: &str, value: &str) -> Request {
        match self.headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(h) => h.1 = Some(value.to_string()),
            None => {
                let at = self.headers.len().saturating_sub(1);
                self.headers.insert(at, (name.to_string(), Some(value.to_string())));
            }
        }
        self
    }

    pub fn without(mut self, name: &str) -> Request {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_deref())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.start_line);
        for (name, value) in &self.headers {
            let value = value.clone().unwrap_or_else(|| self.body.len().to_string());
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        s.push_str("\r\n");
        s.push_str(&self.body);
        s.into_bytes()
    }
}

/// A `Proxy-Authorization` (or `Authorization`) value answering `challenge`, a
/// `Proxy-Authenticate` value, for `method` and `uri` (RFC 3261 22.4, qop=auth, MD5).
pub fn digest_credentials(challenge: &str, user: &str, password: &str, method: &str, uri: &str) -> String {
    use sipfront_proto::digest::{ha1, response, Algorithm, Challenge};
    let param = |name: &str| -> String {
        let at = challenge.find(&format!("{name}=")).unwrap_or_else(|| panic!("{name} in {challenge}"));
        let v = &challenge[at + name.len() + 1..];
        let v = v.strip_prefix('"').map_or_else(|| v.split([',', ' ']).next(), |q| q.split('"').next());
        v.unwrap_or_default().to_string()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let (nc, cnonce) = ("00000001", token(12));
    let c = Challenge {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        method,
        uri: uri.as_bytes(),
        qop: Some((b"auth", nc.as_bytes(), cnonce.as_bytes())),
        cnonce: cnonce.as_bytes(),
    };
    let r = response(&ha1(Algorithm::Md5, user, &realm, password), &c);
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    )
}

/// The status code of a response as raw bytes (for responses too broken to parse, such as a
/// 400 to a request without Call-ID, which cannot copy it).
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// A fresh RFC 3261 branch (magic cookie and randomness).
pub fn branch() -> String {
    format!("z9hG4bK{}", token(12))
}

pub fn token(n: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(n).collect()
}

pub fn parse(bytes: &[u8]) -> Message {
    Message::parse(Bytes::copy_from_slice(bytes), &Limits::default()).unwrap_or_else(|e| {
        panic!("the server sent an unparseable message ({e}): {:?}", String::from_utf8_lossy(bytes))
    })
}

pub fn header(msg: &Message, name: HeaderName) -> String {
    String::from_utf8_lossy(msg.header(name).unwrap_or_default()).into_owned()
}

/// Checks what RFC 3261 8.2.6.2 asks of every response: the request's Via, From, Call-ID and
/// CSeq copied, and its To with a tag added.
pub fn assert_matches_request(resp: &Message, req: &Request) {
    for (name, raw) in [
        (HeaderName::Via, "Via"),
        (HeaderName::From, "From"),
        (HeaderName::CallId, "Call-ID"),
        (HeaderName::CSeq, "CSeq"),
    ] {
        assert_eq!(header(resp, name), req.header(raw).unwrap_or_default(), "{raw} copied to the response");
    }
    let to = header(resp, HeaderName::To);
    assert!(to.starts_with(req.header("To").unwrap_or_default()), "To copied: {to}");
    assert!(resp.to().and_then(|t| t.tag().map(<[u8]>::len)).unwrap_or(0) > 0, "To tag added: {to}");
}

/// A UDP socket on loopback that talks to one server address.
pub struct UdpClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl UdpClient {
    pub async fn new(server: SocketAddr) -> UdpClient {
        let bind = SocketAddr::new(server.ip(), 0);
        let socket = UdpSocket::bind(bind).await.expect("bind a UDP socket on loopback");
        UdpClient { socket, server }
    }

    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().expect("bound")
    }

    pub async fn send(&self, data: &[u8]) {
        self.socket.send_to(data, self.server).await.expect("send a datagram");
    }

    /// The next datagram, or `None` after `wait`.
    pub async fn recv(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await.ok()?.ok()?;
        buf.truncate(n);
        Some((buf, from))
    }

    /// The next response, which must come within [`WAIT`].
    pub async fn recv_response(&self) -> Message {
        let (bytes, _) = self.recv(WAIT).await.expect("a response within the wait");
        parse(&bytes)
    }

    pub async fn transact(&self, req: &Request) -> Message {
        self.send(&req.to_bytes()).await;
        self.recv_response().await
    }
}

/// A TCP or TLS connection, framed by Content-Length like the server frames it.
pub struct SipStream<S> {
    pub stream: S,
    framer: StreamFramer,
    pub local: SocketAddr,
}

impl SipStream<TcpStream> {
    pub async fn tcp(server: SocketAddr) -> SipStream<TcpStream> {
        SipStream::tcp_after(server, b"").await
    }

    /// A connection that opens with `preamble` before any SIP (a PROXY protocol header, as a
    /// load balancer sends one).
    pub async fn tcp_after(server: SocketAddr, preamble: &[u8]) -> SipStream<TcpStream> {
        let mut stream = TcpStream::connect(server).await.expect("TCP connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(preamble).await.expect("write the preamble");
        let local = stream.local_addr().expect("bound");
        SipStream { stream, framer: StreamFramer::new(Limits::default()), local }
    }
}

impl SipStream<tokio_rustls::client::TlsStream<TcpStream>> {
    pub async fn tls(server: SocketAddr, cert: &Path) -> SipStream<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(server).await.expect("TCP connect for TLS");
        tcp.set_nodelay(true).expect("nodelay");
        let local = tcp.local_addr().expect("bound");
        let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
        let stream = tokio::time::timeout(WAIT, tls_connector(cert).connect(name, tcp))
            .await
            .expect("TLS handshake within the wait")
            .expect("TLS handshake with the server's certificate");
        SipStream { stream, framer: StreamFramer::new(Limits::default()), local }
    }
}

/// A TLS client that trusts exactly the server's self-signed certificate.
pub fn tls_connector(cert: &Path) -> tokio_rustls::TlsConnector {
    let config = sipfront::transport::tls::client_trusting(&cert.to_string_lossy()).expect("the server's certificate");
    tokio_rustls::TlsConnector::from(config)
}

impl<S: AsyncRead + AsyncWrite + Unpin> SipStream<S> {
    /// A connection set up elsewhere (a TLS client with a certificate of its own), framed.
    pub fn over(stream: S, local: SocketAddr) -> SipStream<S> {
        SipStream { stream, framer: StreamFramer::new(Limits::default()), local }
    }

    pub async fn write(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.expect("write to the stream");
        self.stream.flush().await.expect("flush the stream");
    }

    /// Writes, and says whether it could (the server may have closed the connection).
    pub async fn try_write(&mut self, data: &[u8]) -> bool {
        self.stream.write_all(data).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// The next frame (message or keep-alive), or `None` if the server closed the connection
    /// or `wait` passed.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.framer.next_frame().expect("the server's stream frames") {
                return Some(frame);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(self.framer.buffer_mut())).await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Whether the next bytes within `wait` are a CRLF pong (RFC 5626 3.5.1). Read here rather
    /// than through the framer, which holds a lone CRLF back in case it grows into a ping.
    pub async fn recv_pong(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while self.framer.buffer_mut().len() < 2 {
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(self.framer.buffer_mut())).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return false;
            }
        }
        let buf = self.framer.buffer_mut();
        let pong = buf.starts_with(b"\r\n");
        if pong {
            let _ = buf.split_to(2);
        }
        pong
    }

    /// The next response, which must come within [`WAIT`].
    pub async fn recv_response(&mut self) -> Message {
        match self.next_frame(WAIT).await {
            Some(Frame::Message(bytes)) => parse(&bytes),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub async fn transact(&mut self, req: &Request) -> Message {
        self.write(&req.to_bytes()).await;
        self.recv_response().await
    }

    /// Whether the server closes the connection within `wait` (whatever else it sends first
    /// is discarded). A reset counts as closed.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// `GET path` over HTTP/1.1: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut text))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP answer"))??;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not HTTP: {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Whether this machine has IPv6 loopback; when it has not, the test is skipped (a failure
/// under CI).
pub fn has_ipv6_loopback() -> bool {
    let found = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if !found {
        skip("no IPv6 loopback");
    }
    found
}

/// A UDP port on 127.0.0.1 that nothing uses now, for an outside program to listen on (SIPp
/// binds 5060 unless told otherwise, and that port belongs to the binary's own test).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|u| u.local_addr()).expect("a free UDP port").port()
}

/// The last 30 lines of what a tool printed (SIPp's final screen), for a failure message.
pub fn screen(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A counter from the last line of SIPp's statistics file (`-trace_stat -stf FILE`), by the
/// name of its column (`SuccessfulCall(C)`, `FailedCall(C)`).
pub fn sipp_column(csv: &str, name: &str) -> Option<u64> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    last.get(header.iter().position(|h| *h == name)?)?.trim().parse().ok()
}

/// Runs a command to its end, killing it after `limit`: exit status, stdout and stderr.
pub async fn run_tool(mut cmd: std::process::Command, limit: Duration) -> (std::process::ExitStatus, String, String) {
    use std::process::Stdio;
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {shown}: {e}"));
    let pid = child.id();
    let waited = tokio::time::timeout(limit, tokio::task::spawn_blocking(move || child.wait_with_output())).await;
    match waited {
        Ok(joined) => {
            let out = joined.expect("the wait task").unwrap_or_else(|e| panic!("waiting for {shown}: {e}"));
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status, text(&out.stdout), text(&out.stderr))
        }
        Err(_) => {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("{shown} did not finish within {limit:?}");
        }
    }
}

// ---- Registrar and digest authentication (issue 4) ----

use sipfront_proto::digest::Algorithm;

/// The domain every registrar test serves.
pub const DOMAIN: &str = "example.test";

/// Where a test server keeps its users: SQLite in its data directory, or a fresh PostgreSQL
/// database (a URL from `sipfront_storage::testing::fresh_postgres`).
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// `database.url` for this backend.
    pub fn url(&self) -> String {
        match self {
            Backend::Sqlite => String::new(),
            Backend::Postgres(url) => url.clone(),
        }
    }
}

/// `psql` from PATH, or from the PostgreSQL installation `.ci/postgres.sh` uses.
pub fn psql() -> std::path::PathBuf {
    let in_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("psql")).find(|p| p.is_file()));
    in_path
        .or_else(|| {
            let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| Some(e.ok()?.path().join("bin/psql")))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            found.pop()
        })
        .expect("psql (the PostgreSQL client) to administer the test database")
}

/// Runs `sql` on the test PostgreSQL's own database, as its administrator.
pub async fn admin(sql: &str) {
    let base = std::env::var(sipfront_storage::testing::PG_URL_VAR).expect("the test PostgreSQL");
    let mut cmd = std::process::Command::new(psql());
    cmd.arg(&base).args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql]);
    let (status, out, err) = run_tool(cmd, Duration::from_secs(20)).await;
    assert!(status.success(), "psql {sql}: {status}\n{out}\n{err}");
}

/// SQLite always, and PostgreSQL too when `SIPFRONT_TEST_PG_URL` names one (without it the
/// PostgreSQL half prints that it was skipped; under CI it fails).
pub async fn backends(test: &str) -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    if let Some(url) = sipfront_storage::testing::fresh_postgres(test).await {
        all.push(Backend::Postgres(url));
    }
    all
}

/// A user of [`DOMAIN`] as the store takes it: both HA1 values of `password`.
pub fn new_user(user: &str, password: &str) -> sipfront_storage::NewUser {
    use sipfront_proto::digest::ha1;
    sipfront_storage::NewUser {
        username: user.into(),
        domain: DOMAIN.into(),
        display_name: String::new(),
        ha1_md5: ha1(Algorithm::Md5, user, DOMAIN, password),
        ha1_sha256: ha1(Algorithm::Sha256, user, DOMAIN, password),
    }
}

impl TestServer {
    /// Starts a server on `backend` whose store serves [`DOMAIN`] with `users` (name,
    /// password), with [`test_config`] and a 100 ms change-log poll, changed by `adjust`.
    pub async fn with_users(backend: &Backend, users: &[(&str, &str)], adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config();
        config.database.url = backend.url();
        config.database.poll_ms = 100;
        adjust(&mut config);
        let dir = tempfile::tempdir().expect("a temporary directory");
        {
            let store = sipfront_storage::open(&config.database.url, dir.path()).await.expect("open the store");
            store.add_domain(DOMAIN).await.expect("add the domain");
            let new: Vec<_> = users.iter().map(|(u, p)| new_user(u, p)).collect();
            store.add_users(&new).await.expect("add the users");
        }
        let server = sipfront::start(&config, dir.path()).await.expect("server starts");
        TestServer { server, config, dir }
    }

    /// A UDP client whose socket is bound to `ip` (another loopback address is another
    /// source address to the server).
    pub async fn udp_client_from(&self, ip: std::net::IpAddr) -> UdpClient {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.expect("bind a UDP socket on that address");
        UdpClient { socket, server: self.udp_addr() }
    }

    /// The live bindings of `user`@[`DOMAIN`] in the server's location table.
    pub fn bindings_of(&self, user: &str) -> Vec<sipfront::state::bindings::Binding> {
        self.server.bindings.get(&format!("{user}@{DOMAIN}"))
    }
}

/// What the registrar tests need of a client, whatever its transport.
#[allow(async_fn_in_trait)] // used by these tests only, never across threads
pub trait SipClient {
    fn transport(&self) -> Transport;
    fn local_addr(&self) -> SocketAddr;
    /// Sends a request and returns the first final response (1xx are skipped).
    async fn request(&mut self, req: &Request) -> Message;
}

impl SipClient for UdpClient {
    fn transport(&self) -> Transport {
        Transport::Udp
    }
    fn local_addr(&self) -> SocketAddr {
        self.local()
    }
    async fn request(&mut self, req: &Request) -> Message {
        self.send(&req.to_bytes()).await;
        loop {
            let r = self.recv_response().await;
            if r.status().is_some_and(|s| s >= 200) {
                return r;
            }
        }
    }
}

impl SipClient for SipStream<TcpStream> {
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
    async fn request(&mut self, req: &Request) -> Message {
        self.write(&req.to_bytes()).await;
        loop {
            let r = self.recv_response().await;
            if r.status().is_some_and(|s| s >= 200) {
                return r;
            }
        }
    }
}

impl Request {
    /// A REGISTER of `user`@[`DOMAIN`] by that user, with one Contact on the client's own
    /// address and a fresh Call-ID (no Expires: add what the test needs).
    pub fn register(client: &impl SipClient, user: &str) -> Request {
        let (t, local) = (client.transport(), client.local_addr());
        let transport = if t == Transport::Udp { String::new() } else { format!(";transport={}", t.via_name()) };
        let aor = format!("sip:{user}@{DOMAIN}");
        let mut r = Request::new("REGISTER", t, local)
            .set("From", &format!("<{aor}>;tag={}", token(8)))
            .set("To", &format!("<{aor}>"))
            .set("Contact", &format!("<sip:{user}@{local}{transport}>"));
        r.start_line = format!("REGISTER sip:{DOMAIN} SIP/2.0");
        r
    }

    /// A MESSAGE from `from` to `to` (users of [`DOMAIN`]), sent by `client`.
    pub fn message(client: &impl SipClient, from: &str, to: &str) -> Request {
        let mut r = Request::new("MESSAGE", client.transport(), client.local_addr())
            .set("From", &format!("<sip:{from}@{DOMAIN}>;tag={}", token(8)))
            .set("To", &format!("<sip:{to}@{DOMAIN}>"))
            .set("Content-Type", "text/plain");
        r.start_line = format!("MESSAGE sip:{to}@{DOMAIN} SIP/2.0");
        r.body = "hello".into();
        r
    }

    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or_default()
    }

    pub fn uri(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or_default()
    }

    /// The CSeq number.
    pub fn cseq(&self) -> u32 {
        self.header("CSeq").and_then(|c| c.split(' ').next()?.parse().ok()).unwrap_or(1)
    }

    pub fn with_cseq(self, n: u32) -> Request {
        let method = self.method().to_string();
        self.set("CSeq", &format!("{n} {method}"))
    }

    /// The same request as a new transaction: a fresh Via branch (RFC 3261 8.1.1.7).
    pub fn new_branch(self) -> Request {
        let via = self.header("Via").unwrap_or_default();
        let head = via.split(";branch=").next().unwrap_or_default().to_string();
        self.set("Via", &format!("{head};branch={}", branch()))
    }

    /// The next request of the same Call-ID: a new transaction with the next CSeq.
    pub fn next(self) -> Request {
        let n = self.cseq() + 1;
        self.with_cseq(n).new_branch()
    }
}

/// A parameter of a challenge (`WWW-Authenticate`/`Proxy-Authenticate` value), unquoted.
pub fn challenge_param(challenge: &str, name: &str) -> Option<String> {
    let at = challenge.find(&format!(" {name}=")).or_else(|| challenge.find(&format!(",{name}=")))?;
    let v = &challenge[at + name.len() + 2..];
    let v = match v.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => v.split([',', ' ']).next(),
    };
    v.map(str::to_string)
}

/// Credentials answering `challenge` for `method` and `uri` with `algorithm` and nonce-count
/// `nc`, realm and nonce taken from the challenge (RFC 7616 3.4, qop=auth).
pub fn digest_answer(
    challenge: &str,
    algorithm: Algorithm,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    use sipfront_proto::digest::{ha1, response, Challenge};
    let realm = challenge_param(challenge, "realm").unwrap_or_else(|| panic!("realm in {challenge}"));
    let nonce = challenge_param(challenge, "nonce").unwrap_or_else(|| panic!("nonce in {challenge}"));
    let (nc, cnonce) = (format!("{nc:08x}"), token(12));
    let c = Challenge {
        algorithm,
        nonce: nonce.as_bytes(),
        method,
        uri: uri.as_bytes(),
        qop: Some((b"auth", nc.as_bytes(), cnonce.as_bytes())),
        cnonce: cnonce.as_bytes(),
    };
    let r = response(&ha1(algorithm, user, &realm, password), &c);
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"{cnonce}\"",
        algorithm.name()
    )
}

/// Fetches a fresh challenge by sending `req` once without credentials (it must be answered
/// 401 or 407), and returns `req` as a new transaction carrying MD5 credentials for `user`.
pub async fn authorized(client: &mut impl SipClient, req: &Request, user: &str, password: &str) -> Request {
    let resp = client.request(&req.clone().new_branch()).await;
    let (field, header) = match resp.status() {
        Some(401) => ("Authorization", HeaderName::WwwAuthenticate),
        Some(407) => ("Proxy-Authorization", HeaderName::ProxyAuthenticate),
        other => panic!("expected a challenge to {}, got {other:?}", req.method()),
    };
    let challenge = String::from_utf8_lossy(resp.header(header).expect("a challenge")).into_owned();
    let creds = digest_answer(&challenge, Algorithm::Md5, user, password, req.method(), req.uri(), 1);
    req.clone().new_branch().set(field, &creds)
}

/// `req` sent with `user`'s credentials (after fetching a challenge): the final response.
pub async fn with_credentials(client: &mut impl SipClient, req: &Request, user: &str, password: &str) -> Message {
    let req = authorized(client, req, user, password).await;
    client.request(&req).await
}

/// Every value of a header, as text.
pub fn headers(msg: &Message, name: HeaderName) -> Vec<String> {
    msg.header_all(name).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

/// Waits (at most 15 s, a bound for a loaded machine) until `log`, the server's `directory.changes()` or `directory.waiting()`
/// taken before the store was changed, names `aor`: the server has read that change from the
/// store's change log (which it polls every `database.poll_ms`) and acts on it from now on.
pub async fn until_named(mut log: tokio::sync::broadcast::Receiver<Arc<str>>, aor: &str) {
    use tokio::sync::broadcast::error::RecvError;
    let named = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match log.recv().await {
                Ok(named) if named.eq_ignore_ascii_case(aor) => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the server's change log closed"),
            }
        }
    })
    .await;
    assert!(named.is_ok(), "the server read the change of {aor} from the store's change log within 15 s");
}

/// Runs the `sipfront` binary against the server's store: `--data-dir` of the running server
/// for SQLite, `SIPFRONT_DATABASE_URL` for PostgreSQL; `stdin` is written to its standard input.
pub async fn cli(s: &TestServer, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // The command runs with the server's own configuration (its store, its pool timings).
    let config = s.dir.path().join("sipfront.toml");
    std::fs::write(&config, toml::to_string(&s.config).expect("the configuration as TOML")).expect("write the config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipfront"));
    cmd.arg("--data-dir").arg(s.dir.path()).arg("--config").arg(&config).args(args);
    cmd.env_remove("SIPFRONT_DATABASE_URL");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let shown = format!("sipfront {}", args.join(" "));
    let input = stdin.to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("start the sipfront binary");
            child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).expect("write stdin");
            child.wait_with_output().expect("wait for the sipfront binary")
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{shown} took too long"))
    .expect("the CLI task");
    assert!(
        out.status.success(),
        "{shown}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the `sipfront` binary on `s`'s store expecting it to fail; its standard error.
pub async fn cli_fails(s: &TestServer, args: &[&str]) -> String {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipfront"));
    cmd.arg("--data-dir").arg(s.dir.path()).args(args);
    cmd.env_remove("SIPFRONT_DATABASE_URL");
    if !s.config.database.url.is_empty() {
        cmd.env("SIPFRONT_DATABASE_URL", &s.config.database.url);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let shown = format!("sipfront {}", args.join(" "));
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(30), tokio::task::spawn_blocking(move || cmd.output()))
            .await
            .unwrap_or_else(|_| panic!("{shown} took too long"))
            .expect("the CLI task")
            .expect("run the sipfront binary");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{shown} should fail, printed:\n{stdout}");
    assert!(stdout.is_empty(), "{shown}: nothing on standard output on failure: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{shown}: one line: {stderr}");
    stderr.into_owned()
}

// ---- Instant messages (issue 5) ----

pub async fn register(client: &mut impl SipClient, user: &str, password: &str, contact: Option<&str>) {
    let mut req = Request::register(client, user).set("Expires", "300");
    if let Some(c) = contact {
        req = req.set("Contact", c);
    }
    let r = with_credentials(client, &req, user, password).await;
    assert_eq!(r.status(), Some(200), "{user} registers");
}

/// Answers the next request `client` receives with `code`; returns that request.
pub async fn answer_next(client: &UdpClient, code: u16) -> Message {
    let (bytes, from) = client.recv(Duration::from_secs(5)).await.expect("a request for this endpoint");
    let m = parse(&bytes);
    let mut r = m.response_to(code);
    r.set_to_tag(&format!("uas{code}"));
    r.ensure_content_length();
    client.socket.send_to(&r.to_bytes(), from).await.expect("send the response");
    m
}

// ---- Endpoints over any transport (issues 5 and 6) ----

/// How long an endpoint waits for a request or response that should come.
pub const LISTEN: Duration = Duration::from_secs(5);

/// A SIP endpoint over any transport, that sends requests and answers what reaches it.
// A handful live per test: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Phone {
    Udp(UdpClient),
    Tcp(SipStream<TcpStream>),
    Tls(SipStream<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Phone {
    pub async fn udp(s: &TestServer) -> Phone {
        Phone::Udp(s.udp_client().await)
    }
    pub async fn tcp(s: &TestServer) -> Phone {
        Phone::Tcp(s.tcp_client().await)
    }
    pub async fn tls(s: &TestServer) -> Phone {
        Phone::Tls(s.tls_client().await)
    }

    pub async fn send(&mut self, data: &[u8]) {
        match self {
            Phone::Udp(c) => c.send(data).await,
            Phone::Tcp(c) => c.write(data).await,
            Phone::Tls(c) => c.write(data).await,
        }
    }

    /// The next message that reaches this endpoint, request or response.
    pub async fn recv(&mut self) -> Message {
        let frame = match self {
            Phone::Udp(c) => c.recv(LISTEN).await.map(|(b, _)| Frame::Message(b.into())),
            Phone::Tcp(c) => c.next_frame(LISTEN).await,
            Phone::Tls(c) => c.next_frame(LISTEN).await,
        };
        match frame {
            Some(Frame::Message(bytes)) => parse(&bytes),
            other => panic!("expected a SIP message, got {other:?}"),
        }
    }

    /// The next message, which must be a `method` request.
    pub async fn expect_request(&mut self, method: sipfront_proto::Method) -> Message {
        let m = self.recv().await;
        assert_eq!(m.method(), Some(&method), "expected {method:?}, got {:?} {:?}", m.method(), m.status());
        m
    }

    /// The next message, which must be a response with `code`.
    pub async fn expect_response(&mut self, code: u16) -> Message {
        let m = self.recv().await;
        assert_eq!(m.status(), Some(code), "expected {code}, got {:?} {:?}", m.status(), m.method());
        m
    }

    /// Answers `req` with `code`, as a UAS: our To tag, Record-Route copied for 18x/2xx (RFC
    /// 3261 12.1.1), our Contact.
    pub async fn answer(&mut self, req: &Message, code: u16, tag: &str) {
        let mut r = req.response_to(code);
        r.set_to_tag(tag);
        if (101..300).contains(&code) {
            for rr in req.header_all(HeaderName::RecordRoute) {
                r.push_header(HeaderName::RecordRoute, rr.to_vec());
            }
            r.push_header(HeaderName::Contact, self.contact("uas"));
        }
        r.ensure_content_length();
        self.send(&r.to_bytes()).await;
    }

    pub fn contact(&self, user: &str) -> String {
        let local = self.local_addr();
        match self.transport() {
            Transport::Udp => format!("<sip:{user}@{local}>"),
            Transport::Tcp => format!("<sip:{user}@{local};transport=tcp>"),
            Transport::Tls => format!("<sip:{user}@{local};transport=tls>"),
        }
    }
}

impl SipClient for Phone {
    fn transport(&self) -> Transport {
        match self {
            Phone::Udp(_) => Transport::Udp,
            Phone::Tcp(_) => Transport::Tcp,
            Phone::Tls(_) => Transport::Tls,
        }
    }
    fn local_addr(&self) -> SocketAddr {
        match self {
            Phone::Udp(c) => c.local(),
            Phone::Tcp(c) => c.local,
            Phone::Tls(c) => c.local,
        }
    }
    async fn request(&mut self, req: &Request) -> Message {
        self.send(&req.to_bytes()).await;
        loop {
            let r = self.recv().await;
            if r.status().is_some_and(|s| s >= 200) {
                return r;
            }
        }
    }
}

// ---- Calls and dialogs (issue 5, and the pool's issue 15) ----

/// An INVITE from `from` to `to` with an SDP body and the caller's Contact.
pub fn invite(phone: &Phone, from: &str, to: &str) -> Request {
    let mut r = Request::new("INVITE", phone.transport(), phone.local_addr())
        .set("From", &format!("<sip:{from}@{DOMAIN}>;tag={}", token(8)))
        .set("To", &format!("<sip:{to}@{DOMAIN}>"))
        .set("Contact", &phone.contact(from))
        .set("Content-Type", "application/sdp");
    r.start_line = format!("INVITE sip:{to}@{DOMAIN} SIP/2.0");
    r.body =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 5060 sip null\r\n".into();
    r
}

/// One side's view of an established dialog (RFC 3261 12.1): what its next request needs.
pub struct Dialog {
    pub local: String,
    pub remote: String,
    pub call_id: String,
    pub target: String,
    pub routes: Vec<String>,
    pub cseq: u32,
}

impl Dialog {
    /// The caller's side, from its INVITE and the 2xx: the route set is the Record-Route
    /// reversed.
    pub fn caller(invite: &Request, ok: &Message) -> Dialog {
        let mut routes = headers(ok, HeaderName::RecordRoute);
        routes.reverse();
        Dialog {
            local: invite.header("From").unwrap_or_default().to_string(),
            remote: header(ok, HeaderName::To),
            call_id: invite.header("Call-ID").unwrap_or_default().to_string(),
            target: contact_uri(&header(ok, HeaderName::Contact)),
            routes,
            cseq: invite.cseq(),
        }
    }

    /// The callee's side, from the INVITE it received and the tag it answered with.
    pub fn callee(invite: &Message, tag: &str) -> Dialog {
        Dialog {
            local: format!("{};tag={tag}", header(invite, HeaderName::To)),
            remote: header(invite, HeaderName::From),
            call_id: header(invite, HeaderName::CallId),
            target: contact_uri(&header(invite, HeaderName::Contact)),
            routes: headers(invite, HeaderName::RecordRoute),
            cseq: 100,
        }
    }

    pub fn request(&mut self, method: &str, phone: &Phone) -> Request {
        if method != "ACK" {
            self.cseq += 1;
        }
        let mut r = Request::new(method, phone.transport(), phone.local_addr())
            .set("From", &self.local)
            .set("To", &self.remote)
            .set("Call-ID", &self.call_id)
            .set("CSeq", &format!("{} {method}", self.cseq));
        for route in &self.routes {
            r = r.set_another("Route", route);
        }
        r.start_line = format!("{method} {} SIP/2.0", self.target);
        r
    }
}

pub fn contact_uri(contact: &str) -> String {
    contact.trim().trim_start_matches('<').split('>').next().unwrap_or_default().to_string()
}

pub trait AnotherHeader {
    fn set_another(self, name: &str, value: &str) -> Self;
}

impl AnotherHeader for Request {
    /// Adds a header line even when one of that name exists (Route lines, one per entry).
    fn set_another(mut self, name: &str, value: &str) -> Request {
        let at = self.headers.len().saturating_sub(1);
        self.headers.insert(at, (name.to_string(), Some(value.to_string())));
        self
    }
}

// ---- Presence (issue 6, and the pool's issue 15) ----

/// A PIDF document for `user` with one tuple.
pub fn pidf_doc(user: &str, tuple: &str, basic: &str, note: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:{user}@{DOMAIN}">
<tuple id="{tuple}"><status><basic>{basic}</basic></status><note>{note}</note></tuple>
<dm:person id="p-{tuple}"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>
</presence>"#
    )
}

/// A PUBLISH by `user` on `phone` (registered on that connection, so no challenge).
pub fn publish(phone: &Phone, user: &str, body: Option<&str>, etag: Option<&str>, expires: u32) -> Request {
    let mut r = Request::new("PUBLISH", phone.transport(), phone.local_addr())
        .set("From", &format!("<sip:{user}@{DOMAIN}>;tag={}", token(8)))
        .set("To", &format!("<sip:{user}@{DOMAIN}>"))
        .set("Event", "presence")
        .set("Expires", &expires.to_string());
    r.start_line = format!("PUBLISH sip:{user}@{DOMAIN} SIP/2.0");
    if let Some(t) = etag {
        r = r.set("SIP-If-Match", t);
    }
    if let Some(b) = body {
        r = r.set("Content-Type", "application/pidf+xml");
        r.body = b.to_string();
    }
    r
}

pub fn subscribe(phone: &Phone, watcher: &str, target: &str, event: &str, expires: u32) -> Request {
    let mut r = Request::new("SUBSCRIBE", phone.transport(), phone.local_addr())
        .set("From", &format!("<sip:{watcher}@{DOMAIN}>;tag={}", token(8)))
        .set("To", &format!("<sip:{target}@{DOMAIN}>"))
        .set("Event", event)
        .set("Expires", &expires.to_string())
        .set("Contact", &phone.contact(watcher))
        .set("Accept", "application/pidf+xml");
    r.start_line = format!("SUBSCRIBE sip:{target}@{DOMAIN} SIP/2.0");
    r
}

/// The next NOTIFY at `phone`, answered 200.
pub async fn notified(phone: &mut Phone) -> Message {
    let n = phone.expect_request(sipfront_proto::Method::Notify).await;
    phone.answer(&n, 200, "w").await;
    n
}

/// A SUBSCRIBE and what it brings: the 200 and the first NOTIFY (in whichever order they come).
pub async fn subscribed(phone: &mut Phone, req: &Request) -> (Message, Message) {
    phone.send(&req.to_bytes()).await;
    let (mut ok, mut notify) = (None, None);
    while ok.is_none() || notify.is_none() {
        let m = phone.recv().await;
        if m.method() == Some(&sipfront_proto::Method::Notify) {
            phone.answer(&m, 200, "w").await;
            notify = Some(m);
        } else {
            assert_eq!(m.status(), Some(200), "SUBSCRIBE answered 200: {:?}", m.reason());
            ok = Some(m);
        }
    }
    (ok.expect("200"), notify.expect("NOTIFY"))
}

pub fn state(n: &Message) -> String {
    header(n, HeaderName::SubscriptionState)
}

pub fn doc(n: &Message) -> sipfront_proto::presence::pidf::Pidf {
    sipfront_proto::presence::pidf::parse(n.body()).expect("a PIDF body")
}

pub async fn online(s: &TestServer, user: &str, password: &str) -> Phone {
    let mut p = Phone::tcp(s).await;
    register(&mut p, user, password, None).await;
    p
}

pub fn contact_of(m: &Message) -> String {
    header(m, HeaderName::Contact).trim_start_matches('<').split('>').next().unwrap_or_default().to_string()
}

// ---- Pools (issue 15) ----

/// A pool member named `id` for tests: heartbeats every 100 ms, dead after 600 ms of
/// silence, the pool's secret, and (unless empty) the store at `url`.
pub fn pool_member(id: &'static str, url: String) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.pool.member_id = id.into();
        c.pool.heartbeat_ms = 100;
        c.pool.member_timeout_ms = 600;
        c.pool.secret = "the pool's own secret".into();
        if !url.is_empty() {
            c.database.url = url;
        }
    }
}

impl Phone {
    /// A UDP phone sends to `server` from now on (the server restarted on another port); its
    /// own address, where it is registered, stays.
    pub fn retarget(&mut self, server: SocketAddr) {
        if let Phone::Udp(c) = self {
            c.server = server;
        }
    }
}

/// Another process (`sqlite3`) holding the write lock of the SQLite database of `s` for
/// `secs` seconds, as a long transaction elsewhere would: readers go on, writers wait. Returns
/// once it holds the lock (it waits for the server's own writes to end first); wait for the
/// child to see it released.
pub async fn hold_sqlite_write_lock(s: &TestServer, secs: u32) -> std::process::Child {
    let held = s.dir.path().join("sqlite3-holds-the-lock");
    let child = std::process::Command::new("sqlite3")
        .arg("-bail")
        .arg(s.dir.path().join("sipfront.db"))
        .args([".timeout 10000", "BEGIN IMMEDIATE;"])
        .arg(format!(".shell touch '{}'", held.display()))
        .args([&format!(".shell sleep {secs}"), "COMMIT;"])
        .spawn()
        .expect("start sqlite3");
    let holds = sipfront_storage::testing::eventually(Duration::from_secs(10), async || held.exists()).await;
    assert!(holds, "sqlite3 took the write lock");
    child
}
