//! The parser: one forward pass over the header block that records spans, then validation of
//! what a request cannot do without. See [`Message::parse`].

use crate::error::{ErrorKind, ParseError};
use crate::headers::cseq::CSeq;
use crate::headers::name_addr::{Contact, NameAddr};
use crate::headers::via::Via;
use crate::limits::Limits;
use crate::message::{parse_delta_seconds, Header, Message, StartLine};
use crate::method::Method;
use crate::name::HeaderName;
use crate::scan::{controls_follow_grammar, count_controls, is_token, split_commas};
use crate::text::{Repr, Text};
use crate::uri::Uri;
use bytes::Bytes;

impl Message {
    /// Parses one complete message (a datagram, or a frame from [`crate::StreamFramer`]).
    ///
    /// Leading CRLFs are skipped (RFC 3261 7.5). Without Content-Length the body is the rest of
    /// the buffer (allowed over UDP, RFC 3261 18.3); with it, bytes beyond it are ignored and
    /// fewer bytes are an error.
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        let (start, headers, body_start) = parse_structure(&buf, limits)?;
        let data: &[u8] = &buf;
        // Body framing by Content-Length (the first one; duplicates are refused below).
        let available = data.len() - body_start;
        let body_end = match headers.iter().find(|h| h.name == HeaderName::ContentLength) {
            None => data.len(),
            Some(h) => {
                let v = h.value.resolve(data);
                let declared = parse_u64_saturating(v)
                    .ok_or_else(|| ParseError::new(ErrorKind::BadHeader(HeaderName::ContentLength)))?;
                if declared.saturating_add(body_start as u64) > limits.max_message_size as u64 {
                    return Err(ParseError::new(ErrorKind::BodyTooLarge { declared, limit: limits.max_message_size }));
                }
                // Fits: it is at most max_message_size.
                let declared = declared as usize;
                if declared > available {
                    return Err(ParseError::new(ErrorKind::BodyTruncated { declared, actual: available }));
                }
                body_start + declared
            }
        };

        let msg = Message { start, headers, body: Text::span(body_start, body_end), buf };
        match validate(&msg, limits) {
            Ok(()) => Ok(msg),
            Err(kind) => Err(ParseError::with_message(kind, msg)),
        }
    }

    /// Parses only the start line and headers of `head` (a header block that could not be
    /// framed, such as one announcing a body past the size limit), without validating them
    /// and with an empty body: enough to answer it with an error response.
    pub fn parse_head(head: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        let (start, headers, body_start) = parse_structure(&head, limits)?;
        Ok(Message { start, headers, body: Text::span(body_start, body_start), buf: head })
    }
}

/// The start line and header fields of `data`, and where the body starts.
fn parse_structure(data: &[u8], limits: &Limits) -> Result<(StartLine, Vec<Header>, usize), ParseError> {
    if data.len() > limits.max_message_size {
        return Err(ParseError::new(ErrorKind::MessageTooLarge { size: data.len(), limit: limits.max_message_size }));
    }
    let mut pos = data.iter().position(|&c| c != b'\r' && c != b'\n').ok_or(ParseError::new(ErrorKind::Empty))?;
    if data[pos..].iter().all(|&c| crate::scan::is_ws(c)) {
        return Err(ParseError::new(ErrorKind::Empty));
    }

    let (ls, le, next) = next_line(data, pos).ok_or(ParseError::new(ErrorKind::NoEndOfHeaders))?;
    // RFC 3261 25.1: no element of a start line admits a control character (HTAB aside, which
    // only the Reason-Phrase admits and parse_start_line judges with the rest).
    if count_controls(&data[ls..le]) != 0 {
        return Err(ParseError::new(ErrorKind::ControlCharacter));
    }
    let start = parse_start_line(data, ls, le).map_err(ParseError::new)?;
    pos = next;
    let headers_start = pos;

    let mut headers: Vec<Header> = Vec::with_capacity(16);
    let mut folded = false;
    // The bytes of CR LF and LF line ends, and whether a line ends in `\`: with the control
    // characters of the block counted, all that the check below needs.
    let mut line_ends = 0;
    let mut backslash_break = false;
    // Where the current header field begins, for the length limit across folded lines.
    let mut field_start = 0;
    let body_start = loop {
        let (ls, le, next) = next_line(data, pos).ok_or(ParseError::new(ErrorKind::NoEndOfHeaders))?;
        pos = next;
        line_ends += next - le;
        if ls == le {
            break next;
        }
        let line = &data[ls..le];
        backslash_break |= line.last() == Some(&b'\\');
        if line[0] == b' ' || line[0] == b'\t' {
            // A continuation line (RFC 3261 7.3.1): the field goes on; the value is unfolded below.
            let last = headers.last_mut().ok_or(ParseError::new(ErrorKind::BadHeaderLine))?;
            if le - field_start > limits.max_header_len {
                return Err(ParseError::new(ErrorKind::HeaderTooLong {
                    name: last.name,
                    limit: limits.max_header_len,
                }));
            }
            let vend = trim_end_at(data, ls, le);
            if vend > ls {
                if let crate::text::Repr::Span { start, end } = &mut last.value.0 {
                    if *start == *end {
                        // The value began on this continuation line.
                        *start = skip_ws(data, ls, vend) as u32;
                    }
                    *end = vend as u32;
                }
                folded = true;
            }
            continue;
        }
        if headers.len() == limits.max_headers {
            return Err(ParseError::new(ErrorKind::TooManyHeaders { limit: limits.max_headers }));
        }
        let colon = memchr::memchr(b':', line).ok_or(ParseError::new(ErrorKind::BadHeaderLine))?;
        // HCOLON = *( SP / HTAB ) ":" SWS
        let name_end = trim_end_at(data, ls, ls + colon);
        let name = &data[ls..name_end];
        if name.is_empty() || !name.iter().all(|&c| is_token(c)) {
            return Err(ParseError::new(ErrorKind::BadHeaderLine));
        }
        let hname = HeaderName::from_bytes(name);
        if le - ls > limits.max_header_len {
            return Err(ParseError::new(ErrorKind::HeaderTooLong { name: hname, limit: limits.max_header_len }));
        }
        let vend = trim_end_at(data, ls + colon + 1, le);
        let vstart = skip_ws(data, ls + colon + 1, vend);
        field_start = ls;
        headers.push(Header { name: hname, raw_name: Text::span(ls, name_end), value: Text::span(vstart, vend) });
    };
    // RFC 3261 25.1 on control characters in header values. In an ordinary message the only
    // ones are line ends and no `\` precedes one, which one counting pass shows; anything else
    // is judged value by value, with its quotes, which can span folds.
    if backslash_break || count_controls(&data[headers_start..body_start]) != line_ends {
        check_controls(data, &headers)?;
    }
    if folded {
        unfold(data, &mut headers);
    }
    Ok((start, headers, body_start))
}

/// RFC 3261 25.1 on every raw header value: control characters only as its grammar allows
/// them (see [`controls_follow_grammar`]). Runs before folds are joined, while every value is
/// still a span of `data`. The message is not kept for an answer: the character may sit in
/// Via, From, To, Call-ID or CSeq, which a response would send back.
fn check_controls(data: &[u8], headers: &[Header]) -> Result<(), ParseError> {
    for h in headers {
        if let Repr::Span { start, end } = h.value.0 {
            if !controls_follow_grammar(data, start as usize, end as usize, has_quoted_strings(h.name)) {
                return Err(ParseError::new(ErrorKind::ControlCharacter));
            }
        }
    }
    Ok(())
}

/// Whether the grammar of the header `name` has quoted strings (RFC 3261 25.1 and the RFCs
/// defining the extensions): the only place in a header value where a control character may
/// appear, escaped. Free text (TEXT-UTF8-TRIM, word, product), token and number grammars, and
/// the generic value of a header this crate does not know (RFC 3261 extension-header) have none:
/// there `"` and `\` are plain characters and no control character is allowed at all. A comment
/// (Server, User-Agent, Retry-After) also admits quoted-pairs; it is read as plain text here,
/// so an escaped control character in one is refused, stricter than the grammar, rather than
/// guess at parentheses that nothing in this crate parses.
fn has_quoted_strings(name: HeaderName) -> bool {
    use HeaderName::*;
    match name {
        Accept | AcceptEncoding | AcceptLanguage | AlertInfo | AuthenticationInfo | Authorization | CallInfo
        | Contact | ContentDisposition | ContentType | ErrorInfo | Event | From | PAssertedIdentity
        | PPreferredIdentity | Path | ProxyAuthenticate | ProxyAuthorization | Reason | RecordRoute | ReferTo
        | ReferredBy | ReplyTo | RetryAfter | Route | ServiceRoute | SessionExpires | SubscriptionState | To | Via
        | Warning | WwwAuthenticate => true,
        Allow | AllowEvents | CallId | ContentEncoding | ContentLanguage | ContentLength | CSeq | Date | Expires
        | FlowTimer | InReplyTo | MaxForwards | MimeVersion | MinExpires | Organization | Priority | ProxyRequire
        | RAck | Require | RSeq | Server | SipETag | SipIfMatch | Subject | Supported | Timestamp | Unsupported
        | UserAgent | Other => false,
    }
}

/// The next line from `pos`: (start, end without CR LF, start of the following line).
/// Lines end in CRLF; a bare LF is accepted as well, as robust parsers do.
#[inline]
fn next_line(data: &[u8], pos: usize) -> Option<(usize, usize, usize)> {
    let nl = pos + memchr::memchr(b'\n', data.get(pos..)?)?;
    let end = if nl > pos && data[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((pos, end, nl + 1))
}

#[inline]
fn skip_ws(data: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && matches!(data[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

#[inline]
fn trim_end_at(data: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(data[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    end
}

/// Replaces every line break plus leading whitespace inside folded values with one space.
fn unfold(data: &[u8], headers: &mut [Header]) {
    for h in headers.iter_mut() {
        let v = h.value.resolve(data);
        if !v.contains(&b'\n') {
            continue;
        }
        let mut out = Vec::with_capacity(v.len());
        let mut i = 0;
        while i < v.len() {
            match v[i] {
                b'\r' | b'\n' => {
                    while out.last().is_some_and(|&c| c == b' ' || c == b'\t') {
                        out.pop();
                    }
                    while i < v.len() && crate::scan::is_ws(v[i]) {
                        i += 1;
                    }
                    // A break at either end (a stray CR next to a line's CRLF) adds nothing:
                    // the value stays trimmed, as RFC 3261 7.3.1 reads it.
                    if i < v.len() && !out.is_empty() {
                        out.push(b' ');
                    }
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        h.value = Text::from(out);
    }
}

fn parse_u64_saturating(v: &[u8]) -> Option<u64> {
    let v = crate::scan::trim(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &c| n.saturating_mul(10).saturating_add(u64::from(c - b'0'))))
}

/// `SIP/2.0`, case-insensitively; another well-formed `SIP/x.y` is an unsupported version.
fn check_version(v: &[u8]) -> Result<(), ErrorKind> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let well_formed = v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && v[4..].split(|&c| c == b'.').count() == 2
        && v[4..].split(|&c| c == b'.').all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    Err(if well_formed { ErrorKind::UnsupportedVersion } else { ErrorKind::BadStartLine })
}

fn parse_start_line(data: &[u8], ls: usize, le: usize) -> Result<StartLine, ErrorKind> {
    let line = &data[ls..le];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr::memchr(b' ', line).ok_or(ErrorKind::BadStartLine)?;
        check_version(&line[..sp])?;
        let rest = &line[sp + 1..];
        let code_bytes = rest.get(..3).ok_or(ErrorKind::BadStartLine)?;
        if !code_bytes.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), None | Some(b' ')) {
            return Err(ErrorKind::BadStartLine);
        }
        let code = code_bytes.iter().fold(0u16, |n, &c| n * 10 + u16::from(c - b'0'));
        if !(100..=699).contains(&code) {
            return Err(ErrorKind::BadStartLine);
        }
        let reason_start = (ls + sp + 1 + 4).min(le);
        return Ok(StartLine::Response { code, reason: Text::span(reason_start, le) });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces.
    let sp1 = memchr::memchr(b' ', line).ok_or(ErrorKind::BadStartLine)?;
    let sp2 = sp1 + 1 + memchr::memchr(b' ', &line[sp1 + 1..]).ok_or(ErrorKind::BadStartLine)?;
    let version = &line[sp2 + 1..];
    if memchr::memchr(b' ', version).is_some() || sp2 == sp1 + 1 {
        return Err(ErrorKind::BadStartLine);
    }
    check_version(version)?;
    let method = Method::from_bytes(&line[..sp1]).ok_or(ErrorKind::BadStartLine)?;
    Ok(StartLine::Request { method, uri: Text::span(ls + sp1 + 1, ls + sp2) })
}

/// RFC 3261 8.2 and 16.3 checks a message must pass before anything acts on it.
fn validate(msg: &Message, limits: &Limits) -> Result<(), ErrorKind> {
    use HeaderName as H;
    let is_request = msg.is_request();
    let mut counts = [0u16; 6];
    const SINGLE: [HeaderName; 6] = [H::To, H::From, H::CallId, H::CSeq, H::MaxForwards, H::ContentLength];
    let mut vias = 0usize;
    for h in msg.headers() {
        if let Some(i) = SINGLE.iter().position(|&n| n == h.name) {
            counts[i] += 1;
        }
        if h.name == H::Via {
            for v in split_commas(h.value) {
                vias += 1;
                if vias > limits.max_vias {
                    return Err(ErrorKind::TooManyVias { limit: limits.max_vias });
                }
                Via::parse(v).map_err(|_| ErrorKind::BadHeader(H::Via))?;
            }
        }
    }
    if vias == 0 {
        return Err(ErrorKind::MissingHeader(H::Via));
    }
    for (i, &name) in SINGLE.iter().enumerate() {
        let mandatory = !matches!(name, H::ContentLength) && (is_request || name != H::MaxForwards);
        if counts[i] == 0 && mandatory {
            return Err(ErrorKind::MissingHeader(name));
        }
        if counts[i] > 1 {
            // The same value twice is still one value; only a conflict is ambiguous.
            let mut values = msg.header_all(name);
            let first = values.next().unwrap_or_default();
            if values.any(|v| v != first) {
                return Err(ErrorKind::DuplicateHeader(name));
            }
        }
    }
    let get = |name| msg.header(name).unwrap_or_default();
    NameAddr::parse(get(H::From)).map_err(|_| ErrorKind::BadHeader(H::From))?;
    NameAddr::parse(get(H::To)).map_err(|_| ErrorKind::BadHeader(H::To))?;
    let call_id = get(H::CallId);
    if call_id.is_empty() || call_id.iter().any(|&c| c <= b' ' || c >= 0x7f) {
        return Err(ErrorKind::BadHeader(H::CallId));
    }
    let cseq = CSeq::parse(get(H::CSeq)).map_err(|_| ErrorKind::BadHeader(H::CSeq))?;
    if let Some(v) = msg.header(H::Expires) {
        parse_delta_seconds(v).ok_or(ErrorKind::BadHeader(H::Expires))?;
    }
    if let Some(method) = msg.method() {
        if &cseq.method != method {
            return Err(ErrorKind::CSeqMethodMismatch);
        }
        msg.max_forwards().ok_or(ErrorKind::BadHeader(H::MaxForwards))?;
        Uri::parse(msg.request_uri().unwrap_or_default()).map_err(|_| ErrorKind::BadRequestUri)?;
        let (mut contacts, mut star) = (0usize, false);
        for c in msg.list(H::Contact) {
            if Contact::parse(c).map_err(|_| ErrorKind::BadHeader(H::Contact))? == Contact::Star {
                star = true;
            }
            contacts += 1;
        }
        // Contact: * stands alone (RFC 3261 10.2.2).
        if star && contacts > 1 {
            return Err(ErrorKind::BadHeader(H::Contact));
        }
    }
    Ok(())
}
