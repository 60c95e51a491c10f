//! Where our users are reached: the AOR (and GRUU instance) a Request-URI names, the live
//! bindings a request for it may go to, and the copy of a request for one binding with the
//! target it is sent to (RFC 3261 16.6). Every service that sends to a user (messaging, the
//! proxy, presence, offline delivery) asks here; the registrar writes what is read here.

use super::pool::hop::Vouch;
use super::pool::{Membership, Peer};
use crate::state::bindings::{Binding, Bindings};
use crate::transport::{Target, Transport, Transports};
use sipfront_proto::{Aor, HeaderName, Host, Message, NameAddr, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub struct Location {
    bindings: Arc<Bindings>,
    transports: Arc<Transports>,
    /// A binding registered through another member of the pool (its edge, first in its
    /// Path) is reached through that member.
    pool: Arc<Membership>,
}

/// Who a Request-URI names: an AOR, and possibly one instance of it (a GRUU, RFC 5627).
pub struct Recipient {
    pub aor: Aor,
    /// pub-gruu: the `+sip.instance` (`<urn:...>`) it names.
    instance: Option<String>,
    /// temp-gruu: the temp-gruu user part.
    temp_gruu: Option<String>,
}

impl Location {
    pub fn new(bindings: Arc<Bindings>, transports: Arc<Transports>, pool: Arc<Membership>) -> Location {
        Location { bindings, transports, pool }
    }

    pub fn pool(&self) -> &Arc<Membership> {
        &self.pool
    }

    pub fn bindings(&self) -> &Arc<Bindings> {
        &self.bindings
    }

    /// The AOR (and instance) a Request-URI addresses; `None` if it names no user.
    pub fn recipient(&self, uri: &Uri<'_>) -> Option<Recipient> {
        let aor = Aor::from_uri(uri)?;
        match uri.params().get("gr") {
            // temp-gruu: `sip:tgruu.X@domain;gr`, which names the AOR only through our bindings.
            Some(None) => {
                let owner = Aor::parse(&self.bindings.temp_gruu_aor(aor.user())?)?;
                Some(Recipient { temp_gruu: Some(aor.user().to_string()), aor: owner, instance: None })
            }
            // pub-gruu: `sip:user@domain;gr=urn:uuid:...`
            Some(Some(urn)) => {
                Some(Recipient { aor, instance: Some(format!("<{}>", String::from_utf8_lossy(urn))), temp_gruu: None })
            }
            None => Some(Recipient { aor, instance: None, temp_gruu: None }),
        }
    }

    /// The bindings a request for `to` may go to: live, of the right instance for a GRUU, and
    /// reachable (a stream binding whose connection is gone is skipped).
    pub fn targets(&self, to: &Recipient) -> Vec<Binding> {
        self.reachable(to.aor.as_str(), to.instance.as_deref(), to.temp_gruu.as_deref())
    }

    /// The reachable bindings of an AOR, all instances.
    pub fn targets_of(&self, aor: &str) -> Vec<Binding> {
        self.reachable(aor, None, None)
    }

    fn reachable(&self, aor: &str, instance: Option<&str>, temp_gruu: Option<&str>) -> Vec<Binding> {
        self.bindings
            .get(aor)
            .into_iter()
            .filter(|b| instance.is_none_or(|i| b.instance.as_deref() == Some(i)))
            .filter(|b| temp_gruu.is_none_or(|t| b.temp_gruu.as_deref() == Some(t)))
            .filter(|b| match self.edge_of(b) {
                // Through its edge: while that member is live and connected.
                Some(edge) => self.transports.flows.find(Transport::Tcp, edge.addr).is_some(),
                None if b.path.first().is_some_and(|p| self.names_member(p)) => false,
                None => {
                    !b.source.transport.is_reliable() || b.source.flow.is_some_and(|f| self.transports.flows.is_open(f))
                }
            })
            .collect()
    }

    /// The live member a binding was registered through (the first entry of its Path).
    pub fn edge_of(&self, b: &Binding) -> Option<Peer> {
        if self.pool.alone() {
            return None;
        }
        let first = b.path.first()?;
        self.pool.peer_at(path_addr(first)?)
    }

    /// Whether a Path entry is a pool edge's (live or not): a binding registered through an
    /// edge that has since died is not reachable.
    fn names_member(&self, path: &str) -> bool {
        NameAddr::parse(path.as_bytes()).is_ok_and(|n| n.uri.params().has(super::pool::edge::PATH_PARAM))
    }

    /// The copy of `req` for one binding (RFC 3261 16.6): new Request-URI, one hop less, the
    /// binding's Path as Route, our Via (with `branch`) on top, our own credentials and the
    /// Route entries naming us removed (the caller checked that only ours were there).
    pub fn fork(&self, req: &Message, b: &Binding, branch: &str) -> (Message, Target) {
        let mut f = forwarded(req, b.uri.to_string());
        for p in b.path.iter().rev() {
            f.prepend_header(HeaderName::Route, p.to_string());
        }
        let target = self.target_of(b);
        match self.edge_of(b) {
            Some(_) => {
                // To the client's edge: our pool address in the Via, and the pool's seal.
                f.prepend_header(HeaderName::Via, format!("SIP/2.0/TCP {};branch={branch}", self.pool.address()));
                let vouch = Vouch {
                    member: self.pool.id().to_string(),
                    client: None,
                    identity: None,
                    replay: false,
                    feed: false,
                    partner: None,
                    group: None,
                };
                self.pool.seal().sign(&mut f, &vouch);
            }
            None => {
                super::pool::hop::remove(&mut f);
                let local = b.source.local;
                f.prepend_header(
                    HeaderName::Via,
                    format!("SIP/2.0/{} {};branch={branch}", b.source.transport.via_name(), local),
                );
            }
        }
        (f, target)
    }

    /// Where a request for binding `b` is sent: a TCP or TLS client over the flow it
    /// registered on; a UDP contact at the address its URI gives (when it is one; we never
    /// resolve names), or else where its REGISTER came from.
    pub fn target_of(&self, b: &Binding) -> Target {
        if let Some(edge) = self.edge_of(b) {
            let flow = self.transports.flows.find(Transport::Tcp, edge.addr);
            return Target { transport: Transport::Tcp, remote: edge.addr, flow, local: None };
        }
        match b.source.transport {
            Transport::Udp => Target {
                transport: Transport::Udp,
                remote: contact_addr(&b.uri).unwrap_or(b.source.remote),
                flow: None,
                local: Some(b.source.local),
            },
            t => Target { transport: t, remote: b.source.remote, flow: b.source.flow, local: None },
        }
    }
}

/// `req` as it goes on from here to `request_uri` (RFC 3261 16.6): one hop less, our own
/// credentials (consumed here, RFC 3261 22.3) and the Route entries naming us removed.
pub fn forwarded(req: &Message, request_uri: String) -> Message {
    let mut f = req.clone();
    f.set_request_uri(request_uri);
    f.set_header(HeaderName::MaxForwards, req.max_forwards().unwrap_or(70).saturating_sub(1).to_string());
    f.remove_headers(HeaderName::ProxyAuthorization);
    f.remove_headers(HeaderName::Route);
    f
}

/// The address a Path entry (`<sip:token@host:port;lr>`) names, if its host is an address.
fn path_addr(path: &str) -> Option<SocketAddr> {
    let n = NameAddr::parse(path.as_bytes()).ok()?;
    let ip: IpAddr = match n.uri.host() {
        Host::V4(ip) => ip.into(),
        Host::V6(ip) => ip.into(),
        Host::Name(_) => return None,
    };
    Some(SocketAddr::new(ip, n.uri.port().unwrap_or(5060)))
}

/// The IP address and port of a contact URI, if its host is an address literal.
pub fn contact_addr(uri: &str) -> Option<SocketAddr> {
    let u = Uri::parse(uri.as_bytes()).ok()?;
    let ip: IpAddr = match u.host() {
        Host::V4(ip) => ip.into(),
        Host::V6(ip) => ip.into(),
        Host::Name(_) => return None,
    };
    Some(SocketAddr::new(ip, u.port().unwrap_or(5060)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn contact_addresses() {
        assert_eq!(contact_addr("sip:alice@127.0.0.1:5090"), Some("127.0.0.1:5090".parse().unwrap()));
        assert_eq!(contact_addr("sip:alice@[::1]"), Some("[::1]:5060".parse().unwrap()));
        assert_eq!(contact_addr("sip:alice@host.example.test:5090"), None);
    }
}
