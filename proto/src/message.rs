//! The message model: one buffer and the spans of its start line and headers, with typed
//! accessors for what the server reads and builders for what it writes. Nothing is copied
//! until a header is changed.

use crate::headers::auth::DigestParams;
use crate::headers::cseq::CSeq;
use crate::headers::event::Event;
use crate::headers::name_addr::{Contact, NameAddr};
use crate::headers::via::Via;
use crate::method::Method;
use crate::name::HeaderName;
use crate::reason::reason_phrase;
use crate::scan::{split_commas, trim};
use crate::text::Text;
use bytes::Bytes;
use std::fmt;

/// A SIP request or response.
///
/// Parsed messages keep the bytes they came in (`buf`) and refer to them by spans: nothing is
/// copied until a header is changed. A message built here (a response, a forwarded request)
/// may share its buffer with the message it was built from.
#[derive(Clone)]
pub struct Message {
    pub(crate) buf: Bytes,
    pub(crate) start: StartLine,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Text,
}

/// The first line of a message.
#[derive(Clone, Debug)]
pub enum StartLine {
    Request { method: Method, uri: Text },
    Response { code: u16, reason: Text },
}

#[derive(Clone, Debug)]
pub(crate) struct Header {
    pub(crate) name: HeaderName,
    /// The name as written; for headers built here, the canonical or given spelling.
    pub(crate) raw_name: Text,
    pub(crate) value: Text,
}

/// A header field as seen through [`Message::headers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    pub name: HeaderName,
    /// The name as written (`v`, `VIA`, `X-Custom`...).
    pub raw_name: &'a [u8],
    /// The value, trimmed, folded lines joined by a single space.
    pub value: &'a [u8],
}

/// The headers a response copies from its request (RFC 3261 8.2.6.2).
const COPIED_TO_RESPONSE: [HeaderName; 5] =
    [HeaderName::Via, HeaderName::From, HeaderName::To, HeaderName::CallId, HeaderName::CSeq];

impl Message {
    /// A new request with no headers.
    pub fn request(method: Method, uri: impl Into<Text>) -> Message {
        Message::new(StartLine::Request { method, uri: uri.into() })
    }

    /// A new response with the standard reason phrase and no headers.
    pub fn response(code: u16) -> Message {
        Message::new(StartLine::Response { code, reason: reason_phrase(code).into() })
    }

    fn new(start: StartLine) -> Message {
        Message { buf: Bytes::new(), start, headers: Vec::with_capacity(12), body: Text::from("") }
    }

    /// The response to this request (RFC 3261 8.2.6.2): Via, From, To, Call-ID and CSeq copied
    /// (sharing this request's buffer, not copying it), no body. The caller adds a To tag with
    /// [`Message::set_to_tag`] where the response needs one.
    pub fn response_to(&self, code: u16) -> Message {
        let mut r = Message::response(code);
        r.buf = self.buf.clone();
        r.headers.extend(self.headers.iter().filter(|h| COPIED_TO_RESPONSE.contains(&h.name)).cloned());
        r
    }

    /// Replaces the reason phrase of a response.
    pub fn set_reason(&mut self, reason: impl Into<Text>) {
        if let StartLine::Response { reason: r, .. } = &mut self.start {
            *r = reason.into();
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written.
    pub fn request_uri(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri.resolve(&self.buf)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn set_request_uri(&mut self, new: impl Into<Text>) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new.into();
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason.resolve(&self.buf)),
            StartLine::Request { .. } => None,
        }
    }

    pub fn body(&self) -> &[u8] {
        self.body.resolve(&self.buf)
    }

    /// Replaces the body; Content-Length is written from it when the message is serialized.
    pub fn set_body(&mut self, body: impl Into<Text>) {
        self.body = body.into();
    }

    /// Every header field in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> {
        self.headers.iter().map(|h| self.header_ref(h))
    }

    fn header_ref<'a>(&'a self, h: &'a Header) -> HeaderRef<'a> {
        HeaderRef { name: h.name, raw_name: h.raw_name.resolve(&self.buf), value: h.value.resolve(&self.buf) }
    }

    /// The value of the first header field named `name`.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.name == name).map(|h| h.value.resolve(&self.buf))
    }

    /// The values of every header field named `name`, one per field line.
    pub fn header_all(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> {
        self.headers.iter().filter(move |h| h.name == name).map(|h| h.value.resolve(&self.buf))
    }

    /// The value of the first header field with the given (unknown to [`HeaderName`]) name.
    pub fn header_named(&self, raw_name: &str) -> Option<&[u8]> {
        let known = HeaderName::from_bytes(raw_name.as_bytes());
        if known != HeaderName::Other {
            return self.header(known);
        }
        self.headers
            .iter()
            .find(|h| {
                h.name == HeaderName::Other && h.raw_name.resolve(&self.buf).eq_ignore_ascii_case(raw_name.as_bytes())
            })
            .map(|h| h.value.resolve(&self.buf))
    }

    /// The elements of a list header across all its field lines (RFC 3261 7.3.1: `Via: a, b`
    /// is `Via: a` then `Via: b`).
    pub fn list(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> {
        self.header_all(name).flat_map(split_commas)
    }

    /// Whether a list header (Supported, Require, Allow...) holds `token`, case-insensitively.
    pub fn list_has(&self, name: HeaderName, token: &str) -> bool {
        self.list(name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    // ---- typed views ----

    pub fn vias(&self) -> impl Iterator<Item = Via<'_>> {
        self.list(HeaderName::Via).filter_map(|v| Via::parse(v).ok())
    }

    pub fn top_via(&self) -> Option<Via<'_>> {
        self.list(HeaderName::Via).next().and_then(|v| Via::parse(v).ok())
    }

    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.header(HeaderName::From).and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.header(HeaderName::To).and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.header(HeaderName::CallId)
    }

    pub fn cseq(&self) -> Option<CSeq> {
        self.header(HeaderName::CSeq).and_then(|v| CSeq::parse(v).ok())
    }

    /// Contact elements; one that does not parse yields an `Err`, so that a registrar can
    /// answer 400 rather than silently skip it.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, crate::headers::InvalidHeader>> {
        self.list(HeaderName::Contact).map(Contact::parse)
    }

    /// Route-like headers (Route, Record-Route, Path, Service-Route) in order.
    pub fn name_addrs(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<NameAddr<'_>, crate::headers::InvalidHeader>> {
        self.list(name).map(NameAddr::parse)
    }

    /// `Expires`, saturating at u32::MAX; `Some(Err)` when present but not a number.
    pub fn expires(&self) -> Option<Result<u32, crate::headers::InvalidHeader>> {
        self.header(HeaderName::Expires).map(|v| parse_delta_seconds(v).ok_or(crate::headers::InvalidHeader))
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.header(HeaderName::MaxForwards).and_then(|v| crate::scan::parse_u32(trim(v)))
    }

    pub fn content_type(&self) -> Option<&[u8]> {
        self.header(HeaderName::ContentType)
    }

    pub fn event(&self) -> Option<Event<'_>> {
        self.header(HeaderName::Event).and_then(|v| Event::parse(v).ok())
    }

    /// Credentials or challenges (Authorization, Proxy-Authorization, WWW-Authenticate,
    /// Proxy-Authenticate) in order; malformed ones are `Err`.
    pub fn digests(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<DigestParams<'_>, crate::headers::InvalidHeader>> {
        self.header_all(name).map(DigestParams::parse)
    }

    // ---- changes ----

    /// Appends a header field with its canonical name.
    pub fn push_header(&mut self, name: HeaderName, value: impl Into<Text>) {
        self.headers.push(Header { name, raw_name: Text::from(name.as_str()), value: value.into() });
    }

    /// Appends a header field with a name of its own (an extension header).
    pub fn push_header_named(&mut self, raw_name: impl Into<Text>, value: impl Into<Text>) {
        let raw_name = raw_name.into();
        let name = HeaderName::from_bytes(raw_name.resolve(&self.buf));
        self.headers.push(Header { name, raw_name, value: value.into() });
    }

    /// Inserts a header field before every other one of the same name, or after the last
    /// header field if there is none yet: where a proxy puts its Via and Record-Route (RFC
    /// 3261 16.6 steps 4 and 8).
    pub fn prepend_header(&mut self, name: HeaderName, value: impl Into<Text>) {
        let at = self.headers.iter().position(|h| h.name == name).unwrap_or(self.headers.len());
        self.headers.insert(at, Header { name, raw_name: Text::from(name.as_str()), value: value.into() });
    }

    /// Sets the first header field named `name` (appending one if there is none) and removes
    /// the others.
    pub fn set_header(&mut self, name: HeaderName, value: impl Into<Text>) {
        match self.headers.iter().position(|h| h.name == name) {
            Some(i) => {
                self.headers[i].value = value.into();
                let mut seen = 0;
                self.headers.retain(|h| {
                    if h.name != name {
                        return true;
                    }
                    seen += 1;
                    seen == 1
                });
            }
            None => self.push_header(name, value),
        }
    }

    /// Removes every header field named `name`; returns how many there were.
    pub fn remove_headers(&mut self, name: HeaderName) -> usize {
        let before = self.headers.len();
        self.headers.retain(|h| h.name != name);
        before - self.headers.len()
    }

    /// Removes every header field with the given (unknown to [`HeaderName`]) name; returns how
    /// many there were.
    pub fn remove_headers_named(&mut self, raw_name: &str) -> usize {
        let known = HeaderName::from_bytes(raw_name.as_bytes());
        if known != HeaderName::Other {
            return self.remove_headers(known);
        }
        let before = self.headers.len();
        let buf = &self.buf;
        self.headers.retain(|h| {
            h.name != HeaderName::Other || !h.raw_name.resolve(buf).eq_ignore_ascii_case(raw_name.as_bytes())
        });
        before - self.headers.len()
    }

    /// Removes the first element of a list header (the top Via, the topmost Route), whether it
    /// stands alone on its line or first in a comma-separated line. Returns whether there was one.
    pub fn pop_first_element(&mut self, name: HeaderName) -> bool {
        let Some(i) = self.headers.iter().position(|h| h.name == name) else {
            return false;
        };
        let value = self.headers[i].value.resolve(&self.buf);
        let mut parts = crate::scan::split_top(value, b',');
        let _first = parts.next();
        let rest: Vec<&[u8]> = parts.filter(|p| !p.is_empty()).collect();
        if rest.is_empty() {
            self.headers.remove(i);
        } else {
            let joined = rest.join(&b", "[..]);
            self.headers[i].value = Text::from(joined);
        }
        true
    }

    /// Adds `;tag=` to the To header unless it has a tag already (RFC 3261 8.2.6.2).
    pub fn set_to_tag(&mut self, tag: &str) {
        let Some(i) = self.headers.iter().position(|h| h.name == HeaderName::To) else {
            return;
        };
        let value = self.headers[i].value.resolve(&self.buf);
        if NameAddr::parse(value).is_ok_and(|t| t.tag().is_some()) {
            return;
        }
        let mut v = Vec::with_capacity(value.len() + tag.len() + 5);
        v.extend_from_slice(value);
        v.extend_from_slice(b";tag=");
        v.extend_from_slice(tag.as_bytes());
        self.headers[i].value = Text::from(v);
    }

    /// Writes `Content-Length` for the body if the message has none (streams need it, RFC
    /// 3261 18.3; a datagram may have come without one).
    pub fn ensure_content_length(&mut self) {
        if !self.headers.iter().any(|h| h.name == HeaderName::ContentLength) {
            self.push_header(HeaderName::ContentLength, "0");
        }
    }

    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf
    }
}

/// `delta-seconds` (RFC 3261 25.1): digits; a value past 2^32-1 counts as 2^32-1 (RFC 3261
/// 20.19 says so for Expires, and we treat every delta-seconds the same).
pub(crate) fn parse_delta_seconds(v: &[u8]) -> Option<u32> {
    let v = trim(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(crate::scan::parse_u32(v).unwrap_or(u32::MAX))
}

impl PartialEq for Message {
    /// Two messages are equal when they say the same: same start line, same header fields in
    /// the same order (names compared as SIP compares them, values byte for byte), same body.
    fn eq(&self, other: &Message) -> bool {
        let start_eq = match (&self.start, &other.start) {
            (StartLine::Request { method: m1, uri: u1 }, StartLine::Request { method: m2, uri: u2 }) => {
                m1 == m2 && u1.resolve(&self.buf) == u2.resolve(&other.buf)
            }
            (StartLine::Response { code: c1, reason: r1 }, StartLine::Response { code: c2, reason: r2 }) => {
                c1 == c2 && r1.resolve(&self.buf) == r2.resolve(&other.buf)
            }
            _ => false,
        };
        start_eq
            && self.body() == other.body()
            && self.headers.len() == other.headers.len()
            && self.headers().zip(other.headers()).all(|(a, b)| {
                a.name == b.name
                    && (a.name != HeaderName::Other || a.raw_name.eq_ignore_ascii_case(b.raw_name))
                    && a.value == b.value
            })
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_vec()))
    }
}
