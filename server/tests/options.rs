//! What a client sees today: OPTIONS answered 200 over every transport and address family,
//! methods not yet implemented answered 501 with Allow, a CANCEL with nothing to cancel 481;
//! every response a proper response to its request (RFC 3261 8.2.6).

mod common;

use common::{assert_matches_request, header, Request, TestServer, Transport};
use sipfront_proto::{HeaderName, Message};
use std::net::SocketAddr;

fn assert_options_200(resp: &Message, req: &Request) {
    assert_eq!(resp.status(), Some(200));
    let allow = header(resp, HeaderName::Allow);
    assert!(allow.contains("OPTIONS"), "Allow lists OPTIONS: {allow:?}");
    assert!(resp.header(HeaderName::Accept).is_some(), "Accept present (RFC 3261 11.2)");
    assert_matches_request(resp, req);
}

#[tokio::test(flavor = "multi_thread")]
async fn options_is_answered_200_over_udp_tcp_and_tls() {
    let s = TestServer::start().await;

    let udp = s.udp_client().await;
    let req = Request::options(Transport::Udp, udp.local());
    assert_options_200(&udp.transact(&req).await, &req);

    let mut tcp = s.tcp_client().await;
    let req = Request::options(Transport::Tcp, tcp.local);
    assert_options_200(&tcp.transact(&req).await, &req);

    let mut tls = s.tls_client().await;
    let req = Request::options(Transport::Tls, tls.local);
    assert_options_200(&tls.transact(&req).await, &req);
    // The same connection carries the next request too.
    let req = Request::options(Transport::Tls, tls.local);
    assert_options_200(&tls.transact(&req).await, &req);
}

#[tokio::test(flavor = "multi_thread")]
async fn options_is_answered_over_ipv6_loopback() {
    if !common::has_ipv6_loopback() {
        return;
    }
    let v6: SocketAddr = "[::1]:0".parse().expect("an address");
    let s = TestServer::with(|c| {
        c.listen.sip = vec![v6];
        c.listen.tls = vec![v6];
    })
    .await;
    assert!(!s.server.udp.is_empty(), "bound on ::1");

    let udp = s.udp_client().await;
    let req = Request::options(Transport::Udp, udp.local());
    assert_options_200(&udp.transact(&req).await, &req);

    let mut tcp = s.tcp_client().await;
    let req = Request::options(Transport::Tcp, tcp.local);
    assert_options_200(&tcp.transact(&req).await, &req);

    // The self-signed certificate names ::1 too.
    let mut tls = s.tls_client().await;
    let req = Request::options(Transport::Tls, tls.local);
    assert_options_200(&tls.transact(&req).await, &req);
}

#[tokio::test(flavor = "multi_thread")]
async fn unimplemented_methods_get_501_with_allow_once_authenticated() {
    // RFC 3261 8.2: authentication first, then the method. So the request comes from a user of
    // ours: challenged with 407, then, with credentials, answered 501 with Allow (8.2.1).
    let s = TestServer::with_user("example.test", "alice", "s3cret").await;
    let udp = s.udp_client().await;
    let mut tcp = s.tcp_client().await;
    for method in ["REFER", "FOO"] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let local = if transport == Transport::Udp { udp.local() } else { tcp.local };
            let uri = "sip:bob@example.test";
            let mut req = Request::new(method, transport, local)
                .set("From", &format!("<sip:alice@example.test>;tag={}", common::token(8)))
                .set("To", &format!("<{uri}>"))
                .set("Contact", &format!("<sip:alice@{local}>"));
            req.start_line = format!("{method} {uri} SIP/2.0");
            let challenge = transact(&udp, &mut tcp, transport, &req).await;
            assert_eq!(challenge.status(), Some(407), "{method} over {transport:?}: challenged first");
            assert_matches_request(&challenge, &req);
            ack_if_invite(&udp, &mut tcp, transport, &req, &challenge).await;

            let auth = common::digest_credentials(
                &header(&challenge, HeaderName::ProxyAuthenticate),
                "alice",
                "s3cret",
                method,
                uri,
            );
            let mut again = req.clone().set("Proxy-Authorization", &auth).set("CSeq", &format!("2 {method}"));
            let branch = common::branch();
            let via = req.header("Via").unwrap_or_default().split(";branch=").next().unwrap_or_default().to_string();
            again = again.set("Via", &format!("{via};branch={branch}"));
            let resp = transact(&udp, &mut tcp, transport, &again).await;
            assert_eq!(resp.status(), Some(501), "{method} over {transport:?} with credentials");
            let allow = header(&resp, HeaderName::Allow);
            assert!(allow.contains("OPTIONS"), "{method}: 501 carries Allow: {allow:?}");
            assert_matches_request(&resp, &again);
            ack_if_invite(&udp, &mut tcp, transport, &again, &resp).await;
        }
    }
}

async fn transact(
    udp: &common::UdpClient,
    tcp: &mut common::SipStream<tokio::net::TcpStream>,
    transport: Transport,
    req: &Request,
) -> Message {
    match transport {
        Transport::Udp => udp.transact(req).await,
        _ => tcp.transact(req).await,
    }
}

/// RFC 3261 17.1.1.3: a non-2xx final response to INVITE is ACKed in the same transaction.
async fn ack_if_invite(
    udp: &common::UdpClient,
    tcp: &mut common::SipStream<tokio::net::TcpStream>,
    transport: Transport,
    invite: &Request,
    resp: &Message,
) {
    if !invite.start_line.starts_with("INVITE") {
        return;
    }
    let ack = ack_for(invite, resp);
    match transport {
        Transport::Udp => udp.send(&ack.to_bytes()).await,
        _ => tcp.write(&ack.to_bytes()).await,
    }
}

fn ack_for(invite: &Request, resp: &Message) -> Request {
    let seq = invite.header("CSeq").and_then(|c| c.split(' ').next()).unwrap_or("1").to_string();
    let mut ack = invite
        .clone()
        .without("Proxy-Authorization")
        .without("Contact")
        .set("CSeq", &format!("{seq} ACK"))
        .set("To", &header(resp, HeaderName::To));
    ack.start_line = ack.start_line.replacen("INVITE", "ACK", 1);
    ack
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invite_refused_over_udp_is_repeated_until_its_ack() {
    // A small T1, so that Timer G repeats the final response quickly (RFC 3261 17.2.1).
    let s = TestServer::with(|c| c.transaction.t1_ms = 50).await;
    let udp = s.udp_client().await;
    let req =
        Request::new("INVITE", Transport::Udp, udp.local()).set("Contact", &format!("<sip:test@{}>", udp.local()));
    let resp = udp.transact(&req).await;
    let code = resp.status().unwrap_or(0);
    assert!(code >= 300, "refused (no user of ours sent it), got {code}");
    assert_matches_request(&resp, &req);
    // Unacknowledged, it comes again.
    let (repeat, _) = udp.recv(common::WAIT).await.expect("Timer G repeats the response");
    assert_eq!(common::parse(&repeat).status(), Some(code));

    udp.send(&ack_for(&req, &resp).to_bytes()).await;
    // A repeat already on its way may still arrive; after that, silence: an ACK gets no
    // answer, and the transaction stops repeating once it has it.
    while let Some((bytes, _)) = udp.recv(std::time::Duration::from_millis(100)).await {
        assert_eq!(common::parse(&bytes).status(), Some(code), "only the same response again");
    }
    assert!(udp.recv(common::QUIET).await.is_none(), "no more repeats after the ACK");
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_with_nothing_to_cancel_gets_481() {
    let s = TestServer::start().await;
    let udp = s.udp_client().await;
    let req = Request::new("CANCEL", Transport::Udp, udp.local());
    let resp = udp.transact(&req).await;
    assert_eq!(resp.status(), Some(481), "RFC 3261 9.2: no matching transaction");
    assert_matches_request(&resp, &req);

    let mut tcp = s.tcp_client().await;
    let req = Request::new("CANCEL", Transport::Tcp, tcp.local);
    let resp = tcp.transact(&req).await;
    assert_eq!(resp.status(), Some(481));
    assert_matches_request(&resp, &req);
}
