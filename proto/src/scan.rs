//! Lexical pieces of RFC 3261 section 25 shared by the typed views: whitespace, tokens,
//! quoted strings, comma-separated lists and `;name=value` parameters. Every function is a
//! single forward scan, so no input makes them quadratic.

use std::borrow::Cow;

/// `token` characters (RFC 3261 25.1).
#[inline]
pub fn is_token(c: u8) -> bool {
    // A table: this runs for every byte of every header name the parser meets.
    TOKEN[usize::from(c)]
}

/// A 256-entry membership table of the ASCII alphanumerics plus `extra`.
pub(crate) const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

const TOKEN: [bool; 256] = alnum_and(b"-.!%*_+`'~");

/// Linear white space as it may remain inside a header value after unfolding.
pub fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// A control character that RFC 3261 25.1 never allows raw in a start line or a header
/// value: %x00-08, %x0A-1F and DEL. HTAB is whitespace there (LWS, and the Reason-Phrase's
/// HTAB); CR and LF may only end a line (or fold one), and a caller looking at a line has cut
/// its line end off already.
#[inline]
pub fn is_control(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

/// How many control characters ([`is_control`], so CR and LF too) `b` holds. It runs over
/// every header block, so it counts 64 bytes at a time with no branch, which the compiler turns
/// into vector compares, and pads the last few bytes with spaces to count them the same way.
pub fn count_controls(b: &[u8]) -> usize {
    // At most 64 per chunk: the u8 cannot overflow.
    let count = |chunk: &[u8]| usize::from(chunk.iter().fold(0u8, |n, &c| n + u8::from(is_control(c))));
    let mut chunks = b.chunks_exact(64);
    let n: usize = chunks.by_ref().map(count).sum();
    let rest = chunks.remainder();
    let mut tail = [b' '; 64];
    tail[..rest.len()].copy_from_slice(rest);
    n + count(&tail)
}

/// Whether the raw header value `data[start..end]` (folds not joined yet) holds control
/// characters only where RFC 3261 25.1 allows them: raw, only HTAB and the CRLF (or the bare
/// LF this parser also reads as a line end) of a fold; inside a quoted string, when the
/// header's grammar has them (`quoted_strings`), any byte %x00-7F but CR and LF escaped as a
/// quoted-pair, as RFC 4475 3.1.1.4 (intmeth) writes NUL, BEL and DEL in a display name. A `\`
/// before a line break inside a quoted string is refused: quoted-pair excludes CR and LF, and
/// a parser that took it for an escape would read on into the next line.
///
/// `data` is the whole buffer: the byte a `\` escapes may lie just past `end`, where trailing
/// whitespace was trimmed off the value. Unterminated quotes are left to the typed views.
pub fn controls_follow_grammar(data: &[u8], start: usize, end: usize, quoted_strings: bool) -> bool {
    let mut quoted = false;
    let mut i = start;
    while i < end {
        match data[i] {
            b'"' if quoted_strings => quoted = !quoted,
            b'\\' if quoted => {
                if matches!(data.get(i + 1), Some(b'\r' | b'\n')) {
                    return false;
                }
                // quoted-pair: the escaped byte, control or not, is taken as it is.
                i += 1;
            }
            // A CR is only ever the first half of a fold's CRLF.
            b'\r' if data.get(i + 1) != Some(&b'\n') => return false,
            // The line break of a fold: the structure pass saw SP or HTAB open the next line.
            b'\r' | b'\n' => {}
            c if is_control(c) => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

pub fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if !is_ws(*first) {
            break;
        }
        b = rest;
    }
    while let [rest @ .., last] = b {
        if !is_ws(*last) {
            break;
        }
        b = rest;
    }
    b
}

/// Parses a non-empty run of decimal digits that fits in a u32; anything else (sign, space,
/// overflow, empty) is `None`. Numbers in SIP never carry a sign.
pub fn parse_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    u32::try_from(n).ok()
}

/// Where the quoted string that starts at `b[0] == b'"'` ends: the index just past its closing
/// quote, honouring `\` escapes (RFC 3261 25.1 quoted-pair). `None` if it is unterminated.
pub fn quoted_end(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < b.len() {
        i += memchr::memchr2(b'\\', b'"', &b[i..])?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
    None
}

/// The content of a value that may be a quoted string, without the quotes and with escapes
/// resolved. A value that is not quoted is returned as it is.
pub fn unquote(b: &[u8]) -> Cow<'_, [u8]> {
    let b = trim(b);
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return Cow::Borrowed(b);
    }
    let inner = &b[1..b.len() - 1];
    if !inner.contains(&b'\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut it = inner.iter();
    while let Some(&c) = it.next() {
        if c == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Splits a header value at the top-level occurrences of `sep`: not inside a quoted string and
/// not inside `<...>`. Pieces are trimmed; empty pieces are kept so that callers can reject
/// `a,,b` where the grammar forbids it. Unbalanced quotes or brackets make the rest of the value
/// one piece (the typed parser of the piece then rejects it).
pub fn split_top(value: &[u8], sep: u8) -> SplitTop<'_> {
    SplitTop { rest: Some(value), sep }
}

pub struct SplitTop<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> Iterator for SplitTop<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let b = self.rest?;
        let mut i = 0;
        let mut angle = false;
        // Jump from one byte that matters to the next: a quote or a closing bracket inside
        // `<...>`; a quote, an opening bracket or the separator outside.
        while i < b.len() {
            let next = if angle {
                memchr::memchr2(b'"', b'>', &b[i..])
            } else {
                memchr::memchr3(b'"', b'<', self.sep, &b[i..])
            };
            let Some(n) = next else { break };
            i += n;
            let c = b[i];
            if c == b'"' {
                match quoted_end(&b[i..]) {
                    Some(n) => i += n,
                    None => break,
                }
                continue;
            }
            if c == b'<' {
                angle = true;
            } else if c == b'>' {
                angle = false;
            } else if c == self.sep && !angle {
                self.rest = Some(&b[i + 1..]);
                return Some(trim(&b[..i]));
            }
            i += 1;
        }
        self.rest = None;
        Some(trim(b))
    }
}

/// Splits a comma-separated header value into its elements (RFC 3261 7.3.1).
pub fn split_commas(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    split_top(value, b',').filter(|p| !p.is_empty())
}

/// `;name[=value]` parameters, as found after a URI, a name-addr, a Via, an Event. Looked up
/// lazily: most messages ask for one or two of them.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Params<'a>(&'a [u8]);

impl<'a> Params<'a> {
    /// `raw` is the text from the first `;` (included or not) to the end of the parameters.
    pub fn new(raw: &'a [u8]) -> Params<'a> {
        Params(raw)
    }

    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        split_top(self.0, b';').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&c| c == b'=') {
            Some(eq) => (trim(&p[..eq]), Some(trim(&p[eq + 1..]))),
            None => (p, None),
        })
    }

    /// The value of the parameter `name` (case-insensitive): `Some(None)` for a flag such as
    /// `;lr` or `;rport`, `Some(Some(v))` for `name=v` (raw, quotes kept), `None` if absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The value of `name` with quotes removed; `None` if absent or a flag.
    pub fn value(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        self.get(name).flatten().map(unquote)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Params({:?})", String::from_utf8_lossy(self.0))
    }
}

/// Splits `b` at the first top-level `;` (outside quotes and angle brackets): what comes before,
/// and the parameters after it.
pub fn split_params(b: &[u8]) -> (&[u8], Params<'_>) {
    let mut it = split_top(b, b';');
    let head = it.next().unwrap_or_default();
    let consumed = head.as_ptr() as usize - b.as_ptr() as usize + head.len();
    let rest = &b[consumed.min(b.len())..];
    (head, Params(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_is_strict() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"99999999999999999999"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b"+1"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"1 "), None);
    }

    #[test]
    fn split_respects_quotes_and_brackets() {
        let v = br#""Doe, John" <sip:a@b;x=1,2>;q=0.5 , <sip:c@d>"#;
        let parts: Vec<_> = split_commas(v).collect();
        assert_eq!(parts, vec![&br#""Doe, John" <sip:a@b;x=1,2>;q=0.5"#[..], b"<sip:c@d>"]);
    }

    #[test]
    fn params_lookup() {
        let p = Params::new(br#";expires=60;+sip.instance="<urn:uuid:1;2>";lr;Q=0.7"#);
        assert_eq!(p.get("expires"), Some(Some(&b"60"[..])));
        assert_eq!(p.value("+sip.instance").as_deref(), Some(&b"<urn:uuid:1;2>"[..]));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("q"), Some(Some(&b"0.7"[..])));
        assert_eq!(p.get("tag"), None);
    }

    #[test]
    fn control_characters() {
        let controls: Vec<u8> = (0..=255u8).filter(|&c| is_control(c)).collect();
        let want: Vec<u8> = (0..0x20).filter(|&c| c != b'\t').chain([0x7f]).collect();
        assert_eq!(controls, want);
    }

    #[test]
    fn counting_control_characters() {
        for len in [0, 1, 63, 64, 65, 200] {
            let mut b = vec![b'x'; len];
            assert_eq!(count_controls(&b), 0);
            for (k, i) in (0..len).step_by(7).enumerate() {
                b[i] = [0, b'\r', b'\n', 0x1f, 0x7f][k % 5];
            }
            assert_eq!(count_controls(&b), len.div_ceil(7), "{len}");
        }
        assert_eq!(count_controls("tab\t, UTF-8 \u{e9}\u{80}, ~".as_bytes()), 0);
    }

    #[test]
    fn controls_only_as_quoted_pairs() {
        let ok = |v: &[u8], quoted_strings| controls_follow_grammar(v, 0, v.len(), quoted_strings);
        assert!(ok(b"\"a\\\0b\\\x7f\" <sip:a@b>", true));
        assert!(ok(b"a,\r\n b\n\tc", true));
        // The escaped byte may be a trimmed space just past the value.
        assert!(controls_follow_grammar(b"\"a\\ ", 0, 3, true));
        assert!(!controls_follow_grammar(b"\"a\\\r\n", 0, 3, true));
        assert!(!ok(b"\"a\\\r\n b\"", true));
        assert!(!ok(b"\"a\\\n b\"", true));
        assert!(!ok(b"\"a\0b\"", true));
        assert!(!ok(b"a\0b", true));
        assert!(!ok(b"a\rb", true));
        assert!(!ok(b"\\\0", true));
        // Without quoted strings, neither `"` nor `\` means anything.
        assert!(ok(b"\"C:\\\r\n x", false));
        assert!(!ok(b"\"\\\0\"", false));
    }

    #[test]
    fn unquote_resolves_escapes() {
        assert_eq!(&*unquote(br#""a\"b\\c""#), br#"a"b\c"#);
        assert_eq!(&*unquote(b"token"), b"token");
        assert_eq!(quoted_end(br#""unterminated\""#), None);
    }
}
