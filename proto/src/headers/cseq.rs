//! The CSeq header (RFC 3261 20.16): sequence number and method.

use super::InvalidHeader;
use crate::method::Method;
use crate::scan::{is_ws, parse_u32, trim};

/// `CSeq: 4711 INVITE` (RFC 3261 20.16); the number is below 2^31 (8.1.1.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(v: &[u8]) -> Result<CSeq, InvalidHeader> {
        let v = trim(v);
        let sp = v.iter().position(|&c| is_ws(c)).ok_or(InvalidHeader)?;
        let seq = parse_u32(&v[..sp]).filter(|&n| n < 1 << 31).ok_or(InvalidHeader)?;
        let method = Method::from_bytes(trim(&v[sp..])).ok_or(InvalidHeader)?;
        Ok(CSeq { seq, method })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse(b"1 REGISTER").unwrap(), CSeq { seq: 1, method: Method::Register });
        assert_eq!(CSeq::parse(b"  2147483647 \t INVITE ").unwrap().seq, 2147483647);
        for bad in
            [&b"2147483648 INVITE"[..], b"-1 INVITE", b"1", b"x INVITE", b"1 IN VITE", b"99999999999999999999 ACK"]
        {
            assert!(CSeq::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
