//! Attacks from the security review (issue 17), each performed over real sockets and shown to
//! fail.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::{HeaderName, Method};

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// Finding 13: a MESSAGE sent over UDP without Content-Length (allowed there: the body is the
/// rest of the datagram) whose body is a whole SIP request. Relayed onto the recipient's TCP
/// connection without a Content-Length, the body would frame as a second message "from the
/// server". It arrives as one message, its body whole, with the right Content-Length.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_holding_a_request_is_not_smuggled_onto_a_stream() {
    for backend in backends("security_smuggling").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let mut bob = online(&s, "bob", "builder").await;
        let inner = format!(
            "BYE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP evil.invalid;branch=z9hG4bKsmuggled\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{DOMAIN}>;tag=x\r\nTo: <sip:bob@{DOMAIN}>;tag=y\r\nCall-ID: smuggled\r\nCSeq: 2 BYE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let mut alice = s.udp_client().await;
        let mut msg = Request::message(&alice, "alice", "bob");
        msg.body = inner.clone();
        let mut msg = authorized(&mut alice, &msg, "alice", "wonderland").await;
        msg.headers.retain(|(name, _)| !name.eq_ignore_ascii_case("Content-Length"));
        let bytes = msg.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.split("\r\n\r\n").next().unwrap().contains("Content-Length"), "sent without one");
        alice.send(&bytes).await;

        let got = bob.expect_request(Method::Message).await;
        assert_eq!(got.body(), inner.as_bytes(), "the body arrives whole, as a body");
        assert_eq!(header(&got, HeaderName::ContentLength), inner.len().to_string());
        bob.answer(&got, 200, "bob").await;
        let Phone::Tcp(stream) = &mut bob else { unreachable!() };
        assert!(stream.next_frame(QUIET).await.is_none(), "no second request on Bob's connection");
    }
}

/// Finding 8: every tag, branch, entity tag, nonce and key the server makes comes from a
/// cryptographically secure generator (`sipfront_proto::random`, or `getrandom` for keys);
/// no fast, predictable generator is used anywhere in the server or its protocol crate.
#[test]
fn no_predictable_random_generator_in_the_server() {
    let root = sipfront_storage::testing::workspace_root();
    let mut offenders = Vec::new();
    for dir in ["server/src", "proto/src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        if ["fastrand", "SmallRng", "StdRng::seed_from_u64"].iter().any(|w| line.contains(w)) {
                            offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "predictable generators:\n{}", offenders.join("\n"));
    for cargo in ["server/Cargo.toml", "proto/Cargo.toml"] {
        let text = std::fs::read_to_string(root.join(cargo)).unwrap();
        let deps = text.split("[dev-dependencies]").next().unwrap();
        assert!(!deps.contains("fastrand"), "{cargo} depends on fastrand");
    }
}
