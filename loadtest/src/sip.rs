//! The requests a client sends and the credentials it answers a challenge with.

use crate::config::{Account, TransportKind};
use sipfront_proto::digest::{self, Algorithm};
use sipfront_proto::{HeaderName, Message, Method};
use std::net::SocketAddr;

/// A random token for tags, Call-IDs and cnonces: 16 alphanumerics, about 95 bits.
pub fn token() -> String {
    (0..16).map(|_| fastrand::alphanumeric()).collect()
}

/// A fresh branch with the RFC 3261 magic cookie (8.1.1.7).
pub fn branch() -> String {
    format!("z9hG4bK{}", token())
}

/// Who a request is from and to, in which dialog-less exchange.
pub struct Exchange<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub domain: &'a str,
    pub from_tag: &'a str,
    pub call_id: &'a str,
}

/// A request with the headers every request needs (RFC 3261 8.1.1), its top Via naming
/// `local` and `branch`.
pub fn request(
    method: Method,
    uri: &str,
    x: &Exchange<'_>,
    cseq: u32,
    local: SocketAddr,
    transport: TransportKind,
    branch: &str,
) -> Message {
    let name = method.as_str().to_string();
    let mut m = Message::request(method, uri.to_string());
    // rport (RFC 3581): answer where the request came from, whatever the Via says.
    m.push_header(HeaderName::Via, format!("SIP/2.0/{} {local};branch={branch};rport", transport.via_name()));
    m.push_header(HeaderName::MaxForwards, "70");
    m.push_header(HeaderName::From, format!("<sip:{}@{}>;tag={}", x.from, x.domain, x.from_tag));
    m.push_header(HeaderName::To, format!("<sip:{}@{}>", x.to, x.domain));
    m.push_header(HeaderName::CallId, x.call_id.to_string());
    m.push_header(HeaderName::CSeq, format!("{cseq} {name}"));
    m
}

/// The Authorization (for a 401) or Proxy-Authorization (for a 407) answering the first
/// challenge in `resp` whose algorithm we know (RFC 8760 2.4: the server lists them in order of
/// preference). `None` when the response has no usable challenge.
pub fn credentials(resp: &Message, method: &str, uri: &str, account: &Account) -> Option<(HeaderName, String)> {
    let (challenge_header, answer_header) = match resp.status()? {
        401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
        407 => (HeaderName::ProxyAuthenticate, HeaderName::ProxyAuthorization),
        _ => return None,
    };
    for c in resp.digests(challenge_header) {
        let Ok(c) = c else { continue };
        if !c.is_digest() {
            continue;
        }
        let algorithm = match c.get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(&a) {
                Some(a) => a,
                None => continue,
            },
        };
        let realm = String::from_utf8_lossy(&c.get("realm")?).into_owned();
        let nonce = String::from_utf8_lossy(&c.get("nonce")?).into_owned();
        let qop_auth =
            c.get("qop").is_some_and(|q| q.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"auth")));
        let cnonce = token();
        let nc = "00000001";
        let ha1 = digest::ha1(algorithm, &account.user, &realm, &account.password);
        let response = digest::response(
            &ha1,
            &digest::Challenge {
                algorithm,
                nonce: nonce.as_bytes(),
                method,
                uri: uri.as_bytes(),
                qop: qop_auth.then_some((&b"auth"[..], nc.as_bytes(), cnonce.as_bytes())),
                cnonce: cnonce.as_bytes(),
            },
        );
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            account.user,
            algorithm.name()
        );
        if qop_auth {
            v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = c.get("opaque") {
            v.push_str(&format!(", opaque=\"{}\"", String::from_utf8_lossy(&opaque)));
        }
        return Some((answer_header, v));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use bytes::Bytes;
    use sipfront_proto::{DigestParams, Limits};

    fn challenge(code: u16, header: &str) -> Message {
        let text = format!(
            "SIP/2.0 {code} Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx\r\nFrom: <sip:a@d>;tag=1\r\nTo: <sip:a@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{header}\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text), &Limits::default()).unwrap()
    }

    fn verify(header: &str, method: &str, password: &str) -> bool {
        let c = DigestParams::parse(header.as_bytes()).unwrap();
        let alg = Algorithm::parse(&c.get("algorithm").unwrap()).unwrap();
        let ha1 = digest::ha1(alg, "alice", "d", password);
        let qop = c.get("qop");
        let (nc, cnonce) = (c.get("nc").unwrap_or_default(), c.get("cnonce").unwrap_or_default());
        let expected = digest::response(
            &ha1,
            &digest::Challenge {
                algorithm: alg,
                nonce: &c.get("nonce").unwrap(),
                method,
                uri: &c.get("uri").unwrap(),
                qop: qop.as_deref().map(|q| (q, &nc[..], &cnonce[..])),
                cnonce: &cnonce,
            },
        );
        expected.as_bytes() == &c.get("response").unwrap()[..]
    }

    #[test]
    fn answers_md5_qop_auth() {
        let account = Account { user: "alice".into(), password: "pw".into() };
        let r = challenge(
            401,
            "WWW-Authenticate: Digest realm=\"d\", nonce=\"n1\", qop=\"auth,auth-int\", algorithm=MD5, opaque=\"o\"",
        );
        let (h, v) = credentials(&r, "REGISTER", "sip:d", &account).unwrap();
        assert_eq!(h, HeaderName::Authorization);
        assert!(v.contains("qop=auth, nc=00000001") && v.contains("opaque=\"o\""), "{v}");
        assert!(verify(&v, "REGISTER", "pw"));
        assert!(!verify(&v, "REGISTER", "other"));
    }

    #[test]
    fn picks_the_first_known_algorithm_and_proxy_headers() {
        let account = Account { user: "alice".into(), password: "pw".into() };
        let r = challenge(
            407,
            "Proxy-Authenticate: Digest realm=\"d\", nonce=\"n\", algorithm=SHA-512-256\r\nProxy-Authenticate: Digest realm=\"d\", nonce=\"n\", qop=\"auth\", algorithm=SHA-256",
        );
        let (h, v) = credentials(&r, "MESSAGE", "sip:bob@d", &account).unwrap();
        assert_eq!(h, HeaderName::ProxyAuthorization);
        assert!(v.contains("algorithm=SHA-256"), "{v}");
        assert!(verify(&v, "MESSAGE", "pw"));
    }

    #[test]
    fn rfc_2069_without_qop_and_nothing_usable() {
        let account = Account { user: "alice".into(), password: "pw".into() };
        let r = challenge(401, "WWW-Authenticate: Digest realm=\"d\", nonce=\"n\"");
        let (_, v) = credentials(&r, "REGISTER", "sip:d", &account).unwrap();
        assert!(!v.contains("qop"));
        assert!(verify(&v, "REGISTER", "pw"));
        let r = challenge(401, "WWW-Authenticate: Basic realm=\"d\"");
        assert!(credentials(&r, "REGISTER", "sip:d", &account).is_none());
    }
}
