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
}

#[derive(Default)]
pub struct Flows {
    by_id: DashMap<FlowId, Flow>,
    by_remote: DashMap<(Transport, SocketAddr), FlowId>,
    /// The user a connection authenticated as (set by the core after a REGISTER on it).
    identities: DashMap<FlowId, Arc<str>>,
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
        self.by_id.insert(id, Flow { queue: tx, local });
        self.by_remote.insert((transport, remote), id);
        (id, rx)
    }

    pub fn close(&self, id: FlowId, transport: Transport, remote: SocketAddr) {
        self.by_id.remove(&id);
        self.identities.remove(&id);
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
        if self.by_id.contains_key(&id) {
            self.identities.insert(id, Arc::from(identity));
        }
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
