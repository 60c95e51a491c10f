//! A server that answers garbage, errors or nothing: the harness counts each and ends on time.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use bytes::Bytes;
use sipfront_loadtest::ramp::Ramp;
use sipfront_loadtest::Scenario;
use sipfront_proto::{HeaderName, Limits, Message};
use tokio::net::UdpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_what_goes_wrong_instead_of_failing() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(req) = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()) else { continue };
            let user = req.from().and_then(|f| f.uri.user().map(|u| u.to_vec())).unwrap_or_default();
            let reply: Option<Vec<u8>> = match &user[..] {
                b"user0" => Some(b"SIP/2.0 banana\r\n\r\n".to_vec()),
                b"user1" => None,
                b"user2" => Some(req.response_to(500).to_vec()),
                _ => {
                    let mut r = req.response_to(200);
                    r.push_header(HeaderName::ContentLength, "0");
                    Some(r.to_vec())
                }
            };
            if let Some(reply) = reply {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    let mut c = common::config(Scenario::Register, target, 4, 100.0, 8);
    c.timeout_ms = 1_000;
    c.t1_ms = 100;
    let started = std::time::Instant::now();
    let r = common::run(c).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "bounded by the timeout");
    assert_eq!((r.started, r.finished, r.succeeded, r.unfinished), (8, 8, 2, 0));
    assert_eq!(r.timeouts, 4, "user0 (garbage) and user1 (silence) time out");
    assert!(r.malformed >= 2);
    assert!(r.retransmissions >= 8, "{}", r.retransmissions);
    assert_eq!(r.unexpected_responses, 2, "the 500s");
    assert_eq!(r.transactions["register"].statuses.get("500"), Some(&2));
    assert_eq!(r.transactions["register"].statuses.get("200"), Some(&2), "a server that does not challenge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_stops_at_the_first_failing_step() {
    // Answers the first 50 requests, then nothing: the second step's transactions time out.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut answered = 0;
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(req) = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()) else { continue };
            if answered < 50 {
                answered += 1;
                let mut r = req.response_to(200);
                r.push_header(HeaderName::ContentLength, "0");
                let _ = socket.send_to(&r.to_vec(), from).await;
            }
        }
    });
    let mut c = common::config(Scenario::Register, target, 10, 100.0, 1);
    c.timeout_ms = 500;
    c.ramp = Some(Ramp { step_secs: 0.5, max_p99_ms: 1000.0, ..Ramp::parse("100:100:500").unwrap() });
    let r = common::run(c).await;
    let ramp = r.ramp.unwrap();
    assert_eq!(ramp.steps.len(), 2, "no step after the failing one");
    assert!(ramp.steps[0].passed);
    assert_eq!((ramp.steps[1].failed, ramp.steps[1].passed), (100, false));
    assert!(ramp.steps[1].verdict.starts_with("failures 100.00%"), "{}", ramp.steps[1].verdict);
    assert_eq!(ramp.highest_passing_rate, Some(100.0));
    assert_eq!((r.succeeded, r.timeouts), (50, 100));
}

/// With `--retry-after`, a 503 that says when to come back is waited out and the request tried
/// again; without it, the 503 is the transaction's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_is_tried_again_when_asked() {
    for honour in [true, false] {
        // Refuses each user's first request with 503 and Retry-After: 1, then answers 200.
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let mut refused = std::collections::HashSet::new();
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(req) = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()) else { continue };
                let user = req.from().and_then(|f| f.uri.user().map(|u| u.to_vec())).unwrap_or_default();
                let mut r = if refused.insert(user) {
                    let mut r = req.response_to(503);
                    r.push_header(HeaderName::RetryAfter, "1 (overloaded)");
                    r
                } else {
                    req.response_to(200)
                };
                r.push_header(HeaderName::ContentLength, "0");
                let _ = socket.send_to(&r.to_vec(), from).await;
            }
        });
        let mut c = common::config(Scenario::Register, target, 3, 100.0, 3);
        c.retry_after = honour;
        let started = std::time::Instant::now();
        let r = common::run(c).await;
        if honour {
            assert_eq!((r.succeeded, r.failed, r.retries_after_503), (3, 0, 3));
            assert_eq!(r.unexpected_responses, 0, "a 503 tried again is expected");
            assert!(started.elapsed() >= std::time::Duration::from_secs(1), "waited as the 503 said");
            let latency = &r.transactions["register"].latency_ms;
            assert!(latency.min >= 1000.0, "the wait is the user's: {latency:?}");
        } else {
            assert_eq!((r.succeeded, r.failed, r.retries_after_503), (0, 3, 0));
            assert_eq!(r.transactions["register"].statuses.get("503"), Some(&3));
        }
    }
}
