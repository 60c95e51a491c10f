//! RFC 4475 (SIP torture tests), category by category, with messages written for this suite in
//! the spirit of the RFC's: odd but legal messages must parse and their typed views must read
//! the right values; broken ones must fail with the exact [`ErrorKind`] and status code, and
//! keep the message where a server can still answer it.

// Tests unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use sipfront_proto::multipart;
use sipfront_proto::{Contact, ErrorKind, HeaderName, Host, Limits, Message, Method, ParseError};

/// Joins lines with CRLF. A message ends its header block with an empty line (`""`); what
/// follows it is the body.
fn sip(lines: &[&str]) -> Vec<u8> {
    lines.join("\r\n").into_bytes()
}

fn parse(raw: &[u8]) -> Result<Message, ParseError> {
    Message::parse(Bytes::copy_from_slice(raw), &Limits::default())
}

fn parse_ok(raw: &[u8]) -> Message {
    match parse(raw) {
        Ok(m) => m,
        Err(e) => panic!("refused ({e}): {}", String::from_utf8_lossy(raw)),
    }
}

fn parse_err(raw: &[u8]) -> ParseError {
    match parse(raw) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e,
    }
}

/// Asserts the error kind, its status, and whether the message was kept so it can be answered.
fn assert_refused(raw: &[u8], kind: ErrorKind, status: u16, answerable: bool) {
    let e = parse_err(raw);
    assert_eq!(e.kind, kind, "{}", String::from_utf8_lossy(raw));
    assert_eq!(e.status(), status, "{kind:?}");
    assert_eq!(e.kind.status(), status);
    assert_eq!(e.message().is_some(), answerable, "{kind:?} answerable");
    let framing = matches!(
        kind,
        ErrorKind::BadHeader(HeaderName::ContentLength)
            | ErrorKind::BodyTooLarge { .. }
            | ErrorKind::BodyTruncated { .. }
    );
    // Content-Length errors leave no message (the body cannot be framed), but the header block
    // is intact: `parse_head` reads it, so that a datagram can still be answered (RFC 4475
    // 3.1.2.? clerr and ncl want a 400).
    let head = if framing { Message::parse_head(Bytes::copy_from_slice(raw), &Limits::default()).ok() } else { None };
    assert!(!framing || head.is_some(), "{kind:?}: parse_head refused the header block");
    if let Some(m) = e.message().or(head.as_ref()) {
        // What a server needs to build the error response.
        let r = m.response_to(status);
        assert_eq!(r.status(), Some(status));
        assert!(
            r.top_via().is_some()
                || matches!(kind, ErrorKind::MissingHeader(HeaderName::Via) | ErrorKind::BadHeader(HeaderName::Via))
        );
    }
}

/// The headers of a well-formed INVITE; tests take one out or swap one.
const INVITE: &[&str] = &[
    "INVITE sip:bob@example.test SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-torture-1",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@example.test>",
    "From: \"Alice\" <sip:alice@example.test>;tag=a-73",
    "Call-ID: t0rture.1@192.0.2.10",
    "CSeq: 10 INVITE",
    "Contact: <sip:alice@192.0.2.10>",
    "Content-Length: 0",
    "",
    "",
];

/// The INVITE with each line starting with `prefix` replaced by `with` (dropped if `None`).
fn invite_with(prefix: &str, with: Option<&str>) -> Vec<u8> {
    let mut found = false;
    let lines: Vec<&str> = INVITE
        .iter()
        .filter_map(|&l| {
            if !l.is_empty() && l.starts_with(prefix) {
                found = true;
                return with;
            }
            Some(l)
        })
        .collect();
    assert!(found, "no line starts with {prefix}");
    sip(&lines)
}

/// The INVITE with `extra` header lines added just before Content-Length.
fn invite_plus(extra: &[&str]) -> Vec<u8> {
    let mut lines: Vec<&str> = INVITE[..INVITE.len() - 3].to_vec();
    lines.extend_from_slice(extra);
    lines.extend_from_slice(&INVITE[INVITE.len() - 3..]);
    sip(&lines)
}

// ---------------------------------------------------------------------------------------------
// Valid messages (RFC 4475 3.1.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn baseline_invite_parses() {
    let m = parse_ok(&sip(INVITE));
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.request_uri(), Some(&b"sip:bob@example.test"[..]));
    assert_eq!(m.call_id(), Some(&b"t0rture.1@192.0.2.10"[..]));
    assert_eq!(m.max_forwards(), Some(70));
    assert_eq!(m.body(), b"");
}

#[test]
fn folded_header_values_are_unfolded() {
    let raw = sip(&[
        "OPTIONS sip:bob@example.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-fold-1,",
        "      SIP/2.0/TCP",
        "\t192.0.2.2:5070;branch=z9hG4bK-fold-2",
        "To:",
        " <sip:bob@example.test>",
        "From: <sip:alice@example.test>",
        "  ;tag=f0ld",
        "Call-ID: fold.1@example.test",
        "CSeq: 8",
        "   OPTIONS",
        "Max-Forwards: 7",
        "Subject: are you",
        "    there? please \t",
        "\t pick up",
        "X-Empty-Then-Folded:",
        "Content-Length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    assert_eq!(m.header(HeaderName::Subject), Some(&b"are you there? please pick up"[..]));
    assert_eq!(m.header_named("x-empty-then-folded"), Some(&b""[..]));
    let vias: Vec<_> = m.vias().collect();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[1].transport, b"TCP");
    assert_eq!(vias[1].port, Some(5070));
    assert_eq!(vias[1].branch(), Some(&b"z9hG4bK-fold-2"[..]));
    assert_eq!(m.to().map(|t| t.uri.raw()), Some(&b"sip:bob@example.test"[..]));
    assert_eq!(m.from().and_then(|f| f.tag()), Some(&b"f0ld"[..]));
    assert_eq!(m.cseq().map(|c| (c.seq, c.method)), Some((8, Method::Options)));
}

#[test]
fn compact_header_forms() {
    let raw = sip(&[
        "SUBSCRIBE sip:presence@example.test SIP/2.0",
        "v: SIP/2.0/TCP client.example.test:5061;branch=z9hG4bK-compact",
        "i: compact-7@client.example.test",
        "f: <sip:carol@example.test>;tag=c0",
        "t: sip:presence@example.test",
        "m: <sip:carol@client.example.test;transport=tcp>",
        "k: eventlist, gruu",
        "s: compact forms",
        "o: presence;id=4",
        "c: text/plain",
        "CSeq: 3 SUBSCRIBE",
        "Max-Forwards: 69",
        "l: 5",
        "",
        "hello",
    ]);
    let m = parse_ok(&raw);
    assert_eq!(m.call_id(), Some(&b"compact-7@client.example.test"[..]));
    assert_eq!(m.top_via().map(|v| v.transport), Some(&b"TCP"[..]));
    assert_eq!(m.from().and_then(|f| f.tag()), Some(&b"c0"[..]));
    assert_eq!(m.to().map(|t| t.angle), Some(false));
    assert!(m.list_has(HeaderName::Supported, "GRUU"));
    assert_eq!(m.header(HeaderName::Subject), Some(&b"compact forms"[..]));
    let event = m.event().expect("o: is Event");
    assert!(event.is("presence"));
    assert_eq!(event.id(), Some(&b"4"[..]));
    assert_eq!(m.content_type(), Some(&b"text/plain"[..]));
    assert_eq!(m.body(), b"hello");
    let contacts: Vec<_> = m.contacts().collect();
    assert_eq!(contacts.len(), 1);
    // Compact names keep their spelling in the message.
    let raw_names: Vec<&[u8]> = m.headers().map(|h| h.raw_name).collect();
    assert!(raw_names.contains(&&b"v"[..]));
}

#[test]
fn compact_forms_in_upper_case() {
    let raw = sip(&[
        "MESSAGE sip:bob@example.test SIP/2.0",
        "V: SIP/2.0/UDP 192.0.2.3;branch=z9hG4bK-upper",
        "I: upper@example.test",
        "F: <sip:alice@example.test>;tag=u",
        "T: <sip:bob@example.test>",
        "CSeq: 1 MESSAGE",
        "Max-Forwards: 70",
        "C: text/plain",
        "L: 2",
        "",
        "hi",
    ]);
    let m = parse_ok(&raw);
    assert_eq!(m.call_id(), Some(&b"upper@example.test"[..]));
    assert_eq!(m.body(), b"hi");
}

#[test]
fn odd_but_legal_whitespace() {
    let raw = sip(&[
        "REGISTER sip:example.test SIP/2.0",
        "Via  :\tSIP / 2.0 / UDP   192.0.2.20 : 5062 ;branch=z9hG4bK-ws ; rport",
        "To\t:   \"Alice   Liddell\"   <sip:alice@example.test>",
        "From:Alice   Liddell<sip:alice@example.test>;tag=ws1",
        "Call-ID   :   ws.1@192.0.2.20   ",
        "CSeq:\t\t2   \t REGISTER",
        "Max-Forwards:\t70",
        "Contact:  <sip:alice@192.0.2.20:5062>  ;  expires = 600",
        "Expires:   600  ",
        "Content-Length  : 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    let via = m.top_via().expect("via");
    assert_eq!((via.protocol, via.version, via.transport), (&b"SIP"[..], &b"2.0"[..], &b"UDP"[..]));
    assert_eq!(via.host, Host::V4("192.0.2.20".parse().unwrap()));
    assert_eq!(via.port, Some(5062));
    assert_eq!(via.rport(), Some(None));
    assert_eq!(m.to().and_then(|t| t.display_name()).as_deref(), Some(&b"Alice   Liddell"[..]));
    let from = m.from().expect("from");
    assert_eq!(from.display, Some(&b"Alice   Liddell"[..]));
    assert_eq!(from.tag(), Some(&b"ws1"[..]));
    assert_eq!(m.call_id(), Some(&b"ws.1@192.0.2.20"[..]));
    assert_eq!(m.cseq().map(|c| c.seq), Some(2));
    assert_eq!(m.expires(), Some(Ok(600)));
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else { panic!("contact") };
    assert_eq!(c.params.get("expires"), Some(Some(&b"600"[..])));
}

#[test]
fn unknown_headers_and_uri_schemes() {
    let raw = sip(&[
        "MESSAGE im:bob@example.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK-schemes",
        "To: <urn:service:sos>",
        "From: <tel:+1-555-0100;phone-context=example.test>;tag=tel1",
        "Call-ID: schemes@192.0.2.4",
        "CSeq: 5 MESSAGE",
        "Max-Forwards: 70",
        "Contact: <tel:+15550100>",
        "NewFangled-Header:   newfangled value ; with=params",
        "  and a continuation",
        "X-Zero-Length:",
        "P-Something-Else: <ftp://example.test/file>, <sip:x@y.test>",
        "Content-Length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    assert_eq!(m.request_uri(), Some(&b"im:bob@example.test"[..]));
    let to = m.to().expect("to");
    assert_eq!(to.uri.scheme(), b"urn");
    assert!(!to.uri.is_sip());
    let from = m.from().expect("from");
    assert_eq!(from.uri.scheme(), b"tel");
    assert_eq!(from.tag(), Some(&b"tel1"[..]));
    assert_eq!(m.header_named("newfangled-header"), Some(&b"newfangled value ; with=params and a continuation"[..]));
    assert_eq!(m.header_named("X-ZERO-LENGTH"), Some(&b""[..]));
    assert!(m.header_named("P-Something-Else").is_some());
}

#[test]
fn unknown_schemes_in_the_request_uri() {
    for uri in ["tel:+1-201-555-0123", "urn:service:sos", "im:alice@example.test", "pres:alice@example.test"] {
        let line = format!("OPTIONS {uri} SIP/2.0");
        let raw = invite_with("INVITE", Some(&line));
        let raw = String::from_utf8(raw).unwrap().replace("10 INVITE", "10 OPTIONS");
        let m = parse_ok(raw.as_bytes());
        assert_eq!(m.request_uri(), Some(uri.as_bytes()));
    }
}

#[test]
fn escapes_in_display_names_and_uris() {
    let raw = invite_plus(&[
        r#"P-Asserted-Identity: "\"quoted\" and \\ back" <sip:%61lice@example.test;x=%41>"#,
        r#"Reply-To: "100% sure \<not a uri\>" <sip:null-%00-null@example.test>"#,
    ]);
    let raw = String::from_utf8(raw)
        .unwrap()
        .replace("From: \"Alice\"", r#"From: "\"Alice\" \\ the \"first\"""#)
        .replace("INVITE sip:bob@", "INVITE sip:%62ob@");
    let m = parse_ok(raw.as_bytes());
    let from = m.from().expect("from");
    assert_eq!(from.display_name().as_deref(), Some(&br#""Alice" \ the "first""#[..]));
    assert_eq!(from.tag(), Some(&b"a-73"[..]));
    let ruri = sipfront_proto::Uri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(&*sipfront_proto::unescape(ruri.user().unwrap()), b"bob");

    let pai = m.name_addrs(HeaderName::PAssertedIdentity).next().unwrap().unwrap();
    assert_eq!(pai.display_name().as_deref(), Some(&br#""quoted" and \ back"#[..]));
    assert_eq!(&*sipfront_proto::unescape(pai.uri.user().unwrap()), b"alice");
    assert_eq!(pai.uri.params().get("x"), Some(Some(&b"%41"[..])));
    let reply_to = sipfront_proto::NameAddr::parse(m.header(HeaderName::ReplyTo).unwrap()).unwrap();
    assert_eq!(reply_to.display_name().as_deref(), Some(&b"100% sure <not a uri>"[..]));
    assert_eq!(&*sipfront_proto::unescape(reply_to.uri.user().unwrap()), b"null-\0-null");
}

#[test]
fn semicolons_and_escapes_in_the_user_part() {
    let raw = invite_with("INVITE", Some("INVITE sip:user;par=u%40example.net@example.test SIP/2.0"));
    let m = parse_ok(&raw);
    let ruri = sipfront_proto::Uri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(ruri.user(), Some(&b"user;par=u%40example.net"[..]));
    assert_eq!(ruri.host(), Host::Name(b"example.test"));
    assert!(ruri.params().raw().is_empty());
}

#[test]
fn header_names_are_case_insensitive() {
    let raw = sip(&[
        "BYE sip:bob@192.0.2.5 SIP/2.0",
        "vIA: SIP/2.0/UDP 192.0.2.6;branch=z9hG4bK-case",
        "TO: <sip:bob@example.test>;TAG=b1",
        "fROM: <sip:alice@example.test>;tag=a1",
        "CALL-ID: case@192.0.2.6",
        "cseq: 99 BYE",
        "max-FORWARDS: 70",
        "CONTENT-length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    assert_eq!(m.call_id(), Some(&b"case@192.0.2.6"[..]));
    assert_eq!(m.cseq().map(|c| c.seq), Some(99));
    assert_eq!(m.max_forwards(), Some(70));
    // Parameter names compare case-insensitively too.
    assert_eq!(m.to().and_then(|t| t.tag()), Some(&b"b1"[..]));
    assert_eq!(m.top_via().and_then(|v| v.branch()), Some(&b"z9hG4bK-case"[..]));
}

#[test]
fn many_vias_in_lines_and_lists() {
    let raw = sip(&[
        "SIP/2.0 180 Ringing",
        "Via: SIP/2.0/UDP proxy1.example.test;branch=z9hG4bK-p1;received=192.0.2.30",
        "Via: SIP/2.0/TCP proxy2.example.test:5070;branch=z9hG4bK-p2 , SIP/2.0/TLS [2001:db8::7]:5061;branch=z9hG4bK-p3",
        "v: SIP/2.0/SCTP proxy4.example.test;branch=z9hG4bK-p4,SIP/2.0/WS client.invalid;branch=z9hG4bK-p5",
        "To: <sip:bob@example.test>;tag=b9",
        "From: <sip:alice@example.test>;tag=a9",
        "Call-ID: vias@example.test",
        "CSeq: 1 INVITE",
        "Content-Length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    let branches: Vec<_> = m.vias().map(|v| v.branch().unwrap().to_vec()).collect();
    assert_eq!(branches, [b"z9hG4bK-p1", b"z9hG4bK-p2", b"z9hG4bK-p3", b"z9hG4bK-p4", b"z9hG4bK-p5"]);
    let top = m.top_via().unwrap();
    assert_eq!(top.received(), Some(&b"192.0.2.30"[..]));
    let third = m.vias().nth(2).unwrap();
    assert_eq!(third.host, Host::V6("2001:db8::7".parse().unwrap()));
    assert_eq!(third.port, Some(5061));
    // Responses need no Max-Forwards.
    assert_eq!(m.max_forwards(), None);
    assert_eq!(m.status(), Some(180));
    assert_eq!(m.reason(), Some(&b"Ringing"[..]));
}

#[test]
fn varied_transports_in_via() {
    let raw = invite_with(
        "Via",
        Some("Via: SIP/2.0/UDP t1.example.test;branch=z9hG4bK-1, SIP/2.0/SCTP t2.example.test;branch=z9hG4bK-2, SIP/2.0/TLS-SCTP t3.example.test;branch=z9hG4bK-3, SIP/2.0/UNKNOWN t4.example.test;branch=z9hG4bK-4"),
    );
    let m = parse_ok(&raw);
    let transports: Vec<_> = m.vias().map(|v| v.transport.to_vec()).collect();
    assert_eq!(transports, [&b"UDP"[..], b"SCTP", b"TLS-SCTP", b"UNKNOWN"]);
}

#[test]
fn outbound_contact_with_instance_and_reg_id() {
    let raw = sip(&[
        "REGISTER sip:example.test SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.40:50123;branch=z9hG4bK-ob;rport",
        "Max-Forwards: 70",
        "To: <sip:dave@example.test>",
        "From: <sip:dave@example.test>;tag=ob1",
        "Call-ID: outbound@192.0.2.40",
        "CSeq: 1 REGISTER",
        "Supported: path, outbound, gruu",
        r#"Contact: <sip:dave@192.0.2.40:50123;transport=tcp;ob>;+sip.instance="<urn:uuid:3b1d2c4e-0000-4000-8000-00000000abcd>";reg-id=2;expires=300, "Second \"Phone\"" <sip:dave@192.0.2.41>;q=0.5"#,
        "Content-Length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    let contacts: Vec<_> = m.contacts().map(|c| c.unwrap()).collect();
    assert_eq!(contacts.len(), 2);
    let Contact::Addr(first) = contacts[0] else { panic!("star") };
    assert_eq!(
        first.params.value("+sip.instance").as_deref(),
        Some(&b"<urn:uuid:3b1d2c4e-0000-4000-8000-00000000abcd>"[..])
    );
    assert_eq!(first.params.get("reg-id"), Some(Some(&b"2"[..])));
    assert_eq!(first.params.get("expires"), Some(Some(&b"300"[..])));
    assert!(first.uri.params().has("ob"));
    assert_eq!(first.uri.port(), Some(50123));
    let Contact::Addr(second) = contacts[1] else { panic!("star") };
    assert_eq!(second.display_name().as_deref(), Some(&br#"Second "Phone""#[..]));
    assert_eq!(second.params.get("q"), Some(Some(&b"0.5"[..])));
}

#[test]
fn contact_star_alone_is_fine() {
    let raw = sip(&[
        "REGISTER sip:example.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.40;branch=z9hG4bK-star",
        "Max-Forwards: 70",
        "To: <sip:dave@example.test>",
        "From: <sip:dave@example.test>;tag=s1",
        "Call-ID: star@192.0.2.40",
        "CSeq: 2 REGISTER",
        "Contact: *",
        "Expires: 0",
        "Content-Length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    assert_eq!(m.contacts().next(), Some(Ok(Contact::Star)));
    assert_eq!(m.expires(), Some(Ok(0)));
}

#[test]
fn multipart_body_is_kept_and_splits() {
    let body = concat!(
        "--sep-7Zq\r\n",
        "Content-Type: application/sdp\r\n",
        "\r\n",
        "v=0\r\n",
        "o=alice 1 1 IN IP4 192.0.2.10\r\n",
        "\r\n",
        "--sep-7Zq\r\n",
        "Content-Type: application/pidf+xml\r\n",
        "Content-ID: <p1@example.test>\r\n",
        "\r\n",
        "<presence/>\r\n",
        "--sep-7Zq--\r\n",
    );
    let cl = format!("Content-Length: {}", body.len());
    let mut lines: Vec<&str> = INVITE[..INVITE.len() - 3].to_vec();
    lines.extend_from_slice(&[
        "Content-Type: multipart/mixed; boundary=\"sep-7Zq\"",
        "MIME-Version: 1.0",
        &cl,
        "",
        body,
    ]);
    let m = parse_ok(&sip(&lines));
    assert_eq!(m.body(), body.as_bytes());
    let parts = multipart::parts(m.content_type().unwrap(), m.body()).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].header("content-type"), Some(&b"application/sdp"[..]));
    assert_eq!(parts[0].body, b"v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\n");
    assert_eq!(parts[1].header("Content-ID"), Some(&b"<p1@example.test>"[..]));
    assert_eq!(parts[1].body, b"<presence/>");
}

#[test]
fn content_length_smaller_than_the_body_cuts_it() {
    let raw = invite_with("Content-Length", Some("Content-Length: 4"));
    let mut raw = raw;
    raw.extend_from_slice(b"v=0\r\nthis is beyond Content-Length");
    let m = parse_ok(&raw);
    assert_eq!(m.body(), b"v=0\r");
}

#[test]
fn datagram_without_content_length_takes_the_rest() {
    let mut raw = invite_with("Content-Length", None);
    raw.extend_from_slice(b"v=0\r\ns=-\r\n");
    let m = parse_ok(&raw);
    assert_eq!(m.body(), b"v=0\r\ns=-\r\n");
    assert_eq!(m.header(HeaderName::ContentLength), None);
}

#[test]
fn responses_with_empty_reason_phrases() {
    for start in ["SIP/2.0 200 ", "SIP/2.0 200", "SIP/2.0 699 ", "sip/2.0 100 "] {
        let raw = sip(&[
            start,
            "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-reason",
            "To: <sip:bob@example.test>;tag=r",
            "From: <sip:alice@example.test>;tag=a",
            "Call-ID: reason@example.test",
            "CSeq: 4 OPTIONS",
            "Content-Length: 0",
            "",
            "",
        ]);
        let m = parse_ok(&raw);
        assert_eq!(m.reason(), Some(&b""[..]), "{start}");
    }
    let raw = String::from_utf8(sip(INVITE))
        .unwrap()
        .replace("INVITE sip:bob@example.test SIP/2.0", "SIP/2.0 486 Busy  Here, really \u{e9}");
    let m = parse_ok(raw.as_bytes());
    assert_eq!(m.status(), Some(486));
    assert_eq!(m.reason(), Some("Busy  Here, really \u{e9}".as_bytes()));
}

#[test]
fn leading_crlfs_are_skipped() {
    let mut raw = b"\r\n\r\n\r\n".to_vec();
    raw.extend_from_slice(&sip(INVITE));
    let m = parse_ok(&raw);
    assert_eq!(m.method(), Some(&Method::Invite));
}

#[test]
fn extension_and_odd_token_methods() {
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    let start = format!("{method} sip:bob@example.test SIP/2.0");
    let cseq = format!("CSeq: 1 {method}");
    let raw = String::from_utf8(invite_with("INVITE", Some(&start))).unwrap();
    let raw = raw.replace("CSeq: 10 INVITE", &cseq);
    let m = parse_ok(raw.as_bytes());
    assert_eq!(m.method().map(Method::as_str), Some(method));
    // Methods are case-sensitive: "invite" is an extension, and its CSeq must say "invite".
    let raw = String::from_utf8(invite_with("INVITE", Some("invite sip:bob@example.test SIP/2.0")))
        .unwrap()
        .replace("10 INVITE", "10 invite");
    let m = parse_ok(raw.as_bytes());
    assert_eq!(m.method(), Some(&Method::Extension("invite".into())));
}

#[test]
fn ipv6_everywhere() {
    let raw = sip(&[
        "OPTIONS sip:[2001:db8::10]:5070;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP [2001:db8::9];branch=z9hG4bK-v6;received=[2001:db8::9:1]",
        "Max-Forwards: 70",
        "To: <sip:[2001:db8::10]:5070>",
        "From: <sip:alice@[2001:db8::9]>;tag=v6",
        "Call-ID: v6@[2001:db8::9]",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    let ruri = sipfront_proto::Uri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(ruri.host(), Host::V6("2001:db8::10".parse().unwrap()));
    assert_eq!(ruri.port(), Some(5070));
    assert_eq!(m.top_via().unwrap().received(), Some(&b"[2001:db8::9:1]"[..]));
    assert_eq!(m.from().unwrap().uri.host(), Host::V6("2001:db8::9".parse().unwrap()));
}

#[test]
fn identical_duplicates_of_single_headers_are_one_value() {
    let raw = invite_plus(&["Call-ID: t0rture.1@192.0.2.10", "Max-Forwards: 70", "Content-Length: 0"]);
    let m = parse_ok(&raw);
    assert_eq!(m.header_all(HeaderName::CallId).count(), 2);
}

#[test]
fn overlarge_expires_saturates() {
    // RFC 4475 3.1.2.? (scalarlg): an out-of-range expiry may be processed leniently; we read
    // any delta-seconds past 2^32-1 as 2^32-1 (see parse_delta_seconds).
    let raw = invite_plus(&["Expires: 99999999999999999999"]);
    let m = parse_ok(&raw);
    assert_eq!(m.expires(), Some(Ok(u32::MAX)));
}

// ---------------------------------------------------------------------------------------------
// Invalid messages (RFC 4475 3.1.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn each_mandatory_header_missing() {
    use HeaderName as H;
    for (prefix, name) in [
        ("To:", H::To),
        ("From:", H::From),
        ("Call-ID:", H::CallId),
        ("CSeq:", H::CSeq),
        ("Via:", H::Via),
        ("Max-Forwards:", H::MaxForwards),
    ] {
        assert_refused(&invite_with(prefix, None), ErrorKind::MissingHeader(name), 400, true);
    }
}

#[test]
fn response_without_max_forwards_is_fine_but_not_without_via() {
    let response = String::from_utf8(invite_with("Max-Forwards", None))
        .unwrap()
        .replace("INVITE sip:bob@example.test SIP/2.0", "SIP/2.0 200 OK");
    let m = parse_ok(response.as_bytes());
    assert_eq!(m.status(), Some(200));
    let no_via = response.replace("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-torture-1\r\n", "");
    assert_refused(no_via.as_bytes(), ErrorKind::MissingHeader(HeaderName::Via), 400, true);
}

#[test]
fn cseq_method_must_match_the_request() {
    assert_refused(&invite_with("CSeq", Some("CSeq: 10 ACK")), ErrorKind::CSeqMethodMismatch, 400, true);
    assert_refused(&invite_with("CSeq", Some("CSeq: 10 invite")), ErrorKind::CSeqMethodMismatch, 400, true);
}

#[test]
fn bad_numbers() {
    use HeaderName as H;
    for cseq in [
        "CSeq: ten INVITE",
        "CSeq: -1 INVITE",
        "CSeq: 4294967296 INVITE",
        "CSeq: 2147483648 INVITE",
        "CSeq: 1.5 INVITE",
        "CSeq: INVITE",
        "CSeq: 10",
    ] {
        assert_refused(&invite_with("CSeq", Some(cseq)), ErrorKind::BadHeader(H::CSeq), 400, true);
    }
    for mf in
        ["Max-Forwards: seventy", "Max-Forwards: -1", "Max-Forwards: 4294967296", "Max-Forwards: +7", "Max-Forwards:"]
    {
        assert_refused(&invite_with("Max-Forwards", Some(mf)), ErrorKind::BadHeader(H::MaxForwards), 400, true);
    }
    for exp in ["Expires: soon", "Expires: -1", "Expires: 3600 s", "Expires:"] {
        assert_refused(&invite_plus(&[exp]), ErrorKind::BadHeader(H::Expires), 400, true);
    }
    for cl in ["Content-Length: zero", "Content-Length: -5", "Content-Length: 1e3", "Content-Length:"] {
        assert_refused(&invite_with("Content-Length", Some(cl)), ErrorKind::BadHeader(H::ContentLength), 400, false);
    }
}

#[test]
fn overflowing_content_length_is_too_large() {
    let raw = invite_with("Content-Length", Some("Content-Length: 999999999999999999999999999999"));
    assert_refused(&raw, ErrorKind::BodyTooLarge { declared: u64::MAX, limit: 65_535 }, 413, false);
}

#[test]
fn four_gigabyte_content_length_is_refused_without_buffering() {
    let raw = invite_with("Content-Length", Some("Content-Length: 4294967296"));
    let e = parse_err(&raw);
    assert_eq!(e.kind, ErrorKind::BodyTooLarge { declared: 4_294_967_296, limit: 65_535 });
    assert_eq!(e.status(), 413);
    assert_eq!(e.kind.label(), "body_too_large");
    // Had the parser tried to allocate the body, this test would have aborted above.
}

#[test]
fn unsupported_and_garbage_versions() {
    assert_refused(
        &invite_with("INVITE", Some("INVITE sip:bob@example.test SIP/7.0")),
        ErrorKind::UnsupportedVersion,
        505,
        false,
    );
    let response =
        String::from_utf8(sip(INVITE)).unwrap().replace("INVITE sip:bob@example.test SIP/2.0", "SIP/3.1 200 OK");
    assert_refused(response.as_bytes(), ErrorKind::UnsupportedVersion, 505, false);
    for line in [
        "INVITE sip:bob@example.test SIP/2.0a",
        "INVITE sip:bob@example.test SIP/",
        "INVITE sip:bob@example.test SIP/2",
        "INVITE sip:bob@example.test SIP/2.0.0",
        "INVITE sip:bob@example.test HTTP/1.1",
        "INVITE sip:bob@example.test SIP/a.b",
        "INVITE sip:bob@example.test",
        "INVITE  sip:bob@example.test SIP/2.0",
        "INVITE sip:bob@example.test  SIP/2.0",
        "INVITE sip:bob@example.test SIP/2.0 ",
        " INVITE sip:bob@example.test SIP/2.0",
        "SIP/2.0 2000 OK",
        "SIP/2.0 20 OK",
        "SIP/2.0 099 Low",
        "SIP/2.0 700 High",
        "SIP/2.0",
        "SIP/2.0 abc Nope",
    ] {
        assert_refused(&invite_with("INVITE", Some(line)), ErrorKind::BadStartLine, 400, false);
    }
}

#[test]
fn body_shorter_than_content_length() {
    let mut raw = invite_with("Content-Length", Some("Content-Length: 50"));
    raw.extend_from_slice(b"v=0\r\n");
    assert_refused(&raw, ErrorKind::BodyTruncated { declared: 50, actual: 5 }, 400, false);
}

#[test]
fn conflicting_duplicates() {
    use HeaderName as H;
    for (extra, name) in [
        ("Call-ID: another@192.0.2.10", H::CallId),
        ("CSeq: 11 INVITE", H::CSeq),
        ("To: <sip:carol@example.test>", H::To),
        ("f: <sip:mallory@example.test>;tag=m", H::From),
        ("Max-Forwards: 69", H::MaxForwards),
        ("l: 0000", H::ContentLength),
    ] {
        assert_refused(&invite_plus(&[extra]), ErrorKind::DuplicateHeader(name), 400, true);
    }
}

#[test]
fn bad_request_uris() {
    // Embedded spaces break the request line itself.
    for line in ["INVITE sip:bob smith@example.test SIP/2.0", "INVITE sip:bob@example.test;x=a b SIP/2.0"] {
        assert_refused(&invite_with("INVITE", Some(line)), ErrorKind::BadStartLine, 400, false);
    }
    for uri in [
        "sip:@example.test",
        "sip:bob@",
        "sip:bob@[2001:db8::1",
        "sip:bob@example.test:99999",
        "sip:bob@exa_mple.test",
        "sip:%zzbob@example.test",
        "sip:bob@example.test;x=<y>",
        "bob@example.test",
        "<sip:bob@example.test>",
        "1sip:bob@example.test",
        "tel:",
    ] {
        let line = format!("INVITE {uri} SIP/2.0");
        assert_refused(&invite_with("INVITE", Some(&line)), ErrorKind::BadRequestUri, 400, true);
    }
}

#[test]
fn malformed_name_addrs() {
    use HeaderName as H;
    for (line, name) in [
        (r#"From: "Alice <sip:alice@example.test>;tag=a"#, H::From),
        (r#"From: "Alice\" <sip:alice@example.test>;tag=a"#, H::From),
        ("From: Alice, Liddell <sip:alice@example.test>;tag=a", H::From),
        ("From: <sip:alice@example.test;tag=a", H::From),
        ("From: <sip:alice@example.test> stray;tag=a", H::From),
    ] {
        assert_refused(&invite_with("From", Some(line)), ErrorKind::BadHeader(name), 400, true);
    }
    assert_refused(
        &invite_with("To", Some(r#"To: "Bob <sip:bob@example.test>"#)),
        ErrorKind::BadHeader(H::To),
        400,
        true,
    );
    assert_refused(
        &invite_with("Contact", Some("Contact: <sip:alice@192.0.2.10")),
        ErrorKind::BadHeader(H::Contact),
        400,
        true,
    );
    assert_refused(
        &invite_with("Via", Some("Via: SIP/2.0 192.0.2.10;branch=z9hG4bK1")),
        ErrorKind::BadHeader(H::Via),
        400,
        true,
    );
    assert_refused(
        &invite_with("Via", Some("Via: SIP/2.0/UDP 192.0.2.10:port;branch=z9hG4bK1")),
        ErrorKind::BadHeader(H::Via),
        400,
        true,
    );
    assert_refused(
        &invite_with("Call-ID", Some("Call-ID: two words@example.test")),
        ErrorKind::BadHeader(H::CallId),
        400,
        true,
    );
    assert_refused(&invite_with("Call-ID", Some("Call-ID:")), ErrorKind::BadHeader(H::CallId), 400, true);
}

#[test]
fn contact_star_mixed_with_addresses() {
    for contacts in [&["Contact: *, <sip:alice@192.0.2.10>"][..], &["Contact: *", "m: <sip:alice@192.0.2.11>"]] {
        let mut lines: Vec<&str> = INVITE.iter().copied().filter(|l| !l.starts_with("Contact")).collect();
        let at = lines.len() - 3;
        for (i, c) in contacts.iter().enumerate() {
            lines.insert(at + i, c);
        }
        let raw = String::from_utf8(sip(&lines))
            .unwrap()
            .replace("INVITE sip:bob@", "REGISTER sip:")
            .replace("10 INVITE", "10 REGISTER");
        assert_refused(raw.as_bytes(), ErrorKind::BadHeader(HeaderName::Contact), 400, true);
    }
}

#[test]
fn structural_errors() {
    assert_refused(b"", ErrorKind::Empty, 400, false);
    assert_refused(b"\r\n\r\n  \t\r\n", ErrorKind::Empty, 400, false);
    // No empty line after the headers.
    assert_refused(&sip(&INVITE[..INVITE.len() - 2]), ErrorKind::NoEndOfHeaders, 400, false);
    assert_refused(b"INVITE sip:bob@example.test SIP/2.0", ErrorKind::NoEndOfHeaders, 400, false);
    assert_refused(&invite_plus(&["This line has no colon"]), ErrorKind::BadHeaderLine, 400, false);
    assert_refused(&invite_plus(&["Bad Name: value"]), ErrorKind::BadHeaderLine, 400, false);
    assert_refused(&invite_plus(&[": no name"]), ErrorKind::BadHeaderLine, 400, false);
    assert_refused(&invite_plus(&["X-Na(me): value"]), ErrorKind::BadHeaderLine, 400, false);
    // A continuation line before any header field.
    let raw = String::from_utf8(sip(INVITE)).unwrap().replace("SIP/2.0\r\nVia", "SIP/2.0\r\n  folded: nothing\r\nVia");
    assert_refused(raw.as_bytes(), ErrorKind::BadHeaderLine, 400, false);
}

fn small_limits() -> Limits {
    Limits { max_message_size: 2_000, max_headers: 12, max_header_len: 120, max_vias: 3 }
}

#[test]
fn limits_map_to_their_status() {
    let limits = small_limits();
    let parse = |raw: Vec<u8>| Message::parse(Bytes::from(raw), &limits);

    assert!(parse(sip(INVITE)).is_ok());

    // The INVITE has 8 header fields: 4 more reach the limit, 5 pass it.
    let many: Vec<String> = (0..5).map(|i| format!("X-Filler-{i}: {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(parse(invite_plus(&many[..4])).is_ok());
    let e = parse(invite_plus(&many)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooManyHeaders { limit: 12 });
    assert_eq!((e.status(), e.kind.label(), e.message().is_some()), (400, "too_many_headers", false));

    let long = format!("Subject: {}", "x".repeat(112));
    let e = parse(invite_plus(&[&long])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::HeaderTooLong { name: HeaderName::Subject, limit: 120 });
    assert_eq!((e.status(), e.kind.label()), (400, "header_too_long"));
    // Exactly at the limit is fine.
    let at_limit = format!("Subject: {}", "x".repeat(111));
    assert!(parse(invite_plus(&[&at_limit])).is_ok());

    // The limit covers folded continuation lines too.
    let chunk = "y".repeat(50);
    let folded = [format!("Subject: {chunk}"), format!(" {chunk}"), format!(" {chunk}")];
    let folded: Vec<&str> = folded.iter().map(String::as_str).collect();
    let e = parse(invite_plus(&folded)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::HeaderTooLong { name: HeaderName::Subject, limit: 120 });

    let e = parse(invite_plus(&[
        "Via: SIP/2.0/UDP a.test;branch=z9hG4bK-2, SIP/2.0/UDP b.test;branch=z9hG4bK-3, SIP/2.0/UDP c.test",
    ]))
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooManyVias { limit: 3 });
    assert_eq!((e.status(), e.kind.label()), (483, "too_many_vias"));
    assert!(e.message().is_some(), "483 must be answerable");

    let mut big = sip(INVITE);
    big.resize(2_001, b'x');
    let e = parse(big).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MessageTooLarge { size: 2_001, limit: 2_000 });
    assert_eq!((e.status(), e.kind.label()), (513, "message_too_large"));

    let raw = invite_with("Content-Length", Some("Content-Length: 1800"));
    let e = parse(raw).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BodyTooLarge { declared: 1800, limit: 2_000 }), "{:?}", e.kind);
    assert_eq!(e.status(), 413);
}

#[test]
fn error_display_serves_as_reason_phrase() {
    let e = parse_err(&invite_with("Call-ID", None));
    assert_eq!(e.kind.to_string(), "Missing Call-ID");
    assert_eq!(e.to_string(), "Missing Call-ID (400)");
    let e = parse_err(&invite_plus(&["X-Bad-Line"]));
    assert_eq!(e.kind.label(), "bad_header_line");
}

// ---------------------------------------------------------------------------------------------
// Control characters (RFC 3261 25.1): never raw in the start line or a header value, but HTAB
// and the CRLF of a fold; escaped as a quoted-pair inside a quoted string (RFC 4475 3.1.1.4).
// ---------------------------------------------------------------------------------------------

/// RFC 4475 3.1.1.4 (intmeth): an extension method of every token character, a Call-ID of odd
/// characters, and a To display name holding BEL, NUL and DEL as quoted-pairs. As in the RFC
/// but for one byte: the two URIs lose the `?` of their user part, which `Uri::parse` takes
/// for the start of the URI headers (user-unreserved admits it; a matter apart from control
/// characters).
#[test]
fn intmeth_quoted_pairs_of_control_characters() {
    let raw = sip(&[
        "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0",
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
        "To: \"BEL:\\\x07 NUL:\\\0 DEL:\\\x7F\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy,/;;*@example.com>",
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.",
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~",
        "Max-Forwards: 255",
        "extensionHeader-!.%*+_`'~: \u{feff}\u{5927}\u{505c}\u{96fb}",
        "Content-Length: 0",
        "",
        "",
    ]);
    let m = parse_ok(&raw);
    assert_eq!(m.to().and_then(|t| t.display_name()).as_deref(), Some(&b"BEL:\x07 NUL:\0 DEL:\x7F"[..]));
    assert_eq!(m.call_id(), Some(&b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"[..]));
    // Forwarded as it came, quoted-pairs and all, and read back the same.
    assert_eq!(m.to_vec(), raw);
    parse_ok(&m.to_vec());
}

#[test]
fn quoted_pairs_of_control_characters_are_unescaped() {
    // Any of %x00-09 / %x0B-0C / %x0E-7F may follow the backslash (RFC 3261 25.1 quoted-pair).
    for c in (0u8..=0x7f).filter(|&c| c != b'\r' && c != b'\n').map(char::from) {
        let line = format!("From: \"caller\\{c}name\" <sip:alice@example.test>;tag=a-73");
        let m = parse_ok(&invite_with("From", Some(&line)));
        let want = format!("caller{c}name");
        assert_eq!(m.from().and_then(|f| f.display_name()).as_deref(), Some(want.as_bytes()), "{c:?}");
    }
    // In any header whose grammar has quoted strings, across a fold too.
    let raw = invite_plus(&[
        "P-Asserted-Identity: \"nul\\\0\" <sip:a@example.test>,",
        "  \"bel\\\x07\" <sip:b@example.test>",
        "Content-Type: text/plain;x=\"\\\x01\"",
        "Authorization: Digest username=\"al\\\x7fice\", realm=\"example.test\"",
    ]);
    let m = parse_ok(&raw);
    let names: Vec<_> =
        m.name_addrs(HeaderName::PAssertedIdentity).map(|a| a.unwrap().display_name().unwrap().into_owned()).collect();
    assert_eq!(names, [b"nul\0".to_vec(), b"bel\x07".to_vec()]);
    let d = m.digests(HeaderName::Authorization).next().unwrap().unwrap();
    assert_eq!(d.get("username").as_deref(), Some(&b"al\x7fice"[..]));
}

/// Every control character RFC 3261 25.1 never allows raw: %x00-08, %x0B-1F (a CR that ends no
/// line among them) and DEL. Not LF, which always ends a line here (a bare LF is read as CRLF).
/// Each is ASCII, so it fits in a `str`.
fn controls() -> impl Iterator<Item = char> {
    (0u8..0x20).filter(|&c| c != b'\t' && c != b'\n').chain([0x7f]).map(char::from)
}

fn assert_control_refused(raw: &[u8]) {
    assert_refused(raw, ErrorKind::ControlCharacter, 400, false);
    let e = parse_err(raw);
    assert_eq!((e.kind.label(), e.kind.to_string()), ("control_character", "Control Character".to_string()));
    assert!(Message::parse_head(Bytes::copy_from_slice(raw), &Limits::default()).is_err());
}

#[test]
fn raw_control_characters_in_header_values_are_refused() {
    for c in controls() {
        for line in [
            format!("Subject: a{c}b"),
            format!("Subject: {c}"),
            format!("Subject: ab{c}"),
            format!("Subject: ab{c} "),
            format!("X-Extension: v{c}lue"),
            format!("Subject: folded\r\n  over {c} two lines"),
            // Inside quotes, raw: qdtext has no control character.
            format!("Reply-To: \"raw {c} display\" <sip:a@example.test>"),
            format!("Contact: <sip:alice@192.0.2.10>;x=\"{c}\""),
            format!("Warning: 399 example.test \"{c}\""),
            // Where the grammar has no quoted strings a backslash escapes nothing.
            format!("Subject: \"\\{c}\""),
            format!("X-Extension: \"\\{c}\""),
            format!("User-Agent: phone/1.0 (\\{c})"),
        ] {
            assert_control_refused(&invite_plus(&[&line]));
        }
        for (prefix, line) in [
            ("Via", format!("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-{c}1")),
            ("From", format!("From: \"Al{c}ice\" <sip:alice@example.test>;tag=a-73")),
            ("To", format!("To: Bob <sip:bob@example.test>{c}")),
            ("Call-ID", format!("Call-ID: t0rture.1{c}@192.0.2.10")),
            ("CSeq", format!("CSeq: 10{c} INVITE")),
        ] {
            assert_control_refused(&invite_with(prefix, Some(&line)));
        }
    }
}

#[test]
fn raw_control_characters_in_the_start_line_are_refused() {
    for c in controls() {
        for line in [
            format!("INVITE sip:bob{c}@example.test SIP/2.0"),
            format!("INVITE sip:bob@example.test SIP/2.0{c}"),
            format!("INV{c}ITE sip:bob@example.test SIP/2.0"),
            format!("SIP/2.0 200 O{c}K"),
            format!("SIP/2.0 200 OK{c}"),
        ] {
            assert_control_refused(&invite_with("INVITE", Some(&line)));
        }
    }
}

#[test]
fn htab_is_whitespace_in_header_values_and_reason_phrases() {
    let raw = invite_plus(&["Subject: a\tb\t", "Reply-To: \"tab\there\" <sip:a@example.test>"]);
    let m = parse_ok(&raw);
    assert_eq!(m.header(HeaderName::Subject), Some(&b"a\tb"[..]));
    let reply_to = sipfront_proto::NameAddr::parse(m.header(HeaderName::ReplyTo).unwrap()).unwrap();
    assert_eq!(reply_to.display_name().as_deref(), Some(&b"tab\there"[..]));
    let raw = String::from_utf8(sip(INVITE))
        .unwrap()
        .replace("INVITE sip:bob@example.test SIP/2.0", "SIP/2.0 486 Busy\there");
    assert_eq!(parse_ok(raw.as_bytes()).reason(), Some(&b"Busy\there"[..]));
}

#[test]
fn a_backslash_escapes_no_line_break() {
    // quoted-pair excludes CR and LF: not before a fold, a bare LF, or a stray CR.
    for from in [
        "From: \"Alice\\\r\n Liddell\" <sip:alice@example.test>;tag=a-73",
        "From: \"Alice\\\n Liddell\" <sip:alice@example.test>;tag=a-73",
        "From: \"Alice\\\rLiddell\" <sip:alice@example.test>;tag=a-73",
        "From: \"Alice\\",
    ] {
        assert_control_refused(&invite_with("From", Some(from)));
    }
    // Outside a quoted string, or where the grammar has none, a backslash is a character.
    let raw = invite_plus(&[
        "Subject: C:\\",
        "Subject: say \"hi\\",
        "  there",
        "X-Path: \"C:\\",
        "Call-Info: <http://example.test/a\\b>;purpose=icon",
        "Reply-To: \"Alice \\\\\" <sip:a@example.test>",
    ]);
    let m = parse_ok(&raw);
    let subjects: Vec<_> = m.header_all(HeaderName::Subject).collect();
    assert_eq!(subjects, [&b"C:\\"[..], b"say \"hi\\ there"]);
    assert_eq!(m.header_named("x-path"), Some(&b"\"C:\\"[..]));
}

#[test]
fn a_cr_is_only_half_of_a_line_end() {
    for line in ["Subject: a\rb", "Subject: a\r", "Subject: a \r\n  b\r"] {
        assert_control_refused(&invite_plus(&[line]));
    }
    // CRLF and bare LF line ends, folded or not, are still line ends.
    let raw = String::from_utf8(invite_plus(&["Subject: one", "\ttwo"])).unwrap().replace("\r\n", "\n");
    assert_eq!(parse_ok(raw.as_bytes()).header(HeaderName::Subject), Some(&b"one two"[..]));
}

#[test]
fn bodies_may_hold_any_byte() {
    let body: Vec<u8> = (0u8..=255).chain([0, 0, b'\r', 0x7f, b'\n']).collect();
    let mut raw = invite_with("Content-Length", Some(&format!("Content-Length: {}", body.len())));
    raw.extend_from_slice(&body);
    assert_eq!(parse_ok(&raw).body(), &body[..]);
    // Over UDP without Content-Length as well.
    let mut raw = invite_with("Content-Length", None);
    raw.extend_from_slice(&body);
    assert_eq!(parse_ok(&raw).body(), &body[..]);
}

// ---------------------------------------------------------------------------------------------
// Long values: every one of these must finish in time linear in its size. No threshold is
// asserted; a quadratic scan would show as a test that takes minutes.
// ---------------------------------------------------------------------------------------------

fn roomy_limits() -> Limits {
    Limits { max_message_size: 1 << 20, max_headers: 256, max_header_len: 1 << 20, max_vias: 20_000 }
}

#[test]
fn sixty_kilobytes_of_commas_and_quotes() {
    let limits = roomy_limits();
    let commas = ",".repeat(60_000);
    let contact = format!("Contact: <sip:alice@192.0.2.10>{commas}");
    let m = Message::parse(Bytes::from(invite_with("Contact", Some(&contact))), &limits).unwrap();
    assert_eq!(m.contacts().count(), 1);

    // An unterminated quote holding 60 KB of commas and escaped quotes.
    let quotes = ",\\\"".repeat(20_000);
    let contact = format!("Contact: <sip:alice@192.0.2.10>, \"{quotes}");
    let e = Message::parse(Bytes::from(invite_with("Contact", Some(&contact))), &limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadHeader(HeaderName::Contact));

    // Balanced but plentiful: 20,000 tiny quoted strings in an extension header and in a Route.
    let quoted = "\"a\",".repeat(15_000);
    let route = format!("Route: {quoted}");
    let ext = format!("X-Quotes: {quoted}");
    let m = Message::parse(Bytes::from(invite_plus(&[&ext, &route])), &limits).unwrap();
    assert_eq!(m.name_addrs(HeaderName::Route).count(), 15_000);
    assert!(m.name_addrs(HeaderName::Route).all(|r| r.is_err()));

    // Backslashes inside one long display name.
    let display = format!("From: \"{}\" <sip:alice@example.test>;tag=x", "\\\"".repeat(30_000));
    let m = Message::parse(Bytes::from(invite_with("From", Some(&display))), &limits).unwrap();
    assert_eq!(m.from().unwrap().display_name().unwrap().len(), 30_000);

    // A long run of parameters.
    let params = ";p=1".repeat(15_000);
    let via = format!("Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-long{params}");
    let m = Message::parse(Bytes::from(invite_with("Via", Some(&via))), &limits).unwrap();
    assert_eq!(m.top_via().unwrap().branch(), Some(&b"z9hG4bK-long"[..]));
    assert_eq!(m.top_via().unwrap().params.get("missing"), None);
}

#[test]
fn ten_thousand_vias_within_limits() {
    let limits = roomy_limits();
    let entries: Vec<String> =
        (0..10_000).map(|i| format!("SIP/2.0/UDP h{i}.example.test;branch=z9hG4bK-{i}")).collect();
    let one_line = format!("Via: {}", entries.join(","));
    let m = Message::parse(Bytes::from(invite_with("Via", Some(&one_line))), &limits).unwrap();
    assert_eq!(m.vias().count(), 10_000);
    assert_eq!(m.vias().last().unwrap().branch(), Some(&b"z9hG4bK-9999"[..]));

    // The same, folded over 10,000 continuation lines.
    let folded = format!("Via: {}", entries.join(",\r\n "));
    let m = Message::parse(Bytes::from(invite_with("Via", Some(&folded))), &limits).unwrap();
    assert_eq!(m.vias().count(), 10_000);

    // One over the limit is a 483.
    let limits = Limits { max_vias: 9_999, ..roomy_limits() };
    let e = Message::parse(Bytes::from(invite_with("Via", Some(&one_line))), &limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooManyVias { limit: 9_999 });
}

#[test]
fn many_tiny_header_lines_and_folds() {
    let limits = Limits { max_headers: 100_000, ..roomy_limits() };
    let lines: Vec<String> = (0..20_000).map(|i| format!("X-H{i}: {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let m = Message::parse(Bytes::from(invite_plus(&lines)), &limits).unwrap();
    assert_eq!(m.header_named("X-H19999"), Some(&b"19999"[..]));

    let folds = vec![" z"; 30_000];
    let mut extra = vec!["Subject: a"];
    extra.extend_from_slice(&folds);
    let m = Message::parse(Bytes::from(invite_plus(&extra)), &limits).unwrap();
    assert_eq!(m.header(HeaderName::Subject).unwrap().len(), 1 + 2 * 30_000);
}
