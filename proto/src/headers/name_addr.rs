//! Name-addr values (From, To, Contact, Route, Record-Route, Path, Service-Route) and Contact,
//! which may also be `*` (RFC 3261 10.2.2).

use super::InvalidHeader;
use crate::scan::{is_token, is_ws, quoted_end, split_params, trim, unquote, Params};
use crate::uri::Uri;
use std::borrow::Cow;

/// `[display-name] <uri> ;params` or `uri ;params` (RFC 3261 20.10, 20.20, 20.39): the shape
/// of From, To, Contact, Route, Record-Route, Path, Service-Route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written, quotes and escapes kept.
    pub display: Option<&'a [u8]>,
    pub uri: Uri<'a>,
    /// Header parameters (`tag`, `expires`, `q`, `+sip.instance`, `reg-id`, `lr` on a bare URI...).
    pub params: Params<'a>,
    /// Whether the URI was written inside `<...>`.
    pub angle: bool,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a [u8]) -> Result<NameAddr<'a>, InvalidHeader> {
        let v = trim(v);
        let (display, rest) = if v.first() == Some(&b'"') {
            let end = quoted_end(v).ok_or(InvalidHeader)?;
            (Some(&v[..end]), trim(&v[end..]))
        } else {
            match v.iter().position(|&c| c == b'<') {
                Some(lt) => {
                    let d = trim(&v[..lt]);
                    // An unquoted display name is a run of tokens separated by whitespace.
                    if !d.iter().all(|&c| is_token(c) || is_ws(c)) {
                        return Err(InvalidHeader);
                    }
                    (if d.is_empty() { None } else { Some(d) }, &v[lt..])
                }
                None => (None, v),
            }
        };
        if let Some(inner) = rest.strip_prefix(b"<") {
            let gt = inner.iter().position(|&c| c == b'>').ok_or(InvalidHeader)?;
            let uri = Uri::parse(trim(&inner[..gt]))?;
            let after = trim(&inner[gt + 1..]);
            if !after.is_empty() && after[0] != b';' {
                return Err(InvalidHeader);
            }
            return Ok(NameAddr { display, uri, params: Params::new(after), angle: true });
        }
        if display.is_some() {
            return Err(InvalidHeader);
        }
        // addr-spec without brackets: every ';' after the host starts a header parameter
        // (RFC 3261 20: "any semicolon-delimited parameters are header-parameters"), while a
        // ';' before an '@' belongs to the user part.
        let host_start = rest.iter().position(|&c| c == b'@').map_or(0, |at| at + 1);
        let (tail, params) = split_params(&rest[host_start..]);
        let uri_bytes = &rest[..host_start + tail.len()];
        if uri_bytes.iter().any(|&c| is_ws(c) || c == b',' || c == b'?') {
            return Err(InvalidHeader);
        }
        Ok(NameAddr { display, uri: Uri::parse(uri_bytes)?, params, angle: false })
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.get("tag").flatten()
    }

    /// The display name without quotes and escapes.
    pub fn display_name(&self) -> Option<Cow<'a, [u8]>> {
        self.display.map(unquote)
    }
}

/// A Contact header element: a name-addr, or `*` (RFC 3261 10.2.2, only with Expires: 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact<'a> {
    Star,
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    pub fn parse(v: &'a [u8]) -> Result<Contact<'a>, InvalidHeader> {
        if trim(v) == b"*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(v).map(Contact::Addr)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a = NameAddr::parse(br#""Alice \"A\" Doe" <sip:alice@example.test>;tag=88sja8x"#).unwrap();
        assert_eq!(a.display_name().as_deref(), Some(&br#"Alice "A" Doe"#[..]));
        assert_eq!(a.uri.user(), Some(&b"alice"[..]));
        assert_eq!(a.tag(), Some(&b"88sja8x"[..]));

        let a = NameAddr::parse(b"Bob Smith<sip:bob@example.test;transport=tcp>").unwrap();
        assert_eq!(a.display, Some(&b"Bob Smith"[..]));
        assert_eq!(a.uri.params().get("transport"), Some(Some(&b"tcp"[..])));
        assert_eq!(a.tag(), None);

        let a = NameAddr::parse(b"sip:carol@example.test;tag=1928").unwrap();
        assert_eq!(a.uri.raw(), b"sip:carol@example.test");
        assert_eq!(a.tag(), Some(&b"1928"[..]));

        let c = Contact::parse(
            br#"<sip:alice@192.0.2.4:5060;transport=tcp>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1;expires=3600"#,
        )
        .unwrap();
        let Contact::Addr(c) = c else { panic!("not an address") };
        assert_eq!(
            c.params.value("+sip.instance").as_deref(),
            Some(&b"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"[..])
        );
        assert_eq!(c.params.get("reg-id"), Some(Some(&b"1"[..])));
        assert_eq!(Contact::parse(b" * ").unwrap(), Contact::Star);
    }

    #[test]
    fn invalid() {
        for bad in [
            &br#""unterminated <sip:a@b>"#[..],
            b"<sip:a@b",
            b"Name sip:a@b",
            b"<sip:a@b> junk",
            b"<nota uri>",
            b"a@b",
            b"Bad\"Name <sip:a@b>",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
