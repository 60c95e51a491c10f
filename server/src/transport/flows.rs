//! The flow table: every open TCP or TLS connection, by id and by remote address, with the
//! queue its writer task drains. A response goes back on the flow its request came on (RFC
//! 3261 18.2.2); a registered client is reached over its flow (RFC 5626).

use super::{SendError, Transport};
use bytes::Bytes;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub type FlowId = u64;

struct Flow {
    queue: mpsc::Sender<Bytes>,
    /// Our end of the connection.
    local: SocketAddr,
    /// Its peer has proven who it is: a user's digest, a member's seal, or we opened it.
    authenticated: bool,
}

#[derive(Default)]
pub struct Flows {
    by_id: DashMap<FlowId, Flow>,
    by_remote: DashMap<(Transport, SocketAddr), FlowId>,
    /// The user a connection authenticated as (set by the core after a REGISTER on it).
    identities: DashMap<FlowId, Arc<str>>,
    /// The connections speaking for each user, to forget them when the user changes.
    by_identity: DashMap<Arc<str>, Vec<FlowId>>,
    /// The user a connection last registered for, kept after it stops speaking for them, so
    /// that when it closes the bindings that depend on it go too (RFC 5626).
    owners: DashMap<FlowId, Arc<str>>,
    /// Connections also known by another address (a pool member's inbound connection, by
    /// the address it listens on).
    aliases: DashMap<FlowId, SocketAddr>,
    next: AtomicU64,
}

impl Flows {
    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Registers a new connection; the returned receiver feeds its writer.
    pub fn open(
        &self,
        transport: Transport,
        remote: SocketAddr,
        local: SocketAddr,
        queue: usize,
    ) -> (FlowId, mpsc::Receiver<Bytes>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(queue.max(1));
        self.by_id.insert(id, Flow { queue: tx, local, authenticated: false });
        self.by_remote.insert((transport, remote), id);
        (id, rx)
    }

    pub fn close(&self, id: FlowId, transport: Transport, remote: SocketAddr) {
        self.by_id.remove(&id);
        self.unbind_identity(id);
        self.owners.remove(&id);
        self.by_remote.remove_if(&(transport, remote), |_, v| *v == id);
        if let Some((_, alias)) = self.aliases.remove(&id) {
            self.by_remote.remove_if(&(transport, alias), |_, v| *v == id);
        }
    }

    /// Lets connection `id` also be found as a connection to `remote` (where the peer that
    /// opened it listens), unless one is known there already; whether it now is.
    pub fn alias(&self, id: FlowId, transport: Transport, remote: SocketAddr) -> bool {
        if !self.by_id.contains_key(&id) {
            return false;
        }
        match self.by_remote.entry((transport, remote)) {
            dashmap::mapref::entry::Entry::Occupied(e) => *e.get() == id,
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(id);
                self.aliases.insert(id, remote);
                true
            }
        }
    }

    /// Records that this connection speaks for `identity` (an AOR).
    pub fn bind_identity(&self, id: FlowId, identity: &str) {
        if !self.by_id.contains_key(&id) {
            return;
        }
        if self.identities.get(&id).is_some_and(|i| **i == *identity) {
            return;
        }
        self.unbind_identity(id);
        self.mark_authenticated(id);
        let identity: Arc<str> = Arc::from(identity);
        self.by_identity.entry(identity.clone()).or_default().push(id);
        self.owners.insert(id, identity.clone());
        self.identities.insert(id, identity);
    }

    /// Its peer has proven who it is (see [`Flows::is_authenticated`]).
    pub fn mark_authenticated(&self, id: FlowId) {
        if let Some(mut f) = self.by_id.get_mut(&id) {
            f.authenticated = true;
        }
    }

    /// Whether its peer has proven who it is: a request on it passed digest authentication, a
    /// pool member sealed its hello, or this server opened it. Until then it may only be held
    /// for `transport.unauthenticated_timeout_secs`.
    pub fn is_authenticated(&self, id: FlowId) -> bool {
        self.by_id.get(&id).is_some_and(|f| f.authenticated)
    }

    /// The user this connection last registered for (whether or not it still speaks for them).
    pub fn owner(&self, id: FlowId) -> Option<Arc<str>> {
        self.owners.get(&id).map(|e| e.value().clone())
    }

    /// This connection no longer speaks for anyone: its next request is challenged.
    pub fn unbind_identity(&self, id: FlowId) {
        let Some((_, identity)) = self.identities.remove(&id) else { return };
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = self.by_identity.entry(identity) {
            e.get_mut().retain(|f| *f != id);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// No connection speaks for `identity` any more (the user changed: password, disabled,
    /// removed): each must authenticate again.
    pub fn forget_identity(&self, identity: &str) {
        let Some((_, flows)) = self.by_identity.remove(identity) else { return };
        for id in flows {
            self.identities.remove_if(&id, |_, i| **i == *identity);
        }
    }

    /// No connection speaks for anyone (what changed is not known).
    pub fn forget_all_identities(&self) {
        self.identities.clear();
        self.by_identity.clear();
    }

    pub fn identity(&self, id: FlowId) -> Option<Arc<str>> {
        self.identities.get(&id).map(|e| e.value().clone())
    }

    /// Our end of connection `id`, while it is open.
    pub fn local(&self, id: FlowId) -> Option<SocketAddr> {
        self.by_id.get(&id).map(|f| f.local)
    }

    pub fn is_open(&self, id: FlowId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// An open connection to `remote`, if there is one.
    pub fn find(&self, transport: Transport, remote: SocketAddr) -> Option<FlowId> {
        self.by_remote.get(&(transport, remote)).map(|e| *e.value())
    }

    /// Messages waiting in connections' write queues: in all, and on the fullest connection.
    /// Walks every connection, so it is for a scrape, not for the message path.
    pub fn queued(&self) -> (usize, usize) {
        self.by_id.iter().fold((0, 0), |(total, max), f| {
            let waiting = f.queue.max_capacity() - f.queue.capacity();
            (total + waiting, max.max(waiting))
        })
    }

    pub fn send(&self, id: FlowId, data: Bytes) -> Result<(), SendError> {
        let flow = self.by_id.get(&id).ok_or(SendError::NoFlow)?;
        flow.queue.try_send(data).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendError::NoFlow,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn identities_are_forgotten_with_the_user_or_the_connection() {
        let flows = Flows::default();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (a, _ra) = flows.open(Transport::Tcp, addr(1), addr(5060), 8);
        let (b, _rb) = flows.open(Transport::Tcp, addr(2), addr(5060), 8);
        let (c, _rc) = flows.open(Transport::Tcp, addr(3), addr(5060), 8);
        flows.bind_identity(a, "alice@example.test");
        flows.bind_identity(b, "alice@example.test");
        flows.bind_identity(c, "bob@example.test");
        flows.forget_identity("alice@example.test");
        assert_eq!((flows.identity(a), flows.identity(b)), (None, None), "Alice's connections forget her");
        assert_eq!(flows.identity(c).as_deref(), Some("bob@example.test"), "Bob's does not");
        flows.bind_identity(a, "alice@example.test");
        flows.bind_identity(a, "carol@example.test");
        flows.forget_identity("alice@example.test");
        assert_eq!(flows.identity(a).as_deref(), Some("carol@example.test"), "it spoke for Carol since");
        flows.unbind_identity(c);
        assert_eq!(flows.identity(c), None);
        assert_eq!(flows.owner(c).as_deref(), Some("bob@example.test"), "its bindings go when it closes");
        flows.close(a, Transport::Tcp, addr(1));
        flows.close(c, Transport::Tcp, addr(3));
        assert!(flows.by_identity.is_empty() && flows.identities.is_empty(), "nothing left behind");
        assert!(flows.owners.get(&a).is_none() && flows.owners.get(&c).is_none());
        flows.bind_identity(b, "bob@example.test");
        flows.forget_all_identities();
        assert_eq!(flows.identity(b), None);
    }

    #[test]
    fn queued_counts_what_writers_have_not_taken() {
        let flows = Flows::default();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (a, mut a_rx) = flows.open(Transport::Tcp, addr(1), addr(5060), 8);
        let (b, _b_rx) = flows.open(Transport::Tls, addr(2), addr(5061), 8);
        assert_eq!(flows.queued(), (0, 0));
        for _ in 0..3 {
            flows.send(a, Bytes::from_static(b"x")).unwrap();
        }
        flows.send(b, Bytes::from_static(b"y")).unwrap();
        assert_eq!(flows.queued(), (4, 3));
        a_rx.try_recv().unwrap();
        assert_eq!(flows.queued(), (3, 2));
        flows.close(a, Transport::Tcp, addr(1));
        assert_eq!(flows.queued(), (1, 1), "a closed connection's queue no longer counts");
    }
}
