//! RFC 3261 18.2.1 and RFC 3581: the server records where a request really came from in its
//! top Via, so that responses find their way back through NATs.

use sipfront_proto::{HeaderName, Host, Message, Via};
use std::net::{IpAddr, SocketAddr};

/// Adds `received` when the sent-by host differs from the packet's source address, and fills
/// in `rport` when the client asked for it (in which case `received` is always added).
pub fn stamp(msg: &mut Message, remote: SocketAddr) {
    let Some(top) = msg.list(HeaderName::Via).next() else { return };
    let Ok(via) = Via::parse(top) else { return };
    let wants_rport = matches!(via.rport(), Some(None));
    let same_host = match via.host {
        Host::V4(ip) => IpAddr::V4(ip) == remote.ip(),
        Host::V6(ip) => IpAddr::V6(ip) == remote.ip(),
        Host::Name(_) => false,
    };
    if same_host && !wants_rport {
        return;
    }
    let mut value = Vec::with_capacity(top.len() + 40);
    let (head, params) = sipfront_proto::scan::split_params(top);
    value.extend_from_slice(head);
    for (name, v) in params.iter() {
        if name.eq_ignore_ascii_case(b"received") || (wants_rport && name.eq_ignore_ascii_case(b"rport")) {
            continue;
        }
        value.push(b';');
        value.extend_from_slice(name);
        if let Some(v) = v {
            value.push(b'=');
            value.extend_from_slice(v);
        }
    }
    value.extend_from_slice(format!(";received={}", remote.ip()).as_bytes());
    if wants_rport {
        value.extend_from_slice(format!(";rport={}", remote.port()).as_bytes());
    }
    msg.pop_first_element(HeaderName::Via);
    msg.prepend_header(HeaderName::Via, value);
}

/// Where a response to a request with this top Via goes over UDP (RFC 3261 18.2.2, RFC 3581
/// 4): the source port if rport was asked for, otherwise the sent-by port, always at the
/// address the request came from (we never resolve a sent-by name).
pub fn udp_response_addr(msg: &Message, remote: SocketAddr) -> SocketAddr {
    match msg.top_via() {
        Some(v) if v.rport().is_none() => SocketAddr::new(remote.ip(), v.port.unwrap_or(5060)),
        _ => remote,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(via: &str) -> Message {
        let text = format!(
            "OPTIONS sip:x@example.test SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:x@example.test>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text), &Default::default()).unwrap()
    }

    #[test]
    fn rport_and_received() {
        let mut m = req("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport");
        stamp(&mut m, "192.0.2.7:40000".parse().unwrap());
        let v = m.top_via().unwrap();
        assert_eq!(v.received(), Some(&b"192.0.2.7"[..]));
        assert_eq!(v.rport(), Some(Some(&b"40000"[..])));
        assert_eq!(v.branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(udp_response_addr(&m, "192.0.2.7:40000".parse().unwrap()), "192.0.2.7:40000".parse().unwrap());
    }

    #[test]
    fn same_host_is_left_alone() {
        let mut m = req("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK2");
        stamp(&mut m, "127.0.0.1:5099".parse().unwrap());
        assert_eq!(m.header(HeaderName::Via), Some(&b"SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK2"[..]));
        assert_eq!(udp_response_addr(&m, "127.0.0.1:6000".parse().unwrap()), "127.0.0.1:5099".parse().unwrap());
    }

    #[test]
    fn name_host_gets_received() {
        let mut m = req("SIP/2.0/TCP client.example.test;branch=z9hG4bK3");
        stamp(&mut m, "[2001:db8::5]:5060".parse().unwrap());
        assert_eq!(m.top_via().unwrap().received(), Some(&b"2001:db8::5"[..]));
    }
}
