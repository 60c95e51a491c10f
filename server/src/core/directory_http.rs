//! Directory search over HTTPS (issue 21): `GET /directory/v1/search?q=ali&limit=20&offset=0`
//! answers who in the caller's domain is called "ali…", as JSON, from the search index
//! ([`super::search`]): `{"total": N, "truncated": bool, "entries": [{"aor", "display_name",
//! "presence"}]}`, the presence as the user's rules let the caller see it.
//!
//! The caller proves who it is with HTTP Digest (RFC 7616) and its SIP credentials, checked by
//! the core's own [`Auth`](super::auth::Auth): one HA1, one set of nonces and nonce-counts, and
//! one lockout per user and address, whichever protocol a guess comes by. The realm is a
//! domain we serve, the one the user's HA1 is made with: the domain the Host header names (or
//! the one a name like `directory.example.test` is under), else the only domain when we serve
//! exactly one; with several and a Host naming none of them the request is misdirected (421).
//! The caller sees the users of its own domain only, unless `directory.all_domains` is on.
//!
//! HTTP/1.1 kept as small as `ops/http.rs`: GET only, no request bodies, a head of at most
//! [`MAX_HEAD`] bytes read within [`READ_TIMEOUT`], at most [`MAX_REQUESTS_PER_CONNECTION`]
//! requests on one connection (any answer but 200 and 401 closes it, the 401 staying open for
//! the digest exchange), and at most [`MAX_CONNECTIONS`] connections at once. Every answer is
//! counted once in `sipfront_directory_requests_total{result}`.
//!
//! The index follows the store: built at start from the users the directory read then, then
//! each user the change log names is read again from the store and replaced, or removed when
//! gone or disabled; a change feed that fell behind reads everything again.

use super::auth::Verdict;
use super::directory::Directory;
use super::groups;
use super::refusal::Refusal;
use super::search::{Change, Index, Page, QueryError, Scope, MAX_PAGE};
use super::Core;
use crate::ops::metrics as m;
use crate::ops::shutdown::Shutdown;
use serde_json::json;
use sipfront_storage::StoreError;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The one resource served.
pub const SEARCH_PATH: &str = "/directory/v1/search";
/// `GROUPS_PATH` + a group's address + `/members`: the group expanded (issue 21, item 3).
pub const GROUPS_PATH: &str = "/directory/v1/groups/";
/// Bytes of a request head at most: a longer request line is answered 414, longer headers 431.
pub const MAX_HEAD: usize = 8192;
/// A request head must arrive within this (408 if part of it did); an idle connection between
/// requests is closed after it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer the client does not read within this closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once, over every directory listener; past it a new one is closed at
/// accept (`sipfront_over_capacity_total{table="directory_connections"}`).
pub const MAX_CONNECTIONS: usize = 1024;
/// Requests one connection may carry before it is closed.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// Entries per page when the request does not say (`limit`, at most [`MAX_PAGE`]).
pub const DEFAULT_LIMIT: usize = 20;
/// How long a change the store could not answer waits to be read again.
const RETRY: Duration = Duration::from_secs(1);
/// A change-log read of one user for the index waits this long for the store at most.
const STORE_WAIT: Duration = Duration::from_secs(2);

/// The directory search service: its index and what answering needs.
pub struct DirectorySearch {
    /// For its [`Auth`](super::auth::Auth), shared with SIP, and the presence it shows.
    core: Core,
    cfg: crate::config::Directory,
    directory: Arc<Directory>,
    /// Replaced whole when the change feed fell behind; otherwise changed in place.
    index: RwLock<Arc<Index>>,
    /// The change feed, subscribed before the index was read (see [`DirectorySearch::load`]);
    /// held by [`DirectorySearch::follow`] while it runs.
    changes: tokio::sync::Mutex<broadcast::Receiver<Arc<str>>>,
    connections: Arc<tokio::sync::Semaphore>,
}

impl DirectorySearch {
    /// Indexes every user the directory read at start (before its change log is followed,
    /// which must not have begun: what changed since is heard of on `changes`).
    pub fn load(core: Core, directory: Arc<Directory>, cfg: crate::config::Directory) -> DirectorySearch {
        let changes = directory.changes();
        let index = index_of(directory.cached_users().iter().map(|u| u.as_ref()));
        DirectorySearch {
            core,
            cfg,
            directory,
            index: RwLock::new(Arc::new(index)),
            changes: tokio::sync::Mutex::new(changes),
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Keeps the index up to date with the store's change log; runs until dropped. What arrives
    /// together is applied together (one new snapshot per domain, as [`Index::apply`] wants).
    pub async fn follow(&self) {
        use broadcast::error::{RecvError, TryRecvError};
        let mut changes = self.changes.lock().await;
        // Users the change log named and the store has not answered for yet.
        let mut unread: HashSet<Arc<str>> = HashSet::new();
        let mut reload = false;
        loop {
            if unread.is_empty() && !reload {
                match changes.recv().await {
                    Ok(aor) => {
                        unread.insert(aor);
                    }
                    Err(RecvError::Lagged(_)) => reload = true,
                    Err(RecvError::Closed) => return,
                }
            } else {
                tokio::time::sleep(RETRY).await;
            }
            loop {
                match changes.try_recv() {
                    Ok(aor) => {
                        unread.insert(aor);
                    }
                    Err(TryRecvError::Lagged(_)) => reload = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if reload {
                // Changes were missed: which, nobody knows, so everything is read again.
                match read_all(&self.directory).await {
                    Ok(index) => {
                        *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
                        unread.clear();
                        reload = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "directory search index not reloaded; retrying"),
                }
                continue;
            }
            let mut read = Vec::with_capacity(unread.len());
            for aor in &unread {
                // From the store itself: read through the directory's cache, the index would
                // fill it with every user the change log names, whom the SIP side has not asked for.
                let read_one = tokio::time::timeout(STORE_WAIT, self.directory.store().user(aor)).await;
                match read_one {
                    Ok(Ok(user)) => read.push((aor.clone(), user.map(Arc::new))),
                    Ok(Err(e)) => tracing::debug!(error = %e, "store unavailable for the directory search index"),
                    Err(_) => tracing::debug!("store too slow for the directory search index"),
                }
            }
            let index = self.index();
            index.apply(read.iter().map(|(aor, user)| match user {
                Some(u) if u.enabled => Change::Upsert { aor: &u.aor, display_name: &u.display_name },
                _ => Change::Remove { aor },
            }));
            for (aor, _) in &read {
                unread.remove(aor);
            }
        }
    }

    /// Serves HTTPS on `listener` until `stop` fires, each TLS handshake within `handshake`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        handshake: Duration,
        mut stop: Shutdown,
    ) {
        // The server's certificate and key, speaking HTTP/1.1 (RFC 7301) and nothing else.
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "directory accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = self.connections.clone().try_acquire_owned() else {
                metrics::counter!(m::OVER_CAPACITY, "table" => "directory_connections").increment(1);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (this, tls, stop) = (self.clone(), tls.clone(), stop.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(handshake, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => this.connection(stream, remote.ip(), stop).await,
                    Ok(Err(e)) => {
                        metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "error").increment(1);
                        tracing::debug!(%remote, error = %e, "directory TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "timeout").increment(1);
                        tracing::debug!(%remote, "directory TLS handshake timed out");
                    }
                }
            });
        }
    }

    /// Answers the requests of one connection, in order, until one closes it.
    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, ip: IpAddr, stop: Shutdown) {
        let mut buf = Vec::with_capacity(1024);
        for served in 1..=MAX_REQUESTS_PER_CONNECTION {
            let (answer, keep_alive) = match read_head(&mut stream, &mut buf).await {
                Read::Head(end) => {
                    let answered = self.answer(&buf[..end], ip).await;
                    buf.drain(..end);
                    answered
                }
                Read::Refused(bad) => (Answer::Refused(bad), false),
                Read::Closed => break,
            };
            metrics::counter!(m::DIRECTORY_REQUESTS, "result" => answer.label()).increment(1);
            tracing::debug!(%ip, status = answer.status(), result = answer.label(), "directory request");
            let keep_alive = keep_alive && served < MAX_REQUESTS_PER_CONNECTION && !stop.is_triggered();
            let bytes = self.response(&answer, keep_alive);
            let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                stream.write_all(&bytes).await?;
                stream.flush().await
            })
            .await;
            if !matches!(written, Ok(Ok(()))) || !keep_alive {
                break;
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
    }

    /// The answer to one request head, and whether the connection may carry another.
    async fn answer(&self, head: &[u8], ip: IpAddr) -> (Answer, bool) {
        let req = match Request::parse(head) {
            Ok(r) => r,
            Err(bad) => return (Answer::Refused(bad), false),
        };
        if req.method != b"GET" {
            return (Answer::Refused(Refused::MethodNotAllowed), false);
        }
        if req.has_body {
            // GET has no body (RFC 9110 9.3.1); one would have to be read past to go on.
            return (Answer::Refused(Refused::BodyNotAllowed), false);
        }
        let (path, query) = match req.target.iter().position(|&b| b == b'?') {
            Some(at) => (&req.target[..at], &req.target[at + 1..]),
            None => (req.target, &b""[..]),
        };
        let group = path.strip_prefix(GROUPS_PATH.as_bytes()).and_then(|rest| rest.strip_suffix(b"/members"));
        if path != SEARCH_PATH.as_bytes() && group.is_none() {
            return (Answer::Refused(Refused::NotFound), false);
        }
        let Some(realm) = self.realm(req.host) else { return (Answer::Refused(Refused::Misdirected), false) };
        let auth = self.core.auth();
        let verdict =
            auth.verify_http(req.authorization.iter().copied(), "GET", req.target, &realm, ip, &self.directory).await;
        let user = match verdict {
            Verdict::Authenticated(user) => user,
            Verdict::Challenge { stale } => return (Answer::Challenge(auth.challenges(&realm, stale)), req.keep_alive),
            Verdict::Reject(refusal) => return (Answer::Refused(Refused::Credentials(refusal)), false),
            Verdict::Unavailable => return (Answer::Unavailable, false),
        };
        if let Some(group) = group {
            return (self.members(group, &user.domain).await, req.keep_alive);
        }
        let search = match Search::parse(query) {
            Ok(s) => s,
            Err(bad) => return (Answer::Refused(bad), false),
        };
        // The caller's own domain (the realm it proved itself in), unless configured otherwise.
        let scope = if self.cfg.all_domains { Scope::AllDomains } else { Scope::Domain(&user.domain) };
        let page = match self.index().search(&search.q, scope, search.offset, search.limit) {
            Ok(page) => page,
            Err(e) => return (Answer::Refused(Refused::Query(e)), false),
        };
        let mut presence = Vec::with_capacity(page.entries.len());
        if self.cfg.presence {
            for e in &page.entries {
                presence.push(self.core.presence_seen_by(&e.aor, &user.aor).await);
            }
        }
        (Answer::Found(page, presence), req.keep_alive)
    }

    /// A group of the caller's domain, expanded: its users and remote addresses, nested
    /// groups followed within the bounds SIP's expansions keep ([`groups::DEPTH`] deep,
    /// [`groups::MAX_MEMBERS`] at most), loops reported, not followed.
    /// A group of another domain is not found, as an unknown one.
    async fn members(&self, group: &[u8], domain: &str) -> Answer {
        let Ok(group) = decode(group) else { return Answer::Refused(Refused::BadEncoding) };
        let group = group.strip_prefix("sip:").unwrap_or(&group).to_ascii_lowercase();
        if sipfront_proto::Aor::domain_of(&group) != domain {
            return Answer::Refused(Refused::NotFound);
        }
        let store = self.directory.store();
        let found = tokio::time::timeout(STORE_WAIT, async {
            let Some(g) = store.group(&group).await? else { return Ok(None) };
            let expansion = sipfront_storage::expand(store.as_ref(), &g, groups::DEPTH, groups::MAX_MEMBERS).await?;
            Ok::<_, StoreError>(Some((g, expansion)))
        })
        .await;
        match found {
            Ok(Ok(Some((g, e)))) => Answer::Members { group: g.aor, display_name: g.display_name, expansion: e },
            Ok(Ok(None)) => Answer::Refused(Refused::NotFound),
            Ok(Err(_)) | Err(_) => Answer::Unavailable,
        }
    }

    /// The realm of a request: the served domain its Host names or is under, else the only
    /// domain served.
    fn realm(&self, host: Option<&[u8]>) -> Option<String> {
        if let Some(name) = host.and_then(host_name) {
            let mut candidate = name.as_str();
            loop {
                if self.directory.serves(candidate) {
                    return Some(candidate.to_string());
                }
                match candidate.split_once('.') {
                    Some((_, parent)) => candidate = parent,
                    None => break,
                }
            }
        }
        self.directory.only_domain()
    }

    /// The response's bytes: status line, headers and JSON body.
    fn response(&self, answer: &Answer, keep_alive: bool) -> Vec<u8> {
        let body = match answer {
            Answer::Found(page, presence) => json!({
                "total": page.total,
                "truncated": page.truncated,
                "entries": page
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let mut entry = json!({"aor": e.aor, "display_name": e.display_name});
                        if let Some(Some(seen)) = presence.get(i) {
                            entry["presence"] = json!({
                                "basic": if seen.open { "open" } else { "closed" },
                                "note": seen.note,
                            });
                        }
                        entry
                    })
                    .collect::<Vec<_>>(),
            }),
            Answer::Members { group, display_name, expansion } => json!({
                "group": group,
                "display_name": display_name,
                "members": expansion.members,
                "truncated": expansion.truncated,
                "loops": expansion.loops,
            }),
            other => json!({ "error": other.label() }),
        }
        .to_string();
        let status = answer.status();
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nDate: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: {}\r\n",
            reason_phrase(status),
            super::date::sip_date(SystemTime::now()),
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        match answer {
            Answer::Challenge(challenges) => {
                for c in challenges {
                    head.push_str(&format!("WWW-Authenticate: {c}\r\n"));
                }
            }
            Answer::Refused(Refused::MethodNotAllowed) => head.push_str("Allow: GET\r\n"),
            Answer::Unavailable => head.push_str("Retry-After: 5\r\n"),
            _ => {}
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }
}

/// Every enabled user of the store, indexed.
async fn read_all(directory: &Directory) -> Result<Index, StoreError> {
    let users = m::store_op("users", directory.store().users(None)).await?;
    Ok(index_of(users.iter()))
}

/// The enabled ones of `users`, indexed.
fn index_of<'a>(users: impl Iterator<Item = &'a sipfront_storage::User>) -> Index {
    let started = Instant::now();
    let index = Index::default();
    let refused =
        index.apply(users.filter(|u| u.enabled).map(|u| Change::Upsert { aor: &u.aor, display_name: &u.display_name }));
    tracing::info!(
        users = index.len(),
        refused,
        ms = started.elapsed().as_millis() as u64,
        "directory search index built"
    );
    index
}

/// What a request gets: one status, one metric label.
#[derive(Debug)]
enum Answer {
    /// 200: a page of results, with what the caller may see of each one's presence (nothing
    /// when `directory.presence` is off).
    Found(Page, Vec<Option<super::presence::Seen>>),
    /// 200: a group's members.
    Members {
        group: String,
        display_name: String,
        expansion: sipfront_storage::Expansion,
    },
    /// 401: the `WWW-Authenticate` values of a fresh challenge.
    Challenge(Vec<String>),
    /// 503: the store is needed for the credentials and did not answer.
    Unavailable,
    Refused(Refused),
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// The head is not HTTP/1.x (400).
    Malformed,
    /// A GET with a body (400).
    BodyNotAllowed,
    /// Part of a head, and not the rest within [`READ_TIMEOUT`] (408).
    Timeout,
    /// A request line longer than [`MAX_HEAD`] (414).
    UriTooLong,
    /// A head longer than [`MAX_HEAD`] (431).
    HeadTooLarge,
    /// Another HTTP version (505).
    Version,
    MethodNotAllowed,
    NotFound,
    /// We serve several domains and the Host names none of them: which realm is meant? (421)
    Misdirected,
    /// Malformed credentials (400), or a user locked out from this address (403).
    Credentials(Refusal),
    /// No `q`, or only spaces (400).
    MissingQuery,
    /// Bad percent-encoding, or not UTF-8 once decoded (400).
    BadEncoding,
    /// `limit` or `offset` not a number, or a parameter given twice (400).
    BadParameter,
    /// A query the index refuses: too long, too many words (400).
    Query(QueryError),
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Found(..) | Answer::Members { .. } => 200,
            Answer::Challenge(_) => 401,
            Answer::Unavailable => 503,
            Answer::Refused(bad) => match bad {
                Refused::Malformed
                | Refused::BodyNotAllowed
                | Refused::MissingQuery
                | Refused::BadEncoding
                | Refused::BadParameter => 400,
                Refused::Query(_) => 400,
                Refused::Credentials(refusal) => refusal.status(),
                Refused::Timeout => 408,
                Refused::UriTooLong => 414,
                Refused::HeadTooLarge => 431,
                Refused::Version => 505,
                Refused::MethodNotAllowed => 405,
                Refused::NotFound => 404,
                Refused::Misdirected => 421,
            },
        }
    }

    /// The metric label, and the `error` of the JSON body.
    fn label(&self) -> &'static str {
        match self {
            Answer::Found(..) => "ok",
            Answer::Members { .. } => "group",
            Answer::Challenge(_) => "unauthenticated",
            Answer::Unavailable => "unavailable",
            Answer::Refused(bad) => match bad {
                Refused::Malformed => "malformed",
                Refused::BodyNotAllowed => "body_not_allowed",
                Refused::Timeout => "timeout",
                Refused::UriTooLong => "uri_too_long",
                Refused::HeadTooLarge => "head_too_large",
                Refused::Version => "version_not_supported",
                Refused::MethodNotAllowed => "method_not_allowed",
                Refused::NotFound => "not_found",
                Refused::Misdirected => "misdirected",
                Refused::Credentials(Refusal::LockedOut) => "locked_out",
                Refused::Credentials(_) => "bad_credentials",
                Refused::MissingQuery => "missing_query",
                Refused::BadEncoding => "bad_encoding",
                Refused::BadParameter => "bad_parameter",
                Refused::Query(e) => e.label(),
            },
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// What reading a request head came to.
enum Read {
    /// A head, the first this many bytes of the buffer.
    Head(usize),
    /// The client closed, or sent nothing more within the timeout: nothing to answer.
    Closed,
    Refused(Refused),
}

/// Reads into `buf` (which may hold the start of it already) until it holds a whole head.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Read {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let mut chunk = [0u8; 2048];
    let mut scanned = 0;
    loop {
        match head_end(buf, scanned) {
            Some(end) if end <= MAX_HEAD => return Read::Head(end),
            _ if buf.len() >= MAX_HEAD => {
                let line_ends = buf[..MAX_HEAD].contains(&b'\n');
                return Read::Refused(if line_ends { Refused::HeadTooLarge } else { Refused::UriTooLong });
            }
            _ => {}
        }
        scanned = buf.len();
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return Read::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if buf.is_empty() => return Read::Closed,
            Err(_) => return Read::Refused(Refused::Timeout),
        }
    }
}

/// Where the head in `buf` ends (after its empty line: CRLF CRLF, or LF LF, which RFC 9112 2.2
/// lets a recipient accept), looking from about `from` on.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    (start..buf.len()).find_map(|i| match &buf[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// The parts of a request head acted on.
struct Request<'a> {
    method: &'a [u8],
    target: &'a [u8],
    /// Whether the client lets the connection carry another request: HTTP/1.1 unless it says
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive` (RFC 9112 9.3).
    keep_alive: bool,
    host: Option<&'a [u8]>,
    authorization: Vec<&'a [u8]>,
    has_body: bool,
}

impl<'a> Request<'a> {
    /// Parses a head as RFC 9112 asks of a server: a request line of three parts, header
    /// fields `name: value` with no space before the colon and no obsolete line folding, one
    /// Host (required in HTTP/1.1), no control characters.
    fn parse(head: &'a [u8]) -> Result<Request<'a>, Refused> {
        let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let line = lines.next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Malformed);
        };
        let is_token =
            |s: &[u8]| !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token(method) || target.is_empty() || target.iter().any(|b| b.is_ascii_control()) {
            return Err(Refused::Malformed);
        }
        let http11 = match version {
            b"HTTP/1.1" => true,
            b"HTTP/1.0" => false,
            v if v.starts_with(b"HTTP/") => return Err(Refused::Version),
            _ => return Err(Refused::Malformed),
        };
        let mut req =
            Request { method, target, keep_alive: http11, host: None, authorization: Vec::new(), has_body: false };
        for line in lines.take_while(|l| !l.is_empty()) {
            let colon = line.iter().position(|&b| b == b':').ok_or(Refused::Malformed)?;
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            // A name ending in a space, or a line starting with one (folding): refused, as
            // RFC 9112 5.1 and 5.2 ask, since intermediaries may read such lines differently.
            if !is_token(name) || value.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
                return Err(Refused::Malformed);
            }
            if name.eq_ignore_ascii_case(b"host") {
                if req.host.replace(value).is_some() {
                    return Err(Refused::Malformed);
                }
            } else if name.eq_ignore_ascii_case(b"authorization") {
                req.authorization.push(value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if option.eq_ignore_ascii_case(b"close") {
                        req.keep_alive = false;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                        req.keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                req.has_body = true;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                match std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()) {
                    Some(0) => {}
                    Some(_) => req.has_body = true,
                    None => return Err(Refused::Malformed),
                }
            }
        }
        // RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host.
        if http11 && req.host.is_none() {
            return Err(Refused::Malformed);
        }
        Ok(req)
    }
}

/// The host name of a Host header, without its port, in lower case; `None` for an IP literal
/// or what is not a name.
fn host_name(host: &[u8]) -> Option<String> {
    let host = std::str::from_utf8(host).ok()?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let is_name = !name.is_empty() && !name.starts_with('[') && name.parse::<std::net::Ipv4Addr>().is_err();
    is_name.then(|| name.to_ascii_lowercase())
}

/// What a search asks, from the query string.
#[derive(Debug, PartialEq, Eq)]
struct Search {
    q: String,
    offset: usize,
    limit: usize,
}

impl Search {
    /// `q` (required, not blank), `limit` (default [`DEFAULT_LIMIT`], at most [`MAX_PAGE`])
    /// and `offset` (default 0); other parameters are ignored, and one of these given twice is
    /// refused (which one was meant?).
    fn parse(query: &[u8]) -> Result<Search, Refused> {
        let (mut q, mut limit, mut offset) = (None, None, None);
        for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            let slot = match name {
                b"q" => &mut q,
                b"limit" => &mut limit,
                b"offset" => &mut offset,
                _ => continue,
            };
            if slot.replace(decode(value)?).is_some() {
                return Err(Refused::BadParameter);
            }
        }
        let q = q.filter(|q| !q.trim().is_empty()).ok_or(Refused::MissingQuery)?;
        let number = |v: Option<String>, default: usize| match v {
            None => Ok(default),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse().map_err(|_| Refused::BadParameter)
            }
            Some(_) => Err(Refused::BadParameter),
        };
        Ok(Search { q, offset: number(offset, 0)?, limit: number(limit, DEFAULT_LIMIT)?.min(MAX_PAGE) })
    }
}

/// A query component percent-decoded (RFC 3986 2.1; `+` is a space, as HTML forms send it)
/// into UTF-8.
fn decode(component: &[u8]) -> Result<String, Refused> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(component.len());
    let mut rest = component;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (rest.first().and_then(|&h| hex(h)), rest.get(1).and_then(|&l| hex(l)))
                else {
                    return Err(Refused::BadEncoding);
                };
                out.push(hi << 4 | lo);
                rest = &rest[2..];
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| Refused::BadEncoding)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn query_components_decode_to_utf8_or_are_refused() {
        assert_eq!(decode(b"al%C3%AFce+sm%69th"), Ok("alïce smith".to_string()));
        assert_eq!(decode(b"%25%5F%27"), Ok("%_'".to_string()), "SQL and LIKE metacharacters are text");
        for bad in [&b"%"[..], b"%4", b"%zz", b"%+1", b"%FF", b"\xff", b"%C3"] {
            assert_eq!(decode(bad), Err(Refused::BadEncoding), "{bad:?}");
        }
    }

    #[test]
    fn search_parameters() {
        let s = Search::parse(b"q=ali&limit=5&offset=10&other=%zz").unwrap();
        assert_eq!(s, Search { q: "ali".into(), offset: 10, limit: 5 });
        assert_eq!(Search::parse(b"q=ali").unwrap(), Search { q: "ali".into(), offset: 0, limit: DEFAULT_LIMIT });
        assert_eq!(Search::parse(b"q=ali&limit=100000").unwrap().limit, MAX_PAGE, "capped");
        assert_eq!(Search::parse(b""), Err(Refused::MissingQuery));
        assert_eq!(Search::parse(b"q=&limit=3"), Err(Refused::MissingQuery));
        assert_eq!(Search::parse(b"q=+%20"), Err(Refused::MissingQuery));
        for bad in [&b"q=a&q=b"[..], b"q=a&limit=-1", b"q=a&limit=", b"q=a&offset=x", b"q=a&limit=+5"] {
            assert_eq!(Search::parse(bad), Err(Refused::BadParameter), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(Search::parse(b"q=a&offset=99999999999999999999999"), Err(Refused::BadParameter));
    }

    #[test]
    fn heads_parse_as_rfc_9112_asks() {
        let r = Request::parse(b"GET /x?q=1 HTTP/1.1\r\nHost: example.test:5443\r\nAuthorization: Digest a=b\r\n\r\n")
            .unwrap();
        assert_eq!((r.method, r.target, r.host), (&b"GET"[..], &b"/x?q=1"[..], Some(&b"example.test:5443"[..])));
        assert!(r.keep_alive && !r.has_body);
        assert_eq!(r.authorization, vec![&b"Digest a=b"[..]]);
        let closing = Request::parse(b"GET / HTTP/1.1\nHost: h\nConnection: Close\n\n").unwrap();
        assert!(!closing.keep_alive);
        assert!(!Request::parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(Request::parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().keep_alive);
        assert!(Request::parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n").unwrap().has_body);
        let bad: [&[u8]; 9] = [
            b"GET / HTTP/1.1\r\n\r\n",                         // no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",   // two
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",             // a space before the colon
            b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",   // folding
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", // a control character
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",             // two spaces
            b"GET /\r\n\r\n",                                  // HTTP/0.9
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
            b"\x16\x03\x01 / HTTP/1.1\r\nHost: h\r\n\r\n",
        ];
        for head in bad {
            assert_eq!(Request::parse(head).err(), Some(Refused::Malformed), "{:?}", String::from_utf8_lossy(head));
        }
        assert_eq!(Request::parse(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n").err(), Some(Refused::Version));
    }

    #[test]
    fn a_head_ends_at_its_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET", 0), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: h\n\n", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: h\r\n", 0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_is_read_whole_within_its_bounds() {
        // Two requests in one write: the first head, and the second left in the buffer.
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n").await.unwrap();
        let mut buf = Vec::new();
        assert!(matches!(read_head(&mut server, &mut buf).await, Read::Head(28)));
        buf.drain(..28);
        // The rest of the second never comes: 408 once the time is up.
        assert!(matches!(read_head(&mut server, &mut buf).await, Read::Refused(Refused::Timeout)));
        // Nothing at all between requests: closed without an answer.
        assert!(matches!(read_head(&mut server, &mut Vec::new()).await, Read::Closed));
        // Past the bound: a request line that does not end, or headers that do not.
        client.write_all(&[b'a'; MAX_HEAD]).await.unwrap();
        assert!(matches!(read_head(&mut server, &mut Vec::new()).await, Read::Refused(Refused::UriTooLong)));
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(b"GET / HTTP/1.1\r\nX: ").await.unwrap();
        client.write_all(&[b'a'; MAX_HEAD]).await.unwrap();
        assert!(matches!(read_head(&mut server, &mut Vec::new()).await, Read::Refused(Refused::HeadTooLarge)));
        // The client gone mid-head: nothing to answer.
        drop(client);
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(matches!(read_head(&mut server, &mut Vec::new()).await, Read::Closed));
    }

    #[test]
    fn host_names_without_ports() {
        assert_eq!(host_name(b"Example.TEST:5443").as_deref(), Some("example.test"));
        assert_eq!(host_name(b"example.test").as_deref(), Some("example.test"));
        assert_eq!(host_name(b"127.0.0.1:5443"), None);
        assert_eq!(host_name(b"[::1]:5443"), None);
        assert_eq!(host_name(b""), None);
    }
}
