//! UDP: one datagram is one message (RFC 3261 18.1.1, 18.3). Each socket is read by a few
//! dedicated threads blocked in `recvfrom`, like Kamailio's UDP workers: one system call per
//! datagram, no readiness polling, no task wake-ups. A request is handled on the thread that
//! read it; the rare one that must wait (for the store) moves to the async runtime.

use super::{Inbound, Source, Transport, Transports};
use crate::ops::shutdown::Shutdown;
use bytes::Bytes;
use std::net::UdpSocket;
use std::sync::Arc;

/// Starts `threads` receivers on `socket`; they end within the socket's read timeout after
/// shutdown.
pub fn start_receivers(
    socket: Arc<UdpSocket>,
    threads: usize,
    transports: Arc<Transports>,
    inbound: Arc<dyn Inbound>,
    shutdown: Shutdown,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let local = socket.local_addr()?;
    (0..threads.max(1))
        .map(|i| {
            let (socket, transports, inbound, shutdown, runtime) =
                (socket.clone(), transports.clone(), inbound.clone(), shutdown.clone(), runtime.clone());
            std::thread::Builder::new().name(format!("sip-udp-{i}")).spawn(move || {
                // Handling may start timers and spawn tasks: it needs the runtime's context.
                let _context = runtime.enter();
                receive(&socket, local, &transports, inbound.as_ref(), &shutdown);
            })
        })
        .collect()
}

fn receive(
    socket: &UdpSocket,
    local: std::net::SocketAddr,
    transports: &Transports,
    inbound: &dyn Inbound,
    shutdown: &Shutdown,
) {
    // One datagram at most 64 KiB; larger ones are truncated by the kernel and then refused by
    // the parser's size limit.
    let mut buf = vec![0u8; 65_536];
    while !shutdown.is_triggered() {
        let (n, remote) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            // The read timeout (to check for shutdown), or an ICMP error from an earlier send,
            // which concerns another peer.
            Err(_) => continue,
        };
        let data = &buf[..n];
        // Keep-alives (RFC 5626 4.4.1 uses STUN over UDP; many clients send bare CRLFs).
        if data.iter().all(|&c| c == b'\r' || c == b'\n' || c == 0) {
            metrics::counter!(crate::ops::metrics::KEEPALIVES, "kind" => "udp_crlf").increment(1);
            continue;
        }
        let source = Source { transport: Transport::Udp, remote, local, flow: None };
        // A banned source's datagrams are dropped unanswered (counted in the flood metrics).
        let _ = transports.receive(Bytes::copy_from_slice(data), source, inbound);
    }
}
