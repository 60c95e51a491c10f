//! The Via header (RFC 3261 20.42): protocol, sent-by and parameters (branch, received,
//! rport), as responses are routed by it.

use super::InvalidHeader;
use crate::scan::{is_token, is_ws, trim, Params};
use crate::uri::{split_host_port, Host};

/// One Via entry (RFC 3261 20.42): `SIP/2.0/UDP host:port;branch=...;rport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    pub protocol: &'a [u8],
    pub version: &'a [u8],
    pub transport: &'a [u8],
    pub host: Host<'a>,
    pub port: Option<u16>,
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a [u8]) -> Result<Via<'a>, InvalidHeader> {
        let v = trim(v);
        // sent-protocol: three tokens separated by "/" with optional whitespace (SLASH = SWS "/" SWS)
        let mut parts: [&[u8]; 3] = [&[]; 3];
        let mut i = 0;
        for (n, part) in parts.iter_mut().enumerate() {
            while i < v.len() && is_ws(v[i]) {
                i += 1;
            }
            let start = i;
            while i < v.len() && is_token(v[i]) {
                i += 1;
            }
            *part = &v[start..i];
            if part.is_empty() {
                return Err(InvalidHeader);
            }
            while i < v.len() && is_ws(v[i]) {
                i += 1;
            }
            if n < 2 {
                if v.get(i) != Some(&b'/') {
                    return Err(InvalidHeader);
                }
                i += 1;
            }
        }
        let rest = &v[i..];
        let semi = rest.iter().position(|&c| c == b';').unwrap_or(rest.len());
        let sent_by = trim(&rest[..semi]);
        // COLON = SWS ":" SWS: "host : 5060" is legal; whitespace elsewhere is not.
        let (host, port) = match sent_by.iter().rposition(|&c| c == b':') {
            Some(c) if !sent_by.starts_with(b"[") || sent_by[..c].ends_with(b"]") => {
                let h = trim(&sent_by[..c]);
                let p = trim(&sent_by[c + 1..]);
                let port = crate::scan::parse_u32(p).and_then(|n| u16::try_from(n).ok()).ok_or(InvalidHeader)?;
                (Host::parse(h)?, Some(port))
            }
            _ => split_host_port(sent_by)?,
        };
        Ok(Via {
            protocol: parts[0],
            version: parts[1],
            transport: parts[2],
            host,
            port,
            params: Params::new(&rest[semi..]),
        })
    }

    /// The transaction identifier; RFC 3261 17.2.3 matching applies when it starts with the
    /// magic cookie `z9hG4bK`.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.params.get("branch").flatten()
    }

    pub fn received(&self) -> Option<&'a [u8]> {
        self.params.get("received").flatten()
    }

    /// `Some(None)` when the client asked for rport (RFC 3581) with a bare `;rport`.
    pub fn rport(&self) -> Option<Option<&'a [u8]>> {
        self.params.get("rport")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn typical_and_odd_vias() {
        let v = Via::parse(b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, Host::V4("192.0.2.1".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some(&b"z9hG4bK776"[..]));
        assert_eq!(v.rport(), Some(None));

        let v = Via::parse(b"SIP / 2.0 / TCP   host.example.test : 5070 ; branch = z9hG4bKx").unwrap();
        assert_eq!(v.transport, b"TCP");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some(&b"z9hG4bKx"[..]));

        let v = Via::parse(b"SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKy").unwrap();
        assert_eq!(v.host, Host::V6("2001:db8::9".parse().unwrap()));
        let v = Via::parse(b"SIP/2.0/WSS [2001:db8::9];branch=z9hG4bKy").unwrap();
        assert_eq!(v.port, None);
    }

    #[test]
    fn bad_vias() {
        for bad in [&b"SIP/2.0 host"[..], b"SIP/2.0/UDP", b"SIP/2.0/UDP host:x", b"SIP/2.0/UDP ho st", b""] {
            assert!(Via::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
