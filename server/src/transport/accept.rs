//! Accepting TCP and TLS connections: the client a load balancer names in a PROXY header
//! ([`proxy_protocol`]), admission against the connection caps (in all, and per source IP, so
//! that one host cannot take every slot), the TLS handshake within its timeout, and a
//! [`stream::serve`] task for each connection admitted.

use super::stream::{self, StreamSettings};
use super::{proxy_protocol, Inbound, Transport, Transports};
use crate::ops::metrics as m;
use crate::ops::shutdown::Shutdown;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Connection caps: in all, and per source IP, so that one host cannot take every slot.
pub struct Admission {
    max: usize,
    per_ip: usize,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(max: usize, per_ip: usize) -> Admission {
        metrics::gauge!(m::CONNECTIONS_MAX).set(max as f64);
        Admission { max, per_ip, open: AtomicUsize::new(0), by_ip: Mutex::new(HashMap::new()) }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, &'static str> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.open.load(Ordering::Relaxed) >= self.max {
            return Err("max_connections");
        }
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err("max_connections_per_ip");
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted { admission: self.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut by_ip = self.admission.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every accepted connection shares.
#[derive(Clone)]
pub struct Acceptor {
    pub transports: Arc<Transports>,
    pub inbound: Arc<dyn Inbound>,
    pub settings: Arc<StreamSettings>,
    pub admission: Arc<Admission>,
    /// Load balancers whose connections may open with a PROXY header naming the client
    /// (`transport.proxy_protocol_from`).
    pub proxies: Arc<[IpAddr]>,
    pub shutdown: Shutdown,
}

impl Acceptor {
    /// Accepts on `listener` (TLS when `tls` is given, each handshake within `handshake`) until
    /// shutdown.
    pub async fn run(self, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, handshake: Duration) {
        let Ok(local) = listener.local_addr() else { return };
        let mut shutdown = self.shutdown.clone();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait() => return,
            };
            let (mut tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (this, tls) = (self.clone(), tls.clone());
            if !self.proxies.contains(&remote.ip()) {
                // Refused at once, before a task is spent on it.
                let Some(admitted) = self.admit(remote) else { continue };
                tokio::spawn(this.serve(tcp, remote, local, admitted, tls, handshake));
                continue;
            }
            tokio::spawn(async move {
                // From a load balancer: the client is the one its header names, and the caps
                // apply to that client.
                let remote = match proxy_protocol::take_header(&mut tcp).await {
                    Ok(client) => client.unwrap_or(remote),
                    Err(why) => {
                        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "proxy_header").increment(1);
                        tracing::debug!(%remote, why, "bad PROXY header; connection closed");
                        return;
                    }
                };
                let Some(admitted) = this.admit(remote) else { return };
                this.serve(tcp, remote, local, admitted, tls, handshake).await
            });
        }
    }

    fn admit(&self, remote: SocketAddr) -> Option<Admitted> {
        if self.transports.flood.banned(remote.ip()) {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "flood").increment(1);
            return None;
        }
        self.admission
            .admit(remote.ip())
            .map_err(|reason| {
                metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => reason).increment(1);
                tracing::debug!(%remote, reason, "connection refused");
            })
            .ok()
    }

    /// Serves one admitted connection, after its TLS handshake if it is TLS.
    async fn serve(
        self,
        tcp: TcpStream,
        remote: SocketAddr,
        local: SocketAddr,
        _admitted: Admitted,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handshake: Duration,
    ) {
        let transport = if tls.is_some() { Transport::Tls } else { Transport::Tcp };
        let Acceptor { transports, inbound, settings, shutdown, .. } = self;
        let open = |transports: &Transports| transports.flows.open(transport, remote, local, settings.queue);
        match tls {
            None => {
                let flow = open(&transports);
                stream::serve(tcp, flow, transport, remote, local, transports, inbound, settings, shutdown).await
            }
            // Boxed: the handshake's state (a few kilobytes) is freed once it is done, instead
            // of sizing every connection's task, TCP ones too, for the rest of its life.
            Some(tls) => match Box::pin(async move {
                tokio::time::timeout(handshake, tls.accept(tcp)).await.map(|done| done.map(Box::new))
            })
            .await
            {
                Ok(Ok(s)) => {
                    let flow = open(&transports);
                    // A client certificate was verified against federation's trust roots in
                    // the handshake: the partner it names is known by it from now on.
                    if let Some(cert) = s.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        transports.flows.set_certificate(flow.0, super::tls::Identities::of(cert.as_ref()));
                    }
                    // Boxed too, the TLS session (above) and this branch's serving: a task is
                    // sized for its largest branch, and a TCP connection's should not carry TLS's.
                    Box::pin(stream::serve(s, flow, transport, remote, local, transports, inbound, settings, shutdown))
                        .await
                }
                Ok(Err(e)) => {
                    // A certificate that does not chain to federation's trust roots (expired,
                    // self-signed, another authority's) is a partner refused: the operator
                    // hears of it. Anything else is a client's or a scanner's noise.
                    let refused = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                    if let Some(why @ rustls::Error::InvalidCertificate(_)) = refused {
                        metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "certificate").increment(1);
                        tracing::info!(%remote, error = %why, "TLS client certificate refused");
                    } else {
                        metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "error").increment(1);
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    }
                }
                Err(_) => {
                    metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "timeout").increment(1);
                    tracing::debug!(%remote, "TLS handshake timed out");
                }
            },
        }
    }
}
