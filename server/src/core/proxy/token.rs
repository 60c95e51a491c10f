//! Flow tokens: what this proxy writes into its Record-Route (and its Via on forwarded INVITEs)
//! so that a later request or response finds both ends of a dialog without any dialog state
//! here. A token names two legs, each a connection (TCP/TLS flow, RFC 5626) or a UDP address,
//! and carries an HMAC so that nobody can make us send into a connection they do not own.

use crate::transport::flows::FlowId;
use crate::transport::{Source, Target, Transport};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The user part of our Record-Route URIs starts with this; the rest is hex.
pub const PREFIX: &str = "sf";
/// Bytes of HMAC kept: forging one takes 2^64 tries.
const MAC_LEN: usize = 8;

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
        let mut raw = Vec::with_capacity(48);
        for leg in legs {
            leg.encode(&mut raw);
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
        let hex = text.strip_prefix(PREFIX.as_bytes())?;
        if hex.len() % 2 != 0 || hex.len() > 200 {
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
            let (leg, r) = Leg::decode(rest)?;
            legs.push(leg);
            rest = r;
        }
        Some(legs)
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
}
