//! The systemd notification protocol (`sd_notify`, for `Type=notify` units): a datagram of
//! `KEY=value` lines to the Unix socket `$NOTIFY_SOCKET` names, `@` marking the abstract
//! namespace. Without that variable (not started by systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`) to systemd; whether it went out.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let Ok(socket) = UnixDatagram::unbound() else { return false };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = &sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
    sent.is_ok()
}
