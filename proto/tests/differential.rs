//! Differential tests against `rsip` 0.4, the usual Rust SIP parser: on plain messages both
//! accept, both read the same method or status, Call-ID, CSeq and body. Where we accept what
//! RFC 3261 allows and rsip does not (compact forms, folding, whitespace before the colon,
//! leading CRLFs), a test pins down the difference as observed, so that the crate documentation
//! stays true.

// Tests unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use rsip::prelude::*;
use sipfront_proto::{HeaderName, Limits, Message};

fn ours(raw: &str) -> Message {
    match Message::parse(Bytes::copy_from_slice(raw.as_bytes()), &Limits::default()) {
        Ok(m) => m,
        Err(e) => panic!("we refused ({e}): {raw}"),
    }
}

fn theirs(raw: &str) -> rsip::SipMessage {
    match rsip::SipMessage::try_from(raw) {
        Ok(m) => m,
        Err(e) => panic!("rsip refused ({e:?}): {raw}"),
    }
}

/// Both parsers read the same method or status code, Call-ID, CSeq and body.
fn assert_agree(raw: &str) {
    let a = ours(raw);
    let b = theirs(raw);
    match &b {
        rsip::SipMessage::Request(r) => {
            assert_eq!(a.method().map(|m| m.as_str().to_string()), Some(r.method().to_string()), "{raw}");
            assert_eq!(a.request_uri(), Some(r.uri().to_string().as_bytes()), "{raw}");
        }
        rsip::SipMessage::Response(r) => assert_eq!(a.status(), Some(r.status_code().code()), "{raw}"),
    }
    let call_id = b.call_id_header().expect("rsip Call-ID");
    assert_eq!(a.call_id(), Some(call_id.value().as_bytes()), "{raw}");
    let cseq = b.cseq_header().expect("rsip CSeq").typed().expect("rsip typed CSeq");
    let our_cseq = a.cseq().expect("our CSeq");
    assert_eq!(our_cseq.seq, cseq.seq, "{raw}");
    assert_eq!(our_cseq.method.as_str(), cseq.method.to_string(), "{raw}");
    assert_eq!(a.body(), &b.body()[..], "{raw}");
    let via = b.via_header().expect("rsip Via");
    assert_eq!(a.header(HeaderName::Via), Some(via.value().as_bytes()), "{raw}");
}

fn sip(lines: &[&str]) -> String {
    lines.join("\r\n")
}

fn plain_invite() -> String {
    sip(&[
        "INVITE sip:bob@example.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-diff-1",
        "Max-Forwards: 70",
        "To: <sip:bob@example.test>",
        "From: \"Alice\" <sip:alice@example.test>;tag=d1",
        "Call-ID: diff-1@192.0.2.10",
        "CSeq: 10 INVITE",
        "Contact: <sip:alice@192.0.2.10:5060>",
        "Content-Type: application/sdp",
        "Content-Length: 28",
        "",
        "v=0\r\ns=-\r\nt=0 0\r\nm=audio 0\r\n",
    ])
}

#[test]
fn plain_messages_agree() {
    assert_agree(&plain_invite());
    assert_agree(&sip(&[
        "REGISTER sip:example.test SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.40:50123;branch=z9hG4bK-diff-2;rport",
        "Max-Forwards: 70",
        "To: <sip:dave@example.test>",
        "From: <sip:dave@example.test>;tag=d2",
        "Call-ID: a84b4c76e66710",
        "CSeq: 314159 REGISTER",
        "Contact: <sip:dave@192.0.2.40:50123;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1",
        "Expires: 3600",
        "Content-Length: 0",
        "",
        "",
    ]));
    assert_agree(&sip(&[
        "MESSAGE sip:bob@example.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-diff-3",
        "Max-Forwards: 69",
        "to: <sip:bob@example.test>",
        "from: <sip:alice@example.test>;tag=d3",
        "call-id: diff-3",
        "cseq: 2 MESSAGE",
        "Content-Type: text/plain",
        "Content-Length: 12",
        "",
        "hello, world",
    ]));
    assert_agree(&sip(&[
        "SIP/2.0 486 Busy Here",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-diff-1",
        "To: <sip:bob@example.test>;tag=b4",
        "From: \"Alice\" <sip:alice@example.test>;tag=d1",
        "Call-ID: diff-1@192.0.2.10",
        "CSeq: 10 INVITE",
        "Content-Length: 0",
        "",
        "",
    ]));
    // An empty reason phrase: both accept it.
    assert_agree(&sip(&[
        "SIP/2.0 200 ",
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-diff-5",
        "To: <sip:bob@example.test>;tag=b5",
        "From: <sip:alice@example.test>;tag=d5",
        "Call-ID: diff-5",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
        "",
        "",
    ]));
}

#[test]
fn compact_forms_rsip_cannot_find() {
    // rsip 0.4 parses the message but keeps `i:`, `v:`, `f:` as unknown headers, so the
    // Call-ID, Via and From it is asked for are missing; we read them.
    let plain = plain_invite();
    for (long, compact) in [("Call-ID:", "i:"), ("Via:", "v:"), ("From:", "f:")] {
        let raw = plain.replace(long, compact);
        let m = ours(&raw);
        let r = theirs(&raw);
        match compact {
            "i:" => {
                assert!(r.call_id_header().is_err());
                assert_eq!(m.call_id(), Some(&b"diff-1@192.0.2.10"[..]));
            }
            "v:" => {
                assert!(r.via_header().is_err());
                assert_eq!(m.top_via().and_then(|v| v.branch()), Some(&b"z9hG4bK-diff-1"[..]));
            }
            _ => {
                assert!(r.from_header().is_err());
                assert_eq!(m.from().and_then(|f| f.tag()), Some(&b"d1"[..]));
            }
        }
    }
}

#[test]
fn legal_forms_rsip_refuses() {
    let plain = plain_invite();
    let cases = [
        // RFC 3261 7.3.1: a header field value may be folded over several lines.
        ("folded Subject", plain.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nSubject: lunch\r\n at noon\r\n")),
        ("folded Via", plain.replace("Via: SIP/2.0/UDP", "Via:\r\n SIP/2.0/UDP")),
        ("folded CSeq", plain.replace("CSeq: 10 INVITE", "CSeq: 10\r\n\tINVITE")),
        // RFC 3261 25.1: HCOLON = *( SP / HTAB ) ":" SWS.
        ("space before colon", plain.replace("Call-ID:", "Call-ID :")),
        // RFC 3261 7.5: CRLFs before the start line are to be ignored.
        ("leading CRLF", format!("\r\n{plain}")),
        // RFC 3261 19.1.6 / RFC 3966: a tel URI as the Request-URI.
        ("tel Request-URI", plain.replace("INVITE sip:bob@example.test", "INVITE tel:+15550100")),
    ];
    for (what, raw) in cases {
        assert!(rsip::SipMessage::try_from(raw.as_str()).is_err(), "rsip now accepts {what}");
        let m = ours(&raw);
        assert_eq!(m.cseq().map(|c| c.seq), Some(10), "{what}");
        assert_eq!(m.body(), b"v=0\r\ns=-\r\nt=0 0\r\nm=audio 0\r\n", "{what}");
    }
    let m = ours(&plain.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nSubject: lunch\r\n at noon\r\n"));
    assert_eq!(m.header(HeaderName::Subject), Some(&b"lunch at noon"[..]));
}

/// Plain requests: common methods, simple SIP URIs, token Call-IDs, text bodies.
fn plain_request() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["INVITE", "OPTIONS", "MESSAGE", "REGISTER", "BYE", "SUBSCRIBE", "NOTIFY"]),
        "[a-z][a-z0-9]{0,8}",
        "[a-z][a-z0-9]{0,8}\\.(test|example)",
        "[a-zA-Z0-9]{1,20}(@[a-z0-9.]{1,12})?",
        0u32..(1 << 31),
        "[a-zA-Z0-9]{1,12}",
        "[ -~]{0,80}",
    )
        .prop_map(|(method, user, host, call_id, seq, branch, body)| {
            sip(&[
                &format!("{method} sip:{user}@{host} SIP/2.0"),
                &format!("Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK{branch}"),
                "Max-Forwards: 70",
                &format!("To: <sip:{user}@{host}>"),
                &format!("From: <sip:caller@{host}>;tag={branch}"),
                &format!("Call-ID: {call_id}"),
                &format!("CSeq: {seq} {method}"),
                &format!("Content-Length: {}", body.len()),
                "",
                &body,
            ])
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn plain_requests_agree(raw in plain_request()) {
        assert_agree(&raw);
    }
}
