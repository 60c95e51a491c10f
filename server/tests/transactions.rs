//! Client transactions over UDP (RFC 3261 17.1.2): the server retransmits a request it sends
//! with doubling intervals capped at T2 (Timer E), gives up with a 408 after 64*T1 (Timer F),
//! and ends with the first final response the peer sends.

mod common;

use common::{TestServer, UdpClient};
use sipfront::transaction::key::new_branch;
use sipfront::transport::{Target, Transport};
use sipfront_proto::{HeaderName, Message, Method};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const T1: u64 = 50;
const T2: u64 = 400;

async fn server() -> TestServer {
    TestServer::with(|c| {
        c.transaction.t1_ms = T1;
        c.transaction.t2_ms = T2;
        c.transaction.t4_ms = 200;
    })
    .await
}

/// An OPTIONS the server sends to `peer`, with a top Via of its own and a fresh branch.
fn options_to(server: SocketAddr, peer: SocketAddr) -> Message {
    let mut req = Message::request(Method::Options, format!("sip:peer@{peer}"));
    req.push_header(HeaderName::Via, format!("SIP/2.0/UDP {server};branch={}", new_branch()));
    req.push_header(HeaderName::MaxForwards, "70");
    req.push_header(HeaderName::From, format!("<sip:sipfront@{server}>;tag={}", common::token(8)));
    req.push_header(HeaderName::To, format!("<sip:peer@{peer}>"));
    req.push_header(HeaderName::CallId, format!("{}@sipfront", common::token(16)));
    req.push_header(HeaderName::CSeq, "1 OPTIONS");
    req.push_header(HeaderName::ContentLength, "0");
    req
}

fn target(peer: SocketAddr) -> Target {
    Target { transport: Transport::Udp, remote: peer, flow: None, local: None }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_peer_gets_retransmissions_then_the_request_times_out_with_408() {
    let s = server().await;
    let before = s.metric("sipfront_client_transaction_timeouts_total").await;
    let peer = UdpClient::new(s.udp_addr()).await;
    let started = Instant::now();
    let tx = s.server.transactions.request(options_to(s.udp_addr(), peer.local()), target(peer.local()));
    let outcome = tokio::spawn(async move { (tx.final_response().await, started.elapsed()) });

    // Listen to everything the server sends until it gives up.
    let mut arrivals = Vec::new();
    let mut first: Option<Vec<u8>> = None;
    while let Some((bytes, from)) = peer.recv(Duration::from_millis(3 * T2)).await {
        assert_eq!(from, s.udp_addr(), "sent from the server's UDP socket");
        match &first {
            None => first = Some(bytes),
            Some(f) => assert_eq!(f, &bytes, "a retransmission is the same request"),
        }
        arrivals.push(started.elapsed());
    }
    let (resp, elapsed) = outcome.await.expect("the transaction task");
    let resp = resp.expect("a final response");
    assert_eq!(resp.status(), Some(408), "Timer F: the transaction gives up with 408");

    let timeout = Duration::from_millis(64 * T1);
    // Generous sanity bounds: the timers are a few tens of milliseconds and CI machines are slow.
    assert!(elapsed >= timeout.mul_f64(0.9), "408 after 64*T1, not {elapsed:?}");
    assert!(elapsed <= timeout + Duration::from_secs(2), "408 soon after 64*T1, not {elapsed:?}");
    assert!(arrivals.len() >= 5, "the request and at least 4 retransmissions, got {}", arrivals.len());
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    println!("retransmission gaps: {gaps:?}");
    // Timer E: T1, 2*T1, 4*T1... doubling until it reaches T2, then T2.
    assert!(gaps[0] >= Duration::from_millis(T1 * 8 / 10), "the first after about T1: {gaps:?}");
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "intervals grow: {gaps:?}");
    let last = *gaps.last().expect("gaps");
    assert!(
        last >= Duration::from_millis(T2 * 8 / 10) && last <= Duration::from_millis(T2 * 3),
        "intervals settle at T2: {gaps:?}"
    );
    assert!(s.metric("sipfront_client_transaction_timeouts_total").await >= before + 1.0);
    assert_eq!(s.server.transactions.client_count(), 0, "the transaction is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_answering_the_third_retransmission_ends_it_with_that_200() {
    let s = server().await;
    let peer = UdpClient::new(s.udp_addr()).await;
    let tx = s.server.transactions.request(options_to(s.udp_addr(), peer.local()), target(peer.local()));
    let outcome = tokio::spawn(tx.final_response());

    // The original and three retransmissions; the fourth datagram is answered.
    let mut received = 0;
    let (request, from) = loop {
        let (bytes, from) = peer.recv(Duration::from_secs(2)).await.expect("the request again");
        received += 1;
        if received == 4 {
            break (common::parse(&bytes), from);
        }
    };
    let mut ok = request.response_to(200);
    ok.set_to_tag("peer1");
    ok.push_header(HeaderName::ContentLength, "0");
    peer.socket.send_to(&ok.to_bytes(), from).await.expect("send the 200");

    let resp = tokio::time::timeout(common::WAIT, outcome)
        .await
        .expect("the 200 ends the transaction")
        .expect("the transaction task")
        .expect("a final response");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.to().and_then(|t| t.tag().map(<[u8]>::to_vec)), Some(b"peer1".to_vec()), "the peer's 200");
    // Completed: no more retransmissions (RFC 3261 17.1.2.2).
    while let Some((bytes, _)) = peer.recv(Duration::from_millis(50)).await {
        // At most one already on its way when the 200 arrived.
        assert_eq!(common::parse(&bytes).method(), Some(&Method::Options));
        received += 1;
    }
    assert!(peer.recv(Duration::from_millis(3 * T2)).await.is_none(), "no retransmission after the 200");
    assert!(received <= 5, "{received} datagrams");
}
