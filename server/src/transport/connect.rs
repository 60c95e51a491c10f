//! Connections this server opens itself: to the other members of its pool, and over TLS to
//! partners' federation edges; never to a client (RFC 5626: clients open every flow). Each is served like an accepted connection, so what a
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
        self.serve(tcp, (flow, queue), Transport::Tcp, remote, local);
        tracing::debug!(%remote, flow, "connected to pool member");
        Some((flow, true))
    }

    /// The open TLS connection to a partner's edge at `remote` whose certificate names
    /// `domain`, connecting first (handshake included, within `within`) if there is none. The
    /// edge's certificate must chain to `tls`'s roots and name `domain` itself, not the host
    /// the SRV record pointed to (RFC 5922 7.2); it is kept on the flow, so that what the
    /// partner sends back on this connection is known to come from `domain`. Requests we send
    /// on it name `local` (our TLS listener) in their Via.
    pub async fn tls_flow_to(
        &self,
        remote: SocketAddr,
        domain: &str,
        tls: &tokio_rustls::TlsConnector,
        local: SocketAddr,
        within: Duration,
    ) -> Result<FlowId, ConnectError> {
        let names_domain = |flow| self.transports.flows.certificate(flow).is_some_and(|ids| ids.names(domain));
        if let Some(flow) = self.transports.flows.find(Transport::Tls, remote).filter(|&f| names_domain(f)) {
            return Ok(flow);
        }
        // One attempt at a time per edge: the others wait for its outcome and share it.
        let lock = self.connecting.entry(remote).or_default().clone();
        let result = {
            let _one = lock.lock().await;
            match self.transports.flows.find(Transport::Tls, remote).filter(|&f| names_domain(f)) {
                Some(flow) => Ok(flow),
                None => self.open_tls(remote, domain, tls, local, within).await,
            }
        };
        // The edge's entry goes once nobody waits on it: DNS may name any number of edges.
        drop(lock);
        self.connecting.remove_if(&remote, |_, l| Arc::strong_count(l) == 1);
        result
    }

    /// Opens the TLS connection of [`Connector::tls_flow_to`].
    async fn open_tls(
        &self,
        remote: SocketAddr,
        domain: &str,
        tls: &tokio_rustls::TlsConnector,
        local: SocketAddr,
        within: Duration,
    ) -> Result<FlowId, ConnectError> {
        let name =
            rustls::pki_types::ServerName::try_from(domain.to_string()).map_err(|_| ConnectError::Certificate)?;
        let connecting = async {
            let tcp = TcpStream::connect(remote).await.map_err(|_| ConnectError::Unreachable)?;
            let _ = tcp.set_nodelay(true);
            tls.connect(name, tcp).await.map_err(|e| {
                match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(why @ rustls::Error::InvalidCertificate(_)) => {
                        tracing::info!(%remote, domain, error = %why, "partner edge's certificate refused");
                        ConnectError::Certificate
                    }
                    _ => ConnectError::Unreachable,
                }
            })
        };
        let tls = match tokio::time::timeout(within, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let ids =
            tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| super::tls::Identities::of(c.as_ref()));
        // The handshake checked the chain and a DNS name the way the Web does (wildcards too);
        // RFC 5922 asks for the domain among the certificate's SIP identities, exactly.
        let Some(ids) = ids.filter(|ids| ids.names(domain)) else {
            tracing::info!(%remote, domain, "partner edge's certificate does not identify the domain (RFC 5922 7)");
            return Err(ConnectError::Certificate);
        };
        let (flow, queue) = self.transports.flows.open(Transport::Tls, remote, local, self.settings.queue);
        self.transports.flows.set_certificate(flow, ids);
        // We chose to open it, to the edge of a domain the policy federates with.
        self.transports.flows.mark_partner(flow);
        // Boxed: a TLS session is several kilobytes, and the task need not carry it inline.
        self.serve(Box::new(tls), (flow, queue), Transport::Tls, remote, local);
        tracing::debug!(%remote, domain, flow, "connected to partner edge");
        Ok(flow)
    }
}

impl Connector {
    /// Serves a connection this server opened, as an accepted one is served.
    fn serve<S>(
        &self,
        stream: S,
        flow: (FlowId, super::flows::Queue),
        transport: Transport,
        remote: SocketAddr,
        local: SocketAddr,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        tokio::spawn(stream::serve(
            stream,
            flow,
            transport,
            remote,
            local,
            self.transports.clone(),
            self.inbound.clone(),
            self.settings.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// Why a partner's edge could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// Refused, reset, or no route.
    Unreachable,
    /// No connection within the time allowed.
    Timeout,
    /// Its certificate is not one of the trusted authorities', or does not name the domain.
    Certificate,
}

impl ConnectError {
    pub fn label(self) -> &'static str {
        match self {
            ConnectError::Unreachable => "unreachable",
            ConnectError::Timeout => "timeout",
            ConnectError::Certificate => "certificate",
        }
    }
}
