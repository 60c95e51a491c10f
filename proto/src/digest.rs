//! Digest authentication arithmetic (RFC 7616, with the algorithms RFC 8760 brings to SIP):
//! HA1, the request digest, and a constant-time comparison. Nonces, policy and credential
//! storage belong to the server; this is only the math both sides must agree on.

use md5::Md5;
use sha2::Sha256;

/// A digest algorithm as named in `algorithm=`. The `-sess` variants derive a per-session HA1
/// from the stored one (RFC 7616 3.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    /// From an `algorithm=` value, case-insensitively.
    pub fn parse(name: &[u8]) -> Option<Algorithm> {
        [Algorithm::Md5, Algorithm::Md5Sess, Algorithm::Sha256, Algorithm::Sha256Sess]
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// The algorithm of the stored HA1 this one uses.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Hex digest of the parts joined by `:`.
    pub fn hash(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self.base() {
            Algorithm::Md5 => run::<Md5>(parts),
            _ => run::<Sha256>(parts),
        }
    }
}

/// `H(username:realm:password)`: what the store keeps instead of a password.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.base().hash(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The parameters of one credential check.
pub struct Challenge<'a> {
    pub algorithm: Algorithm,
    pub nonce: &'a [u8],
    pub method: &'a str,
    pub uri: &'a [u8],
    /// `Some(("auth", nc, cnonce))` with qop; `None` for the RFC 2069 form without it.
    pub qop: Option<(&'a [u8], &'a [u8], &'a [u8])>,
    /// For `-sess` algorithms: the client nonce (also given in `qop`).
    pub cnonce: &'a [u8],
}

/// The expected `response=` for a stored HA1 (hex, of the algorithm's base).
pub fn response(stored_ha1: &str, c: &Challenge<'_>) -> String {
    let alg = c.algorithm;
    let ha1 =
        if alg.is_sess() { alg.hash(&[stored_ha1.as_bytes(), c.nonce, c.cnonce]) } else { stored_ha1.to_string() };
    let ha2 = alg.hash(&[c.method.as_bytes(), c.uri]);
    match c.qop {
        Some((qop, nc, cnonce)) => alg.hash(&[ha1.as_bytes(), c.nonce, nc, cnonce, qop, ha2.as_bytes()]),
        None => alg.hash(&[ha1.as_bytes(), c.nonce, ha2.as_bytes()]),
    }
}

/// Compares two digests without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())) == 0
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example_md5() {
        // RFC 2617 3.5 (the same arithmetic RFC 7616 keeps for MD5).
        let h = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(h, "939e7578ed9e3c518a452acee763bce9");
        let r = response(
            &h,
            &Challenge {
                algorithm: Algorithm::Md5,
                nonce: b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
                method: "GET",
                uri: b"/dir/index.html",
                qop: Some((b"auth", b"00000001", b"0a4f113b")),
                cnonce: b"0a4f113b",
            },
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc_7616_example_sha256() {
        // RFC 7616 3.9.1.
        let h = ha1(Algorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        let r = response(
            &h,
            &Challenge {
                algorithm: Algorithm::Sha256,
                nonce: b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                method: "GET",
                uri: b"/dir/index.html",
                qop: Some((b"auth", b"00000001", b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
                cnonce: b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            },
        );
        assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    }

    #[test]
    fn names_and_comparison() {
        assert_eq!(Algorithm::parse(b"sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse(b"MD5-sess"), Some(Algorithm::Md5Sess));
        assert_eq!(Algorithm::parse(b"SHA-512-256"), None);
        assert!(constant_time_eq(b"ABCdef", b"abcDEF"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
