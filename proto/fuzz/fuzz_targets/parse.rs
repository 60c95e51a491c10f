//! Arbitrary bytes into `Message::parse`, with the default limits and with tiny ones. Whatever
//! parses must serialize to bytes that parse again to the same message: what a proxy forwards
//! is read by the next hop exactly as we read it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipfront_proto::{multipart, unescape, Contact, HeaderName, Limits, Message, NameAddr, Uri};

/// Small enough that fuzz inputs cross every bound.
const TINY: Limits = Limits { max_message_size: 300, max_headers: 6, max_header_len: 48, max_vias: 2 };

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let default = Limits::default();
    if let Ok(msg) = Message::parse(bytes.clone(), &default) {
        round_trip(&msg, &default);
        read_views(&msg);
    }
    if let Ok(msg) = Message::parse(bytes, &TINY) {
        // Serializing writes `Name: value` with a space and CRLFs, so the wire form may be longer
        // than the input and overstep a tiny bound; the next hop reads it with its own limits.
        round_trip(&msg, &default);
    }
});

fn round_trip(msg: &Message, limits: &Limits) {
    let wire = msg.to_bytes();
    let again = match Message::parse(wire.clone(), limits) {
        Ok(m) => m,
        Err(e) => panic!("serialized form does not parse: {e}\n{:?}", String::from_utf8_lossy(&wire)),
    };
    assert_same(msg, &again, &wire);
    // And serializing is a fixed point from there on.
    assert_eq!(again.to_bytes(), wire, "second serialization differs");
}

/// Equal as `Message`'s `PartialEq` says, except that a Content-Length is rewritten from the body
/// (`007` becomes `7`), so its value is compared with the body length instead.
fn assert_same(a: &Message, b: &Message, wire: &[u8]) {
    let show = || String::from_utf8_lossy(wire).into_owned();
    assert_eq!(a.method(), b.method(), "{}", show());
    assert_eq!(a.request_uri(), b.request_uri(), "{}", show());
    assert_eq!(a.status(), b.status(), "{}", show());
    assert_eq!(a.reason(), b.reason(), "{}", show());
    assert_eq!(a.body(), b.body(), "{}", show());
    assert_eq!(a.headers().count(), b.headers().count(), "{}", show());
    for (ha, hb) in a.headers().zip(b.headers()) {
        assert_eq!(ha.name, hb.name, "{}", show());
        assert_eq!(ha.raw_name, hb.raw_name, "{}", show());
        if ha.name == HeaderName::ContentLength {
            assert_eq!(hb.value, b.body().len().to_string().as_bytes(), "{}", show());
        } else {
            assert_eq!(ha.value, hb.value, "{}", show());
        }
    }
    if !a.headers().any(|h| h.name == HeaderName::ContentLength) {
        assert_eq!(a, b, "{}", show());
    }
}

/// Every typed view the server may ask for: none may panic, whatever the values hold.
fn read_views(msg: &Message) {
    fn name_addr(a: &NameAddr<'_>) {
        let _ = (a.tag(), a.display_name(), a.params.iter().count());
        uri(&a.uri);
    }
    fn uri(u: &Uri<'_>) {
        let _ = (u.user().map(unescape), u.password(), u.host(), u.port(), u.headers());
        let _ = u.params().iter().count();
    }
    for v in msg.vias() {
        let _ = (v.branch(), v.received(), v.rport(), v.params.value("maddr"));
    }
    for a in [msg.from(), msg.to()].into_iter().flatten() {
        name_addr(&a);
    }
    for c in msg.contacts().flatten() {
        if let Contact::Addr(a) = c {
            name_addr(&a);
            let _ = (a.params.value("+sip.instance"), a.params.get("reg-id"), a.params.get("expires"));
        }
    }
    for n in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
        for a in msg.name_addrs(n).flatten() {
            name_addr(&a);
        }
    }
    for n in [HeaderName::Authorization, HeaderName::ProxyAuthorization, HeaderName::WwwAuthenticate] {
        for d in msg.digests(n).flatten() {
            let _ = (d.is_digest(), d.get("nonce"), d.iter().count());
        }
    }
    if let Some(e) = msg.event() {
        let _ = (e.id(), e.is("presence"));
    }
    let _ = (msg.cseq(), msg.call_id(), msg.expires(), msg.max_forwards(), msg.list_has(HeaderName::Supported, "path"));
    if let Some(u) = msg.request_uri() {
        if let Ok(u) = Uri::parse(u) {
            uri(&u);
        }
    }
    if let Some(ct) = msg.content_type() {
        if multipart::is_multipart(ct) {
            let _ = multipart::parts(ct, msg.body());
        }
    }
    // The changes a proxy and a registrar make, then serialize.
    let mut r = msg.response_to(200);
    r.set_to_tag("x1");
    let _ = r.to_vec();
    let mut m = msg.clone();
    m.pop_first_element(HeaderName::Via);
    m.pop_first_element(HeaderName::Route);
    let _ = m.to_vec();
}
