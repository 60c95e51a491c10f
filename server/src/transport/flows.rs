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
}

#[derive(Default)]
pub struct Flows {
    by_id: DashMap<FlowId, Flow>,
    by_remote: DashMap<(Transport, SocketAddr), FlowId>,
    /// The user a connection authenticated as (set by the core after a REGISTER on it).
    identities: DashMap<FlowId, Arc<str>>,
    next: AtomicU64,
}

impl Flows {
    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Registers a new connection; the returned receiver feeds its writer.
    pub fn open(&self, transport: Transport, remote: SocketAddr, queue: usize) -> (FlowId, mpsc::Receiver<Bytes>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(queue.max(1));
        self.by_id.insert(id, Flow { queue: tx });
        self.by_remote.insert((transport, remote), id);
        (id, rx)
    }

    pub fn close(&self, id: FlowId, transport: Transport, remote: SocketAddr) {
        self.by_id.remove(&id);
        self.identities.remove(&id);
        self.by_remote.remove_if(&(transport, remote), |_, v| *v == id);
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

    pub fn is_open(&self, id: FlowId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// An open connection to `remote`, if there is one.
    pub fn find(&self, transport: Transport, remote: SocketAddr) -> Option<FlowId> {
        self.by_remote.get(&(transport, remote)).map(|e| *e.value())
    }

    pub fn send(&self, id: FlowId, data: Bytes) -> Result<(), SendError> {
        let flow = self.by_id.get(&id).ok_or(SendError::NoFlow)?;
        flow.queue.try_send(data).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendError::NoFlow,
        })
    }
}
