//! Sockets: UDP, TCP and TLS listeners, the flows (connections) they carry, and how to send a
//! message to a [`Target`]. Transport frames bytes and hands parsed messages up through
//! [`Inbound`]; it never decides what a request means.

pub mod accept;
pub mod connect;
pub mod flood;
pub mod flows;
pub mod listen;
pub mod proxy_protocol;
pub mod stream;
pub mod tls;
pub mod udp;
mod via;

pub use via::udp_response_addr;

use crate::ops::metrics as m;
use bytes::Bytes;
use flows::{FlowId, Flows};
use sipfront_proto::{ErrorKind, Limits, Message};
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// As written in a Via (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// As a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    pub fn is_reliable(self) -> bool {
        self != Transport::Udp
    }
}

/// Where a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The connection it came on (TCP, TLS).
    pub flow: Option<FlowId>,
}

/// Where to send a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub remote: SocketAddr,
    /// For TCP and TLS: the connection to use (RFC 3261 18.2.2, RFC 5626 flows). Without one,
    /// any open connection to `remote` is used.
    pub flow: Option<FlowId>,
    /// For UDP: the local address to send from (the socket the request came in on).
    pub local: Option<SocketAddr>,
}

impl Source {
    /// Back where it came from, on the same flow or socket.
    pub fn reply_target(&self) -> Target {
        Target { transport: self.transport, remote: self.remote, flow: self.flow, local: Some(self.local) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No open connection to the target; we do not open one to a client (RFC 5626: clients
    /// are reached over the flow they registered on).
    NoFlow,
    /// The connection's queue is full: the peer is not reading.
    QueueFull,
    /// The socket refused it (buffer full, unreachable).
    Socket,
    /// No listener of that address family or transport.
    NoSocket,
}

impl SendError {
    pub fn label(self) -> &'static str {
        match self {
            SendError::NoFlow => "no_flow",
            SendError::QueueFull => "queue_full",
            SendError::Socket => "socket",
            SendError::NoSocket => "no_socket",
        }
    }
}

/// Receives parsed messages from every transport.
pub trait Inbound: Send + Sync + 'static {
    fn on_message(&self, msg: Message, source: Source);

    /// A TCP or TLS connection closed; `identity` is the user it last registered for.
    fn on_flow_closed(&self, _flow: FlowId, _identity: Option<Arc<str>>) {}
}

/// `MSG_DONTWAIT` from <sys/socket.h> on Linux.
const MSG_DONTWAIT: i32 = 0x40;

/// The sending side of all listeners, shared by every layer above.
pub struct Transports {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    pub flows: Flows,
    pub limits: Limits,
    /// Per-source flood protection: every message received is counted here first.
    pub flood: flood::FloodGuard,
}

impl Transports {
    pub fn new(udp: Vec<Arc<UdpSocket>>, limits: Limits, flood: flood::FloodGuard) -> Transports {
        let udp = udp.into_iter().filter_map(|s| Some((s.local_addr().ok()?, s))).collect();
        Transports { udp, flows: Flows::default(), limits, flood }
    }

    /// Sends without waiting: UDP goes straight to the socket, streams to their connection's
    /// writer queue.
    pub fn send(&self, target: &Target, data: Bytes) -> Result<(), SendError> {
        let result = match target.transport {
            Transport::Udp => self.send_udp(target, &data),
            Transport::Tcp | Transport::Tls => {
                let flow = target
                    .flow
                    .filter(|&f| self.flows.is_open(f))
                    .or_else(|| self.flows.find(target.transport, target.remote));
                match flow {
                    Some(f) => self.flows.send(f, data),
                    None => Err(SendError::NoFlow),
                }
            }
        };
        if let Err(e) = result {
            metrics::counter!(m::SEND_FAILURES, "transport" => target.transport.label(), "reason" => e.label())
                .increment(1);
            tracing::debug!(remote = %target.remote, transport = target.transport.label(), reason = e.label(), "send failed");
        }
        result
    }

    /// The UDP socket a datagram to `remote` leaves from when the target names none: what a
    /// Via of ours must name so that the responses come back to it.
    pub fn udp_local(&self, remote: SocketAddr) -> Option<SocketAddr> {
        self.udp.iter().find(|(a, _)| a.is_ipv4() == remote.is_ipv4()).map(|(a, _)| *a)
    }

    fn send_udp(&self, target: &Target, data: &[u8]) -> Result<(), SendError> {
        let socket = target
            .local
            .and_then(|l| self.udp.iter().find(|(a, _)| *a == l))
            .or_else(|| self.udp.iter().find(|(a, _)| a.is_ipv4() == target.remote.is_ipv4()))
            .map(|(_, s)| s)
            .ok_or(SendError::NoSocket)?;
        // MSG_DONTWAIT: a full socket buffer drops the datagram, which UDP retransmission (RFC
        // 3261 17) recovers from; waiting would stall a receive thread.
        socket2::SockRef::from(socket.as_ref())
            .send_to_with_flags(data, &target.remote.into(), MSG_DONTWAIT)
            .map(|_| ())
            .map_err(|_| SendError::Socket)
    }

    /// Takes one message from `source`, counted against its flood limit: `false` when the
    /// source is banned (the message is dropped; a connection should close).
    pub fn receive(&self, bytes: Bytes, source: Source, inbound: &dyn Inbound) -> bool {
        if !self.flood.admit(source.remote.ip()) {
            return false;
        }
        self.take(bytes, source, inbound);
        true
    }

    /// Takes one message from a partner's federation edge (its certificate verified): not
    /// counted against its address's flood limit, since one edge carries a whole organisation's
    /// traffic; federation limits it per partner domain instead.
    pub fn receive_from_partner(&self, bytes: Bytes, source: Source, inbound: &dyn Inbound) {
        self.take(bytes, source, inbound);
    }

    /// Parses what a transport received and hands it up; malformed messages are counted,
    /// logged and, where they can be, answered (RFC 3261 8.2: a 400-class response).
    fn take(&self, bytes: Bytes, source: Source, inbound: &dyn Inbound) {
        // A second handle on the same bytes (no copy), to answer a message whose body framing
        // is wrong from its header block alone.
        let head = bytes.clone();
        match Message::parse(bytes, &self.limits) {
            Ok(mut msg) => {
                if msg.is_request() {
                    via::stamp(&mut msg, source.remote);
                }
                inbound.on_message(msg, source);
            }
            Err(err) => {
                metrics::counter!(m::PARSE_ERRORS, "kind" => err.kind.label(), "transport" => source.transport.label())
                    .increment(1);
                tracing::debug!(remote = %source.remote, transport = source.transport.label(), error = %err, "malformed message");
                let framing = matches!(
                    err.kind,
                    ErrorKind::BodyTruncated { .. }
                        | ErrorKind::BodyTooLarge { .. }
                        | ErrorKind::BadHeader(sipfront_proto::HeaderName::ContentLength)
                );
                match err.message() {
                    Some(msg) => self.answer_malformed(msg, err.status(), &err.kind.to_string(), source),
                    None if framing => {
                        if let Ok(msg) = Message::parse_head(head, &self.limits) {
                            self.answer_malformed(&msg, err.status(), &err.kind.to_string(), source);
                        }
                    }
                    None => {
                        if let Some(msg) = self.head_of_refused(&head, &err.kind) {
                            self.answer_malformed(&msg, err.status(), &err.kind.to_string(), source);
                        }
                    }
                }
            }
        }
    }

    /// The header block of a message refused before its headers were read, for the errors
    /// that still have an answer: the 400 of the header limits (below), RFC 3261 21.5.11 513
    /// for a datagram past the size limit (read without the limit: the kernel has capped it at
    /// 64 KiB already), and 21.5.7 505 for a SIP version other than 2.0 (read as if it were
    /// 2.0, only to copy Via, From, To, Call-ID and CSeq into the 505; nothing else of it is
    /// acted on).
    fn head_of_refused(&self, bytes: &Bytes, kind: &ErrorKind) -> Option<Message> {
        match kind {
            ErrorKind::MessageTooLarge { .. } => {
                let limits = Limits { max_message_size: bytes.len(), ..self.limits.clone() };
                Message::parse_head(bytes.clone(), &limits).ok()
            }
            // RFC 3261 21.4.1: an over-long header field or too many of them is a 400 (the
            // README's limits promise it). The message is within max_message_size, which
            // bounds both; it is read without them only to copy what a 400 copies.
            ErrorKind::HeaderTooLong { .. } | ErrorKind::TooManyHeaders { .. } => {
                let limits = Limits { max_header_len: bytes.len(), max_headers: bytes.len(), ..self.limits.clone() };
                Message::parse_head(bytes.clone(), &limits).ok()
            }
            ErrorKind::UnsupportedVersion => {
                let end = bytes.iter().position(|&c| c == b'\n')?;
                let line = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
                let version = line.iter().rposition(|&c| c == b' ')? + 1;
                let mut as_2_0 = Vec::with_capacity(bytes.len());
                as_2_0.extend_from_slice(&line[..version]);
                as_2_0.extend_from_slice(b"SIP/2.0\r");
                as_2_0.extend_from_slice(&bytes[end..]);
                Message::parse_head(Bytes::from(as_2_0), &self.limits).ok()
            }
            _ => None,
        }
    }

    /// Answers a request that could not be accepted with `code` and `reason`, back to where it
    /// came from. Responses and ACKs are never answered.
    pub fn answer_malformed(&self, msg: &Message, code: u16, reason: &str, source: Source) {
        if !msg.is_request() || msg.method() == Some(&sipfront_proto::Method::Ack) || msg.top_via().is_none() {
            return;
        }
        let mut resp = msg.response_to(code);
        resp.set_reason(reason.to_string());
        resp.set_to_tag(&sipfront_proto::reply::new_tag());
        resp.push_header(sipfront_proto::HeaderName::ContentLength, "0");
        metrics::counter!(m::RESPONSES, "code" => m::code_label(code)).increment(1);
        let _ = self.send(&source.reply_target(), resp.to_bytes());
    }
}
