//! Binding listeners. IPv6 sockets are v6-only, so that `0.0.0.0:5060` and `[::]:5060` can be
//! bound side by side; UDP sockets get large buffers so that bursts are absorbed by the kernel
//! rather than dropped.

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

const UDP_BUFFER: usize = 4 << 20;

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A blocking UDP socket: its receive threads wait in `recvfrom` (one system call per
/// datagram, no readiness polling); the read timeout lets them notice a shutdown.
pub fn udp(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP).with_context(|| format!("UDP socket for {addr}"))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.bind(&addr.into()).with_context(|| format!("binding UDP {addr}"))?;
    s.set_nonblocking(false).with_context(|| format!("UDP {addr}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_millis(200))).with_context(|| format!("UDP {addr}"))?;
    Ok(s.into())
}

pub fn tcp(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP).with_context(|| format!("TCP socket for {addr}"))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into()).with_context(|| format!("binding TCP {addr}"))?;
    s.listen(4096).with_context(|| format!("listening on TCP {addr}"))?;
    tokio::net::TcpListener::from_std(s.into()).with_context(|| format!("TCP {addr}"))
}

/// Whether a bind error only says this machine has no IPv6 (then a default IPv6 address is
/// skipped with a warning instead of stopping the server).
pub fn is_no_ipv6(addr: SocketAddr, err: &anyhow::Error) -> bool {
    addr.is_ipv6()
        && err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                // EAFNOSUPPORT: the kernel has no IPv6 at all.
                io.raw_os_error() == Some(97) || io.kind() == std::io::ErrorKind::AddrNotAvailable
            })
        })
}
