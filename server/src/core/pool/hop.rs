//! The pool's credential on an inter-member request: a header, [`HEADER`], that names the
//! member sending it and what it vouches for (the address of the client it relays for, and
//! the user that client's connection authenticated as), sealed with an HMAC-SHA256 under the
//! pool secret over those and the request's identity (method, Request-URI, Call-ID, CSeq, top
//! Via branch). A member believes what a request says of its client only under a good seal;
//! a client cannot make one, so it cannot pose as an edge.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sipfront_proto::digest::hex;
use sipfront_proto::Message;
use std::time::{SystemTime, UNIX_EPOCH};

/// The header that carries the seal.
pub const HEADER: &str = "X-Sipfront-Pool";
/// Bytes of HMAC kept: forging a seal takes 2^128 tries.
const MAC_LEN: usize = 16;
/// How far a seal's time may be from ours: members' clocks must agree this well (NTP).
const SKEW_SECS: u64 = 300;

/// What a member vouches for on a request it relays.
pub use crate::transaction::Relayed as Vouch;

/// Why a seal is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forged {
    /// No seal on a request that needs one.
    Missing,
    /// Unreadable, or its MAC does not match.
    Bad,
    /// Its time is too far from ours.
    Stale,
}

impl Forged {
    pub fn label(self) -> &'static str {
        match self {
            Forged::Missing => "missing",
            Forged::Bad => "bad_mac",
            Forged::Stale => "stale",
        }
    }
}

pub struct Seal {
    key: Hmac<Sha256>,
}

impl Seal {
    /// Seals under `secret`: `pool.secret`, or else `auth.secret` (a key of its own is derived,
    /// so that a seal says nothing about the nonce key).
    pub fn new(secret: &[u8]) -> Seal {
        let mut derive = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        derive.update(b"sipfront pool seal v1");
        let key = derive.finalize().into_bytes();
        Seal { key: Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length") }
    }

    /// Puts our seal on `msg` (after its top Via is final), replacing any other.
    pub fn sign(&self, msg: &mut Message, vouch: &Vouch) {
        self.sign_at(msg, vouch, unix_now());
    }

    fn sign_at(&self, msg: &mut Message, vouch: &Vouch, t: u64) {
        let mut value = format!("t={t};m={}", hex(vouch.member.as_bytes()));
        if let Some(c) = vouch.client {
            value.push_str(";c=");
            value.push_str(&hex(c.to_string().as_bytes()));
        }
        if let Some(i) = &vouch.identity {
            value.push_str(";i=");
            value.push_str(&hex(i.as_bytes()));
        }
        if vouch.replay {
            value.push_str(";r=1");
        }
        if vouch.feed {
            value.push_str(";f=1");
        }
        if let Some(p) = &vouch.partner {
            value.push_str(";p=");
            value.push_str(&hex(p.as_bytes()));
        }
        if let Some(g) = &vouch.group {
            value.push_str(";g=");
            value.push_str(&hex(g.as_bytes()));
        }
        let mac = self.mac(msg, &value);
        value.push_str(";mac=");
        value.push_str(&hex(&mac[..MAC_LEN]));
        remove(msg);
        msg.push_header_named(HEADER, value);
    }

    /// What a sealed request vouches for, if the seal is ours and fresh.
    pub fn verify(&self, msg: &Message) -> Result<Vouch, Forged> {
        self.verify_at(msg, unix_now())
    }

    fn verify_at(&self, msg: &Message, now: u64) -> Result<Vouch, Forged> {
        let value = msg.header_named(HEADER).ok_or(Forged::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| Forged::Bad)?.trim();
        let (signed, mac) = value.rsplit_once(";mac=").ok_or(Forged::Bad)?;
        let mac = unhex(mac).ok_or(Forged::Bad)?;
        let mut check = self.key.clone();
        feed(&mut check, msg, signed);
        check.verify_truncated_left(&mac).map_err(|_| Forged::Bad)?;
        let (mut t, mut member, mut client, mut identity, mut replay) = (None, None, None, None, false);
        let (mut feed, mut partner, mut group) = (false, None, None);
        for part in signed.split(';') {
            let (k, v) = part.split_once('=').ok_or(Forged::Bad)?;
            match k {
                "t" => t = v.parse::<u64>().ok(),
                "m" => member = unhex_text(v),
                "c" => client = unhex_text(v).and_then(|c| c.parse().ok()),
                "i" => identity = unhex_text(v),
                "r" => replay = v == "1",
                "f" => feed = v == "1",
                "p" => partner = unhex_text(v),
                "g" => group = unhex_text(v),
                _ => {}
            }
        }
        let t = t.ok_or(Forged::Bad)?;
        if t.abs_diff(now) > SKEW_SECS {
            return Err(Forged::Stale);
        }
        Ok(Vouch { member: member.ok_or(Forged::Bad)?, client, identity, replay, feed, partner, group })
    }

    fn mac(&self, msg: &Message, signed: &str) -> Vec<u8> {
        let mut m = self.key.clone();
        feed(&mut m, msg, signed);
        m.finalize().into_bytes().to_vec()
    }
}

/// Removes every seal (what a client sent, or the last hop's before ours).
pub fn remove(msg: &mut Message) {
    msg.remove_headers_named(HEADER);
}

/// What the MAC covers: the seal's own fields and what makes the request this request.
fn feed(m: &mut Hmac<Sha256>, msg: &Message, signed: &str) {
    // Not the method: the CANCEL and the ACK of a non-2xx that a member's transaction makes
    // from a sealed INVITE (same Request-URI, Call-ID, CSeq number and branch, RFC 3261 9.1
    // and 17.1.1.3) carry its seal unchanged.
    let parts: [&[u8]; 4] = [
        signed.as_bytes(),
        msg.request_uri().unwrap_or_default(),
        msg.call_id().unwrap_or_default(),
        msg.top_via().and_then(|v| v.branch()).unwrap_or_default(),
    ];
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    let cseq = msg.cseq().map_or(0, |c| c.seq);
    m.update(&cseq.to_be_bytes());
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 512 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn unhex_text(s: &str) -> Option<String> {
    String::from_utf8(unhex(s)?).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use bytes::Bytes;
    use sipfront_proto::{HeaderName, Limits};

    fn message() -> Message {
        let text = "MESSAGE sip:bob@example.test SIP/2.0\r\n\
            Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKabc\r\n\
            Max-Forwards: 69\r\n\
            From: <sip:alice@example.test>;tag=1\r\n\
            To: <sip:bob@example.test>\r\n\
            Call-ID: c1\r\n\
            CSeq: 1 MESSAGE\r\n\
            X-Other: kept\r\n\
            Content-Length: 0\r\n\r\n";
        Message::parse(Bytes::from(text), &Limits::default()).unwrap()
    }

    fn vouch() -> Vouch {
        Vouch {
            member: "fe-a".into(),
            client: Some("192.0.2.7:40000".parse().unwrap()),
            identity: Some("alice;x@example.test".into()),
            replay: true,
            feed: false,
            partner: Some("partner.example".into()),
            group: Some("sales@example.test".into()),
        }
    }

    #[test]
    fn a_seal_verifies_and_says_what_it_vouches_for() {
        let seal = Seal::new(b"pool secret");
        let mut m = message();
        seal.sign_at(&mut m, &vouch(), 1_000_000);
        let m = Message::parse(m.to_bytes(), &Limits::default()).unwrap();
        assert_eq!(seal.verify_at(&m, 1_000_100), Ok(vouch()));
        assert_eq!(m.header_named("X-Other"), Some(&b"kept"[..]));
        assert_eq!(seal.verify_at(&m, 1_000_400), Err(Forged::Stale));
        assert_eq!(Seal::new(b"another secret").verify_at(&m, 1_000_000), Err(Forged::Bad));
        assert_eq!(seal.verify_at(&message(), 1_000_000), Err(Forged::Missing));
    }

    #[test]
    fn a_seal_does_not_carry_over_to_another_request_or_identity() {
        let seal = Seal::new(b"pool secret");
        let mut m = message();
        seal.sign_at(&mut m, &vouch(), 1_000_000);
        let value = String::from_utf8(m.header_named(HEADER).unwrap().to_vec()).unwrap();

        let mut other = message();
        other.set_header(HeaderName::CallId, "c2");
        other.push_header_named(HEADER, value.clone());
        assert_eq!(seal.verify_at(&other, 1_000_000), Err(Forged::Bad), "another Call-ID");

        let mallory = value.replace(&hex(b"alice;x@example.test"), &hex(b"mallory@example.test"));
        let mut forged = message();
        forged.push_header_named(HEADER, mallory);
        assert_eq!(seal.verify_at(&forged, 1_000_000), Err(Forged::Bad), "another identity");

        remove(&mut m);
        assert_eq!(m.header_named(HEADER), None);
        assert_eq!(m.header_named("X-Other"), Some(&b"kept"[..]));
    }
}
