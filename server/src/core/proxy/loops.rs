//! Loop detection (RFC 3261 16.3 item 4 and 16.6 item 8): the branch of every request this
//! server forwards carries a hash of what routing it depended on. A request that comes back
//! with one of our Vias holding the same hash has gone round a loop (482); one whose hash
//! differs is a spiral (it was retargeted) and is forwarded.
//!
//! The hash is keyed with a secret of this server, so that only the Vias this server inserted
//! can match (16.3 item 4 looks at those alone): another sipfront that forwarded the request
//! unchanged (a partner domain's edge, another member of the pool) writes branches of the
//! same form, which must not read as ours.

use sha2::{Digest, Sha256};
use sipfront_proto::{HeaderName, Message};

/// Our branches start so: the RFC 3261 magic cookie and a mark of ours.
pub const BRANCH_PREFIX: &str = "z9hG4bKsf";
const HASH_HEX: usize = 10;

/// This server's loop detection: the key its branches' loop hashes are made with.
#[derive(Clone, Copy)]
pub struct Loops {
    key: [u8; 16],
}

impl Default for Loops {
    fn default() -> Self {
        let mut key = [0u8; 16];
        key.copy_from_slice(&crate::core::secure_random(16));
        Loops { key }
    }
}

impl Loops {
    /// The hash of a request as it arrived: Request-URI, From tag, To tag, Call-ID, CSeq
    /// number, Proxy-Require and Route (what 16.6 item 8 lists), keyed with ours.
    fn hash(&self, req: &Message) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(req.request_uri().unwrap_or_default());
        h.update([0]);
        h.update(req.from().and_then(|f| f.tag()).unwrap_or_default());
        h.update([0]);
        h.update(req.to().and_then(|t| t.tag()).unwrap_or_default());
        h.update([0]);
        h.update(req.call_id().unwrap_or_default());
        h.update([0]);
        h.update(req.cseq().map(|c| c.seq).unwrap_or(0).to_be_bytes());
        for name in [HeaderName::ProxyRequire, HeaderName::Route] {
            for v in req.header_all(name) {
                h.update([0]);
                h.update(v);
            }
        }
        let mut hex = sipfront_proto::digest::hex(&h.finalize()[..HASH_HEX / 2]);
        hex.truncate(HASH_HEX);
        hex
    }

    /// A branch for forwarding `received` (the request as it arrived): our prefix, the loop
    /// hash, and randomness that makes it unique.
    pub fn branch(&self, received: &Message) -> String {
        let mut s = String::with_capacity(BRANCH_PREFIX.len() + HASH_HEX + 17);
        s.push_str(BRANCH_PREFIX);
        s.push_str(&self.hash(received));
        s.push('.');
        sipfront_proto::random::push_alphanumeric(&mut s, 16);
        s
    }

    /// Whether `received` has been here before in the same shape: one of its Vias carries a
    /// branch of ours with the hash it has now.
    pub fn looped(&self, received: &Message) -> bool {
        let mine = received.vias().filter_map(|v| v.branch()).filter_map(|b| b.strip_prefix(BRANCH_PREFIX.as_bytes()));
        let mut hash = None;
        for b in mine {
            let h = hash.get_or_insert_with(|| self.hash(received));
            if b.starts_with(h.as_bytes()) && b.get(HASH_HEX) == Some(&b'.') {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(uri: &str, vias: &[String]) -> Message {
        let mut text = format!("INVITE {uri} SIP/2.0\r\n");
        for v in vias {
            text.push_str(&format!("Via: SIP/2.0/UDP 127.0.0.1:5060;branch={v}\r\n"));
        }
        text.push_str("Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKclient\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:b@example.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        Message::parse(Bytes::from(text), &sipfront_proto::Limits::default()).unwrap()
    }

    #[test]
    fn a_request_back_in_the_same_shape_is_a_loop_a_retargeted_one_a_spiral() {
        let loops = Loops::default();
        let first = msg("sip:b@example.test", &[]);
        assert!(!loops.looped(&first));
        let ours = loops.branch(&first);
        assert!(ours.starts_with(BRANCH_PREFIX));
        assert!(loops.looped(&msg("sip:b@example.test", std::slice::from_ref(&ours))), "same Request-URI: a loop");
        assert!(!loops.looped(&msg("sip:b@127.0.0.1:5090", std::slice::from_ref(&ours))), "retargeted: a spiral");
        // Another server forwarding the same request unchanged writes a branch of the same
        // form, but not with our key: not a loop here (a partner's edge, another member).
        let theirs = Loops::default().branch(&first);
        assert!(!loops.looped(&msg("sip:b@example.test", &[theirs])), "another server's Via");
    }
}
