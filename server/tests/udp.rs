//! UDP specifics: a retransmitted request is answered from the transaction layer with the very
//! same response (RFC 3261 17.2.2), and responses find their way back by RFC 3581 rport or
//! the Via sent-by port (RFC 3261 18.2.2).

mod common;

use common::{assert_matches_request, header, Request, TestServer, Transport, UdpClient};
use sipfront_proto::HeaderName;

const ABSORBED: &str = "sipfront_retransmissions_absorbed_total";

#[tokio::test(flavor = "multi_thread")]
async fn a_retransmission_gets_the_same_response_again() {
    let s = TestServer::start().await;
    let before = s.metric(ABSORBED).await;
    let udp = s.udp_client().await;
    let req = Request::options(Transport::Udp, udp.local()).to_bytes();

    udp.send(&req).await;
    let (first, _) = udp.recv(common::WAIT).await.expect("a response");
    udp.send(&req).await;
    let (second, _) = udp.recv(common::WAIT).await.expect("the response again");
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second),
        "byte for byte the same response, To tag included"
    );
    assert!(udp.recv(common::QUIET).await.is_none(), "one response per request");
    assert!(s.metric(ABSORBED).await >= before + 1.0, "{ABSORBED} counts it");

    // The same for a request the core refuses (a REGISTER for a domain it does not serve).
    let req = Request::new("REGISTER", Transport::Udp, udp.local()).to_bytes();
    udp.send(&req).await;
    let (first, _) = udp.recv(common::WAIT).await.expect("a response");
    udp.send(&req).await;
    let (second, _) = udp.recv(common::WAIT).await.expect("the response again");
    assert_eq!(first, second);
    assert!(common::parse(&first).status().is_some_and(|c| c >= 300), "a final refusal");
}

#[tokio::test(flavor = "multi_thread")]
async fn rport_sends_the_response_to_the_source_port() {
    let s = TestServer::start().await;
    let udp = s.udp_client().await;
    let port = udp.local().port();
    // The Via names a port nobody listens on; rport asks for the source port instead (RFC
    // 3581 4), and received is then added even though the host matches.
    let via = format!("SIP/2.0/UDP 127.0.0.1:9;branch={};rport", common::branch());
    let req = Request::options(Transport::Udp, udp.local()).set("Via", &via);
    udp.send(&req.to_bytes()).await;
    let (bytes, from) = udp.recv(common::WAIT).await.expect("the response at the source port");
    assert_eq!(from, s.udp_addr(), "from the socket the request came in on");
    let resp = common::parse(&bytes);
    assert_eq!(resp.status(), Some(200));
    let top = resp.top_via().expect("a Via");
    assert_eq!(top.received(), Some(&b"127.0.0.1"[..]));
    assert_eq!(top.rport(), Some(Some(port.to_string().as_bytes())));
    assert_eq!(header(&resp, HeaderName::CallId), req.header("Call-ID").unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_rport_the_response_goes_to_the_via_port() {
    let s = TestServer::start().await;
    let sender = s.udp_client().await;
    let listener = UdpClient::new(s.udp_addr()).await;
    // RFC 3261 18.2.2: the sent-by port, at the address the request came from.
    let req = Request::options(Transport::Udp, listener.local());
    sender.send(&req.to_bytes()).await;
    let (bytes, _) = listener.recv(common::WAIT).await.expect("the response at the Via port");
    let resp = common::parse(&bytes);
    assert_eq!(resp.status(), Some(200));
    assert_matches_request(&resp, &req);
    assert!(sender.recv(common::QUIET).await.is_none(), "nothing at the source port");
}
