//! Behind a load balancer that is not transparent (HAProxy in a pool), each connection opens
//! with a PROXY protocol header naming the client: from an address in
//! `transport.proxy_protocol_from` it is read, and the client it names is the one Via
//! `received`, the per-address caps and the lockouts see. From any other address it is not.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use std::net::SocketAddr;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "pc"), ("dave", "pd")];

/// A PROXY protocol v2 header for a TCP connection from `client` to `to`.
fn v2(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(t)) = (client, to) else { panic!("IPv4 here") };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&t.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&t.port().to_be_bytes());
    h
}

/// A client connected through the "load balancer" (this test, on 127.0.0.1), as `client`.
async fn through_lb(s: &TestServer, client: &str) -> Phone {
    let to = s.server.tcp[0];
    Phone::Tcp(SipStream::tcp_after(to, &v2(client.parse().unwrap(), to)).await)
}

fn register(p: &Phone, user: &str) -> Request {
    Request::register(p, user).set("Expires", "300")
}

/// REGISTERs `user` on `p` with `password`: the final response.
async fn sign_in(p: &mut Phone, user: &str, password: &str) -> sipfront_proto::Message {
    let req = register(p, user);
    with_credentials(p, &req, user, password).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_a_load_balancer_names_is_the_one_served() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.transport.proxy_protocol_from = vec!["127.0.0.1".parse().unwrap()];
        c.auth.max_users_per_ip = 3;
    })
    .await;

    // Via `received` names the client, not the load balancer.
    let mut alice = through_lb(&s, "192.0.2.7:40000").await;
    let r = sign_in(&mut alice, "alice", "wonderland").await;
    assert_eq!(r.status(), Some(200));
    let via = header(&r, sipfront_proto::HeaderName::Via);
    assert!(via.contains("received=192.0.2.7"), "{via}");

    // A client spraying passwords through the load balancer locks out its own address only.
    let mut sprayer = through_lb(&s, "198.51.100.9:5000").await;
    for user in ["bob", "carol", "dave"] {
        let r = sign_in(&mut sprayer, user, "Summer2026!").await;
        assert_eq!(r.status(), Some(401));
    }
    let r = sign_in(&mut sprayer, "bob", "builder").await;
    assert_eq!(r.status(), Some(403), "the sprayer is locked out");
    let mut bob = through_lb(&s, "192.0.2.8:41000").await;
    let r = sign_in(&mut bob, "bob", "builder").await;
    assert_eq!(r.status(), Some(200), "another client of the same load balancer is not");

    // Version 1, as older balancers send it.
    let to = s.server.tcp[0];
    let line = format!("PROXY TCP4 203.0.113.5 {} 1234 {}\r\n", to.ip(), to.port());
    let mut carol = Phone::Tcp(SipStream::tcp_after(to, line.as_bytes()).await);
    let r = sign_in(&mut carol, "carol", "pc").await;
    assert_eq!(r.status(), Some(200));
    assert!(header(&r, sipfront_proto::HeaderName::Via).contains("received=203.0.113.5"));

    // A health check: a LOCAL header, then OPTIONS, answered.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let mut check = Phone::Tcp(SipStream::tcp_after(to, &local).await);
    assert_eq!(check.request(&Request::options(Transport::Tcp, check.local_addr())).await.status(), Some(200));
    // And a connection from the balancer's address without a header is its own client.
    let mut plain = Phone::tcp(&s).await;
    assert_eq!(plain.request(&Request::options(Transport::Tcp, plain.local_addr())).await.status(), Some(200));

    // A broken header closes the connection, and is counted.
    let mut broken = SipStream::tcp_after(to, b"PROXY TCP4 not-an-address\r\n").await;
    assert!(broken.next_frame(WAIT).await.is_none(), "closed without an answer");
    let (_, metrics) = s.http_get("/metrics").await;
    let counted =
        metrics.lines().any(|l| l.starts_with("sipfront_connections_refused_total{reason=\"proxy_header\"} "));
    assert!(counted, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_from_anyone_else_is_not_believed() {
    // The load balancer is elsewhere: a client cannot name itself someone else.
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.transport.proxy_protocol_from = vec!["192.0.2.200".parse().unwrap()];
    })
    .await;
    let to = s.server.tcp[0];
    let mut forger = SipStream::tcp_after(to, &v2("192.0.2.7:40000".parse().unwrap(), to)).await;
    let _ = forger.try_write(&register(&Phone::tcp(&s).await, "alice").to_bytes()).await;
    // The header is garbage before a request: never a registration, whatever else happens.
    let _ = forger.next_frame(QUIET).await;
    assert!(s.bindings_of("alice").is_empty());
    let mut honest = Phone::tcp(&s).await;
    let r = sign_in(&mut honest, "alice", "wonderland").await;
    assert_eq!(r.status(), Some(200));
    let via = header(&r, sipfront_proto::HeaderName::Via);
    assert!(!via.contains("192.0.2.7"), "{via}");
}
