//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that is not transparent
//! opens each connection to a member with a header naming the client it carries. Without it,
//! every client of a pool seems to come from the load balancer's address, and what is kept per
//! address (the per-address connection cap, the authentication lockout of an address, Via
//! `received`, the logs) would treat all of them as one client: a few wrong passwords would
//! lock everyone out.
//!
//! Only connections from `transport.proxy_protocol_from` are read for a header, so a client
//! cannot claim another address. From those, a header is taken when there is one (HAProxy's
//! health checks send a LOCAL one, which names no client) and a connection without one is
//! served as coming from its own address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Version 2's signature: a byte string no text protocol starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's longest line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest version 2 header taken: the addresses and a few TLVs (HAProxy sends at most a
/// few dozen bytes of them unless told to send certificates).
const V2_MAX_PAYLOAD: usize = 512;
/// How long a header may take to arrive once the connection is open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a PROXY header: the connection's own bytes start at once.
    Absent,
    /// Maybe one, but more bytes are needed to tell.
    Incomplete,
    /// A header of `len` bytes; the client it names (`None`: a LOCAL or UNKNOWN header, such
    /// as a health check's, or an address family other than TCP over IPv4 or IPv6).
    Header { len: usize, client: Option<SocketAddr> },
    /// A header that breaks the specification: the connection is closed.
    Invalid(&'static str),
}

/// Reads what `buf` (the first bytes received) holds.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < V2_SIGNATURE.len() && V2_SIGNATURE.starts_with(buf) && !buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    const V1: &[u8] = b"PROXY ";
    if buf.len() < V1.len() && V1.starts_with(buf) && !buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf.starts_with(V1) {
        return parse_v1(buf);
    }
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    Parsed::Absent
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let Some(fixed) = buf.get(..16) else { return Parsed::Incomplete };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("version");
    }
    let payload = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Parsed::Invalid("too long");
    }
    let len = 16 + payload;
    let client = match command {
        // LOCAL: the proxy's own connection (a health check); the addresses are to be ignored.
        0 => None,
        1 => {
            let (family, protocol) = (fixed[13] >> 4, fixed[13] & 0x0f);
            let needed = match (family, protocol) {
                (1, 1) => 12,
                (2, 1) => 36,
                // UNSPEC, UNIX, datagrams: nothing a SIP stream can use; the real endpoints stand.
                _ => 0,
            };
            if payload < needed {
                return Parsed::Invalid("addresses");
            }
            if needed == 0 {
                None
            } else {
                let Some(a) = buf.get(16..16 + needed) else { return Parsed::Incomplete };
                Some(if family == 1 {
                    let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                    SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([a[8], a[9]]))
                } else {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[..16]);
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([a[32], a[33]]))
                })
            }
        }
        _ => return Parsed::Invalid("command"),
    };
    Parsed::Header { len, client }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Parsed::Invalid("no CRLF") } else { Parsed::Incomplete };
    };
    let Ok(line) = std::str::from_utf8(&window[..end]) else { return Parsed::Invalid("not text") };
    let fields: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Header { len, client: None },
        ["PROXY", family @ ("TCP4" | "TCP6"), source, _destination, port, _destination_port] => {
            let (Ok(ip), Ok(port)) = (source.parse::<IpAddr>(), port.parse::<u16>()) else {
                return Parsed::Invalid("address");
            };
            if ip.is_ipv4() != (*family == "TCP4") {
                return Parsed::Invalid("family");
            }
            Parsed::Header { len, client: Some(SocketAddr::new(ip, port)) }
        }
        _ => Parsed::Invalid("line"),
    }
}

/// Takes the PROXY header off `tcp`, if it starts with one: the client it names, if any.
/// Nothing else is consumed; an invalid or late header is an error (close the connection).
pub async fn take_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, &'static str> {
    let mut buf = [0u8; 16 + V2_MAX_PAYLOAD];
    let taken = tokio::time::timeout(HEADER_TIMEOUT, async {
        loop {
            let n = tcp.peek(&mut buf).await.map_err(|_| "read")?;
            if n == 0 {
                return Err("closed");
            }
            match parse(&buf[..n]) {
                Parsed::Absent => return Ok(None),
                Parsed::Invalid(why) => return Err(why),
                Parsed::Header { len, client } => {
                    let mut header = vec![0u8; len];
                    tcp.read_exact(&mut header).await.map_err(|_| "read")?;
                    return Ok(client);
                }
                // The rest is on its way (a proxy writes its header at once, so this is rare):
                // peeking again at once would find the same bytes.
                Parsed::Incomplete => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    taken.unwrap_or(Err("timeout"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn version_2_names_the_client_over_ipv4_and_ipv6() {
        let mut a = vec![192, 0, 2, 7, 10, 0, 0, 1];
        a.extend_from_slice(&40000u16.to_be_bytes());
        a.extend_from_slice(&5060u16.to_be_bytes());
        let h = v2(1, 0x11, &a, &[0x04, 0, 1, 0]);
        let mut with_sip = h.clone();
        with_sip.extend_from_slice(b"REGISTER sip:example.test SIP/2.0\r\n");
        let client = Some("192.0.2.7:40000".parse().unwrap());
        assert_eq!(parse(&with_sip), Parsed::Header { len: h.len(), client });

        let mut a = "2001:db8::5".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        a.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        a.extend_from_slice(&5555u16.to_be_bytes());
        a.extend_from_slice(&5061u16.to_be_bytes());
        let h = v2(1, 0x21, &a, &[]);
        assert_eq!(parse(&h), Parsed::Header { len: 52, client: Some("[2001:db8::5]:5555".parse().unwrap()) });
    }

    #[test]
    fn a_health_check_and_other_families_name_no_client() {
        assert_eq!(parse(&v2(0, 0x00, &[], &[])), Parsed::Header { len: 16, client: None }, "LOCAL");
        assert_eq!(parse(&v2(1, 0x31, &[0; 216], &[])), Parsed::Header { len: 232, client: None }, "UNIX");
        assert_eq!(parse(b"PROXY UNKNOWN\r\nOPTIONS"), Parsed::Header { len: 15, client: None });
    }

    #[test]
    fn version_1_names_the_client() {
        let line = b"PROXY TCP4 198.51.100.22 10.0.0.1 35646 5060\r\nOPTIONS sip:x SIP/2.0\r\n";
        assert_eq!(parse(line), Parsed::Header { len: 46, client: Some("198.51.100.22:35646".parse().unwrap()) });
        let line = b"PROXY TCP6 2001:db8::1 ::1 4000 5060\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header { len: line.len(), client: Some("[2001:db8::1]:4000".parse().unwrap()) }
        );
    }

    #[test]
    fn sip_tls_and_keepalives_are_not_headers() {
        assert_eq!(parse(b"REGISTER sip:example.test SIP/2.0\r\n"), Parsed::Absent);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x02, 0x00]), Parsed::Absent, "a TLS ClientHello");
        assert_eq!(parse(b"\r\n\r\nOPTIONS"), Parsed::Absent, "a keep-alive, then SIP");
        assert_eq!(parse(b"PROX"), Parsed::Incomplete);
        assert_eq!(parse(b"\r\n\r\n"), Parsed::Incomplete, "a keep-alive alone cannot be told yet");
        assert_eq!(parse(&v2(1, 0x11, &[1; 12], &[])[..20]), Parsed::Incomplete);
    }

    #[test]
    fn broken_headers_are_refused() {
        assert_eq!(parse(b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n"), Parsed::Invalid("address"));
        assert_eq!(parse(b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"), Parsed::Invalid("family"));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 10.0.0.1 99999 2\r\n"), Parsed::Invalid("address"));
        assert_eq!(parse(b"PROXY SCTP\r\n"), Parsed::Invalid("line"));
        assert_eq!(parse(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()), Parsed::Invalid("no CRLF"));
        assert_eq!(parse(&v2(1, 0x11, &[1; 4], &[])), Parsed::Invalid("addresses"));
        assert_eq!(parse(&v2(7, 0x11, &[1; 12], &[])), Parsed::Invalid("command"));
        let mut long = v2(1, 0x11, &[1; 12], &[]);
        long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(parse(&long), Parsed::Invalid("too long"));
        let mut v3 = v2(1, 0x11, &[1; 12], &[]);
        v3[12] = 0x31;
        assert_eq!(parse(&v3), Parsed::Invalid("version"));
    }
}
