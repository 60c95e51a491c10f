//! Federation (issue 20): IM and presence with partner organisations' domains, over mutual
//! TLS, their edges found by DNS SRV (`_sipfederationtls._tcp.<domain>`) or named by the
//! operator, under the operator's policy (an allow list, a block list, a mode, and a per-user
//! flag, all in the store).
//!
//! Outbound, a request of one of our users for a domain we do not serve goes to that domain's
//! edge over a TLS connection we open, presenting our certificate and checking that theirs
//! names the domain (RFC 5922). Inbound, a partner's request arrives on a TLS connection whose
//! client certificate the handshake verified; the gate accepts its From domain only if that
//! certificate names it and the policy admits it.

pub mod dns;
pub mod policy;

use crate::core::refusal::Refusal;
use crate::ops::metrics as m;
use crate::transaction::Transactions;
use crate::transport::connect::{ConnectError, Connector};
use crate::transport::flows::FlowId;
use crate::transport::{Target, Transport};
use dashmap::DashMap;
use dns::{DnsError, Resolver};
use policy::Policy;
use sipfront_proto::{reply, HeaderName, Message};
use sipfront_storage::Store;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Partner domains whose request rate is tracked at most (only domains a trusted certificate
/// names and the policy admits are tracked, so this is a guard, not a working limit).
const MAX_TRACKED_PARTNERS: usize = 10_000;

/// Edge addresses tried for one request at most, in the order DNS gives them.
const MAX_EDGE_ADDRESSES: usize = 8;

/// Finding and connecting to a partner's edge takes this long at most.
const ROUTE_WITHIN: Duration = Duration::from_secs(20);

/// Whether `ip` is an address of the Internet at large: not loopback, private, link-local,
/// shared (CGN), documentation, multicast or unspecified.
fn is_global(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            match v6.to_ipv4_mapped() {
                Some(v4) => is_global(v4.into()),
                None => {
                    !(v6.is_loopback()
                        || v6.is_unspecified()
                        || v6.is_multicast()
                        || (s[0] & 0xfe00) == 0xfc00
                        || (s[0] & 0xffc0) == 0xfe80
                        || (s[0] == 0x2001 && s[1] == 0x0db8))
                }
            }
        }
    }
}

pub struct Federation {
    policy: RwLock<Policy>,
    store: Arc<dyn Store>,
    resolver: Resolver,
    tls: tokio_rustls::TlsConnector,
    connector: Arc<Connector>,
    /// Our TLS listeners: what a partner's edge must not be (a loop).
    listeners: Vec<SocketAddr>,
    /// `host:port` our Via and Record-Route name toward partners.
    address: String,
    connect_timeout: Duration,
    /// DNS may name edges at private addresses (a test, a private federation network).
    private_edges: bool,
    max_requests_per_partner: u32,
    /// Requests each partner domain sent in the current second.
    rates: DashMap<Box<str>, (Instant, u32)>,
    max_connections_per_partner: usize,
    /// The connections each partner domain has sent requests on, and the domain of each.
    partner_flows: DashMap<Box<str>, HashSet<FlowId>>,
    flow_partner: DashMap<FlowId, Box<str>>,
    txs: Transactions,
    agent: String,
    /// Whether a domain is one we serve (a realm of ours).
    serves: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// The `realm` parameter of a digest credentials value, lower case; `None` without one.
fn realm_of(credentials: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(credentials).to_ascii_lowercase();
    let at = text.find("realm=")? + "realm=".len();
    let rest = text[at..].trim_start();
    let realm = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([',', ' ']).next()?,
    };
    Some(realm.to_string())
}

/// What to do with a request whose Request-URI names a domain we do not serve.
pub enum Outbound {
    /// Send it to this edge over this connection; the caller's client transaction does. The
    /// domain's other edge addresses follow, untried, for failover (RFC 3263 4.3).
    Via(Target, Vec<SocketAddr>),
    /// Refused before anything was sent.
    Refused(Refusal),
}

impl Federation {
    /// Federation as configured, with the policy the store holds now.
    #[allow(clippy::too_many_arguments)] // each is one thing federation needs
    pub async fn new(
        cfg: &crate::config::Federation,
        store: Arc<dyn Store>,
        client_tls: Arc<rustls::ClientConfig>,
        connector: Arc<Connector>,
        listeners: Vec<SocketAddr>,
        txs: Transactions,
        agent: String,
        serves: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> anyhow::Result<Federation> {
        let resolver = Resolver::new(&cfg.dns_servers, Duration::from_millis(cfg.dns_timeout_ms))?;
        let first = listeners.first().copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 5061)));
        let address = match cfg.address.as_str() {
            "" => {
                if first.ip().is_unspecified() {
                    tracing::warn!(
                        listener = %first,
                        "federation.address is empty and the TLS listener is on every address: partners are told {first}, \
                         which they cannot reach; set federation.address to the edge's host name"
                    );
                }
                first.to_string()
            }
            a => a.to_string(),
        };
        let policy = Policy::load(store.as_ref()).await?;
        Ok(Federation {
            policy: RwLock::new(policy),
            store,
            resolver,
            tls: tokio_rustls::TlsConnector::from(client_tls),
            connector,
            listeners,
            address,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            private_edges: cfg.private_edges,
            max_requests_per_partner: cfg.max_requests_per_partner,
            rates: DashMap::new(),
            max_connections_per_partner: cfg.max_connections_per_partner,
            partner_flows: DashMap::new(),
            flow_partner: DashMap::new(),
            txs,
            agent,
            serves: Box::new(serves),
        })
    }

    /// Reloads the policy whenever the store's change log says it changed; runs until the
    /// feed closes. A reload that fails keeps the policy in force and is tried at the next
    /// change.
    pub async fn follow(&self, mut changes: tokio::sync::watch::Receiver<u64>) {
        while changes.changed().await.is_ok() {
            match Policy::load(self.store.as_ref()).await {
                Ok(p) => {
                    tracing::info!(domains = p.len(), mode = p.mode().as_str(), "federation policy reloaded");
                    *self.policy.write().unwrap_or_else(|p| p.into_inner()) = p;
                }
                Err(e) => tracing::warn!(error = %e, "federation policy not reloaded; the previous one stays"),
            }
        }
    }

    fn policy(&self) -> std::sync::RwLockReadGuard<'_, Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a partner's request from `domain` (which the certificate of its connection
    /// `flow` names) may come in: the policy admits the domain, the domain is within its
    /// request rate, and the connection is within the domain's connection cap. The refusal
    /// otherwise.
    // The error is the response that refuses the request, sent next (as the gate's checks).
    #[allow(clippy::result_large_err)]
    pub fn admit(&self, domain: &str, flow: Option<FlowId>, req: &Message) -> Result<(), Message> {
        let refuse = |label: &'static str, reason: &'static str| {
            metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "in", "result" => label).increment(1);
            // The partner waits, and nobody else does.
            let mut r = reply::response(req, 503, &self.agent);
            r.set_reason(reason);
            r.push_header(HeaderName::RetryAfter, "1");
            r
        };
        if !self.policy().admits(domain) {
            let refusal = Refusal::PartnerNotAllowed;
            metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "in", "result" => refusal.label()).increment(1);
            return Err(refusal.response(req, &self.agent));
        }
        if let Some(flow) = flow {
            if !self.holds(domain, flow) {
                return Err(refuse("over_connections", "Service Unavailable (partner over its connection cap)"));
            }
        }
        if self.over_rate(domain) {
            return Err(refuse("over_rate", "Service Unavailable (partner over its request rate)"));
        }
        Ok(())
    }

    /// Counts connection `flow` as one of partner `domain`'s; whether it is within the
    /// domain's cap (a connection counted already always is).
    fn holds(&self, domain: &str, flow: FlowId) -> bool {
        if self.flow_partner.get(&flow).is_some_and(|d| **d == *domain) {
            return true;
        }
        let mut flows = self.partner_flows.entry(domain.into()).or_default();
        if flows.len() >= self.max_connections_per_partner {
            return false;
        }
        flows.insert(flow);
        drop(flows);
        if let Some(before) = self.flow_partner.insert(flow, domain.into()) {
            // The connection spoke for another domain before (one certificate, several names).
            self.forget(&before, flow);
        }
        true
    }

    /// A connection closed: it no longer counts against its partner's cap.
    pub fn flow_closed(&self, flow: FlowId) {
        if let Some((_, domain)) = self.flow_partner.remove(&flow) {
            self.forget(&domain, flow);
        }
    }

    fn forget(&self, domain: &str, flow: FlowId) {
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = self.partner_flows.entry(domain.into()) {
            e.get_mut().remove(&flow);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Whether a partner domain has sent more than its share this second (counted here).
    fn over_rate(&self, domain: &str) -> bool {
        let now = Instant::now();
        if self.rates.len() >= MAX_TRACKED_PARTNERS && !self.rates.contains_key(domain) {
            self.rates.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(1));
        }
        let mut e = self.rates.entry(domain.into()).or_insert((now, 0));
        let (since, count) = e.value_mut();
        if now.duration_since(*since) >= Duration::from_secs(1) {
            *since = now;
            *count = 0;
        }
        *count += 1;
        *count > self.max_requests_per_partner
    }

    /// The edge of `domain` to send a request to, connected: the operator's explicit entry
    /// for the domain, else its SRV records in order (RFC 3263 4.2, RFC 2782), each address of
    /// each target tried until one connects with a certificate naming the domain.
    pub async fn route(&self, domain: &str) -> Outbound {
        // Within the sender's own patience (its Timer F is 32 s), whatever DNS and the edges do.
        let outbound = tokio::time::timeout(ROUTE_WITHIN, self.find_edge(domain))
            .await
            .unwrap_or(Outbound::Refused(Refusal::EdgeTimeout));
        if let Outbound::Refused(refusal) = &outbound {
            metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "out", "result" => refusal.label()).increment(1);
        }
        outbound
    }

    async fn find_edge(&self, domain: &str) -> Outbound {
        let via = match self.policy().outbound(domain) {
            Ok(via) => via.map(str::to_string),
            Err(refusal) => return Outbound::Refused(refusal),
        };
        let named = via.is_some();
        let candidates = match via {
            Some(hostport) => self.resolver.addresses_of(&hostport).await,
            None => self.resolver.edges(domain).await.map(|edges| edges.into_iter().flat_map(|e| e.addrs).collect()),
        };
        let candidates: Vec<SocketAddr> = match candidates {
            Ok(c) => c,
            Err(e) => {
                metrics::counter!(m::FEDERATION_DNS_FAILURES, "reason" => e.label()).increment(1);
                tracing::info!(domain, error = %e, "no federation edge found");
                return Outbound::Refused(match e {
                    DnsError::NoService => Refusal::NoFederationEdge,
                    DnsError::Timeout => Refusal::EdgeTimeout,
                    DnsError::Failed(_) => Refusal::DnsFailed,
                });
            }
        };
        let (ours, mut theirs): (Vec<SocketAddr>, Vec<SocketAddr>) =
            candidates.into_iter().partition(|a| self.is_ours(*a));
        if !named && !self.private_edges {
            // A partner's DNS names edges on the Internet: one that names our own network's
            // addresses would have us probe it for whoever asked.
            theirs.retain(|a| is_global(a.ip()));
        }
        theirs.truncate(MAX_EDGE_ADDRESSES);
        if theirs.is_empty() {
            return Outbound::Refused(if ours.is_empty() {
                Refusal::NoFederationEdge
            } else {
                Refusal::FederationLoop
            });
        }
        self.connect_any(domain, theirs).await
    }

    /// The first of `addrs` (a domain's edge addresses, in order) that connects with a
    /// certificate naming `domain`, and the ones after it, kept for failover.
    async fn connect_any(&self, domain: &str, addrs: Vec<SocketAddr>) -> Outbound {
        let local = self.local();
        let mut worst = ConnectError::Unreachable;
        let mut addrs = addrs.into_iter();
        while let Some(addr) = addrs.next() {
            match self.connector.tls_flow_to(addr, domain, &self.tls, local, self.connect_timeout).await {
                Ok(flow) => {
                    let target = Target { transport: Transport::Tls, remote: addr, flow: Some(flow), local: None };
                    return Outbound::Via(target, addrs.collect());
                }
                Err(e) => {
                    metrics::counter!(m::FEDERATION_CONNECT_FAILURES, "reason" => e.label()).increment(1);
                    tracing::info!(domain, edge = %addr, reason = e.label(), "partner edge not connected; trying the next");
                    // A refused certificate says more than a timeout, which says more than a reset.
                    if e == ConnectError::Certificate || worst == ConnectError::Unreachable {
                        worst = e;
                    }
                }
            }
        }
        Outbound::Refused(match worst {
            ConnectError::Certificate => Refusal::EdgeCertificate,
            ConnectError::Timeout => Refusal::EdgeTimeout,
            ConnectError::Unreachable => Refusal::EdgeUnreachable,
        })
    }

    /// Takes from a request going to a partner the credentials for our own realms (RFC 3261
    /// 22.3: a proxy consumes the credentials of its realm, and only those). A partner that
    /// challenged our user in one of our realms gets nothing to attack the password with;
    /// credentials for the partner's realms go on.
    pub fn strip_our_credentials(&self, msg: &mut Message) {
        for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
            let all: Vec<Vec<u8>> = msg.header_all(name).map(<[u8]>::to_vec).collect();
            if all.is_empty() {
                continue;
            }
            msg.remove_headers(name);
            for value in all {
                let ours = realm_of(&value).is_none_or(|realm| (self.serves)(&realm));
                if !ours {
                    msg.push_header(name, value);
                }
            }
        }
    }

    /// Our first TLS listener: the local address of the connections we open to partners.
    pub fn local(&self) -> SocketAddr {
        self.listeners.first().copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// What our Via and Record-Route name toward partners (`federation.address`, else our
    /// first TLS listener): where a partner reaches us again for the dialog's next requests
    /// and the responses of a connection that broke (RFC 3261 18.1.1, 18.2.2).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether `addr` is one of our own TLS listeners (an SRV record naming us: a loop).
    fn is_ours(&self, addr: SocketAddr) -> bool {
        self.listeners
            .iter()
            .any(|l| *l == addr || l.port() == addr.port() && l.ip().is_unspecified() && addr.ip().is_loopback())
    }

    /// Sends `req` (a request of one of our users for `domain`) to a partner's edge, `target`
    /// as [`Federation::route`] found it, and returns its final response. A 503, the edge's or
    /// ours for a connection that broke, moves on to the domain's next edge (RFC 3263 4.3),
    /// as a new transaction (`branch` gives each its Via branch).
    pub async fn send(
        &self,
        req: &Message,
        domain: &str,
        mut target: Target,
        mut rest: Vec<SocketAddr>,
        branch: impl Fn() -> String,
    ) -> Message {
        loop {
            let resp = self.send_once(req, target, &branch()).await;
            if resp.status() != Some(503) {
                return resp;
            }
            tracing::info!(domain, edge = %target.remote, "partner edge answered 503 or broke; trying the next");
            match self.connect_any(domain, std::mem::take(&mut rest)).await {
                Outbound::Via(next, after) => (target, rest) = (next, after),
                // RFC 3261 16.7 step 6: the partner's 503 is not ours to pass on as our own.
                Outbound::Refused(_) => return reply::response(req, 500, &self.agent),
            }
        }
    }

    async fn send_once(&self, req: &Message, target: Target, branch: &str) -> Message {
        let mut out = req.clone();
        out.set_header(HeaderName::MaxForwards, req.max_forwards().unwrap_or(70).saturating_sub(1).to_string());
        // Credentials for our realms were consumed here; our Route entries too.
        self.strip_our_credentials(&mut out);
        out.remove_headers(HeaderName::Route);
        out.prepend_header(HeaderName::Via, format!("SIP/2.0/TLS {};branch={branch}", self.address));
        let mut resp = self.txs.final_response(out, target).await;
        // Our Via goes; the response continues on the request's Vias (RFC 3261 16.7 step 3).
        resp.pop_first_element(HeaderName::Via);
        let code = resp.status().unwrap_or(0);
        metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "out", "result" => m::code_label(code)).increment(1);
        resp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::realm_of;

    #[test]
    fn only_internet_addresses_are_global() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!super::is_global(a.parse().unwrap()), "{a}");
        }
        for a in ["192.0.1.1", "8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(super::is_global(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn the_realm_of_credentials_is_read() {
        assert_eq!(realm_of(br#"Digest username="alice", realm="A.test", nonce="n""#).as_deref(), Some("a.test"));
        assert_eq!(realm_of(b"Digest realm=b.test, nonce=n").as_deref(), Some("b.test"));
        assert_eq!(realm_of(b"Digest username=alice"), None);
    }
}
