//! Digest credentials and challenges (RFC 3261 22, RFC 7616): Authorization and
//! WWW-Authenticate values and their parameters.

use super::InvalidHeader;
use crate::scan::{is_token, quoted_end, split_commas, trim, unquote};
use std::borrow::Cow;

/// The value of Authorization, Proxy-Authorization, WWW-Authenticate or Proxy-Authenticate
/// (RFC 3261 25.1, RFC 7616 3): an auth scheme and comma-separated `name=value` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestParams<'a> {
    pub scheme: &'a [u8],
    params: &'a [u8],
}

impl<'a> DigestParams<'a> {
    /// Parses and checks the whole value: every parameter is `token = token` or
    /// `token = quoted-string`, so that later look-ups cannot meet a malformed one.
    pub fn parse(v: &'a [u8]) -> Result<DigestParams<'a>, InvalidHeader> {
        let v = trim(v);
        let sp = v.iter().position(|&c| !is_token(c)).unwrap_or(v.len());
        let (scheme, params) = (&v[..sp], trim(&v[sp..]));
        if scheme.is_empty() || (sp < v.len() && !crate::scan::is_ws(v[sp])) {
            return Err(InvalidHeader);
        }
        for p in split_commas(params) {
            let eq = p.iter().position(|&c| c == b'=').ok_or(InvalidHeader)?;
            let (name, value) = (trim(&p[..eq]), trim(&p[eq + 1..]));
            if name.is_empty() || !name.iter().all(|&c| is_token(c)) || value.is_empty() {
                return Err(InvalidHeader);
            }
            let well_formed = if value[0] == b'"' {
                quoted_end(value) == Some(value.len())
            } else {
                value.iter().all(|&c| is_token(c) || c == b'/' || c == b':')
            };
            if !well_formed {
                return Err(InvalidHeader);
            }
        }
        Ok(DigestParams { scheme, params })
    }

    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"Digest")
    }

    /// Every parameter, name first, value unquoted.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Cow<'a, [u8]>)> {
        split_commas(self.params).filter_map(|p| {
            let eq = p.iter().position(|&c| c == b'=')?;
            Some((trim(&p[..eq]), unquote(&p[eq + 1..])))
        })
    }

    /// The parameter `name` (case-insensitive), unquoted.
    pub fn get(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        // Unquote only the value asked for, not every one passed on the way.
        split_commas(self.params).find_map(|p| {
            let eq = p.iter().position(|&c| c == b'=')?;
            trim(&p[..eq]).eq_ignore_ascii_case(name.as_bytes()).then(|| unquote(&p[eq + 1..]))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        let d = DigestParams::parse(
            br#"Digest username="alice", realm="example.test", nonce="abc,def", uri="sip:example.test", response="0123", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="x\"y""#,
        )
        .unwrap();
        assert!(d.is_digest());
        assert_eq!(d.get("username").as_deref(), Some(&b"alice"[..]));
        assert_eq!(d.get("NONCE").as_deref(), Some(&b"abc,def"[..]));
        assert_eq!(d.get("algorithm").as_deref(), Some(&b"SHA-256"[..]));
        assert_eq!(d.get("cnonce").as_deref(), Some(&br#"x"y"#[..]));
        assert_eq!(d.get("opaque"), None);
    }

    #[test]
    fn malformed() {
        for bad in [
            &br#"Digest username="alice"#[..],
            b"Digest realm",
            b"Digest =x",
            b"",
            br#"Digest a="b" c"#,
            b"Digest a=b c",
        ] {
            assert!(DigestParams::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
