//! Property tests: what the builder makes survives serialize -> parse unchanged; a corpus of
//! hand-written messages survives parse -> serialize -> parse; and no input, random or a
//! mangled valid message, makes the parser, the typed views or the framer panic.

// Tests unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use sipfront_proto::{scan, Frame, HeaderName, Limits, Message, Method, NameAddr, StreamFramer, Uri, Via};

// ---------------------------------------------------------------------------------------------
// (a) built messages
// ---------------------------------------------------------------------------------------------

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        prop::sample::select(vec![
            "ACK",
            "BYE",
            "CANCEL",
            "INFO",
            "INVITE",
            "MESSAGE",
            "NOTIFY",
            "OPTIONS",
            "PRACK",
            "PUBLISH",
            "REFER",
            "REGISTER",
            "SUBSCRIBE",
            "UPDATE",
        ])
        .prop_map(String::from),
        "[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,15}",
    ]
    .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a token"))
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec("[a-z][a-z0-9-]{0,8}[a-z0-9]", 1..4).prop_map(|labels| labels.join(".")),
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$-]{1,12}"),
        host(),
        prop::option::of(any::<u16>()),
        prop::collection::vec(("[a-z][a-z0-9-]{0,6}", prop::option::of("[a-zA-Z0-9_.-]{1,8}")), 0..3),
        prop::bool::ANY,
    )
        .prop_map(|(user, host, port, params, sips)| {
            let mut u = String::from(if sips { "sips:" } else { "sip:" });
            if let Some(user) = user {
                u += &user;
                u += "@";
            }
            u += &host;
            if let Some(port) = port {
                u += &format!(":{port}");
            }
            for (name, value) in params {
                u += ";";
                u += &name;
                if let Some(v) = value {
                    u += "=";
                    u += &v;
                }
            }
            u
        })
}

fn request_uri() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => sip_uri(),
        1 => "[0-9]{3,12}".prop_map(|n| format!("tel:+{n}")),
        1 => "[a-z]{1,8}@[a-z]{1,8}\\.test".prop_map(|a| format!("im:{a}")),
    ]
}

fn name_addr() -> impl Strategy<Value = String> {
    (prop::option::of("[a-zA-Z0-9 ]{0,12}"), sip_uri(), prop::option::of("[a-zA-Z0-9-]{1,12}")).prop_map(
        |(display, uri, tag)| {
            let mut v = match display {
                Some(d) => format!("\"{d}\" <{uri}>"),
                None => format!("<{uri}>"),
            };
            if let Some(tag) = tag {
                v += ";tag=";
                v += &tag;
            }
            v
        },
    )
}

fn via() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["UDP", "TCP", "TLS", "WS", "SCTP"]),
        host(),
        prop::option::of(1u16..),
        "[a-zA-Z0-9]{1,16}",
    )
        .prop_map(|(transport, host, port, branch)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("SIP/2.0/{transport} {host}{port};branch=z9hG4bK{branch}")
        })
}

/// A header field: a known name or an extension name, and a value.
#[derive(Clone, Debug)]
enum Field {
    Known(HeaderName, String),
    Named(String, String),
}

fn extra_field() -> impl Strategy<Value = Field> {
    // Printable ASCII without leading or trailing whitespace: what survives the trim of a
    // header value unchanged.
    let value = "([!-~]([ -~]{0,40}[!-~])?)?";
    prop_oneof![
        ("X-[A-Za-z0-9-]{1,12}", value).prop_map(|(n, v)| Field::Named(n, v)),
        (prop::sample::select(vec![HeaderName::Subject, HeaderName::UserAgent, HeaderName::Server]), value)
            .prop_map(|(n, v)| Field::Known(n, v)),
        prop::collection::vec("[a-z][a-z0-9.-]{0,10}", 1..4)
            .prop_map(|tokens| Field::Known(HeaderName::Supported, tokens.join(", "))),
        name_addr().prop_map(|v| Field::Known(HeaderName::Route, v)),
    ]
}

/// The fields every message carries, then extension fields, in any order.
fn fields(request_method: Option<Method>) -> impl Strategy<Value = Vec<Field>> {
    (
        prop::collection::vec(via(), 1..4),
        prop::bool::ANY,
        name_addr(),
        name_addr(),
        "[a-zA-Z0-9.@_!%*+~-]{1,32}",
        0u32..(1 << 31),
        method(),
        0u32..=255,
        prop::collection::vec(extra_field(), 0..6),
    )
        .prop_flat_map(move |(vias, comma, to, from, call_id, seq, response_method, mf, extra)| {
            let mut f = Vec::new();
            if comma {
                f.push(Field::Known(HeaderName::Via, vias.join(", ")));
            } else {
                f.extend(vias.into_iter().map(|v| Field::Known(HeaderName::Via, v)));
            }
            f.push(Field::Known(HeaderName::To, to));
            f.push(Field::Known(HeaderName::From, from));
            f.push(Field::Known(HeaderName::CallId, call_id));
            let cseq_method = request_method.clone().unwrap_or(response_method);
            f.push(Field::Known(HeaderName::CSeq, format!("{seq} {cseq_method}")));
            if request_method.is_some() {
                f.push(Field::Known(HeaderName::MaxForwards, mf.to_string()));
            }
            f.extend(extra);
            Just(f).prop_shuffle()
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..300),
        "(v=0\r\n)?([a-z]=[ -~]{0,30}\r\n){0,8}".prop_map(String::into_bytes),
    ]
}

fn build(mut m: Message, fields: Vec<Field>, body: Vec<u8>) -> Message {
    for f in fields {
        match f {
            Field::Known(name, value) => m.push_header(name, value),
            Field::Named(name, value) => m.push_header_named(name, value),
        }
    }
    m.push_header(HeaderName::ContentLength, body.len().to_string());
    m.set_body(body);
    m
}

fn built_request() -> impl Strategy<Value = Message> {
    method().prop_flat_map(|method| {
        (request_uri(), fields(Some(method.clone())), body())
            .prop_map(move |(uri, fields, body)| build(Message::request(method.clone(), uri), fields, body))
    })
}

fn built_response() -> impl Strategy<Value = Message> {
    (100u16..=699, prop::option::of("[ -~]{0,30}"), fields(None), body()).prop_map(|(code, reason, fields, body)| {
        let mut m = Message::response(code);
        if let Some(reason) = reason {
            m.set_reason(reason);
        }
        build(m, fields, body)
    })
}

fn reparse(m: &Message) -> Message {
    let wire = m.to_vec();
    match Message::parse(Bytes::from(wire.clone()), &Limits::default()) {
        Ok(p) => p,
        Err(e) => panic!("refused ({e}):\n{}", String::from_utf8_lossy(&wire)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn built_requests_survive_the_wire(m in built_request()) {
        let p = reparse(&m);
        prop_assert_eq!(&p, &m);
        prop_assert_eq!(p.to_vec(), m.to_vec());
        prop_assert_eq!(p.vias().count(), m.list(HeaderName::Via).count());
        prop_assert!(p.cseq().is_some() && p.from().is_some() && p.to().is_some());
    }

    #[test]
    fn built_responses_survive_the_wire(m in built_response()) {
        let p = reparse(&m);
        prop_assert_eq!(&p, &m);
        prop_assert_eq!(p.to_vec(), m.to_vec());
        // And so does the response built from a request (it shares the request's buffer): it
        // has no Content-Length header yet, and goes out with one, so compare wire forms.
        let r = p.response_to(500);
        prop_assert_eq!(reparse(&r).to_vec(), r.to_vec());
    }

    #[test]
    fn changed_bodies_are_framed_by_their_length(m in built_request(), new_body in body()) {
        let mut m = reparse(&m);
        m.set_body(new_body.clone());
        let p = reparse(&m);
        prop_assert_eq!(p.body(), &new_body[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// (b) a corpus of hand-written messages
// ---------------------------------------------------------------------------------------------

fn sip(lines: &[&str]) -> Vec<u8> {
    lines.join("\r\n").into_bytes()
}

fn corpus() -> Vec<Vec<u8>> {
    vec![
        sip(&[
            "INVITE sip:bob@example.test SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-c1;rport",
            "Max-Forwards: 70",
            "To: Bob <sip:bob@example.test>",
            "From: \"Alice \\\"A\\\"\" <sip:alice@example.test>;tag=c1",
            "Call-ID: corpus-1@192.0.2.10",
            "CSeq: 1 INVITE",
            "Contact: <sip:alice@192.0.2.10;transport=udp>",
            "Content-Type: application/sdp",
            "Content-Length: 12",
            "",
            "v=0\r\ns=-\r\n\r\n",
        ]),
        // Compact forms, folding, odd whitespace.
        sip(&[
            "",
            "SUBSCRIBE sip:presence@example.test SIP/2.0",
            "v: SIP / 2.0 / TCP client.example.test:5061;branch=z9hG4bK-c2,",
            "   SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK-c2b",
            "i: corpus-2@client.example.test",
            "f:   <sip:carol@example.test>;tag=c2",
            "t: sip:presence@example.test",
            "m: <sip:carol@client.example.test>;+sip.instance=\"<urn:uuid:1-2-3>\";reg-id=1",
            "o: presence",
            "k: eventlist",
            "Subject: a subject",
            "\tspread over",
            "  three lines",
            "CSeq :  3   SUBSCRIBE",
            "Max-Forwards: 0",
            "l: 0",
            "",
            "",
        ]),
        // No Content-Length: a datagram whose body is the rest.
        sip(&[
            "MESSAGE im:dave@example.test SIP/2.0",
            "Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK-c3",
            "Max-Forwards: 70",
            "To: <im:dave@example.test>",
            "From: <tel:+15550100>;tag=c3",
            "Call-ID: corpus-3",
            "CSeq: 1 MESSAGE",
            "X-Unknown:",
            "",
            "hello, no length",
        ]),
        // Content-Length shorter than the bytes present.
        sip(&[
            "SIP/2.0 200 ",
            "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-c4",
            "Via: SIP/2.0/UDP 192.0.2.12;branch=z9hG4bK-c4b",
            "To: <sip:bob@example.test>;tag=b4",
            "From: <sip:alice@example.test>;tag=c4",
            "Call-ID: corpus-4",
            "CSeq: 7 OPTIONS",
            "Allow: INVITE, ACK, BYE",
            "Content-Length: 2",
            "",
            "okay, and more",
        ]),
        sip(&[
            "SIP/2.0 401 Unauthorized",
            "Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-c5;received=192.0.2.99;rport=4321",
            "To: <sip:alice@example.test>;tag=s5",
            "From: <sip:alice@example.test>;tag=c5",
            "Call-ID: corpus-5",
            "CSeq: 2 REGISTER",
            "WWW-Authenticate: Digest realm=\"example.test\", nonce=\"a,b\", qop=\"auth\", algorithm=SHA-256",
            "Content-Length: 0",
            "",
            "",
        ]),
        sip(&[
            "REGISTER sip:example.test SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.40;branch=z9hG4bK-c6",
            "Max-Forwards: 70",
            "To: <sip:dave@example.test>",
            "From: <sip:dave@example.test>;tag=c6",
            "Call-ID: corpus-6@192.0.2.40",
            "CSeq: 2 REGISTER",
            "Contact: *",
            "Expires: 0",
            "Content-Length: 0",
            "",
            "",
        ]),
        sip(&[
            "NOTIFY sip:carol@client.example.test SIP/2.0",
            "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-c7",
            "Max-Forwards: 70",
            "To: <sip:carol@example.test>;tag=c2",
            "From: <sip:presence@example.test>;tag=n7",
            "Call-ID: corpus-2@client.example.test",
            "CSeq: 9 NOTIFY",
            "Event: presence",
            "Subscription-State: active;expires=600",
            "Content-Type: multipart/related;type=\"application/rlmi+xml\";boundary=b7",
            "Content-Length: 45",
            "",
            "--b7\r\nContent-Type: text/plain\r\n\r\nx\r\n--b7--\r\n",
        ]),
    ]
}

#[test]
fn corpus_survives_parse_serialize_parse() {
    for raw in corpus() {
        let m = Message::parse(Bytes::from(raw.clone()), &Limits::default())
            .unwrap_or_else(|e| panic!("refused ({e}): {}", String::from_utf8_lossy(&raw)));
        let again = reparse(&m);
        // The same message, but for a Content-Length added where it had none (over UDP).
        assert_eq!(again.body(), m.body(), "{}", String::from_utf8_lossy(&raw));
        if m.header(HeaderName::ContentLength).is_some() {
            assert_eq!(again, m, "{}", String::from_utf8_lossy(&raw));
        }
        // Serializing is a fixed point after the first time.
        assert_eq!(again.to_vec(), m.to_vec());
        assert_eq!(reparse(&again), again);
    }
}

// ---------------------------------------------------------------------------------------------
// (c) nothing panics
// ---------------------------------------------------------------------------------------------

/// Reads every view a server might ask of a message, to make sure none of them panics.
fn exercise(m: &Message) {
    let _ = m.to_vec();
    let _ = (m.method(), m.request_uri(), m.status(), m.reason(), m.body());
    let _ = m.request_uri().map(Uri::parse);
    for v in m.vias() {
        let _ = (v.branch(), v.received(), v.rport(), v.host.to_string());
    }
    for v in m.list(HeaderName::Via) {
        let _ = Via::parse(v);
    }
    for c in m.contacts().flatten() {
        if let sipfront_proto::Contact::Addr(a) = c {
            let _ = (a.display_name(), a.tag(), a.params.value("+sip.instance"), a.uri.host());
        }
    }
    let _ = (m.from().map(|f| f.display_name()), m.to().map(|t| t.tag()), m.cseq(), m.expires(), m.max_forwards());
    let _ = m.event().map(|e| e.id());
    for name in [HeaderName::Authorization, HeaderName::WwwAuthenticate] {
        for d in m.digests(name).flatten() {
            let _ = (d.get("nonce"), d.iter().count());
        }
    }
    for name in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
        let _ = m.name_addrs(name).count();
    }
    for h in m.headers() {
        let _ = NameAddr::parse(h.value);
        let _ = scan::split_commas(h.value).count();
    }
    if let Some(ct) = m.content_type() {
        let _ = sipfront_proto::multipart::parts(ct, m.body());
    }
    let mut changed = m.clone();
    changed.set_to_tag("x");
    changed.pop_first_element(HeaderName::Via);
    changed.prepend_header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx");
    let _ = changed.response_to(400).to_vec();
    let _ = changed.to_vec();
}

/// A valid message with a few bytes overwritten, inserted or removed: inputs that reach past
/// the start line, unlike uniformly random bytes.
fn mangled() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b" \t\r\n:;,<>\"\\@=%[]/?*0123456789aZ".to_vec();
    let corpus = corpus();
    (
        0..corpus.len(),
        prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(alphabet), 0u8..3), 1..6),
    )
        .prop_map(move |(i, edits)| {
            let mut raw = corpus[i].clone();
            for (at, byte, op) in edits {
                if raw.is_empty() {
                    break;
                }
                let at = at.index(raw.len());
                match op {
                    0 => raw[at] = byte,
                    1 => raw.insert(at, byte),
                    _ => {
                        raw.remove(at);
                    }
                }
            }
            raw
        })
}

fn frame_everything(bytes: &[u8], cut: usize, limits: &Limits) {
    let mut framer = StreamFramer::new(limits.clone());
    for piece in [&bytes[..cut], &bytes[cut..]] {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(b))) => {
                    if let Ok(m) = Message::parse(b, limits) {
                        exercise(&m);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    if let Some(h) = e.headers() {
                        let _ = Message::parse_head(h.clone(), limits).map(|m| m.response_to(e.status()).to_vec());
                    }
                    return;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), cut in any::<prop::sample::Index>()) {
        let limits = Limits::default();
        match Message::parse(Bytes::from(bytes.clone()), &limits) {
            Ok(m) => exercise(&m),
            Err(e) => {
                let _ = (e.status(), e.kind.label(), e.to_string());
                if let Some(m) = e.message() {
                    exercise(m);
                }
            }
        }
        frame_everything(&bytes, cut.index(bytes.len() + 1), &limits);
    }

    #[test]
    fn mangled_messages_never_panic(raw in mangled(), cut in any::<prop::sample::Index>()) {
        let small = Limits { max_message_size: 400, max_headers: 8, max_header_len: 100, max_vias: 2 };
        for limits in [Limits::default(), small] {
            match Message::parse(Bytes::from(raw.clone()), &limits) {
                Ok(m) => exercise(&m),
                Err(e) => {
                    if let Some(m) = e.message() {
                        exercise(m);
                    }
                }
            }
            let _ = Message::parse_head(Bytes::from(raw.clone()), &limits).map(|m| exercise(&m));
            frame_everything(&raw, cut.index(raw.len() + 1), &limits);
        }
    }

    #[test]
    fn whatever_parses_survives_the_wire(raw in mangled()) {
        // Any message we accept, however odd, serializes to one we accept as the same message.
        // Content-Length is the exception: it is rewritten from the body (`007` becomes `7`).
        if let Ok(m) = Message::parse(Bytes::from(raw), &Limits::default()) {
            let p = reparse(&m);
            prop_assert_eq!(p.to_vec(), m.to_vec());
            prop_assert_eq!(p.body(), m.body());
            let strip = |m: &Message| {
                m.headers().filter(|h| h.name != HeaderName::ContentLength).map(|h| (h.name, h.value.to_vec())).collect::<Vec<_>>()
            };
            prop_assert_eq!(strip(&p), strip(&m));
        }
    }

    #[test]
    fn sip_shaped_noise_never_panics(
        lines in prop::collection::vec("[ -~\t]{0,60}", 0..12),
        body in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut raw = b"INVITE sip:a@b.test SIP/2.0\r\n".to_vec();
        for l in &lines {
            raw.extend_from_slice(l.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&body);
        if let Ok(m) = Message::parse(Bytes::from(raw.clone()), &Limits::default()) {
            exercise(&m);
        }
        let _ = Message::parse_head(Bytes::from(raw), &Limits::default()).map(|m| exercise(&m));
    }
}
