//! Connections this server opens itself: to the other members of its pool, never to a client
//! (RFC 5626: clients open every flow). Each is served like an accepted connection, so what a
//! peer sends on it (responses, and its own requests) is received like anything else, and it
//! is found by the peer's address when something is sent there.

use super::flows::FlowId;
use super::stream::{self, StreamSettings};
use super::{Inbound, Transport, Transports};
use crate::ops::shutdown::Shutdown;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

pub struct Connector {
    transports: Arc<Transports>,
    inbound: Arc<dyn Inbound>,
    settings: Arc<StreamSettings>,
    shutdown: Shutdown,
    /// One connection attempt at a time per peer: the others wait for its outcome.
    connecting: DashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>,
    /// The address this server is known by to its peers: what a request received on a
    /// connection it opened counts as its local address (the socket's own is an ephemeral port
    /// that nothing can reach, and would end up in Record-Route and Via).
    advertised: std::sync::OnceLock<SocketAddr>,
}

impl Connector {
    pub fn new(
        transports: Arc<Transports>,
        inbound: Arc<dyn Inbound>,
        settings: Arc<StreamSettings>,
        shutdown: Shutdown,
    ) -> Connector {
        Connector {
            transports,
            inbound,
            settings,
            shutdown,
            connecting: DashMap::new(),
            advertised: std::sync::OnceLock::new(),
        }
    }

    /// Sets the address peers know this server by (once).
    pub fn advertise(&self, addr: SocketAddr) {
        let _ = self.advertised.set(addr);
    }

    /// The open TCP connection to `remote`, connecting first (within `within`) if there is
    /// none, and whether it is new; `None` if it cannot be reached.
    pub async fn flow_to(&self, remote: SocketAddr, within: Duration) -> Option<(FlowId, bool)> {
        if let Some(flow) = self.transports.flows.find(Transport::Tcp, remote) {
            return Some((flow, false));
        }
        let lock = self.connecting.entry(remote).or_default().clone();
        let _one = lock.lock().await;
        if let Some(flow) = self.transports.flows.find(Transport::Tcp, remote) {
            return Some((flow, false));
        }
        let tcp = match tokio::time::timeout(within, TcpStream::connect(remote)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "cannot connect to pool member");
                return None;
            }
            Err(_) => {
                tracing::debug!(%remote, "connecting to pool member timed out");
                return None;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local = match self.advertised.get() {
            Some(a) => *a,
            None => tcp.local_addr().ok()?,
        };
        let (flow, queue) = self.transports.flows.open(Transport::Tcp, remote, local, self.settings.queue);
        // We chose to open it, to a peer we meant to reach.
        self.transports.flows.mark_authenticated(flow);
        tokio::spawn(stream::serve(
            tcp,
            (flow, queue),
            Transport::Tcp,
            remote,
            local,
            self.transports.clone(),
            self.inbound.clone(),
            self.settings.clone(),
            self.shutdown.clone(),
        ));
        tracing::debug!(%remote, flow, "connected to pool member");
        Some((flow, true))
    }
}
