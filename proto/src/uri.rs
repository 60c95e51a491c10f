//! SIP and SIPS URIs (RFC 3261 19.1): user, host, port and parameters borrowed from the
//! message, escapes undone on demand; other schemes kept whole and passed through.

use crate::scan::Params;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A URI borrowed from a message. `sip:` and `sips:` URIs (RFC 3261 19.1) are parsed into
/// their parts; any other scheme (`tel:`, `urn:`, `im:`...) is kept whole, since a front end
/// only needs to route on SIP URIs and must pass the others through untouched.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a [u8],
    scheme: &'a [u8],
    user: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
    host: Host<'a>,
    port: Option<u16>,
    params: Params<'a>,
    headers: Option<&'a [u8]>,
}

/// The host part of a SIP URI or Via.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name, as written (compare case-insensitively).
    Name(&'a [u8]),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UriError;

impl<'a> Host<'a> {
    /// Parses `host` as RFC 3261 25.1 defines it: hostname, IPv4address or `[IPv6reference]`.
    pub fn parse(b: &'a [u8]) -> Result<Host<'a>, UriError> {
        if let Some(inner) = b.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
            let s = std::str::from_utf8(inner).map_err(|_| UriError)?;
            return s.parse().map(Host::V6).map_err(|_| UriError);
        }
        if b.is_empty() {
            return Err(UriError);
        }
        // One pass: a hostname's labels are non-empty and start with an alphanumeric character
        // (RFC 3261 25.1 domainlabel); a single trailing dot is allowed.
        let (mut numeric, mut label_start) = (true, true);
        for &c in b {
            match c {
                b'.' | b'-' if label_start => return Err(UriError),
                b'.' => label_start = true,
                b'-' => numeric = false,
                c if c.is_ascii_alphanumeric() => {
                    numeric &= c.is_ascii_digit();
                    label_start = false;
                }
                _ => return Err(UriError),
            }
        }
        if numeric {
            if let Ok(ip) = std::str::from_utf8(b).unwrap_or_default().parse() {
                return Ok(Host::V4(ip));
            }
        }
        Ok(Host::Name(b))
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(&String::from_utf8_lossy(n)),
            Host::V4(ip) => write!(f, "{ip}"),
            Host::V6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// Splits `host[:port]`, where host may be an IPv6 reference in brackets.
pub(crate) fn split_host_port(b: &[u8]) -> Result<(Host<'_>, Option<u16>), UriError> {
    let (host, port) = if b.first() == Some(&b'[') {
        let close = b.iter().position(|&c| c == b']').ok_or(UriError)?;
        let (h, rest) = b.split_at(close + 1);
        match rest {
            [] => (h, None),
            [b':', p @ ..] => (h, Some(p)),
            _ => return Err(UriError),
        }
    } else {
        match b.iter().position(|&c| c == b':') {
            Some(i) => (&b[..i], Some(&b[i + 1..])),
            None => (b, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n = crate::scan::parse_u32(p).ok_or(UriError)?;
            Some(u16::try_from(n).map_err(|_| UriError)?)
        }
    };
    Ok((Host::parse(host)?, port))
}

/// Characters allowed in the user and password parts, besides `%HH` escapes: unreserved and
/// user-unreserved (RFC 3261 25.1).
fn is_user_char(c: u8) -> bool {
    USER_CHAR[usize::from(c)]
}

/// Characters allowed in URI parameters and headers, besides `%HH` escapes.
fn is_param_char(c: u8) -> bool {
    PARAM_CHAR[usize::from(c)]
}

// Tables, as every URI in every request is checked byte by byte.
const USER_CHAR: [bool; 256] = crate::scan::alnum_and(b"-_.!~*'()&=+$,;?/:");
const PARAM_CHAR: [bool; 256] = crate::scan::alnum_and(b"-_.!~*'()[]/:&+$;=?@");

fn valid_escaped(b: &[u8], ok: fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if ok(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

impl<'a> Uri<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Uri<'a>, UriError> {
        let colon = raw.iter().position(|&c| c == b':').ok_or(UriError)?;
        let scheme = &raw[..colon];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.iter().all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
        if !scheme_ok {
            return Err(UriError);
        }
        let rest = &raw[colon + 1..];
        if !(scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")) {
            // absoluteURI: anything visible, no whitespace, no brackets or quotes.
            if rest.is_empty() || rest.iter().any(|&c| c <= b' ' || c >= 0x7f || b"<>\"".contains(&c)) {
                return Err(UriError);
            }
            return Ok(Uri {
                raw,
                scheme,
                user: None,
                password: None,
                host: Host::Name(b""),
                port: None,
                params: Params::default(),
                headers: None,
            });
        }
        // userinfo: '@' appears nowhere else in a SIP URI (params and headers cannot hold it
        // unescaped... except hvalue, so look for it before the first '?').
        let (before_q, headers) = match memchr::memchr(b'?', rest) {
            Some(q) => (&rest[..q], Some(&rest[q + 1..])),
            None => (rest, None),
        };
        let (user, password, before_q) = match memchr::memrchr(b'@', before_q) {
            Some(at) => {
                let userinfo = &before_q[..at];
                let (u, p) = match memchr::memchr(b':', userinfo) {
                    Some(i) => (&userinfo[..i], Some(&userinfo[i + 1..])),
                    None => (userinfo, None),
                };
                if u.is_empty() || !valid_escaped(u, is_user_char) {
                    return Err(UriError);
                }
                if let Some(p) = p {
                    if !valid_escaped(p, is_user_char) {
                        return Err(UriError);
                    }
                }
                (Some(u), p, &before_q[at + 1..])
            }
            None => (None, None, before_q),
        };
        let (hostport, params) = match memchr::memchr(b';', before_q) {
            Some(s) => (&before_q[..s], &before_q[s..]),
            None => (before_q, &b""[..]),
        };
        let (host, port) = split_host_port(hostport)?;
        if !valid_escaped(params, is_param_char) || headers.is_some_and(|h| !valid_escaped(h, is_param_char)) {
            return Err(UriError);
        }
        Ok(Uri { raw, scheme, user, password, host, port, params: Params::new(params), headers })
    }

    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    pub fn scheme(&self) -> &'a [u8] {
        self.scheme
    }
    /// `sip:` or `sips:`, the URIs this server routes on.
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"sip") || self.scheme.eq_ignore_ascii_case(b"sips")
    }
    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"sips")
    }
    /// The user part as written (escapes kept).
    pub fn user(&self) -> Option<&'a [u8]> {
        self.user
    }
    pub fn password(&self) -> Option<&'a [u8]> {
        self.password
    }
    pub fn host(&self) -> Host<'a> {
        self.host
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The `?` headers component, without the `?`.
    pub fn headers(&self) -> Option<&'a [u8]> {
        self.headers
    }
}

/// Resolves `%HH` escapes (RFC 3261 19.1.4: URIs compare after unescaping).
pub fn unescape(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !b.contains(&b'%') {
        return std::borrow::Cow::Borrowed(b);
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

impl fmt::Debug for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uri({:?})", String::from_utf8_lossy(self.raw))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn full_sip_uri() {
        let u = Uri::parse(b"sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi").unwrap();
        assert!(u.is_sips());
        assert_eq!(u.user(), Some(&b"alice"[..]));
        assert_eq!(u.password(), Some(&b"secret"[..]));
        assert_eq!(u.host(), Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.params().get("transport"), Some(Some(&b"tls"[..])));
        assert!(u.params().has("lr"));
        assert_eq!(u.headers(), Some(&b"subject=hi"[..]));
    }

    #[test]
    fn hosts_and_users() {
        let u = Uri::parse(b"sip:example.test").unwrap();
        assert_eq!(u.user(), None);
        assert_eq!(u.host(), Host::Name(b"example.test"));
        let u = Uri::parse(b"sip:%61lice;x=y@10.0.0.1:5060").unwrap();
        assert_eq!(u.user(), Some(&b"%61lice;x=y"[..]));
        assert_eq!(u.host(), Host::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(&*unescape(u.user().unwrap()), b"alice;x=y");
    }

    #[test]
    fn host_forms() {
        assert_eq!(Host::parse(b"192.0.2.1"), Ok(Host::V4(Ipv4Addr::new(192, 0, 2, 1))));
        // Numeric but not an address, or with the trailing dot of a name: a name.
        assert_eq!(Host::parse(b"999.1.1.1"), Ok(Host::Name(b"999.1.1.1")));
        assert_eq!(Host::parse(b"192.0.2.1."), Ok(Host::Name(b"192.0.2.1.")));
        assert_eq!(Host::parse(b"a-b.example."), Ok(Host::Name(b"a-b.example.")));
        for bad in [&b""[..], b".", b"a..b", b"-a", b"a.-b", b"1..2", b"a_b", b"a.b.."] {
            assert!(Host::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = Uri::parse(b"tel:+1-555-0100").unwrap();
        assert!(!u.is_sip());
        assert_eq!(u.scheme(), b"tel");
        assert!(Uri::parse(b"urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").is_ok());
    }

    #[test]
    fn invalid_uris() {
        for bad in [
            &b"sip:"[..],
            b"sip:user@",
            b"sip:@host",
            b"sip:host:99999",
            b"sip:host:-1",
            b"sip:ho st",
            b"sip:user@host:5060x",
            b"sip:[::1",
            b"sip:%zz@host",
            b"1sip:host",
            b"nocolon",
            b"sip:-bad.example",
        ] {
            assert!(Uri::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
