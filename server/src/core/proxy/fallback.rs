//! OCS 2007 R2 compatibility: an OCS-era client sends an IM-session INVITE with a
//! `multipart/alternative` body whose parts are offered to newer and older endpoints; the part
//! for older ones carries `ms-proxy-2007fallback` in its Content-Disposition. When an endpoint
//! refuses the multipart body with 415, the proxy retries once with that part alone.

use sipfront_proto::multipart;
use sipfront_proto::{HeaderName, Message};

const MARK: &[u8] = b"ms-proxy-2007fallback";

/// The fallback part of `msg`'s body: its Content-Type and content; `None` if there is none.
pub fn part(msg: &Message) -> Option<(Vec<u8>, Vec<u8>)> {
    let content_type = msg.content_type()?;
    let parts = multipart::parts(content_type, msg.body()).ok()?;
    parts.iter().find_map(|p| {
        let disposition = p.header("Content-Disposition")?;
        let marked =
            disposition.split(|&c| c == b';').any(|t| sipfront_proto::scan::trim(t).eq_ignore_ascii_case(MARK));
        marked.then(|| (p.header("Content-Type").unwrap_or(b"application/sdp").to_vec(), p.body.to_vec()))
    })
}

/// `forked` (a branch's INVITE) with the fallback part as its only body.
pub fn retry(forked: &Message, (content_type, body): (Vec<u8>, Vec<u8>)) -> Message {
    let mut m = forked.clone();
    m.set_header(HeaderName::ContentType, content_type);
    m.remove_headers(HeaderName::ContentLength);
    m.set_body(body);
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn finds_the_part_marked_for_fallback() {
        let body = "--b1\r\nContent-Type: application/sdp\r\nContent-Disposition: session; handling=optional; ms-proxy-2007fallback\r\n\r\nv=0 old\r\n--b1\r\nContent-Type: application/sdp\r\nContent-Disposition: session; handling=optional\r\n\r\nv=0 new\r\n--b1--\r\n";
        let text = format!(
            "INVITE sip:b@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:b@example.test>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Type: multipart/alternative;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let m = Message::parse(Bytes::from(text), &sipfront_proto::Limits::default()).expect("parses");
        let (ct, b) = part(&m).unwrap();
        assert_eq!(ct, b"application/sdp");
        assert_eq!(b, b"v=0 old");
        let r = retry(&m, (ct, b));
        assert_eq!(r.body(), b"v=0 old");
        assert_eq!(r.content_type(), Some(&b"application/sdp"[..]));
        assert!(part(&r).is_none());
    }
}
