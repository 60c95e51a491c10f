//! The UDP receive loop: one datagram is one message (RFC 3261 18.1.1, 18.3).

use super::{Inbound, Source, Transport, Transports};
use crate::ops::shutdown::Shutdown;
use bytes::Bytes;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// Receives until shutdown. Several of these may share one socket, one per worker thread.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    transports: Arc<Transports>,
    inbound: Arc<dyn Inbound>,
    mut shutdown: Shutdown,
) {
    let Ok(local) = socket.local_addr() else { return };
    // One datagram at most 64 KiB; larger ones are truncated by the kernel and then refused
    // by the parser's size limit.
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.wait() => return,
        };
        let (n, remote) = match received {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on Linux; they concern another peer.
            Err(e) => {
                tracing::trace!(error = %e, "udp receive error");
                continue;
            }
        };
        let data = &buf[..n];
        // Keep-alives (RFC 5626 4.4.1 uses STUN over UDP; many clients send bare CRLFs).
        if data.iter().all(|&c| c == b'\r' || c == b'\n' || c == 0) {
            metrics::counter!(crate::ops::metrics::KEEPALIVES, "kind" => "udp_crlf").increment(1);
            continue;
        }
        let source = Source { transport: Transport::Udp, remote, local, flow: None };
        transports.receive(Bytes::copy_from_slice(data), source, inbound.as_ref());
    }
}
