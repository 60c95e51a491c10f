//! Hostile and broken peers, each with its defined outcome: dropped, answered with the status
//! code its error maps to, or disconnected; and in every case the server still answers OPTIONS
//! afterwards.

mod common;

use common::{Request, SipStream, TestServer, Transport};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const PARSE_ERRORS: &str = "sipfront_parse_errors_total";

#[tokio::test(flavor = "multi_thread")]
async fn udp_garbage_is_dropped_and_counted() {
    let s = TestServer::start().await;
    let before = s.metric(PARSE_ERRORS).await;
    let udp = s.udp_client().await;
    udp.send(b"this is not SIP at all\r\n\r\n").await;
    udp.send(&[0xff, 0xfe, 0x00, 0x41, 0x42, 0x0d, 0x0a]).await;
    udp.send(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP").await;
    assert!(udp.recv(common::QUIET).await.is_none(), "garbage gets no answer");
    assert!(s.metric(PARSE_ERRORS).await >= before + 3.0, "{PARSE_ERRORS} counts each");
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_request_without_call_id_gets_400() {
    let s = TestServer::start().await;
    let udp = s.udp_client().await;
    let req = Request::options(Transport::Udp, udp.local()).without("Call-ID");
    udp.send(&req.to_bytes()).await;
    // The 400 cannot copy a Call-ID that is not there, so it is read as text.
    let (bytes, _) = udp.recv(common::WAIT).await.expect("a response");
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(common::status_of(&bytes), Some(400), "RFC 3261 21.4.1: a mandatory header is missing\n{text}");
    let via = format!("Via: {}\r\n", req.header("Via").unwrap_or_default());
    assert!(text.contains(&via), "the request's Via copied:\n{text}");
    assert!(text.contains(req.header("CSeq").unwrap_or_default()), "CSeq copied:\n{text}");
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sip_version_gets_505() {
    let s = TestServer::start().await;
    let udp = s.udp_client().await;
    let mut req = Request::options(Transport::Udp, udp.local());
    req.start_line = req.start_line.replace("SIP/2.0", "SIP/3.0");
    let resp = udp.transact(&req).await;
    assert_eq!(resp.status(), Some(505), "RFC 3261 21.5.7: Version Not Supported");
    common::assert_matches_request(&resp, &req);
    // Over TCP too, where the connection stays usable: the message was framed correctly.
    let mut tcp = s.tcp_client().await;
    let mut req = Request::options(Transport::Tcp, tcp.local);
    req.start_line = req.start_line.replace("SIP/2.0", "SIP/2.1");
    assert_eq!(tcp.transact(&req).await.status(), Some(505));
    let resp = tcp.transact(&Request::options(Transport::Tcp, tcp.local)).await;
    assert_eq!(resp.status(), Some(200), "the connection still works");
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_message_over_the_size_limit_gets_513() {
    let s = TestServer::with(|c| c.limits.max_message_size = 1500).await;
    let udp = s.udp_client().await;
    let req = Request::options(Transport::Udp, udp.local()).set("X-Padding", &"p".repeat(2000));
    let resp = udp.transact(&req).await;
    assert_eq!(resp.status(), Some(513), "RFC 3261 21.5.11: Message Too Large");
    common::assert_matches_request(&resp, &req);
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_message_without_content_length_gets_400_and_is_closed() {
    let s = TestServer::start().await;
    let mut tcp = s.tcp_client().await;
    // RFC 3261 18.3: on a stream Content-Length is mandatory; without it, framing is lost.
    let req = Request::options(Transport::Tcp, tcp.local).without("Content-Length");
    let resp = tcp.transact(&req).await;
    assert_eq!(resp.status(), Some(400));
    assert!(tcp.closed_within(common::WAIT).await, "closed after the 400");
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_huge_content_length_gets_413_and_is_closed_without_buffering() {
    let s = TestServer::start().await;
    let mut tcp = s.tcp_client().await;
    let req = Request::options(Transport::Tcp, tcp.local).set("Content-Length", "4294967296");
    // Only the header block is sent: the answer comes without waiting for the body.
    let resp = tcp.transact(&req).await;
    assert_eq!(resp.status(), Some(413), "the announced body exceeds the size limit");
    assert!(tcp.closed_within(common::WAIT).await, "closed after the 413");
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_header_block_without_end_past_the_limit_is_closed() {
    let s = TestServer::with(|c| c.limits.max_message_size = 2000).await;
    let before = s.metric(PARSE_ERRORS).await;
    let mut tcp = s.tcp_client().await;
    let req = Request::options(Transport::Tcp, tcp.local).to_bytes();
    // The start line and headers, then header lines that never end the block.
    let head = &req[..req.len() - 4];
    tcp.write(head).await;
    let line = b"\r\nX-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = head.len();
    while sent < 3000 {
        // The server may close while we still write; that is the outcome we want.
        if tcp.stream.write_all(line).await.is_err() {
            break;
        }
        sent += line.len();
    }
    assert!(tcp.closed_within(common::WAIT).await, "closed once the header block passes the limit");
    assert!(s.metric(PARSE_ERRORS).await >= before + 1.0);
    s.assert_answers_options().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_client_that_never_handshakes_is_cut_after_the_timeout() {
    let s = TestServer::with(|c| c.transport.tls_handshake_timeout_secs = 1).await;
    const FAILURES: &str = "sipfront_tls_handshake_failures_total";
    let before = s.metric(FAILURES).await;
    let mut silent = SipStream::tcp(s.tls_addr()).await;
    let started = std::time::Instant::now();
    assert!(silent.closed_within(Duration::from_secs(5)).await, "cut after the handshake timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "not before the timeout ({took:?})");
    assert!(s.metric(FAILURES).await >= before + 1.0, "{FAILURES} counts it");

    // A client that sends something that is not TLS fails the handshake at once.
    let mut plain = SipStream::tcp(s.tls_addr()).await;
    plain.write(&Request::options(Transport::Tcp, plain.local).to_bytes()).await;
    assert!(plain.closed_within(common::WAIT).await, "plain SIP on the TLS port is cut");

    let mut tls = s.tls_client().await;
    let resp = tls.transact(&Request::options(Transport::Tls, tls.local)).await;
    assert_eq!(resp.status(), Some(200), "TLS still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_per_ip_cap_are_refused_while_others_work() {
    let s = TestServer::with(|c| c.transport.max_connections_per_ip = 2).await;
    let mut a = s.tcp_client().await;
    let mut b = s.tcp_client().await;
    // Each answered: both are admitted before the next one connects.
    for conn in [&mut a, &mut b] {
        let resp = conn.transact(&Request::options(Transport::Tcp, conn.local)).await;
        assert_eq!(resp.status(), Some(200));
    }
    let before = s.metric("sipfront_connections_refused_total").await;
    let mut c = s.tcp_client().await;
    assert!(c.closed_within(common::WAIT).await, "a third connection from 127.0.0.1 is closed at once");
    assert!(s.metric("sipfront_connections_refused_total").await >= before + 1.0);
    for conn in [&mut a, &mut b] {
        let resp = conn.transact(&Request::options(Transport::Tcp, conn.local)).await;
        assert_eq!(resp.status(), Some(200), "admitted connections keep working");
    }
    s.assert_answers_options().await; // UDP is not capped.

    // Once one closes, its slot is free again (the server notices the close first).
    drop(a);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let mut d = s.tcp_client().await;
        d.write(&Request::options(Transport::Tcp, d.local).to_bytes()).await;
        if let Some(sipfront_proto::Frame::Message(_)) = d.next_frame(Duration::from_millis(200)).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a freed slot is reusable");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed() {
    let s = TestServer::with(|c| c.transport.idle_timeout_secs = 1).await;
    let mut tcp = s.tcp_client().await;
    let resp = tcp.transact(&Request::options(Transport::Tcp, tcp.local)).await;
    assert_eq!(resp.status(), Some(200));
    let started = std::time::Instant::now();
    assert!(tcp.closed_within(Duration::from_secs(5)).await, "closed after the idle timeout");
    assert!(started.elapsed() >= Duration::from_millis(800), "not before it");
    // A connection that never sent anything is idle too.
    let mut silent = s.tcp_client().await;
    assert!(silent.closed_within(Duration::from_secs(5)).await);
    s.assert_answers_options().await;
}
