//! RFC 3261 section 17: server transactions absorb request retransmissions and repeat the
//! last response; client transactions retransmit over UDP and time out with 408. The
//! transaction user above (the core) never sees a retransmission.

mod client;
pub mod key;
mod server;
pub mod timers;

pub use client::ClientTx;
pub use server::ServerTx;

use crate::ops::metrics as m;
use crate::ops::shutdown::InFlight;
use crate::state::expiry::ExpiryQueue;
use crate::transport::flows::FlowId;
use crate::transport::{Inbound, Source, Target, Transports};
use dashmap::DashMap;
use key::TxKey;
use server::ServerEntry;
use sipfront_proto::{Message, Method};
use std::sync::{Arc, OnceLock, Weak};
use timers::Timers;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A request as the transaction user receives it.
pub struct Incoming {
    pub msg: Message,
    pub source: Source,
    pub received: Instant,
    /// Set by the transaction user when a trusted peer relayed the request for a client.
    pub relayed: Option<Relayed>,
}

/// What a trusted peer (another member of the pool, whose seal the core checked) says of the
/// client it relays a request for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// The member that relayed it.
    pub member: String,
    /// The address the client's request came from (for lockouts and logs).
    pub client: Option<std::net::SocketAddr>,
    /// The user the client's connection authenticated as, when it had.
    pub identity: Option<String>,
    /// A registration the member replays for that user (its home moved): the connection's
    /// authentication stands for the credentials, which cannot be replayed.
    pub replay: bool,
    /// A subscription the member makes for itself: to a presentity homed elsewhere that its
    /// own watchers' resource lists show (it applies their rules itself).
    pub feed: bool,
    /// The client is a partner's federation edge whose verified certificate names this domain,
    /// the request's From domain (checked by the member it connected to).
    pub partner: Option<String>,
    /// A copy of a MESSAGE to this distribution group, for one of its members: kept for the
    /// member if its endpoints do not take it, as for a member who is away.
    pub group: Option<String>,
}

impl Incoming {
    /// The address of the client that sent the request: where it came from, or what the
    /// member that relayed it says.
    pub fn client_ip(&self) -> std::net::IpAddr {
        self.relayed.as_ref().and_then(|r| r.client).map_or(self.source.remote.ip(), |c| c.ip())
    }
}

/// What sits above the transaction layer (RFC 3261 calls it the TU): the routing core.
pub trait TransactionUser: Send + Sync + 'static {
    /// A request before any transaction is made for it: the TU may forward it statelessly
    /// (RFC 3261 16.11) and keep it, or give it back to go through a server transaction.
    fn before_transaction(&self, msg: Message, _source: Source) -> Option<Message> {
        Some(msg)
    }

    /// A new request, never a retransmission. Answer it through `tx`, now or later.
    fn on_request(&self, req: Incoming, tx: ServerTx);

    /// A CANCEL matched a pending INVITE server transaction (RFC 3261 9.2); the CANCEL itself
    /// has been answered 200. The TU ends the INVITE with 487 and cancels its branches.
    fn on_cancel(&self, _invite: &TxKey) {}

    /// An ACK that matches no server transaction: the ACK for a 2xx, which travels end to end
    /// (RFC 3261 13.2.2.4) and a proxy forwards.
    fn on_stray_ack(&self, _req: Incoming) {}

    /// A response matching no client transaction (RFC 3261 16.7 step 1: a proxy forwards it
    /// statelessly, for 2xx retransmissions to INVITE).
    fn on_stray_response(&self, _resp: Message, _source: Source) {
        metrics::counter!(m::STRAY_RESPONSES).increment(1);
    }

    /// A connection closed (see [`Inbound::on_flow_closed`]).
    fn on_flow_closed(&self, _flow: FlowId, _identity: Option<Arc<str>>) {}
}

/// The transaction layer: a cheap, clonable handle.
#[derive(Clone)]
pub struct Transactions(Arc<Inner>);

struct Inner {
    transports: Arc<Transports>,
    /// The layer above, held weakly: it holds this layer, and the server holds it.
    tu: OnceLock<Weak<dyn TransactionUser>>,
    server: DashMap<TxKey, ServerEntry>,
    client: DashMap<TxKey, mpsc::Sender<Message>>,
    timers: Timers,
    /// Completed server transactions: Timer J (non-INVITE over UDP) and Timer H (INVITE
    /// waiting for its ACK), both 64*T1.
    completed: ExpiryQueue<TxKey>,
    /// Confirmed INVITE server transactions: Timer I (T4).
    confirmed: ExpiryQueue<TxKey>,
    /// Completed non-INVITE client transactions over UDP: Timer K (T4).
    lingering: ExpiryQueue<TxKey>,
    inflight: InFlight,
    /// The Server header of the responses this layer makes itself (CANCEL, 503 at the cap).
    agent: String,
    /// Server transactions kept at most (`transaction.max_server_transactions`): beyond it a
    /// request that would need one is answered 503 statelessly.
    max_server: usize,
}

impl Transactions {
    pub fn new(
        transports: Arc<Transports>,
        timers: Timers,
        inflight: InFlight,
        agent: String,
        max_server: usize,
    ) -> Transactions {
        metrics::gauge!(crate::ops::metrics::SERVER_TRANSACTIONS_MAX).set(max_server as f64);
        let inner = Inner {
            agent,
            max_server,
            transports,
            tu: OnceLock::new(),
            server: DashMap::new(),
            client: DashMap::new(),
            timers,
            completed: ExpiryQueue::new(timers.timeout()),
            confirmed: ExpiryQueue::new(timers.t4),
            lingering: ExpiryQueue::new(timers.t4),
            inflight,
        };
        Transactions(Arc::new(inner))
    }

    /// Connects the transaction user; done once, before any listener starts. The caller
    /// keeps `tu` alive: once it is dropped, requests are answered 503.
    pub fn set_user(&self, tu: &Arc<dyn TransactionUser>) {
        let _ = self.0.tu.set(Arc::downgrade(tu));
    }

    pub fn transports(&self) -> &Arc<Transports> {
        &self.0.transports
    }

    pub fn timers(&self) -> Timers {
        self.0.timers
    }

    pub fn client_count(&self) -> usize {
        self.0.client.len()
    }

    /// Server transactions kept now (with the transaction user, or completed and waiting for
    /// retransmissions).
    pub fn server_count(&self) -> usize {
        self.0.server.len()
    }

    /// Runs the expiry of completed and confirmed server transactions until dropped.
    pub async fn run_timers(&self) {
        let remove_done = |k: TxKey| {
            self.0.server.remove_if(&k, |_, e| e.is_done());
        };
        let forget = |k: TxKey| {
            self.0.client.remove(&k);
        };
        tokio::join!(
            self.0.completed.run(remove_done),
            self.0.confirmed.run(remove_done),
            self.0.lingering.run(forget)
        );
    }

    /// Starts a client transaction for `req` (whose top Via carries a fresh branch) to `target`.
    pub fn request(&self, req: Message, target: Target) -> ClientTx {
        client::start(self.clone(), req, target)
    }

    /// Runs a client transaction for `req` in the caller's task and returns its final
    /// response (received, or 408/503 made up); provisional responses are dropped.
    pub async fn final_response(&self, req: Message, target: Target) -> Message {
        client::final_response(self, req, target).await
    }

    fn tu(&self) -> Option<Arc<dyn TransactionUser>> {
        self.0.tu.get().and_then(Weak::upgrade)
    }

    fn on_response(&self, msg: Message, source: Source) {
        let Some(key) = key::client_key(&msg) else { return };
        let inbox = self.0.client.get(&key).map(|e| e.value().clone());
        match inbox {
            // A full inbox means the task is behind on retransmissions of the same response.
            Some(inbox) => {
                let _ = inbox.try_send(msg);
            }
            None => {
                if let Some(tu) = self.tu() {
                    tu.on_stray_response(msg, source);
                }
            }
        }
    }
}

impl Inbound for Transactions {
    fn on_message(&self, msg: Message, source: Source) {
        if msg.is_request() {
            server::on_request(self, msg, source);
        } else {
            self.on_response(msg, source);
        }
    }

    fn on_flow_closed(&self, flow: FlowId, identity: Option<Arc<str>>) {
        if let Some(tu) = self.tu() {
            tu.on_flow_closed(flow, identity);
        }
    }
}

/// The method as a metric label: the standard ones by name, extensions as one label so that a
/// peer cannot grow the label set.
pub fn method_label(m: &Method) -> &'static str {
    m.standard_name().unwrap_or("other")
}
