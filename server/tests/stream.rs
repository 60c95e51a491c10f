//! TCP and TLS framing (RFC 3261 18.3): messages cut by Content-Length however the bytes
//! arrive, and CRLF keep-alives (RFC 5626 3.5.1) answered without disturbing the connection.

mod common;

use common::{assert_matches_request, Request, SipStream, TestServer, Transport};
use sipfront_proto::HeaderName;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

#[tokio::test(flavor = "multi_thread")]
async fn two_pipelined_requests_get_two_responses() {
    let s = TestServer::start().await;
    let mut tcp = s.tcp_client().await;
    let a = Request::options(Transport::Tcp, tcp.local);
    let b = Request::new("REGISTER", Transport::Tcp, tcp.local);
    tcp.write(&[a.to_bytes(), b.to_bytes()].concat()).await;
    let first = tcp.recv_response().await;
    let second = tcp.recv_response().await;
    // Either order is a correct answer; each to its own request.
    let (ra, rb) = if common::header(&first, HeaderName::CallId) == a.header("Call-ID").unwrap_or_default() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(ra.status(), Some(200));
    assert_matches_request(&ra, &a);
    assert!(rb.status().is_some_and(|c| c >= 300), "REGISTER for a domain not served is refused");
    assert_matches_request(&rb, &b);

    // A body with an empty line in it (as SDP has) is cut by Content-Length, not at the line.
    let mut c = Request::new("MESSAGE", Transport::Tcp, tcp.local).set("Content-Type", "text/plain");
    c.body = "line one\r\n\r\nline three".into();
    let d = Request::options(Transport::Tcp, tcp.local);
    tcp.write(&[c.to_bytes(), d.to_bytes()].concat()).await;
    let responses = [tcp.recv_response().await, tcp.recv_response().await];
    let call_ids: Vec<String> = responses.iter().map(|r| common::header(r, HeaderName::CallId)).collect();
    for req in [&c, &d] {
        assert!(call_ids.iter().any(|id| id == req.header("Call-ID").unwrap_or_default()), "{call_ids:?}");
    }
    assert!(responses.iter().any(|r| r.status() == Some(200)), "the OPTIONS after the body is answered 200");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_dribbled_a_few_bytes_at_a_time_is_answered() {
    let s = TestServer::start().await;
    let mut tcp = s.tcp_client().await;
    let req = Request::options(Transport::Tcp, tcp.local);
    for chunk in req.to_bytes().chunks(7) {
        tcp.write(chunk).await;
        // The point of the test: each chunk arrives on its own, not coalesced with the next.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let resp = tcp.recv_response().await;
    assert_eq!(resp.status(), Some(200));
    assert_matches_request(&resp, &req);
}

/// A connection quiet for a while has given its read buffer back (issue 19); what it sends
/// next, whole or cut in two, is read and answered as ever, over TCP and over TLS.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_quiet_for_a_while_is_served_as_ever() {
    let s = TestServer::start().await;
    let mut tcp = s.tcp_client().await;
    let mut tls = s.tls_client().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let req = Request::options(Transport::Tcp, tcp.local);
    let bytes = req.to_bytes();
    // The first byte alone; a while later the rest (a message under way keeps its buffer).
    tcp.write(&bytes[..1]).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    tcp.write(&bytes[1..]).await;
    let resp = tcp.recv_response().await;
    assert_eq!(resp.status(), Some(200));
    assert_matches_request(&resp, &req);
    let req = Request::options(Transport::Tls, tls.local);
    let resp = tls.transact(&req).await;
    assert_eq!(resp.status(), Some(200), "TLS after a quiet while");
    assert_matches_request(&resp, &req);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    ping_then_options(&mut tcp, Transport::Tcp).await;
}

async fn ping_then_options<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut SipStream<S>, transport: Transport) {
    conn.write(b"\r\n\r\n").await;
    assert!(conn.recv_pong(common::WAIT).await, "CRLFCRLF ping gets a CRLF pong");
    // A lone CRLF (a pong from the client side) gets nothing back.
    conn.write(b"\r\n").await;
    let req = Request::options(transport, conn.local);
    let resp = conn.transact(&req).await;
    assert_eq!(resp.status(), Some(200), "the connection still works after keep-alives");
    assert_matches_request(&resp, &req);
}

#[tokio::test(flavor = "multi_thread")]
async fn crlf_keepalive_ping_gets_a_pong_and_the_connection_still_works() {
    let s = TestServer::start().await;
    let mut tcp = s.tcp_client().await;
    ping_then_options(&mut tcp, Transport::Tcp).await;
    let mut tls = s.tls_client().await;
    ping_then_options(&mut tls, Transport::Tls).await;
}
