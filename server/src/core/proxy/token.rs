//! Flow tokens: what this proxy writes into its Record-Route (and its Via on forwarded INVITEs)
//! so that a later request or response finds both ends of a dialog without any dialog state
//! here. A token names two legs, each a connection (TCP/TLS flow, RFC 5626) or a UDP address,
//! and carries an HMAC so that nobody can make us send into a connection they do not own. A
//! dialog's token also names the dialog (its Call-ID and the caller's tag), its two parties
//! and when it expires ([`Dialog`]), so that it routes that dialog's requests, from its
//! parties, for its life, and nothing else.

use crate::transport::flows::FlowId;
use crate::transport::{Source, Target, Transport};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The user part of our Record-Route URIs starts with this; the rest is hex.
pub const PREFIX: &str = "sf";
/// Bytes of HMAC kept: forging one takes 2^64 tries.
const MAC_LEN: usize = 8;
/// The kind byte of the [`Dialog`] record after the legs.
const DIALOG: u8 = 4;
/// Longest token opened (hex digits after the prefix): two IPv6 legs and a dialog.
const MAX_HEX: usize = 2 * (2 * 19 + 29 + MAC_LEN);

/// What a dialog's token is good for: the dialog (a digest of its Call-ID and the caller's
/// From tag, which every request of the dialog carries, RFC 3261 12), its two parties (digests
/// of their AORs, folded to lower case) and the Unix time it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub id: [u8; 8],
    pub caller: [u8; 8],
    pub callee: [u8; 8],
    pub until: u32,
}

impl Dialog {
    /// The digest of a dialog's Call-ID and its caller's tag.
    pub fn id_of(call_id: &[u8], caller_tag: &[u8]) -> [u8; 8] {
        digest8(&[call_id, b"\0", caller_tag])
    }

    /// The digest of a party's AOR, whatever its ASCII case.
    pub fn party(aor: &str) -> [u8; 8] {
        digest8(&[aor.to_ascii_lowercase().as_bytes()])
    }
}

fn digest8(parts: &[&[u8]]) -> [u8; 8] {
    use sha2::Digest;
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0; 8];
    out.copy_from_slice(&h.finalize()[..8]);
    out
}

/// One side of a dialog as this server reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Over the connection the party's requests came on.
    Stream { transport: Transport, flow: FlowId },
    /// At the address its datagrams came from.
    Udp(SocketAddr),
}

impl Leg {
    /// The leg a request came in on.
    pub fn of_source(s: &crate::transport::Source) -> Leg {
        match (s.transport, s.flow) {
            (Transport::Udp, _) | (_, None) => Leg::Udp(s.remote),
            (transport, Some(flow)) => Leg::Stream { transport, flow },
        }
    }

    /// The leg a request is sent out on.
    pub fn of_target(t: &Target) -> Leg {
        match (t.transport, t.flow) {
            (Transport::Udp, _) | (_, None) => Leg::Udp(t.remote),
            (transport, Some(flow)) => Leg::Stream { transport, flow },
        }
    }

    /// Where to send to reach this leg.
    pub fn target(self) -> Target {
        match self {
            Leg::Stream { transport, flow } => Target {
                transport,
                // Only the flow counts: once it is gone the party is unreachable.
                remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                flow: Some(flow),
                local: None,
            },
            Leg::Udp(remote) => Target { transport: Transport::Udp, remote, flow: None, local: None },
        }
    }

    /// Whether a request from `source` came from this leg's party.
    pub fn sent(self, source: &Source) -> bool {
        match self {
            Leg::Stream { flow, .. } => source.flow == Some(flow),
            Leg::Udp(addr) => source.transport == Transport::Udp && source.remote == addr,
        }
    }

    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Leg::Stream { transport, flow } => {
                out.push(if transport == Transport::Tls { 1 } else { 0 });
                out.extend_from_slice(&flow.to_be_bytes());
            }
            Leg::Udp(SocketAddr::V4(a)) => {
                out.push(2);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Leg::Udp(SocketAddr::V6(a)) => {
                out.push(3);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
        }
    }

    fn decode(b: &[u8]) -> Option<(Leg, &[u8])> {
        let (&kind, rest) = b.split_first()?;
        match kind {
            0 | 1 => {
                let flow = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                let transport = if kind == 1 { Transport::Tls } else { Transport::Tcp };
                Some((Leg::Stream { transport, flow }, &rest[8..]))
            }
            2 => {
                let ip: [u8; 4] = rest.get(..4)?.try_into().ok()?;
                let port = u16::from_be_bytes(rest.get(4..6)?.try_into().ok()?);
                Some((Leg::Udp(SocketAddr::new(Ipv4Addr::from(ip).into(), port)), &rest[6..]))
            }
            3 => {
                let ip: [u8; 16] = rest.get(..16)?.try_into().ok()?;
                let port = u16::from_be_bytes(rest.get(16..18)?.try_into().ok()?);
                Some((Leg::Udp(SocketAddr::new(Ipv6Addr::from(ip).into(), port)), &rest[18..]))
            }
            _ => None,
        }
    }
}

/// Seals and opens tokens with a key of this process (a dialog's requests come back to the
/// front end that record-routed it, whose address is in the Record-Route).
pub struct Tokens {
    key: Hmac<Sha256>,
}

impl Default for Tokens {
    /// Tokens under a fresh random key.
    fn default() -> Tokens {
        let key = super::super::secure_random(32);
        Tokens { key: Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length") }
    }
}

impl Tokens {
    /// A token for the legs, as URI-safe text (`sf` and hex).
    pub fn seal(&self, legs: &[Leg]) -> String {
        self.seal_with(legs, None)
    }

    /// A token for the legs of `dialog`, good for it only.
    pub fn seal_dialog(&self, legs: &[Leg], dialog: &Dialog) -> String {
        self.seal_with(legs, Some(dialog))
    }

    fn seal_with(&self, legs: &[Leg], dialog: Option<&Dialog>) -> String {
        let mut raw = Vec::with_capacity(80);
        for leg in legs {
            leg.encode(&mut raw);
        }
        if let Some(d) = dialog {
            raw.push(DIALOG);
            raw.extend_from_slice(&d.id);
            raw.extend_from_slice(&d.caller);
            raw.extend_from_slice(&d.callee);
            raw.extend_from_slice(&d.until.to_be_bytes());
        }
        let mut mac = self.key.clone();
        mac.update(&raw);
        raw.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        let mut s = String::with_capacity(PREFIX.len() + raw.len() * 2);
        s.push_str(PREFIX);
        s.push_str(&sipfront_proto::digest::hex(&raw));
        s
    }

    /// The legs of a token we sealed; `None` for anything else (or a forged one).
    pub fn open(&self, text: &[u8]) -> Option<Vec<Leg>> {
        self.open_dialog(text).map(|(legs, _)| legs)
    }

    /// The legs of a token we sealed, and the dialog it is good for if it names one.
    pub fn open_dialog(&self, text: &[u8]) -> Option<(Vec<Leg>, Option<Dialog>)> {
        let hex = text.strip_prefix(PREFIX.as_bytes())?;
        if !hex.len().is_multiple_of(2) || hex.len() > MAX_HEX {
            return None;
        }
        let raw: Vec<u8> =
            hex.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()).collect::<Option<_>>()?;
        let (body, tag) = raw.split_at(raw.len().checked_sub(MAC_LEN)?);
        let mut mac = self.key.clone();
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        let mut legs = Vec::with_capacity(2);
        let mut rest = body;
        while !rest.is_empty() {
            if rest[0] == DIALOG {
                let d = rest.get(1..29)?;
                let eight = |i: usize| d[i..i + 8].try_into().ok();
                let until = u32::from_be_bytes(d[24..28].try_into().ok()?);
                let dialog = Dialog { id: eight(0)?, caller: eight(8)?, callee: eight(16)?, until };
                return (rest.len() == 29).then_some((legs, Some(dialog)));
            }
            let (leg, r) = Leg::decode(rest)?;
            legs.push(leg);
            rest = r;
        }
        Some((legs, None))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_forgeries() {
        let t = Tokens::default();
        let legs = [
            Leg::Stream { transport: Transport::Tls, flow: 42 },
            Leg::Udp("127.0.0.1:5090".parse().unwrap()),
            Leg::Udp("[::1]:5070".parse().unwrap()),
        ];
        let token = t.seal(&legs);
        assert!(token.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(t.open(token.as_bytes()).unwrap(), legs);
        let mut forged = token.clone().into_bytes();
        let i = forged.len() - 20;
        forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
        assert_eq!(t.open(&forged), None);
        assert_eq!(Tokens::default().open(token.as_bytes()), None, "another process's key");
        assert_eq!(t.open(b"sfzz"), None);
        assert_eq!(t.open(b"alice"), None);
    }

    #[test]
    fn a_dialog_token_names_its_dialog() {
        let t = Tokens::default();
        let legs = [Leg::Udp("[::1]:5070".parse().unwrap()), Leg::Udp("[::2]:5071".parse().unwrap())];
        let d = Dialog {
            id: Dialog::id_of(b"call@x", b"tag1"),
            caller: Dialog::party("Alice@x"),
            callee: Dialog::party("bob@x"),
            until: 1_900_000_000,
        };
        let token = t.seal_dialog(&legs, &d);
        assert_eq!(t.open_dialog(token.as_bytes()), Some((legs.to_vec(), Some(d))));
        assert_eq!(t.open(token.as_bytes()).unwrap(), legs, "its legs, to whoever routes by legs");
        assert_eq!(Dialog::party("alice@X"), d.caller, "whatever the case");
        assert_ne!(Dialog::id_of(b"call@x", b"tag2"), d.id);
        let mut cut = token.clone();
        cut.truncate(token.len() - 2);
        assert_eq!(t.open_dialog(cut.as_bytes()), None);
    }
}
