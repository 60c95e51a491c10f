//! Parser throughput: sipfront-proto against rsip 0.4 on the same bytes.
//!
//! Three messages a front end sees all day: a REGISTER with digest credentials and an RFC 5626
//! Contact (what linphone and baresip send), a MESSAGE with a text body, and a NOTIFY carrying
//! PIDF. Every message is measured as parse + serialize (what a proxy does with each request it
//! forwards); the REGISTER also parse-only and parse + the typed views a registrar reads.
//! Throughput is one message per iteration, so criterion reports messages per second.
//!
//! Run: `cargo bench -p sipfront-proto --bench parse` (results in /BENCHMARKS.md).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::message::HasHeaders;
use sipfront_proto::{Contact, HeaderName, Limits, Message};
use std::convert::TryFrom;

/// Long header names and no folding: rsip refuses compact forms and continuation lines, and the
/// comparison must be on bytes both parsers accept.
const REGISTER: &str = concat!(
    "REGISTER sip:sip.example.org SIP/2.0\r\n",
    "Via: SIP/2.0/UDP 192.168.1.34:5060;branch=z9hG4bK.hGy~Fo3Ut;rport\r\n",
    "From: <sip:alice@sip.example.org>;tag=KpmdkCYwr\r\n",
    "To: sip:alice@sip.example.org\r\n",
    "CSeq: 21 REGISTER\r\n",
    "Call-ID: 4mmdMkMVJ7\r\n",
    "Max-Forwards: 70\r\n",
    "Supported: replaces, outbound, gruu\r\n",
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n",
    "Content-Length: 0\r\n",
    "Contact: <sip:alice@192.168.1.34;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:ab1f9f3e-7b9c-4d7e-9b0e-4f1f1c2a6b35>\";reg-id=1\r\n",
    "Expires: 3600\r\n",
    "User-Agent: Linphone/5.2.5 (belle-sip/5.3.47)\r\n",
    "Authorization: Digest realm=\"sip.example.org\", nonce=\"YzJkZjQ2MzktYjU4Ny00NWJjLTk0OWI\", ",
    "algorithm=MD5, username=\"alice\", uri=\"sip:sip.example.org\", ",
    "response=\"6629fae49393a05397450978507c4ef1\", cnonce=\"0a4f113b\", nc=00000001, qop=auth\r\n",
    "\r\n",
);

const MESSAGE_BODY: &str = concat!(
    "Hi Bob, the build of 2.4.1 is on the staging server now. I ran the registration and presence ",
    "suites against it this morning and both are green; the only thing left is the TLS handshake ",
    "test with the old Polycom phones, which I will do after lunch. If you want to try it yourself ",
    "the credentials are the usual ones. Tell me if anything looks off before we roll it out to the ",
    "customers tomorrow at nine. Thanks, Alice",
);

fn message_request() -> String {
    format!(
        concat!(
            "MESSAGE sip:bob@sip.example.org SIP/2.0\r\n",
            "Via: SIP/2.0/TCP 10.0.0.17:49822;branch=z9hG4bK.b3aa1f0c;rport;alias\r\n",
            "Max-Forwards: 70\r\n",
            "From: \"Alice\" <sip:alice@sip.example.org>;tag=a6c85cf\r\n",
            "To: <sip:bob@sip.example.org>\r\n",
            "Call-ID: 1e0b2c9f6a4d4c7e8f9d@10.0.0.17\r\n",
            "CSeq: 4711 MESSAGE\r\n",
            "Route: <sip:sip.example.org;transport=tcp;lr>\r\n",
            "Date: Tue, 24 Nov 2026 09:12:45 GMT\r\n",
            "User-Agent: baresip v3.10.1 (x86_64/linux)\r\n",
            "Content-Type: text/plain;charset=UTF-8\r\n",
            "Content-Length: {}\r\n",
            "\r\n",
            "{}",
        ),
        MESSAGE_BODY.len(),
        MESSAGE_BODY
    )
}

const PIDF: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
    "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" ",
    "xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"sip:alice@sip.example.org\">\n",
    "  <tuple id=\"t8a3f\">\n",
    "    <status><basic>open</basic></status>\n",
    "    <contact priority=\"0.8\">sip:alice@192.168.1.34</contact>\n",
    "    <timestamp>2026-11-24T09:12:45Z</timestamp>\n",
    "  </tuple>\n",
    "  <dm:person id=\"p1\">\n",
    "    <rpid:activities><rpid:on-the-phone/></rpid:activities>\n",
    "  </dm:person>\n",
    "</presence>\n",
);

fn notify_request() -> String {
    format!(
        concat!(
            "NOTIFY sip:bob@192.168.1.50:5060;transport=udp SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---1f2b8c3d9e4a;rport\r\n",
            "Max-Forwards: 70\r\n",
            "From: <sip:alice@sip.example.org>;tag=pres-7e1d0a\r\n",
            "To: <sip:bob@sip.example.org>;tag=9fxced76sl\r\n",
            "Call-ID: c3x842276298220188511@192.168.1.50\r\n",
            "CSeq: 3 NOTIFY\r\n",
            "Contact: <sip:presence@203.0.113.10:5060;transport=udp>\r\n",
            "Event: presence\r\n",
            "Subscription-State: active;expires=3540\r\n",
            "Content-Type: application/pidf+xml\r\n",
            "Content-Length: {}\r\n",
            "\r\n",
            "{}",
        ),
        PIDF.len(),
        PIDF
    )
}

/// Parses and serializes with sipfront-proto into a reused buffer.
fn sipfront_round_trip(bytes: &Bytes, limits: &Limits, out: &mut Vec<u8>) -> usize {
    let msg = Message::parse(bytes.clone(), limits).expect("sipfront parses the bench message");
    out.clear();
    msg.write_to(out);
    out.len()
}

/// What a registrar reads from a REGISTER before it decides anything.
fn sipfront_views(bytes: &Bytes, limits: &Limits) -> usize {
    let msg = Message::parse(bytes.clone(), limits).expect("sipfront parses the bench message");
    let via = msg.top_via().expect("Via");
    let from = msg.from().expect("From");
    let to = msg.to().expect("To");
    let cseq = msg.cseq().expect("CSeq");
    let call_id = msg.call_id().expect("Call-ID");
    let mut n = via.branch().map_or(0, <[u8]>::len) + from.tag().map_or(0, <[u8]>::len) + to.uri.raw().len();
    n += call_id.len() + cseq.seq as usize;
    for c in msg.contacts() {
        if let Ok(Contact::Addr(c)) = c {
            n += c.params.value("+sip.instance").map_or(0, |v| v.len());
            n += c.params.get("reg-id").flatten().map_or(0, <[u8]>::len);
            n += c.params.get("expires").flatten().map_or(0, <[u8]>::len);
        }
    }
    for d in msg.digests(HeaderName::Authorization) {
        let d = d.expect("Authorization");
        for p in ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce"] {
            n += d.get(p).map_or(0, |v| v.len());
        }
    }
    n
}

fn rsip_round_trip(bytes: &[u8]) -> usize {
    let msg = rsip::SipMessage::try_from(bytes).expect("rsip parses the bench message");
    msg.to_string().len()
}

/// The same reads through rsip's typed headers (rsip parses a header's value only when asked).
fn rsip_views(bytes: &[u8]) -> usize {
    use rsip::message::HeadersExt;
    let msg = rsip::SipMessage::try_from(bytes).expect("rsip parses the bench message");
    let rsip::SipMessage::Request(req) = msg else { panic!("a request") };
    let via = req.via_header().expect("Via").typed().expect("typed Via");
    let from = req.from_header().expect("From").typed().expect("typed From");
    let to = req.to_header().expect("To").typed().expect("typed To");
    let cseq = req.cseq_header().expect("CSeq").typed().expect("typed CSeq");
    let call_id = req.call_id_header().expect("Call-ID");
    let mut n = via.branch().map_or(0, |b| b.to_string().len()) + from.tag().map_or(0, |t| t.to_string().len());
    n += to.uri.to_string().len() + call_id.value().len() + cseq.seq as usize;
    for c in req.contact_headers() {
        // rsip cannot type a Contact carrying +sip.instance="<urn:...>" (its parameter
        // tokenizer stops at the quoted '<'); a server on rsip would try, fail, and fall back
        // to the raw value, so that is what is measured.
        n += match c.typed() {
            Ok(c) => c.params.len(),
            Err(_) => c.value().len(),
        };
    }
    if let Some(a) = req.authorization_header() {
        let a = a.typed().expect("typed Authorization");
        n += a.username.len() + a.realm.len() + a.nonce.len() + a.response.len();
    }
    n
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let messages: [(&str, Bytes); 3] = [
        ("REGISTER", Bytes::from_static(REGISTER.as_bytes())),
        ("MESSAGE", Bytes::from(message_request())),
        ("NOTIFY", Bytes::from(notify_request())),
    ];

    // A fair comparison needs bytes both parsers accept and read the same way.
    for (name, bytes) in &messages {
        let ours = Message::parse(bytes.clone(), &limits).unwrap_or_else(|e| panic!("sipfront rejects {name}: {e}"));
        let theirs = rsip::SipMessage::try_from(&bytes[..]).unwrap_or_else(|e| panic!("rsip rejects {name}: {e}"));
        assert_eq!(ours.headers().count(), theirs.headers().iter().count(), "{name}: header count");
        assert_eq!(ours.body(), theirs.body().as_slice(), "{name}: body");
        assert_eq!(ours.to_vec(), &bytes[..], "{name}: sipfront serializes the bytes it parsed");
        println!("{name}: {} bytes", bytes.len());
    }
    assert!(sipfront_views(&messages[0].1, &limits) > 0);
    assert!(rsip_views(&messages[0].1) > 0);

    let mut out = Vec::with_capacity(4096);
    let mut group = c.benchmark_group("parse+serialize");
    group.throughput(Throughput::Elements(1));
    for (name, bytes) in &messages {
        group.bench_with_input(BenchmarkId::new("sipfront", name), bytes, |b, bytes| {
            b.iter(|| sipfront_round_trip(black_box(bytes), &limits, &mut out))
        });
        group.bench_with_input(BenchmarkId::new("rsip", name), bytes, |b, bytes| {
            b.iter(|| rsip_round_trip(black_box(&bytes[..])))
        });
    }
    group.finish();

    let register = &messages[0].1;
    let mut group = c.benchmark_group("REGISTER");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse/sipfront", |b| {
        b.iter(|| Message::parse(black_box(register).clone(), &limits).map(|m| m.headers().count()))
    });
    group.bench_function("parse/rsip", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(&register[..])).map(|m| m.headers().iter().count()))
    });
    group.bench_function("parse+views/sipfront", |b| b.iter(|| sipfront_views(black_box(register), &limits)));
    group.bench_function("parse+views/rsip", |b| b.iter(|| rsip_views(black_box(&register[..]))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
