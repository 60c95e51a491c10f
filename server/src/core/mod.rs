//! The routing core: what a request means and who answers it. Dispatch is one `match` on the
//! method ([`Core::on_request`]); each method goes to the one service that owns it, through
//! that service's entry point, and every service asks the [`gate::Gate`] before it acts. The
//! core never touches sockets: it answers through the [`ServerTx`] it is given and sends
//! through client transactions.

pub mod archive;
pub mod auth;
pub mod date;
pub mod directory;
pub mod directory_http;
pub mod federation;
pub mod gate;
pub mod groups;
pub mod location;
pub mod lockout;
pub mod messaging;
pub mod offline;
pub mod options;
pub mod overload;
pub mod pool;
pub mod presence;
pub mod proxy;
pub mod refusal;
pub mod registrar;
pub mod saved;
pub mod search;

use crate::config::Config;
use crate::core::federation::Federation;
use crate::ops::metrics as m;
use crate::state::bindings::Bindings;
use crate::transaction::key::TxKey;
use crate::transaction::{Incoming, ServerTx, TransactionUser, Transactions};
use crate::transport::flows::FlowId;
use crate::transport::{Source, Transports};
use archive::{Archive, ArchiveWriter};
use auth::Auth;
use directory::Directory;
use gate::Gate;
use location::Location;
use messaging::Messaging;
use offline::Offline;
use presence::Presence;
use proxy::Proxy;
use registrar::Registrar;
use sipfront_proto::{HeaderName, Message, Method};
use std::future::Future;
use std::sync::Arc;
use std::task::Context;

/// The transaction user: every service of the server, wired together.
#[derive(Clone)]
pub struct Core(Arc<Services>);

struct Services {
    agent: String,
    directory: Arc<Directory>,
    gate: Arc<Gate>,
    registrar: Registrar,
    messaging: Arc<Messaging>,
    presence: Arc<Presence>,
    archive: Arc<Archive>,
    proxy: Proxy,
    pool: Arc<pool::Membership>,
    edge: pool::edge::Edge,
    transports: Arc<Transports>,
    overload: overload::Overload,
    federation: Option<Arc<Federation>>,
}

impl Core {
    /// The core, and the archive writer it feeds (the caller runs it).
    pub fn new(
        config: &Config,
        directory: Arc<Directory>,
        bindings: Arc<Bindings>,
        transactions: Transactions,
        pool: Arc<pool::Membership>,
        federation: Option<Arc<Federation>>,
    ) -> (Core, ArchiveWriter) {
        let agent = config.server.agent.clone();
        let transports = transactions.transports().clone();
        let store = directory.store().clone();
        let timeout = std::time::Duration::from_millis(config.database.timeout_ms);
        let (archive, writer) = Archive::new(config.archive.clone(), store.clone(), timeout);
        let archive = Arc::new(archive);
        let loops = proxy::loops::Loops::default();
        // The member every request to partners leaves from, if the operator named one.
        let federation_edge = (config.federation.enabled && !config.federation.edge_member.is_empty())
            .then(|| config.federation.edge_member.clone());
        let location = Arc::new(Location::new(bindings.clone(), transports.clone(), pool.clone()));
        let gate = Arc::new(Gate::new(
            Auth::new(&config.auth),
            directory.clone(),
            location.clone(),
            transports.clone(),
            agent.clone(),
            config.messaging.disabled_user_status,
            federation.clone(),
        ));
        let messaging = Arc::new(Messaging::new(
            config.messaging.clone(),
            config.groups.clone(),
            federation_edge.clone(),
            gate.clone(),
            location.clone(),
            archive.clone(),
            Offline::new(config.messaging.clone(), store.clone(), agent.clone(), timeout),
            transactions.clone(),
            agent.clone(),
            loops,
        ));
        let presence = Arc::new(Presence::new(
            config.presence.clone(),
            config.groups.max_members_for_subscription,
            agent.clone(),
            store,
            std::time::Duration::from_millis(config.database.timeout_ms),
            gate.clone(),
            location.clone(),
            transactions.clone(),
        ));
        let weak = Arc::downgrade(&presence);
        bindings.set_on_change(move |aor| {
            if let Some(p) = weak.upgrade() {
                p.registration_changed(aor);
            }
        });
        let services = Services {
            edge: pool::edge::Edge::new(
                pool.clone(),
                transports.clone(),
                agent.clone(),
                federation_edge.map(|member| {
                    let directory = directory.clone();
                    pool::edge::FederationEdge {
                        member,
                        serves: Box::new(move |domain: &str| directory.serves(domain)),
                    }
                }),
            ),
            registrar: Registrar::new(
                config.registrar.clone(),
                bindings,
                gate.clone(),
                messaging.clone(),
                transports.clone(),
                agent.clone(),
            ),
            proxy: Proxy::new(
                transactions,
                gate.clone(),
                location,
                archive.clone(),
                agent.clone(),
                std::time::Duration::from_secs(u64::from(config.proxy.dialog_max_hours) * 3600),
                loops,
            ),
            pool,
            messaging,
            presence,
            archive,
            gate,
            directory,
            transports,
            agent,
            federation,
            overload: overload::Overload::new(
                config.server.max_pending_requests,
                std::time::Duration::from_millis(config.server.max_lag_ms),
                timeout,
            ),
        };
        (Core(Arc::new(services)), writer)
    }

    /// Every service's background work (nonces and lockouts, offline messages, archive
    /// conversations, presence expiry and rule changes); runs until dropped.
    pub async fn run(&self) {
        let s = &self.0;
        tokio::join!(
            s.gate.run(),
            s.messaging.run(s.directory.waiting()),
            s.archive.run_sessions(),
            s.presence.run(s.directory.changes()),
            self.follow_the_pool(),
            self.forget_changed_users(s.directory.changes()),
            s.overload.run(),
            async {
                if let Some(f) = &s.federation {
                    f.follow(s.directory.federation_changes()).await
                }
            },
        );
    }

    /// A user changed (password, enabled, removed, anything of the account): the connections
    /// that authenticated as them no longer speak for them, and their next request is
    /// challenged with the account as it is now. Missing changes (the feed lagged) forgets
    /// every connection's identity: fail closed.
    async fn forget_changed_users(&self, mut changes: tokio::sync::broadcast::Receiver<Arc<str>>) {
        use tokio::sync::broadcast::error::RecvError;
        let flows = &self.0.transports.flows;
        loop {
            match changes.recv().await {
                Ok(aor) => flows.forget_identity(&aor),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "account changes missed; every connection authenticates again");
                    flows.forget_all_identities();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Whenever the pool changes, what moved is handed on: each kept registration of our
    /// clients goes to its AOR's new home (this member included), the publications of AORs
    /// homed elsewhere now are handed over there, their bindings and subscriptions dropped here
    /// (their watchers told to subscribe again), and our clients' subscriptions served by a member that no longer
    /// homes their resource end with `deactivated`.
    async fn follow_the_pool(&self) {
        let mut changes = self.0.pool.changes();
        while changes.changed().await.is_ok() {
            self.rehome().await;
        }
    }

    /// On a graceful stop of a front end that is alone (a single node): its dynamic state to
    /// the store, for [`Core::restore`] at its next start. A pool member saves nothing: what it
    /// homes went to the others when it drained.
    pub async fn save(&self) {
        let s = &self.0;
        if !s.pool.alone() {
            return;
        }
        let saved = saved::Saved::take(s.registrar.bindings(), &s.presence);
        let Ok(data) = serde_json::to_string(&saved) else { return };
        match s.directory.store().save_state(s.pool.id(), &data).await {
            Ok(()) => tracing::info!(bytes = data.len(), "dynamic state saved for the restart"),
            Err(e) => tracing::warn!(error = %e, "dynamic state not saved; clients register again"),
        }
    }

    /// At start: what this front end saved when it last stopped, less the time it was down.
    pub async fn restore(&self) {
        let s = &self.0;
        let taken = match s.directory.store().take_state(s.pool.id()).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "saved dynamic state not read"),
        };
        let (saved_at, data) = taken;
        let Ok(saved) = serde_json::from_str::<saved::Saved>(&data) else {
            return tracing::warn!("saved dynamic state unreadable; dropped");
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let down = std::time::Duration::from_secs(now.saturating_sub(u64::try_from(saved_at).unwrap_or(0)));
        let (b, p, sub) = saved.restore(down, s.registrar.bindings(), &s.presence);
        tracing::info!(bindings = b, publications = p, subscriptions = sub, "dynamic state restored");
        // Groups may have changed while it was down: their watchers get the difference, read
        // in the background (a slow store must not hold the start).
        let presence = s.presence.clone();
        tokio::spawn(async move { presence.groups_changed().await });
    }

    /// The digest authentication of SIP requests, which the directory's HTTPS endpoint
    /// shares (`directory_http`): the same nonces and lockouts.
    pub fn auth(&self) -> &Auth {
        self.0.gate.auth()
    }

    /// What `watcher` may see of `aor`'s presence now (see [`Presence::seen_by`]), for the
    /// directory's search entries.
    pub async fn presence_seen_by(&self, aor: &str, watcher: &str) -> Option<presence::Seen> {
        self.0.presence.seen_by(aor, watcher).await
    }

    /// Requests waiting on the store or another member now.
    pub fn pending_requests(&self) -> usize {
        self.0.overload.pending()
    }

    /// Whether an out-of-dialog request renews what exists (kept under overload): a REGISTER
    /// with the Call-ID of one of its AOR's bindings, or a PUBLISH with an entity tag.
    fn refreshes(&self, msg: &Message) -> bool {
        match msg.method() {
            Some(Method::Publish) => msg.header(HeaderName::SipIfMatch).is_some(),
            Some(Method::Register) => {
                let (Some(call_id), Some(to)) = (msg.call_id(), msg.to()) else { return false };
                let Some(aor) = sipfront_proto::Aor::from_uri(&to.uri) else { return false };
                self.0.registrar.bindings().get(aor.as_str()).iter().any(|b| b.call_id.as_bytes() == call_id)
            }
            _ => false,
        }
    }

    /// Hands on what the pool's last change moved (see [`Core::run`]); returns once the
    /// registrations are replayed and the publications handed over (or after two seconds).
    /// A draining member calls it before it closes its connections.
    pub async fn rehome(&self) {
        let s = &self.0;
        for replay in s.edge.rehome() {
            match replay.home.clone() {
                Some(home) => s.edge.replay_to(replay, &home),
                None => {
                    let req = Incoming {
                        msg: replay.msg,
                        source: replay.source,
                        received: tokio::time::Instant::now(),
                        relayed: Some(replay.vouch),
                    };
                    let resp = s.registrar.handle(&req).await;
                    tracing::debug!(code = resp.status(), "registration replayed here");
                }
            }
        }
        for aor in s.registrar.bindings().aors() {
            if !s.pool.homes(&aor) {
                s.registrar.bindings().update(&aor, Vec::clear);
            }
        }
        let pool = s.pool.clone();
        let handovers = s.presence.moved_away(move |aor| pool.homes(aor));
        s.presence.tend_feeds();
        s.edge.deactivate_moved();
        let all = async {
            for h in handovers {
                let _ = h.await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), all).await;
    }
}

impl TransactionUser for Core {
    fn before_transaction(&self, msg: Message, source: Source) -> Option<Message> {
        self.0.edge.before_transaction(msg, source)
    }

    fn on_request(&self, mut req: Incoming, tx: ServerTx) {
        let s = &self.0;
        if req.msg.header_named(pool::hop::HEADER).is_some() {
            // Relayed by another member: what it says of the client counts under its seal.
            match s.pool.seal().verify(&req.msg) {
                Ok(vouch) => {
                    // Read into the request; a seal is good for one hop only.
                    req.relayed = Some(vouch);
                    pool::hop::remove(&mut req.msg);
                }
                Err(forged) => {
                    metrics::counter!(m::POOL_HOPS_REFUSED, "reason" => forged.label()).increment(1);
                    let mut r = sipfront_proto::reply::response(&req.msg, 403, &s.agent);
                    r.set_reason("Forged pool hop");
                    return tx.respond(r);
                }
            }
        }
        let in_dialog = req.msg.to().is_some_and(|t| t.tag().is_some());
        let method = req.msg.method().cloned();
        // What we act on as a UAS must not require an extension we lack (RFC 3261 8.2.2.3);
        // as a proxy we honour Proxy-Require only (RFC 3261 16.3 item 5).
        let uas = method == Some(Method::Register)
            || !in_dialog && !matches!(method, Some(Method::Options | Method::Invite | Method::Subscribe));
        let to_us = method == Some(Method::Register) || method == Some(Method::Options) && !in_dialog;
        let refusal = (!to_us)
            .then(|| options::unsupported(&req.msg, HeaderName::ProxyRequire, &s.agent))
            .flatten()
            .or_else(|| uas.then(|| options::unsupported(&req.msg, HeaderName::Require, &s.agent)).flatten());
        if let Some(r) = refusal {
            return tx.respond(r);
        }
        // Overloaded: new work is refused before any is done; what is under way goes on.
        if !in_dialog && method != Some(Method::Options) && s.overload.overloaded() && !self.refreshes(&req.msg) {
            return tx.respond(s.overload.refuse(&req.msg, &s.agent));
        }
        let core = self.clone();
        match method {
            // Health probes and capability queries: no store, no auth.
            Some(Method::Options) if !in_dialog && s.pool.leaving() && req.relayed.is_none() => {
                tx.respond(options::draining(&req.msg, &s.agent))
            }
            Some(Method::Options) if !in_dialog => tx.respond(options::answer(&req.msg, &s.agent)),
            Some(Method::Register) => run(&s.overload, async move { tx.respond(core.0.registrar.handle(&req).await) }),
            Some(Method::Subscribe) if in_dialog => match s.presence.subscription_of(&req.msg) {
                Some(sub) => run(&s.overload, async move { core.0.presence.refresh(req, tx, sub).await }),
                None => run(&s.overload, async move { core.0.proxy.in_dialog(req, Some(tx)).await }),
            },
            Some(Method::Notify) if in_dialog && req.msg.call_id().is_some_and(|c| c.starts_with(b"feed-")) => {
                match s.presence.feed_notify(&req.msg) {
                    Some(resp) => tx.respond(resp),
                    None => run(&s.overload, async move { core.0.proxy.in_dialog(req, Some(tx)).await }),
                }
            }
            _ if in_dialog => run(&s.overload, async move { core.0.proxy.in_dialog(req, Some(tx)).await }),
            Some(Method::Message) => run(&s.overload, async move { tx.respond(core.0.messaging.handle(&req).await) }),
            Some(Method::Invite) => run(&s.overload, async move { core.0.proxy.invite(req, tx).await }),
            // Presence of a partner's user: the subscription goes to its domain's edge.
            Some(Method::Subscribe) => match s.gate.foreign_domain(&req.msg) {
                Some(domain) => run(&s.overload, async move { core.0.proxy.federate(req, tx, domain).await }),
                None => run(&s.overload, async move { core.0.presence.handle(req, tx).await }),
            },
            Some(Method::Publish) => run(&s.overload, async move { core.0.presence.handle(req, tx).await }),
            _ => run(&s.overload, async move {
                // Methods we do not implement are refused only once the sender has proved who it
                // is, so that an unauthenticated probe learns nothing.
                let resp = match core.0.gate.sender(&req).await {
                    Ok(_) => options::not_implemented(&req.msg, &core.0.agent),
                    Err(refusal) => refusal,
                };
                tx.respond(resp)
            }),
        }
    }

    fn on_cancel(&self, invite: &TxKey) {
        self.0.proxy.on_cancel(invite);
    }

    fn on_stray_ack(&self, mut req: Incoming) {
        // A member's seal on an ACK (checked by the edge where it mattered) is for one hop.
        pool::hop::remove(&mut req.msg);
        if req.msg.to().is_some_and(|t| t.tag().is_some()) {
            let core = self.clone();
            run(&self.0.overload, async move { core.0.proxy.in_dialog(req, None).await });
        }
    }

    fn on_stray_response(&self, resp: Message, source: Source) {
        let Some(resp) = self.0.edge.response(resp, &source) else { return };
        if !self.0.proxy.stray_response(resp) {
            metrics::counter!(m::STRAY_RESPONSES).increment(1);
        }
    }

    fn on_flow_closed(&self, flow: FlowId, identity: Option<Arc<str>>) {
        self.0.edge.flow_closed(flow);
        self.0.pool.flow_closed(flow);
        if let Some(f) = &self.0.federation {
            f.flow_closed(flow);
        }
        if let Some(aor) = identity {
            self.0.registrar.flow_closed(flow, &aor);
        }
    }
}

/// Runs a request's handling on the receiving task when it completes without waiting (every
/// cache hit), and on a task of its own only when it has to wait for the store; that task
/// counts as pending work for overload control.
fn run(overload: &overload::Overload, fut: impl Future<Output = ()> + Send + 'static) {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        // The next poll, by the spawned task, registers the real waker.
        tokio::spawn(overload.track(fut));
    }
}

/// Bytes from the operating system's CSPRNG, for keys and unguessable identifiers.
pub fn secure_random(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // No weaker fallback: on Linux getrandom fails only where both the getrandom(2) syscall
    // and /dev/urandom are unavailable, and there the standard library has already panicked
    // seeding the first HashMap (std reads the same sources, and panics when both fail).
    getrandom::fill(&mut buf).expect("the OS random source, which std's HashMap seeding already needed");
    buf
}
