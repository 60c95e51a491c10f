//! Directory search over HTTPS (issue 21, item 1), over real sockets: a rustls client trusting
//! the server's self-signed certificate does the Digest exchange (RFC 7616) by hand, and curl
//! does it as a real HTTP client. Searches by name and user part, accents, paging, the index
//! following the store, and every refusal.

mod common;

use common::*;
use serde_json::{json, Value};
use sipfront_proto::digest::{ha1, Algorithm};
use sipfront_storage::NewUser;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

const PASSWORD: &str = "open sesame";
/// Another domain the server serves: its users are not ours to find.
const OTHER: &str = "other.test";
const SEARCH: &str = "/directory/v1/search";

/// The users of [`DOMAIN`] (user part, display name), all with [`PASSWORD`].
const PEOPLE: [(&str, &str); 8] = [
    ("alice", "Alice Liddell"),
    ("bob", "Bob Builder"),
    ("bobby.tables", "Robert'); DROP TABLE users;--"),
    ("edubois", "Éloïse Dubois"),
    ("zang", "Zoë Ångström"),
    ("pct", "100% Sure_Thing"),
    ("carol", "Carol Singer"),
    ("dave", "Dave Disabled"),
];

/// A user of `domain` as the store takes it.
fn person(user: &str, domain: &str, display_name: &str) -> NewUser {
    NewUser {
        username: user.into(),
        domain: domain.into(),
        display_name: display_name.into(),
        ha1_md5: ha1(Algorithm::Md5, user, domain, PASSWORD),
        ha1_sha256: ha1(Algorithm::Sha256, user, domain, PASSWORD),
    }
}

/// A server of [`DOMAIN`] with [`PEOPLE`] (dave disabled) and `pagers` more ("Pager 001"...),
/// and of [`OTHER`] with an alice of its own (when `two_domains`); a 100 ms change-log poll.
async fn directory_server(
    two_domains: bool,
    pagers: usize,
    adjust: impl FnOnce(&mut sipfront::config::Config),
) -> TestServer {
    let mut config = test_config();
    config.database.poll_ms = 100;
    adjust(&mut config);
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let store = sipfront_storage::open("", dir.path()).await.expect("open the store");
        store.add_domain(DOMAIN).await.expect("add the domain");
        let mut users: Vec<NewUser> = PEOPLE.iter().map(|(u, name)| person(u, DOMAIN, name)).collect();
        users.extend((1..=pagers).map(|i| person(&format!("p{i:03}"), DOMAIN, &format!("Pager {i:03}"))));
        if two_domains {
            users.push(person("alice", OTHER, "Alice Elsewhere"));
        }
        store.add_users(&users).await.expect("add the users");
        store.set_enabled(&format!("dave@{DOMAIN}"), false).await.expect("disable dave");
    }
    let server = sipfront::start(&config, dir.path()).await.expect("server starts");
    TestServer { server, config, dir }
}

/// An HTTP response as read off the connection.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("JSON ({e}): {}", self.body))
    }

    /// The AORs of a 200's entries, in order.
    fn aors(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "{self:?}");
        let json = self.json();
        let entries = json["entries"].as_array().unwrap_or_else(|| panic!("entries in {json}"));
        entries.iter().map(|e| e["aor"].as_str().expect("an aor").to_string()).collect()
    }

    /// The `error` of a refusal's JSON body.
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("error in {}", self.body)).to_string()
    }
}

/// A TLS connection to the server's directory listener, trusting its self-signed certificate.
async fn connect(s: &TestServer) -> Tls {
    let addr = s.server.directory_search[0];
    let tcp = TcpStream::connect(addr).await.expect("connect to the directory listener");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(WAIT, tls_connector(&s.cert_path()).connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake with the server's certificate")
}

/// Writes `request` and reads one response; `None` if the server closed without one.
async fn exchange(c: &mut Tls, request: &[u8]) -> Option<Response> {
    c.write_all(request).await.ok()?;
    c.flush().await.ok()?;
    read_response(c).await
}

async fn read_response(c: &mut Tls) -> Option<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(WAIT, c.read(&mut chunk)).await.expect("an answer in time").ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().expect("a status code");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(": ").map(|(n, v)| (n.to_string(), v.to_string())).expect("name: value"))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("a length"))
        .expect("Content-Length");
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(WAIT, c.read(&mut chunk)).await.expect("the body in time").ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Response { status, headers, body: String::from_utf8(body).expect("a UTF-8 body") })
}

fn get(target: &str, host: &str, authorization: Option<&str>) -> Vec<u8> {
    let authorization = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{authorization}\r\n").into_bytes()
}

/// The Host header naming [`DOMAIN`] at the server's port.
fn host(s: &TestServer) -> String {
    format!("{DOMAIN}:{}", s.server.directory_search[0].port())
}

/// One request answered: a 401 first, then the same request with `user`'s credentials on the
/// same connection.
async fn search_as(s: &TestServer, user: &str, password: &str, target: &str) -> Response {
    let mut c = connect(s).await;
    let challenge = exchange(&mut c, &get(target, &host(s), None)).await.expect("a challenge");
    assert_eq!(challenge.status, 401, "{challenge:?}");
    let creds = digest_answer(
        challenge.header("www-authenticate").expect("a challenge"),
        Algorithm::Md5,
        user,
        password,
        "GET",
        target,
        1,
    );
    exchange(&mut c, &get(target, &host(s), Some(&creds))).await.expect("an answer")
}

async fn search(s: &TestServer, query: &str) -> Response {
    search_as(s, "alice", PASSWORD, &format!("{SEARCH}?{query}")).await
}

fn ours(users: &[&str]) -> Vec<String> {
    users.iter().map(|u| format!("{u}@{DOMAIN}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn searches_by_name_and_user_part_of_the_callers_domain() {
    let s = directory_server(true, 0, |_| {}).await;

    let r = search(&s, "q=builder").await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        r.json(),
        json!({"total": 1, "truncated": false, "entries": [{
            "aor": "bob@example.test",
            "display_name": "Bob Builder",
            // Bob's rules let a user of his domain see him (`presence.default_policy`).
            "presence": {"basic": "closed", "note": "offline"},
        }]}),
    );
    // A prefix of the user part (`bobby.tables` is `bobby` and `tables`) or of a name's word.
    assert_eq!(search(&s, "q=bo").await.aors(), ours(&["bob", "bobby.tables"]));
    assert_eq!(search(&s, "q=tab").await.aors(), ours(&["bobby.tables"]));
    assert_eq!(search(&s, "q=LIDDELL").await.aors(), ours(&["alice"]));
    // Every word must match; alice of the other domain is not ours to see.
    assert_eq!(search(&s, "q=ali+lid").await.aors(), ours(&["alice"]));
    assert_eq!(search(&s, "q=ali%20lid").await.aors(), ours(&["alice"]));
    assert_eq!(search(&s, "q=ali").await.aors(), ours(&["alice"]));
    assert!(search(&s, "q=ali+xyz").await.aors().is_empty());
    assert!(search(&s, "q=elsewhere").await.aors().is_empty(), "another domain's users");
    // Accents and case, either way round.
    for q in ["q=eloise", "q=%C3%89LO%C3%8F", "q=%C3%A9lo", "q=dub"] {
        assert_eq!(search(&s, q).await.aors(), ours(&["edubois"]), "{q}");
    }
    for q in ["q=angstrom", "q=zoe", "q=%C3%85ng", "q=ZO%C3%8B"] {
        assert_eq!(search(&s, q).await.aors(), ours(&["zang"]), "{q}");
    }
    let r = search(&s, "q=zoe").await;
    assert_eq!(r.json()["entries"][0]["display_name"], "Zoë Ångström", "the name as written");
    // SQL and LIKE metacharacters are text: punctuation between words, never a wildcard.
    assert_eq!(search(&s, "q=100%25").await.aors(), ours(&["pct"]));
    assert_eq!(search(&s, "q=sure_th").await.aors(), ours(&["pct"]));
    assert_eq!(search(&s, "q=%27%29%3B+drop").await.aors(), ours(&["bobby.tables"]));
    for q in ["q=%25", "q=_", "q=%27+OR+1%3D1--", "q=*", "q=%25%25%25"] {
        let r = search(&s, q).await;
        assert_eq!(r.json(), json!({"total": 0, "truncated": false, "entries": []}), "{q}");
    }
    // A disabled user is not listed.
    assert!(search(&s, "q=dave").await.aors().is_empty());
    // A user of the other domain (its realm named by the Host) finds its own domain's users.
    let mut c = connect(&s).await;
    let other_host = format!("{OTHER}:{}", s.server.directory_search[0].port());
    let target = format!("{SEARCH}?q=ali");
    let challenge = exchange(&mut c, &get(&target, &other_host, None)).await.expect("a challenge");
    let www = challenge.header("www-authenticate").expect("a challenge");
    assert!(www.contains(&format!("realm=\"{OTHER}\"")), "the Host names the realm: {www}");
    let creds = digest_answer(www, Algorithm::Md5, "alice", PASSWORD, "GET", &target, 1);
    let r = exchange(&mut c, &get(&target, &other_host, Some(&creds))).await.expect("an answer");
    assert_eq!(r.aors(), vec![format!("alice@{OTHER}")]);
    assert!(s.metric("sipfront_directory_requests_total{result=\"ok\"}").await >= 20.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_follow_each_other_on_one_connection_and_are_capped() {
    let s = directory_server(false, 120, |_| {}).await;
    // One connection for the whole walk: the nonce of the first challenge, its count rising.
    let mut c = connect(&s).await;
    let first = format!("{SEARCH}?q=pager&limit=50");
    let challenge = exchange(&mut c, &get(&first, &host(&s), None)).await.expect("a challenge");
    assert_eq!(challenge.header("connection"), Some("keep-alive"), "a 401 keeps the connection");
    let www = challenge.header("www-authenticate").expect("a challenge").to_string();
    let mut walked = Vec::new();
    for (n, offset) in [0, 50, 100].into_iter().enumerate() {
        let target = format!("{SEARCH}?q=pager&limit=50&offset={offset}");
        let creds = digest_answer(&www, Algorithm::Md5, "alice", PASSWORD, "GET", &target, n as u32 + 1);
        let r = exchange(&mut c, &get(&target, &host(&s), Some(&creds))).await.expect("a page");
        let json = r.json();
        assert_eq!((json["total"].as_u64(), json["truncated"].as_bool()), (Some(120), Some(false)), "{json}");
        walked.extend(r.aors());
    }
    let expected: Vec<String> = (1..=120).map(|i| format!("p{i:03}@{DOMAIN}")).collect();
    assert_eq!(walked, expected, "three pages, in order, each user once");
    // Past the end: an empty page; a limit above 100 gets 100; no limit gets 20.
    assert!(search(&s, "q=pager&offset=500").await.aors().is_empty());
    assert_eq!(search(&s, "q=pager&limit=100000").await.aors().len(), 100);
    assert_eq!(search(&s, "q=pager").await.aors().len(), 20);
    assert_eq!(search(&s, "q=pager&limit=0").await.json()["total"], 120);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_index_follows_the_store() {
    let s = directory_server(false, 0, |_| {}).await;
    let store = sipfront_storage::open("", s.dir.path()).await.expect("open the store");
    store.add_user(&person("nina", DOMAIN, "Nina Newcomer")).await.expect("add nina");
    store.set_enabled(&format!("bob@{DOMAIN}"), false).await.expect("disable bob");
    store.remove_user(&format!("zang@{DOMAIN}")).await.expect("remove zang");
    let followed = eventually(Duration::from_secs(10), async || {
        search(&s, "q=newcomer").await.aors() == ours(&["nina"])
            && search(&s, "q=builder").await.aors().is_empty()
            && search(&s, "q=zoe").await.aors().is_empty()
    })
    .await;
    assert!(followed, "added, disabled and removed users are searched as they are now");
    // Enabled again: listed again.
    store.set_enabled(&format!("bob@{DOMAIN}"), true).await.expect("enable bob");
    let back =
        eventually(Duration::from_secs(10), async || search(&s, "q=builder").await.aors() == ours(&["bob"])).await;
    assert!(back, "bob is found again");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_is_answered_precisely_and_counted() {
    let s = directory_server(true, 0, |_| {}).await;
    let h = host(&s);
    let raw = async |request: &[u8]| {
        let mut c = connect(&s).await;
        exchange(&mut c, request).await.expect("an answer")
    };

    // Unauthenticated: a challenge for the domain, MD5 only (the default auth.algorithms).
    let r = raw(&get(&format!("{SEARCH}?q=bo"), &h, None)).await;
    assert_eq!((r.status, r.error().as_str()), (401, "unauthenticated"));
    let challenges = r.all("www-authenticate");
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    for part in ["Digest ", "realm=\"example.test\"", "qop=\"auth\"", "algorithm=MD5", "nonce=\""] {
        assert!(challenges[0].contains(part), "{part} in {}", challenges[0]);
    }
    // A wrong password: a fresh challenge, as for an unknown user.
    for (user, password) in [("alice", "wrong"), ("nobody", PASSWORD)] {
        let r = search_as(&s, user, password, &format!("{SEARCH}?q=bo")).await;
        assert_eq!(r.status, 401, "{user}: {r:?}");
        assert!(r.header("www-authenticate").is_some());
    }
    // Credentials are good once, and for the request they were made for.
    let target = format!("{SEARCH}?q=bo");
    let mut c = connect(&s).await;
    let challenge = exchange(&mut c, &get(&target, &h, None)).await.expect("a challenge");
    let www = challenge.header("www-authenticate").expect("a challenge").to_string();
    let creds = digest_answer(&www, Algorithm::Md5, "alice", PASSWORD, "GET", &target, 1);
    assert_eq!(exchange(&mut c, &get(&target, &h, Some(&creds))).await.expect("an answer").status, 200);
    let replayed = raw(&get(&target, &h, Some(&creds))).await;
    assert_eq!(replayed.status, 401, "a replay is challenged again");
    let other = format!("{SEARCH}?q=carol");
    let creds = digest_answer(&www, Algorithm::Md5, "alice", PASSWORD, "GET", &target, 2);
    let moved = raw(&get(&other, &h, Some(&creds))).await;
    assert_eq!((moved.status, moved.error().as_str()), (400, "bad_credentials"), "uri of another request");
    let garbled = raw(&get(&target, &h, Some("Digest realm"))).await;
    assert_eq!((garbled.status, garbled.error().as_str()), (400, "bad_credentials"));

    // Bad queries, once authenticated.
    let long = "a".repeat(300);
    let many = "ab+ac+ad+ae+af+ag+ah+ai+aj+ak+al";
    for (query, error) in [
        ("limit=5", "missing_query"),
        ("q=", "missing_query"),
        ("q=+%20", "missing_query"),
        (&format!("q={long}") as &str, "query_too_long"),
        (&format!("q={many}"), "query_too_many_words"),
        ("q=%FF", "bad_encoding"),
        ("q=%C3", "bad_encoding"),
        ("q=%G1", "bad_encoding"),
        ("q=ali%", "bad_encoding"),
        ("q=ali&limit=abc", "bad_parameter"),
        ("q=ali&offset=-1", "bad_parameter"),
        ("q=ali&q=bob", "bad_parameter"),
    ] {
        let r = search(&s, query).await;
        assert_eq!((r.status, r.error().as_str()), (400, error), "{query}");
        assert_eq!(r.header("connection"), Some("close"), "a refusal closes the connection");
    }
    // Longer still (2 KB), the credentials' `uri` outgrows what digest parameters may be.
    assert_eq!(search(&s, &format!("q={}", "a".repeat(2048))).await.status, 400);
    // Raw bytes that are not UTF-8 in the request line: no credentials can name that `uri`.
    let nonce = challenge_param(&www, "nonce").expect("a nonce");
    let invalid = [
        &b"GET /directory/v1/search?q=\xff\xfe HTTP/1.1\r\nHost: "[..],
        h.as_bytes(),
        b"\r\nAuthorization: Digest username=\"alice\", realm=\"example.test\", nonce=\"",
        nonce.as_bytes(),
        b"\", uri=\"/directory/v1/search?q=\xff\xfe\", response=\"0123456789abcdef0123456789abcdef\", qop=auth, ",
        b"nc=00000009, cnonce=\"x\"\r\n\r\n",
    ]
    .concat();
    let r = raw(&invalid).await;
    assert_eq!((r.status, r.error().as_str()), (400, "bad_credentials"));

    // Refused before any authentication.
    let r = raw(&get(&format!("{SEARCH}?q={}", "a".repeat(10 * 1024)), &h, None)).await;
    assert_eq!((r.status, r.error().as_str()), (414, "uri_too_long"), "a 10 KB query");
    let big = format!("GET {SEARCH}?q=bo HTTP/1.1\r\nHost: {h}\r\nX-Filler: {}\r\n\r\n", "x".repeat(9000));
    assert_eq!(raw(big.as_bytes()).await.error(), "head_too_large");
    assert_eq!(raw(big.as_bytes()).await.status, 431);
    let r = raw(&get("/directory/v1/other?q=bo", &h, None)).await;
    assert_eq!((r.status, r.error().as_str()), (404, "not_found"));
    assert_eq!(raw(&get("/", &h, None)).await.status, 404);
    let post = format!("POST {SEARCH}?q=bo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 2\r\n\r\n{{}}");
    let r = raw(post.as_bytes()).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    for method in ["HEAD", "PUT", "DELETE", "OPTIONS"] {
        let r = raw(format!("{method} {SEARCH}?q=bo HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes()).await;
        assert_eq!((r.status, r.error().as_str()), (405, "method_not_allowed"), "{method}");
    }
    let with_body = format!("GET {SEARCH}?q=bo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(raw(with_body.as_bytes()).await.error(), "body_not_allowed");
    let r = raw(format!("GET {SEARCH}?q=bo HTTP/2.0\r\nHost: {h}\r\n\r\n").as_bytes()).await;
    assert_eq!((r.status, r.error().as_str()), (505, "version_not_supported"));
    for head in [
        format!("GET {SEARCH}?q=bo HTTP/1.1\r\n\r\n"),
        format!("GET {SEARCH}?q=bo HTTP/1.1\r\nHost: {h}\r\nHost: {h}\r\n\r\n"),
        format!("GET {SEARCH}?q=bo HTTP/1.1\r\nHost : {h}\r\n\r\n"),
        format!("GET  {SEARCH}?q=bo HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        "\u{1}\u{2}\u{3}\r\n\r\n".to_string(),
    ] {
        let r = raw(head.as_bytes()).await;
        assert_eq!((r.status, r.error().as_str()), (400, "malformed"), "{head:?}");
    }
    // Serving two domains, a Host naming neither leaves the realm unknown; a name under one
    // of them names it.
    let by_address = format!("127.0.0.1:{}", s.server.directory_search[0].port());
    let r = raw(&get(&format!("{SEARCH}?q=bo"), &by_address, None)).await;
    assert_eq!((r.status, r.error().as_str()), (421, "misdirected"));
    let r = raw(&get(&format!("{SEARCH}?q=bo"), "directory.example.test", None)).await;
    assert!(r.header("www-authenticate").is_some_and(|c| c.contains("realm=\"example.test\"")), "{r:?}");

    // Still serving, and every refusal counted by its result.
    assert_eq!(search(&s, "q=bo").await.aors(), ours(&["bob", "bobby.tables"]));
    for result in [
        "ok",
        "unauthenticated",
        "bad_credentials",
        "missing_query",
        "query_too_long",
        "query_too_many_words",
        "bad_encoding",
        "bad_parameter",
        "uri_too_long",
        "head_too_large",
        "not_found",
        "method_not_allowed",
        "body_not_allowed",
        "version_not_supported",
        "malformed",
        "misdirected",
    ] {
        let n = s.metric(&format!("sipfront_directory_requests_total{{result=\"{result}\"}}")).await;
        assert!(n >= 1.0, "{result} counted: {n}");
    }
}

/// Wrong passwords over HTTPS lock the user out from that address, for SIP too (one lockout
/// table); the realm of a server of one domain is that domain whatever the Host says.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_lock_out_over_https_and_sip_alike() {
    let s = directory_server(false, 0, |c| c.auth.max_failures = 3).await;
    let by_address = format!("127.0.0.1:{}", s.server.directory_search[0].port());
    let target = format!("{SEARCH}?q=bo");
    let attempt = async |password: &str| {
        let mut c = connect(&s).await;
        let challenge = exchange(&mut c, &get(&target, &by_address, None)).await.expect("a challenge");
        let www = challenge.header("www-authenticate").expect("a challenge");
        assert!(www.contains("realm=\"example.test\""), "the only domain is the realm: {www}");
        let creds = digest_answer(www, Algorithm::Md5, "carol", password, "GET", &target, 1);
        exchange(&mut c, &get(&target, &by_address, Some(&creds))).await.expect("an answer")
    };
    assert_eq!(attempt(PASSWORD).await.status, 200, "carol searches");
    for n in 1..=3 {
        assert_eq!(attempt("guess").await.status, 401, "wrong password {n}");
    }
    let locked = attempt(PASSWORD).await;
    assert_eq!((locked.status, locked.error().as_str()), (403, "locked_out"), "even the right password");
    // The same lockout in SIP: carol's REGISTER from this address is refused too.
    let mut phone = s.udp_client().await;
    let register = Request::register(&phone, "carol").set("Expires", "60");
    let r = with_credentials(&mut phone, &register, "carol", PASSWORD).await;
    assert_eq!(r.status(), Some(403), "SIP shares the lockout");
    // Others are not affected.
    assert_eq!(search(&s, "q=carol").await.aors(), ours(&["carol"]));
    assert!(s.metric("sipfront_directory_requests_total{result=\"locked_out\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sha_256_is_offered_when_configured_and_a_stale_nonce_is_said_so() {
    let s = directory_server(false, 0, |c| {
        c.auth.algorithms = vec!["SHA-256".into(), "MD5".into()];
        c.auth.nonce_lifetime_secs = 1;
    })
    .await;
    let target = format!("{SEARCH}?q=bo");
    let mut c = connect(&s).await;
    let challenge = exchange(&mut c, &get(&target, &host(&s), None)).await.expect("a challenge");
    let offered = challenge.all("www-authenticate");
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(offered[0].contains("algorithm=SHA-256") && offered[1].contains("algorithm=MD5"), "{offered:?}");
    let creds = digest_answer(offered[0], Algorithm::Sha256, "alice", PASSWORD, "GET", &target, 1);
    let r = exchange(&mut c, &get(&target, &host(&s), Some(&creds))).await.expect("an answer");
    assert_eq!(r.aors(), ours(&["bob", "bobby.tables"]));
    // The nonce outlives its lifetime: stale, whatever the response.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let creds = digest_answer(offered[0], Algorithm::Sha256, "alice", PASSWORD, "GET", &target, 2);
    let stale = exchange(&mut c, &get(&target, &host(&s), Some(&creds))).await.expect("an answer");
    assert_eq!(stale.status, 401);
    assert!(stale.all("www-authenticate").iter().all(|c| c.contains("stale=true")), "{stale:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_searches_with_digest() {
    if !require_program("curl", "curl") {
        return;
    }
    let s = directory_server(false, 0, |_| {}).await;
    let url = |query: &str| format!("https://127.0.0.1:{}{SEARCH}?{query}", s.server.directory_search[0].port());
    let curl = |user: &str, password: &str, url: String| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["--silent", "--show-error", "--digest", "--cacert"]).arg(s.cert_path()).args([
            "--user",
            &format!("{user}:{password}"),
            "--write-out",
            "\n%{http_code}",
            &url,
        ]);
        cmd
    };
    let (status, out, err) = run_tool(curl("alice", PASSWORD, url("q=bo")), Duration::from_secs(30)).await;
    assert!(status.success(), "curl: {err}");
    let (body, code) = out.rsplit_once('\n').expect("the body, then the status");
    assert_eq!(code, "200", "{out}");
    let json: Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(json["total"], 2, "{json}");
    assert_eq!(
        json["entries"][0],
        json!({"aor": "bob@example.test", "display_name": "Bob Builder", "presence": {"basic": "closed", "note": "offline"}})
    );
    // Accents, as curl encodes them.
    let (_, out, err) = run_tool(curl("alice", PASSWORD, url("q=%C3%A9lo%C3%AFse")), Duration::from_secs(30)).await;
    assert!(out.contains("\"edubois@example.test\"") && out.ends_with("200"), "{out} {err}");
    // A wrong password: curl gives up after the second 401.
    let (_, out, _) = run_tool(curl("alice", "wrong", url("q=bo")), Duration::from_secs(30)).await;
    assert!(out.ends_with("401"), "{out}");
    assert!(s.metric("sipfront_directory_requests_total{result=\"ok\"}").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_listener_list_serves_no_directory() {
    let s = TestServer::with(|c| c.listen.directory = Vec::new()).await;
    assert!(s.server.directory_search.is_empty());
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_of_the_callers_domain_is_expanded_for_it() {
    let s = directory_server(false, 0, |_| {}).await;
    let store = sipfront_storage::open("", s.dir.path()).await.expect("open the store");
    store.add_group(&format!("sales@{DOMAIN}"), "Sales").await.expect("add a group");
    store.add_group(&format!("north@{DOMAIN}"), "Sales North").await.expect("add a group");
    for (group, member) in [
        ("sales", format!("alice@{DOMAIN}")),
        ("sales", format!("north@{DOMAIN}")),
        ("north", format!("bob@{DOMAIN}")),
        ("north", "partner@b.test".to_string()),
        ("north", format!("sales@{DOMAIN}")),
    ] {
        store.add_group_member(&format!("{group}@{DOMAIN}"), &member).await.expect("add a member");
    }
    let r = search_as(&s, "alice", PASSWORD, &format!("/directory/v1/groups/sales@{DOMAIN}/members")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(json["display_name"], "Sales");
    let members: Vec<&str> = json["members"].as_array().expect("members").iter().filter_map(|m| m.as_str()).collect();
    assert_eq!(
        members,
        [format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"), "partner@b.test".to_string()],
        "nested, each once"
    );
    assert_eq!(json["loops"].as_array().map(Vec::len), Some(1), "sales -> north -> sales, not followed");
    assert_eq!(json["truncated"], false);
    for target in ["/directory/v1/groups/nobody@example.test/members", "/directory/v1/groups/sales@other.test/members"]
    {
        let r = search_as(&s, "alice", PASSWORD, target).await;
        assert_eq!(r.status, 404, "{target}: unknown, or not of the caller's domain");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_carry_the_presence_each_users_rules_let_the_caller_see() {
    let s = directory_server(true, 0, |_| {}).await;
    let store = s.server.directory.store().clone();
    store
        .set_rule(&format!("carol@{DOMAIN}"), &format!("alice@{DOMAIN}"), sipfront_storage::RuleAction::Block)
        .await
        .expect("Carol's rule");
    store
        .set_rule(&format!("edubois@{DOMAIN}"), &format!("alice@{DOMAIN}"), sipfront_storage::RuleAction::PoliteBlock)
        .await
        .expect("Éloïse's rule");
    let mut bob = online(&s, "bob", PASSWORD).await;
    let ok = bob.request(&publish(&bob, "bob", Some(&pidf_doc("bob", "t", "open", "at my desk")), None, 600)).await;
    assert_eq!(ok.status(), Some(200));
    let mut edubois = online(&s, "edubois", PASSWORD).await;
    let ok = edubois
        .request(&publish(&edubois, "edubois", Some(&pidf_doc("edubois", "t", "open", "here")), None, 600))
        .await;
    assert_eq!(ok.status(), Some(200));
    let _carol = online(&s, "carol", PASSWORD).await;

    let entry = |r: Response| r.json()["entries"][0].clone();
    assert_eq!(entry(search(&s, "q=builder").await)["presence"], json!({"basic": "open", "note": "at my desk"}));
    let carol = entry(search(&s, "q=carol").await);
    assert_eq!(carol["aor"], format!("carol@{DOMAIN}"));
    assert!(carol.get("presence").is_none(), "Carol blocks Alice: nothing of her presence: {carol}");
    assert_eq!(
        entry(search(&s, "q=eloise").await)["presence"],
        json!({"basic": "closed", "note": null}),
        "a polite block shows offline, as a NOTIFY does"
    );
    // Bob as the caller sees Carol (no rule against him), online by her registration.
    let r = search_as(&s, "bob", PASSWORD, &format!("{SEARCH}?q=carol")).await;
    assert_eq!(r.json()["entries"][0]["presence"], json!({"basic": "open", "note": null}));
    drop(bob);

    // Configured: every domain's users, and no presence.
    let s = directory_server(true, 0, |c| {
        c.directory.all_domains = true;
        c.directory.presence = false;
    })
    .await;
    let r = search(&s, "q=ali").await;
    assert_eq!(r.aors(), vec![format!("alice@{OTHER}"), format!("alice@{DOMAIN}")], "by name: Elsewhere, Liddell");
    assert!(r.json()["entries"][0].get("presence").is_none());
}
