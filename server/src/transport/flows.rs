//! The flow table: every open TCP or TLS connection, by id and by remote address, with the
//! queue its writer task drains. A response goes back on the flow its request came on (RFC
//! 3261 18.2.2); a registered client is reached over its flow (RFC 5626).

use super::tls::Identities;
use super::{SendError, Transport};
use bytes::Bytes;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub type FlowId = u64;

struct Flow {
    queue: mpsc::Sender<Bytes>,
    /// Bytes waiting in `queue`, shared with its [`Queue`].
    queued_bytes: Arc<AtomicUsize>,
    /// The most bytes `queue` may hold (one message of any size may always wait alone).
    max_bytes: usize,
    /// Our end of the connection.
    local: SocketAddr,
    /// Its peer has proven who it is: a user's digest, a member's seal, or we opened it.
    authenticated: bool,
    /// Its peer is a partner's federation edge, admitted by the policy: limited per partner
    /// domain rather than per address.
    partner: bool,
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
    /// The SIP domain identities of the certificate a connection's peer presented and the
    /// handshake verified against federation's trust roots: a partner edge's client
    /// certificate, or the server certificate of a partner edge we connected to.
    certificates: DashMap<FlowId, Arc<Identities>>,
    next: AtomicU64,
}

impl Flows {
    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Registers a new connection; the returned queue feeds its writer. At most `cap.0`
    /// messages and `cap.1` bytes wait in it (a message larger than that may wait alone).
    pub fn open(
        &self,
        transport: Transport,
        remote: SocketAddr,
        local: SocketAddr,
        cap: (usize, usize),
    ) -> (FlowId, Queue) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(cap.0.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let flow = Flow {
            queue: tx,
            queued_bytes: queued_bytes.clone(),
            max_bytes: cap.1,
            local,
            authenticated: false,
            partner: false,
        };
        self.by_id.insert(id, flow);
        self.by_remote.insert((transport, remote), id);
        (id, Queue { rx, bytes: queued_bytes })
    }

    pub fn close(&self, id: FlowId, transport: Transport, remote: SocketAddr) {
        self.by_id.remove(&id);
        self.unbind_identity(id);
        self.owners.remove(&id);
        self.by_remote.remove_if(&(transport, remote), |_, v| *v == id);
        if let Some((_, alias)) = self.aliases.remove(&id) {
            self.by_remote.remove_if(&(transport, alias), |_, v| *v == id);
        }
        self.certificates.remove(&id);
    }

    /// Records the identities of the verified certificate of connection `id`'s peer (see
    /// [`Flows::certificate`]). They prove nothing yet: federation's policy decides whether
    /// the domains they name are partners ([`Flows::mark_partner`]).
    pub fn set_certificate(&self, id: FlowId, identities: Identities) {
        if self.by_id.contains_key(&id) {
            self.certificates.insert(id, Arc::new(identities));
        }
    }

    /// Connection `id` is an admitted partner's federation edge: its peer has proven who it
    /// is, and it is limited per partner domain, not per address.
    pub fn mark_partner(&self, id: FlowId) {
        if let Some(mut f) = self.by_id.get_mut(&id) {
            f.authenticated = true;
            f.partner = true;
        }
    }

    /// Whether connection `id` is an admitted partner's edge (see [`Flows::mark_partner`]).
    pub fn is_partner(&self, id: FlowId) -> bool {
        self.by_id.get(&id).is_some_and(|f| f.partner)
    }

    /// The identities of the certificate connection `id`'s peer was verified to hold, if it
    /// presented one.
    pub fn certificate(&self, id: FlowId) -> Option<Arc<Identities>> {
        self.certificates.get(&id).map(|c| c.value().clone())
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

    /// What waits in connections' write queues, in messages and in bytes: in all, and on the
    /// fullest connection. Walks every connection, so it is for a scrape, not for the message
    /// path.
    pub fn queued(&self) -> Queued {
        self.by_id.iter().fold(Queued::default(), |q, f| {
            let messages = f.queue.max_capacity() - f.queue.capacity();
            let bytes = f.queued_bytes.load(Ordering::Relaxed);
            Queued {
                messages: (q.messages.0 + messages, q.messages.1.max(messages)),
                bytes: (q.bytes.0 + bytes, q.bytes.1.max(bytes)),
            }
        })
    }

    pub fn send(&self, id: FlowId, data: Bytes) -> Result<(), SendError> {
        let flow = self.by_id.get(&id).ok_or(SendError::NoFlow)?;
        let len = data.len();
        let before = flow.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > flow.max_bytes {
            // A peer that does not read cannot make us hold more than its cap.
            flow.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(SendError::QueueFull);
        }
        flow.queue.try_send(data).map_err(|e| {
            flow.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SendError::NoFlow,
            }
        })
    }
}

/// What waits in the write queues: (in all, on the fullest connection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    pub messages: (usize, usize),
    pub bytes: (usize, usize),
}

/// A connection's write queue, as its writer drains it.
pub struct Queue {
    rx: mpsc::Receiver<Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl Queue {
    /// The next message; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let data = self.rx.recv().await?;
        self.bytes.fetch_sub(data.len(), Ordering::Relaxed);
        Some(data)
    }

    /// The next message if one waits.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let data = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(data.len(), Ordering::Relaxed);
        Some(data)
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
        let (a, _ra) = flows.open(Transport::Tcp, addr(1), addr(5060), (8, 1000));
        let (b, _rb) = flows.open(Transport::Tcp, addr(2), addr(5060), (8, 1000));
        let (c, _rc) = flows.open(Transport::Tcp, addr(3), addr(5060), (8, 1000));
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
        let (a, mut a_rx) = flows.open(Transport::Tcp, addr(1), addr(5060), (8, 1000));
        let (b, _b_rx) = flows.open(Transport::Tls, addr(2), addr(5061), (8, 1000));
        assert_eq!(flows.queued(), Queued::default());
        for _ in 0..3 {
            flows.send(a, Bytes::from_static(b"xx")).unwrap();
        }
        flows.send(b, Bytes::from_static(b"y")).unwrap();
        assert_eq!(flows.queued(), Queued { messages: (4, 3), bytes: (7, 6) });
        a_rx.try_recv().unwrap();
        assert_eq!(flows.queued(), Queued { messages: (3, 2), bytes: (5, 4) });
        flows.close(a, Transport::Tcp, addr(1));
        assert_eq!(
            flows.queued(),
            Queued { messages: (1, 1), bytes: (1, 1) },
            "a closed connection's no longer counts"
        );
    }

    #[test]
    fn a_queue_holds_at_most_its_bytes_and_one_message_of_any_size() {
        let flows = Flows::default();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (a, mut queue) = flows.open(Transport::Tcp, addr(1), addr(5060), (100, 10));
        flows.send(a, Bytes::from(vec![0; 25])).expect("alone, a message of any size waits");
        assert!(matches!(flows.send(a, Bytes::from_static(b"x")), Err(SendError::QueueFull)));
        queue.try_recv().unwrap();
        for _ in 0..2 {
            flows.send(a, Bytes::from(vec![0; 5])).unwrap();
        }
        assert!(matches!(flows.send(a, Bytes::from_static(b"x")), Err(SendError::QueueFull)), "10 bytes wait");
        assert_eq!(flows.queued().bytes, (10, 10));
    }
}
