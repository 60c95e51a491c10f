//! A real pool (issue 15): `ops/pool.sh` brings up three members in network namespaces, one
//! PostgreSQL and HAProxy with `ops/haproxy.cfg`; clients connect to HAProxy only. Least
//! connections spreads them over the members; every user reaches every other; an INVITE forks
//! to two endpoints of one user, their publications are aggregated for a watcher, a resource
//! list shows contacts homed anywhere, and a client posing as a member is refused; `kill -9` of
//! the watched presentity's home (HAProxy marks it down, its clients connect again and register
//! on the survivors) leaves every user reachable, and the watcher subscribed again; a SIGTERM
//! drains a member; a rolling restart loses no MESSAGE answered 200; a fourth member joins
//! without a restart of HAProxy. Needs root (namespaces), HAProxy, PostgreSQL and iproute2.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::Message;
use sipfront_storage::testing::{require_program, skip};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::net::TcpStream;

const MEMBERS: usize = 3;
const USERS: usize = 12;
const PASSWORD: &str = "pool-pass";

/// The pool this test brings up, taken down when dropped (whatever happened).
struct Pool {
    run: PathBuf,
    env: Vec<(String, String)>,
    lb: SocketAddr,
}

impl Pool {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/pool.sh")
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(Pool::script())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run ops/pool.sh");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "ops/pool.sh {args:?} failed: {text}");
        text
    }

    /// The pool's PostgreSQL, as the members use it.
    fn store_url(&self) -> String {
        std::fs::read_to_string(self.run.join("pg.url")).unwrap().trim().to_string()
    }

    fn up(n: usize) -> Pool {
        let run = std::env::temp_dir().join(format!("sipfront-pool-test-{}", std::process::id()));
        std::fs::create_dir_all(&run).unwrap();
        let csv = run.join("users.csv");
        // The clients' users, and a few more for the calls, presence and lists checked apart.
        let lines: Vec<String> = (0..USERS + 8).map(|i| format!("user{i}@{DOMAIN},{PASSWORD}")).collect();
        std::fs::write(&csv, format!("aor,password\n{}\n", lines.join("\n"))).unwrap();
        let lb_port = free_tcp_port();
        let env = [
            ("RUN", run.display().to_string()),
            ("SIPFRONT", env!("CARGO_BIN_EXE_sipfront").to_string()),
            ("DOMAIN", DOMAIN.to_string()),
            ("USERS_CSV", csv.display().to_string()),
            ("LB_SIP_PORT", lb_port.to_string()),
            ("LB_TLS_PORT", free_tcp_port().to_string()),
            ("PG_PORT", free_tcp_port().to_string()),
            ("POOL_NAME", "sft".to_string()),
            ("POOL_NET", "10.215.0".to_string()),
            ("DRAIN_SECS", "3".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let pool = Pool { run, env: env.to_vec(), lb: SocketAddr::from(([127, 0, 0, 1], lb_port)) };
        pool.cmd(&["up", &n.to_string()]);
        pool
    }

    /// `ops/pool.sh` in the background (a drain takes a while).
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new("bash")
            .arg(Pool::script())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run ops/pool.sh")
    }

    /// HAProxy's view: how many members it has up.
    fn up_in_haproxy(&self) -> usize {
        self.cmd(&["haproxy-status"]).lines().filter(|l| l.ends_with(" UP")).count()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Pool::script())
            .arg("down")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One user's client, connected through HAProxy.
struct Client {
    user: String,
    stream: SipStream<TcpStream>,
    /// The address in the Path of its registration (RFC 3327): the member holding its
    /// connection, when that is not the user's home. Two endpoints of one user are on the same
    /// member exactly when these are the same.
    edge: Option<String>,
}

impl Client {
    /// Connects through HAProxy and registers, as a client does: a 503 (the pool is still
    /// finding a new home for the user) is tried again after its Retry-After, and a connection
    /// closed under it (it reached a member just as that one stopped) is opened again.
    async fn connect(pool: &Pool, user: &str) -> Client {
        for _ in 0..10 {
            let mut stream = SipStream::tcp(pool.lb).await;
            let Some(r) = register(&mut stream, user, "600").await else { continue };
            match r.status() {
                Some(200) => {
                    // HAProxy named the client in a PROXY header: the member saw the address
                    // the client's Via names, so it added no `received` (RFC 3261 18.2.1).
                    let via = header(&r, sipfront_proto::HeaderName::Via);
                    assert!(!via.contains("received="), "the member saw HAProxy, not the client: {via}");
                    // <sip:TOKEN@ADDRESS;...>, the token being the registration's own.
                    let edge = r
                        .header(sipfront_proto::HeaderName::Path)
                        .map(|p| String::from_utf8_lossy(p).split(['@', ';']).nth(1).unwrap_or_default().to_string());
                    return Client { user: user.to_string(), stream, edge };
                }
                Some(503) => tokio::time::sleep(Duration::from_secs(1)).await,
                other => panic!("{user} registering: {other:?}"),
            }
        }
        panic!("{user} could not register through the pool");
    }

    /// Removes this endpoint's registration.
    async fn unregister(mut self) {
        let r = register(&mut self.stream, &self.user, "0").await;
        assert_eq!(r.and_then(|r| r.status()), Some(200), "{} unregistering", self.user);
    }

    /// The next request that reaches this client, answered 200 (`None` if none comes).
    async fn answer_next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.stream.next_frame(left).await?;
            let sipfront_proto::Frame::Message(bytes) = frame else { continue };
            let m = parse(&bytes);
            if m.is_request() {
                let mut r = m.response_to(200);
                r.set_to_tag("t");
                r.ensure_content_length();
                self.stream.write(&r.to_bytes()).await;
                return Some(m);
            }
        }
    }
}

/// REGISTERs `user` on `stream` with `expires`, answering the digest challenge: the final
/// response, or `None` if the connection closed first.
async fn register(stream: &mut SipStream<TcpStream>, user: &str, expires: &str) -> Option<Message> {
    let req = Request::register(stream, user).set("Expires", expires);
    let r = final_response(stream, &req.clone().new_branch()).await?;
    if r.status() != Some(401) {
        return Some(r);
    }
    let challenge = header(&r, sipfront_proto::HeaderName::WwwAuthenticate);
    let creds =
        digest_answer(&challenge, sipfront_proto::digest::Algorithm::Md5, user, PASSWORD, "REGISTER", req.uri(), 1);
    final_response(stream, &req.clone().new_branch().set("Authorization", &creds)).await
}

/// The final response to `req`, or `None` if the connection closed first.
async fn final_response(stream: &mut SipStream<TcpStream>, req: &Request) -> Option<Message> {
    if !stream.try_write(&req.to_bytes()).await {
        return None;
    }
    loop {
        let sipfront_proto::Frame::Message(bytes) = stream.next_frame(Duration::from_secs(5)).await? else { continue };
        let m = parse(&bytes);
        if m.status().is_some_and(|s| s >= 200) {
            return Some(m);
        }
    }
}

/// Every client writes to the next one, and each message is delivered.
async fn everyone_reaches_everyone(clients: &mut [Client]) -> bool {
    let n = clients.len();
    for i in 0..n {
        if !matches!(attempt(clients, i, (i + 1) % n).await, Outcome::Delivered) {
            return false;
        }
    }
    true
}

/// Clients whose connection closed (their member stopped) connect again and register.
async fn reconnect_closed(pool: &Pool, clients: &mut [Client]) {
    for c in clients.iter_mut() {
        if c.stream.closed_within(Duration::from_millis(50)).await {
            *c = Client::connect(pool, &c.user.clone()).await;
        }
    }
}

#[tokio::test]
async fn a_pool_behind_haproxy_serves_everyone_survives_a_crash_drains_restarts_and_grows() {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return skip("pool_haproxy: needs root for network namespaces");
    }
    if !require_program("haproxy", "haproxy") || !require_program("ip", "iproute2") {
        return;
    }
    if std::fs::read_dir("/usr/lib/postgresql").is_err() {
        return skip("pool_haproxy: PostgreSQL is not installed (postgresql)");
    }
    let pool = Pool::up(MEMBERS);
    assert!(
        sipfront_storage::testing::eventually(Duration::from_secs(10), async || pool.up_in_haproxy() == MEMBERS).await,
        "HAProxy sees every member up"
    );

    // Least connections spreads the clients: each member holds some.
    let mut clients = Vec::new();
    for i in 0..USERS {
        clients.push(Client::connect(&pool, &format!("user{i}")).await);
    }
    let spread = sipfront_storage::testing::eventually(Duration::from_secs(5), async || {
        let status = pool.cmd(&["status"]);
        // (A health check of HAProxy's may be open at that moment: 4 or 5.)
        let members: Vec<&str> = status.lines().filter(|l| l.split_whitespace().nth(2) == Some("live")).collect();
        members.len() == MEMBERS && members.iter().all(|l| matches!(l.split_whitespace().nth(5), Some("4" | "5")))
    })
    .await;
    assert!(spread, "4 client connections on each member: {}", pool.cmd(&["status"]));
    assert!(everyone_reaches_everyone(&mut clients).await, "every user reaches every other");
    let mut watcher = features_through_the_load_balancer(&pool).await;

    // The member to crash: the home of the presentity the watcher watches, so that its
    // subscription must be restored too.
    let watched = format!("user{}@{DOMAIN}", USERS + 1);
    let victim = sipfront::core::pool::home_among(["fe1", "fe2", "fe3"], &watched).unwrap()[2..].to_string();

    // kill -9 of member 2: its clients lose their connections, connect again (HAProxy sends
    // them to a survivor) and register; everyone is reachable within the member timeout
    // (3 s) and two seconds.
    let crashed = tokio::time::Instant::now();
    pool.cmd(&["stop", &victim, "-9"]);
    let mut reconnected = 0;
    for c in clients.iter_mut() {
        if c.stream.closed_within(Duration::from_millis(200)).await {
            *c = Client::connect(&pool, &c.user.clone()).await;
            reconnected += 1;
        }
    }
    assert_eq!(reconnected, USERS / MEMBERS, "the dead member's clients reconnected");
    let reachable = sipfront_storage::testing::eventually(Duration::from_secs(5), async || {
        everyone_reaches_everyone(&mut clients).await
    })
    .await;
    assert!(reachable, "every user reachable again after the crash");
    eprintln!("pool_haproxy: every user reachable {:?} after the kill -9", crashed.elapsed());
    // The watcher's subscription, served by the dead member, is restored: its edge ends it
    // with `deactivated` and the watcher subscribes again (or, if the watcher's own connection
    // died with the member, it connects, registers and subscribes again).
    watcher.restored(&pool).await;

    assert!(
        crashed.elapsed() <= Duration::from_secs(3 + 2 + 3),
        "within the member timeout + 2 s (and the test's own sends): {:?}",
        crashed.elapsed()
    );

    // SIGTERM drains member 3: HAProxy takes it out, its users move, its clients connect
    // again once it closes their connections; no message is lost on the way.
    let drained = if victim == "3" { "2" } else { "3" };
    pool.cmd(&["stop", drained]);
    for c in clients.iter_mut() {
        if c.stream.closed_within(Duration::from_millis(200)).await {
            *c = Client::connect(&pool, &c.user.clone()).await;
        }
    }
    assert!(everyone_reaches_everyone(&mut clients).await, "every user reachable after the drain");
    assert!(
        sipfront_storage::testing::eventually(Duration::from_secs(5), async || pool.up_in_haproxy() == 1).await,
        "only member 1 left up in HAProxy"
    );

    // A rolling restart: the two stopped members come back, then each member in turn drains
    // and comes back while messages flow. A MESSAGE answered 200 is always delivered; one
    // refused (503 while a home moves, or its connection closed under it) is the sender's to
    // send again.
    pool.cmd(&["start", &victim]);
    pool.cmd(&["start", drained]);
    assert!(
        sipfront_storage::testing::eventually(Duration::from_secs(10), async || pool.up_in_haproxy() == MEMBERS).await
    );
    for member in 1..=MEMBERS {
        let mut stopping = pool.spawn(&["stop", &member.to_string()]);
        let (mut delivered, mut lost) = (0, 0);
        let mut k = 0;
        loop {
            let stopped = stopping.try_wait().unwrap().is_some();
            let (i, j) = (k % USERS, (k + 1) % USERS);
            k += 1;
            match attempt(&mut clients, i, j).await {
                Outcome::Delivered => delivered += 1,
                Outcome::Lost => lost += 1,
                Outcome::Refused => {}
                Outcome::Broken => {
                    for c in [i, j] {
                        if clients[c].stream.closed_within(Duration::from_millis(50)).await {
                            clients[c] = Client::connect(&pool, &clients[c].user.clone()).await;
                        }
                    }
                }
            }
            // Until the member has stopped and some messages went through meanwhile or just
            // after (bounded: a drain takes DRAIN_SECS).
            if stopped && delivered >= 3 || k > 200 {
                break;
            }
        }
        reconnect_closed(&pool, &mut clients).await;
        eprintln!("pool_haproxy: member {member} drained with {delivered} messages delivered, {lost} lost");
        assert_eq!(lost, 0, "no MESSAGE answered 200 and not delivered while member {member} drained");
        assert!(delivered > 0, "messages flowed while member {member} drained");
        pool.cmd(&["start", &member.to_string()]);
        assert!(
            sipfront_storage::testing::eventually(Duration::from_secs(10), async || pool.up_in_haproxy() == MEMBERS)
                .await,
            "member {member} back up"
        );
    }
    let settled = sipfront_storage::testing::eventually(Duration::from_secs(10), async || {
        reconnect_closed(&pool, &mut clients).await;
        everyone_reaches_everyone(&mut clients).await
    })
    .await;
    assert!(settled, "every user reachable after the rolling restart");

    // A fourth member joins: HAProxy takes it in, the next client lands on it (it has the
    // fewest connections), and everyone still reaches everyone.
    pool.cmd(&["add"]);
    assert!(
        sipfront_storage::testing::eventually(Duration::from_secs(10), async || pool.up_in_haproxy() == MEMBERS + 1)
            .await,
        "the new member up in HAProxy"
    );
    // (Least connections may first pick a member its drain emptied: three new clients, and the
    // new member gets one of them.)
    for i in 5..8 {
        clients.push(Client::connect(&pool, &format!("user{}", USERS + i)).await);
    }
    let on_new = sipfront_storage::testing::eventually(Duration::from_secs(5), async || {
        pool.cmd(&["status"]).lines().any(|l| l.starts_with("fe4 ") && l.split_whitespace().nth(5) != Some("0"))
    })
    .await;
    assert!(on_new, "a new client is on the new member: {}", pool.cmd(&["status"]));
    let settled = sipfront_storage::testing::eventually(Duration::from_secs(10), async || {
        reconnect_closed(&pool, &mut clients).await;
        everyone_reaches_everyone(&mut clients).await
    })
    .await;
    assert!(settled, "every user reachable once the fourth member joined");
}

/// A watcher of `user{USERS+1}` and what it needs to be restored.
struct Watcher {
    phone: Phone,
    user: String,
    target: String,
}

impl Watcher {
    /// After a crash: a `deactivated` NOTIFY (or its connection gone), then a new subscription
    /// that is active.
    async fn restored(&mut self, pool: &Pool) {
        // (Changes of the presentity may come first.)
        loop {
            let Phone::Tcp(stream) = &mut self.phone else { unreachable!("a TCP watcher") };
            let Some(sipfront_proto::Frame::Message(bytes)) = stream.next_frame(Duration::from_secs(5)).await else {
                // Its connection died with the member: it connects and registers again.
                self.phone = Phone::Tcp(Client::connect(pool, &self.user).await.stream);
                break;
            };
            let n = parse(&bytes);
            if n.method() != Some(&sipfront_proto::Method::Notify) {
                continue;
            }
            self.phone.answer(&n, 200, "w").await;
            if state(&n).starts_with("terminated") {
                assert_eq!(state(&n), "terminated;reason=deactivated");
                break;
            }
        }
        let again = subscribe(&self.phone, &self.user, &self.target, "presence", 600);
        let (_, n) = subscribed(&mut self.phone, &again).await;
        assert!(state(&n).starts_with("active"), "subscribed again: {}", state(&n));
    }
}

/// Calls, presence and lists through HAProxy, with users of their own: an INVITE forked to
/// two endpoints of one user, publications of those two endpoints aggregated for a watcher,
/// a resource list, and a forged pool hop refused. Returns the watcher, whose subscription the
/// crash that follows must not lose.
async fn features_through_the_load_balancer(pool: &Pool) -> Watcher {
    let name = |i: usize| format!("user{}", USERS + i);
    let phone = async |i: usize| Phone::Tcp(Client::connect(pool, &name(i)).await.stream);
    // Bob's two endpoints on two different members: an endpoint that lands where the first
    // is unregisters and connects again (HAProxy sends the next connection elsewhere).
    let first = Client::connect(pool, &name(1)).await;
    let mut second = None;
    for _ in 0..10 {
        let c = Client::connect(pool, &name(1)).await;
        if c.edge != first.edge {
            second = Some(c);
            break;
        }
        c.unregister().await;
    }
    let second = second.expect("Bob's second endpoint on another member than his first");
    println!("Bob's endpoints: by {:?} and by {:?} (None: his home)", first.edge, second.edge);
    let (mut caller, mut bob1, mut bob2, mut watcher) =
        (phone(0).await, Phone::Tcp(first.stream), Phone::Tcp(second.stream), phone(2).await);

    // INVITE forked to Bob's two endpoints, on two members; one answers, the other is cancelled.
    let inv = invite(&caller, &name(0), &name(1));
    caller.send(&inv.to_bytes()).await;
    let at1 = bob1.expect_request(sipfront_proto::Method::Invite).await;
    let at2 = bob2.expect_request(sipfront_proto::Method::Invite).await;
    // (A branch is cancelled once it has had a provisional response, RFC 3261 9.1.)
    bob2.answer(&at2, 180, "b2").await;
    bob1.answer(&at1, 200, "b1").await;
    let ok = loop {
        let r = caller.recv().await;
        if r.status() == Some(200) {
            break r;
        }
    };
    let cancel = bob2.expect_request(sipfront_proto::Method::Cancel).await;
    bob2.answer(&cancel, 200, "b2").await;
    bob2.answer(&at2, 487, "b2").await;
    bob2.expect_request(sipfront_proto::Method::Ack).await;
    let mut dialog = Dialog::caller(&inv, &ok);
    caller.send(&dialog.request("ACK", &caller).to_bytes()).await;
    bob1.expect_request(sipfront_proto::Method::Ack).await;
    caller.send(&dialog.request("BYE", &caller).to_bytes()).await;
    let bye = bob1.expect_request(sipfront_proto::Method::Bye).await;
    bob1.answer(&bye, 200, "b1").await;
    caller.expect_response(200).await;

    // Bob's two endpoints publish; the watcher sees both.
    for (b, tag, note) in [(&mut bob1, "t1", "on the phone"), (&mut bob2, "t2", "at the desk")] {
        let r = b.request(&publish(b, &name(1), Some(&pidf_doc(&name(1), tag, "open", note)), None, 600)).await;
        assert_eq!(r.status(), Some(200));
    }
    let req = subscribe(&watcher, &name(2), &name(1), "presence", 600);
    let (_, n) = subscribed(&mut watcher, &req).await;
    assert_eq!(doc(&n).tuples.len(), 2, "both endpoints' tuples: {}", String::from_utf8_lossy(n.body()));

    // A resource list of three contacts, wherever they are homed.
    let store = sipfront_storage::open(&pool.store_url(), &pool.run).await.unwrap();
    for c in 0..3 {
        let contact = sipfront_storage::Contact {
            owner: format!("{}@{DOMAIN}", name(3)),
            contact: format!("{}@{DOMAIN}", name(c)),
            display_name: name(c),
            group: "g".into(),
        };
        store.add_contact(&contact).await.unwrap();
    }
    let mut owner = phone(3).await;
    let list = subscribe(&owner, &name(3), &format!("{}+contacts", name(3)), "presence", 600)
        .set("Supported", "eventlist")
        .set("Accept", "application/pidf+xml, application/rlmi+xml, multipart/related");
    let (_, n) = subscribed(&mut owner, &list).await;
    let body = String::from_utf8_lossy(n.body()).into_owned();
    for c in 0..3 {
        assert!(body.contains(&format!("sip:{}@{DOMAIN}", name(c))), "{} in the list", name(c));
    }
    let mut seen_note = body.contains("at the desk");
    while !seen_note {
        let n = notified(&mut owner).await;
        seen_note = String::from_utf8_lossy(n.body()).contains("at the desk");
    }

    // A client posing as a member.
    let mut mallory = phone(4).await;
    let forged = Request::message(&mallory, &name(4), &name(1))
        .set("X-Sipfront-Pool", "t=1;m=666531;mac=00112233445566778899aabbccddeeff");
    mallory.send(&forged.to_bytes()).await;
    let r = mallory.expect_response(403).await;
    assert_eq!(r.reason(), Some(&b"Forged pool hop"[..]));

    Watcher { phone: watcher, user: name(2), target: name(1) }
}

/// What became of one MESSAGE.
enum Outcome {
    /// Received, and its sender got the 200.
    Delivered,
    /// Its sender got a final answer other than 200, and the recipient nothing.
    Refused,
    /// Its sender got 200 and the recipient nothing: what must never happen.
    Lost,
    /// A connection closed under it.
    Broken,
}

/// Client `i` writes to client `j`.
async fn attempt(clients: &mut [Client], i: usize, j: usize) -> Outcome {
    let (from, to) = if i < j {
        let (l, r) = clients.split_at_mut(j);
        (&mut l[i], &mut r[0])
    } else {
        let (l, r) = clients.split_at_mut(i);
        (&mut r[0], &mut l[j])
    };
    let msg = Request::message(&from.stream, &from.user, &to.user);
    if !from.stream.try_write(&msg.to_bytes()).await {
        return Outcome::Broken;
    }
    let wait = Duration::from_secs(3);
    let final_of = |f: Option<sipfront_proto::Frame>| match f {
        Some(sipfront_proto::Frame::Message(b)) => parse(&b).status(),
        _ => None,
    };
    tokio::select! {
        first = from.stream.next_frame(wait) => match final_of(first) {
            // A 200 before the recipient answered would be a 200 for nothing delivered.
            Some(200) => Outcome::Lost,
            Some(_) => Outcome::Refused,
            None => Outcome::Broken,
        },
        got = to.answer_next(wait) => {
            let answer = final_of(from.stream.next_frame(wait).await);
            match (got.is_some(), answer) {
                (true, Some(200)) => Outcome::Delivered,
                (false, Some(200)) => Outcome::Lost,
                (_, None) => Outcome::Broken,
                (_, Some(_)) => Outcome::Refused,
            }
        }
    }
}
