//! The routing core: what a request means and who answers it. It never touches sockets: it
//! answers through the [`ServerTx`] it is given and sends through client transactions.

pub mod archive;
pub mod auth;
pub mod directory;
pub mod lockout;
pub mod messaging;
pub mod offline;
pub mod options;
pub mod presence;
pub mod proxy;
pub mod registrar;
pub mod reply;

use crate::config::Config;
use crate::ops::metrics as m;
use crate::state::bindings::Bindings;
use crate::transaction::{Incoming, ServerTx, TransactionUser, Transactions};
use crate::transport::flows::FlowId;
use crate::transport::Transports;
use archive::{Archive, ArchiveWriter};
use auth::{Auth, Verdict};
use directory::Directory;
use messaging::Messaging;
use offline::Offline;
use presence::Presence;
use proxy::{Hop, Proxy};
use registrar::Registrar;
use sipfront_proto::{HeaderName, Host, Message, Method, NameAddr, Uri};
use std::future::Future;
use std::sync::Arc;
use std::task::Context;

/// Methods this server implements; the `Allow` of every 200 to OPTIONS and of every 405/501.
pub const ALLOW: &str =
    "OPTIONS, REGISTER, MESSAGE, INVITE, ACK, CANCEL, BYE, INFO, UPDATE, PRACK, PUBLISH, SUBSCRIBE, NOTIFY";
/// Body types it accepts.
pub const ACCEPT: &str = "application/sdp, text/plain, text/html, message/cpim, application/im-iscomposing+xml";
/// Extensions it supports (RFC 3327 path, RFC 5626 outbound, RFC 5627 gruu).
pub const SUPPORTED: &str = "path, outbound, gruu";
const SUPPORTED_TAGS: [&str; 3] = ["path", "outbound", "gruu"];

#[derive(Clone)]
pub struct Core(Arc<Inner>);

struct Inner {
    agent: String,
    auth: Auth,
    directory: Arc<Directory>,
    registrar: Registrar,
    messaging: Arc<Messaging>,
    presence: Arc<Presence>,
    offline: Offline,
    archive: Archive,
    proxy: Proxy,
    transports: Arc<Transports>,
    transactions: Transactions,
    disabled_user_status: u16,
}

impl Core {
    /// The core, and the archive writer it feeds (the caller runs it).
    pub fn new(
        config: &Config,
        directory: Arc<Directory>,
        bindings: Arc<Bindings>,
        transactions: Transactions,
    ) -> (Core, ArchiveWriter) {
        let agent = config.server.agent.clone();
        let transports = transactions.transports().clone();
        let (archive, writer) = Archive::new(config.archive.clone(), directory.store().clone());
        let messaging =
            Arc::new(Messaging::new(config.messaging.clone(), bindings.clone(), transports.clone(), agent.clone()));
        let presence = Arc::new(Presence::new(
            config.presence.clone(),
            agent.clone(),
            directory.store().clone(),
            std::time::Duration::from_millis(config.database.timeout_ms),
            bindings.clone(),
            messaging.clone(),
            transactions.clone(),
        ));
        let weak = Arc::downgrade(&presence);
        bindings.set_on_change(move |aor| {
            if let Some(p) = weak.upgrade() {
                p.registration_changed(aor);
            }
        });
        let core = Core(Arc::new(Inner {
            auth: Auth::new(&config.auth),
            registrar: Registrar::new(config.registrar.clone(), bindings.clone(), agent.clone()),
            messaging,
            presence,
            offline: Offline::new(config.messaging.clone(), directory.store().clone(), agent.clone()),
            archive,
            proxy: Proxy::new(transactions.clone(), agent.clone()),
            agent,
            directory,
            transports,
            transactions,
            disabled_user_status: config.messaging.disabled_user_status,
        }));
        (core, writer)
    }

    /// The core's own timers (nonces, lockouts); runs until dropped.
    pub async fn run(&self) {
        let presence = &self.0.presence;
        let mut changes = self.0.directory.changes();
        let offline_changes = self.0.directory.waiting();
        let follow_changes = async {
            loop {
                match changes.recv().await {
                    Ok(aor) => presence.rules_changed(&aor).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "presence fell behind the change log");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        tokio::join!(
            self.0.auth.run(),
            self.0.offline.run_purge(),
            self.0.offline.follow(offline_changes),
            self.0.archive.run_sessions(),
            presence.run(),
            follow_changes
        );
    }

    async fn answer(&self, req: &Incoming) -> Message {
        let msg = &req.msg;
        let agent = &self.0.agent;
        // RFC 3261 8.2.2.3: an extension we do not support, required of us, is a 420.
        if let Some(r) = unsupported(msg, HeaderName::Require, agent) {
            return r;
        }
        match msg.method() {
            Some(Method::Register) => self.register(req).await,
            _ => {
                if let Err(refusal) = self.authenticate_sender(req).await {
                    return refusal;
                }
                if let Some(refusal) = self.foreign_route(req) {
                    return refusal;
                }
                if msg.method() == Some(&Method::Message) {
                    return self.message(req).await;
                }
                if msg.method() == Some(&Method::Publish) {
                    let publisher = msg.from().as_ref().and_then(aor_of).unwrap_or_default();
                    return match self.callee(msg).await {
                        Ok(to) => self.0.presence.publish(msg, &publisher, &to.aor),
                        Err(refusal) => refusal,
                    };
                }
                // RFC 3261 8.2.1: a method we do not implement is answered 501 with Allow.
                let mut r = reply::response(msg, 501, agent);
                r.push_header(HeaderName::Allow, ALLOW);
                r
            }
        }
    }

    /// REGISTER: the AOR's domain must be ours, its owner must authenticate, and may only
    /// register itself (RFC 3261 10.3 steps 1 to 4).
    async fn register(&self, req: &Incoming) -> Message {
        let msg = &req.msg;
        let agent = &self.0.agent;
        let Some(to) = msg.to() else { return reply::response(msg, 400, agent) };
        let Some(aor) = aor_of(&to) else { return reply::response(msg, 404, agent) };
        let domain = aor.rsplit_once('@').map_or("", |(_, d)| d).to_string();
        let uri_ok = msg.request_uri().and_then(|u| Uri::parse(u).ok()).is_some_and(|u| self.is_ours(&u, req));
        if !self.0.directory.serves(&domain) || !uri_ok {
            return self.not_served(msg);
        }
        let user = match self
            .0
            .auth
            .verify(msg, HeaderName::Authorization, &domain, req.source.remote.ip(), &self.0.directory)
            .await
        {
            Verdict::Authenticated(u) => u,
            other => return self.refusal(msg, other, 401, &domain),
        };
        if !user.aor.eq_ignore_ascii_case(&aor) {
            // Only one's own AOR may be registered (third-party registration is not allowed).
            return reply::response(msg, 403, agent);
        }
        let resp = self.0.registrar.register(req, &aor);
        if resp.status() == Some(200)
            && self.0.offline.may_have(&aor)
            && !self.0.registrar.bindings.get(&aor).is_empty()
        {
            // Messages kept while the user was away go out now, after this 200.
            let core = self.clone();
            let aor = aor.clone();
            tokio::spawn(async move { core.0.offline.deliver(&aor, &core.0.messaging, &core.0.transactions).await });
        }
        if resp.status() == Some(200) {
            if let Some(flow) = req.source.flow {
                // The connection now speaks for this user (as OCS binds a connection to its
                // security association): later requests on it need no challenge.
                self.0.transports.flows.bind_identity(flow, &aor);
            }
        }
        resp
    }

    /// MESSAGE (RFC 3428) from an authenticated user to one of ours.
    async fn message(&self, req: &Incoming) -> Message {
        let msg = &req.msg;
        let messaging = &self.0.messaging;
        if let Some(refusal) = messaging.refusal(msg) {
            return refusal;
        }
        if proxy::loops::looped(msg) {
            return reply::response(msg, 482, &self.0.agent);
        }
        let to = match self.callee(msg).await {
            Ok(to) => to,
            Err(refusal) => return refusal,
        };
        let sender = msg.from().as_ref().and_then(aor_of).unwrap_or_default();
        let targets = messaging.targets(&to);
        if targets.is_empty() && !self.0.offline.enabled() {
            return messaging.unavailable(msg);
        }
        let archive = &self.0.archive;
        if archive.applies(&sender, &to.aor) && !archive.record(msg, &sender, &to.aor) && archive.critical() {
            // Critical mode: no unarchived IM.
            let mut r = reply::response(msg, 503, &self.0.agent);
            r.set_reason("Service Unavailable (archive unavailable)");
            r.push_header(HeaderName::RetryAfter, "5");
            return r;
        }
        if targets.is_empty() {
            return self.0.offline.keep(msg, &to.aor, &sender).await;
        }
        messaging.relay(&self.0.transactions, msg, targets).await
    }

    /// The user a request is addressed to: one of ours, enabled.
    async fn callee(&self, msg: &Message) -> Result<messaging::Recipient, Message> {
        let messaging = &self.0.messaging;
        let recipient = msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| messaging.recipient(&u));
        let Some(to) = recipient else { return Err(reply::response(msg, 404, &self.0.agent)) };
        match self.0.directory.user(&to.aor).await {
            Ok(Some(u)) if u.enabled => Ok(to),
            Ok(Some(_)) => Err(reply::response(msg, self.0.disabled_user_status, &self.0.agent)),
            Ok(None) => Err(reply::response(msg, 404, &self.0.agent)),
            Err(_) => Err(self.refusal(msg, Verdict::Unavailable, 407, "")),
        }
    }

    /// An initial INVITE (RFC 3261 16.3 to 16.6): checked, authenticated, forked to every
    /// binding of the callee with Record-Route, and answered as the branches answer.
    async fn invite(&self, req: Incoming, tx: ServerTx) {
        let msg = &req.msg;
        let agent = &self.0.agent;
        if msg.max_forwards() == Some(0) {
            return tx.respond(reply::response(msg, 483, agent));
        }
        if proxy::loops::looped(msg) {
            return tx.respond(reply::response(msg, 482, agent));
        }
        if let Err(refusal) = self.authenticate_sender(&req).await {
            return tx.respond(refusal);
        }
        if let Some(refusal) = self.foreign_route(&req) {
            return tx.respond(refusal);
        }
        let to = match self.callee(msg).await {
            Ok(to) => to,
            Err(refusal) => return tx.respond(refusal),
        };
        let targets = self.0.messaging.targets(&to);
        if targets.is_empty() {
            metrics::counter!(m::PROXIED_INVITES, "code" => "480").increment(1);
            return tx.respond(self.0.messaging.unavailable(msg));
        }
        tx.provisional(reply::response(msg, 100, agent));
        let forks = targets
            .iter()
            .map(|b| {
                let (mut fork, target) = self.0.messaging.fork(msg, b, &proxy::loops::branch(msg));
                self.0.proxy.record_route(&mut fork, &req.source, &target, b.source.local);
                (fork, target)
            })
            .collect();
        self.0.proxy.forward_invite(tx, msg, forks).await;
    }

    /// An initial SUBSCRIBE: authenticated like any request of our users, then presence.
    async fn subscribe(&self, req: Incoming, tx: ServerTx) {
        if let Err(refusal) = self.authenticate_sender(&req).await {
            return tx.respond(refusal);
        }
        if let Some(refusal) = self.foreign_route(&req) {
            return tx.respond(refusal);
        }
        let watcher = req.msg.from().as_ref().and_then(aor_of).unwrap_or_default();
        let presence = self.0.presence.clone();
        let (resp, followup) = presence.subscribe(&req, &watcher).await;
        tx.respond(resp);
        presence.follow(followup);
    }

    /// A request inside a dialog (its To has a tag; `tx` is `None` for the ACK of a 2xx):
    /// through us when we record-routed the dialog, otherwise there is no such dialog here.
    async fn in_dialog(&self, req: Incoming, tx: Option<ServerTx>) {
        let agent = &self.0.agent;
        let received = &req.msg;
        let respond = |tx: Option<ServerTx>, resp: Message| {
            if let Some(tx) = tx {
                tx.respond(resp);
            }
        };
        if received.method() == Some(&Method::Subscribe) {
            if let Some((resp, followup)) = self.0.presence.resubscribe(received) {
                respond(tx, resp);
                self.0.presence.follow(followup);
                return;
            }
        }
        let mut msg = received.clone();
        let target = match self.0.proxy.next_hop(&mut msg, &req.source) {
            Hop::To(target) => target,
            Hop::NotOurs => return respond(tx, reply::response(received, 481, agent)),
            Hop::Refused(code, reason) => {
                let mut r = reply::response(received, code, agent);
                r.set_reason(reason);
                return respond(tx, r);
            }
        };
        if received.max_forwards() == Some(0) {
            return respond(tx, reply::response(received, 483, agent));
        }
        if received.method() == Some(&Method::Message) {
            // IM inside a session is archived as pager-mode IM is.
            let aor = |a: Option<NameAddr<'_>>| a.as_ref().and_then(aor_of).unwrap_or_default();
            let (sender, recipient) = (aor(received.from()), aor(received.to()));
            let archive = &self.0.archive;
            if archive.applies(&sender, &recipient)
                && !archive.record(received, &sender, &recipient)
                && archive.critical()
            {
                let mut r = reply::response(received, 503, agent);
                r.set_reason("Service Unavailable (archive unavailable)");
                r.push_header(HeaderName::RetryAfter, "5");
                return respond(tx, r);
            }
        }
        self.0.proxy.forward_in_dialog(tx, received, msg, req.source.local, target).await;
    }

    /// An initial request may carry a Route naming us (a preloaded outbound proxy); a Route to
    /// anywhere else is refused: we are not an open relay (RFC 3261 16.4).
    fn foreign_route(&self, req: &Incoming) -> Option<Message> {
        let foreign = req.msg.name_addrs(HeaderName::Route).any(|r| r.map_or(true, |r| !self.is_ours(&r.uri, req)));
        foreign.then(|| {
            let mut r = reply::response(&req.msg, 403, &self.0.agent);
            r.set_reason("Forbidden (Route to elsewhere: not a relay)");
            r
        })
    }

    /// Out-of-dialog requests from our users carry their credentials (407 otherwise), unless
    /// they come on a connection that user authenticated with a REGISTER; and their From must
    /// be the authenticated identity.
    async fn authenticate_sender(&self, req: &Incoming) -> Result<(), Message> {
        let msg = &req.msg;
        let agent = &self.0.agent;
        let uri = msg.request_uri().and_then(|u| Uri::parse(u).ok());
        let to_us = uri.as_ref().is_some_and(|u| self.is_ours(u, req));
        let Some(from) = msg.from().as_ref().and_then(aor_of) else { return Err(reply::response(msg, 400, agent)) };
        let from_domain = from.rsplit_once('@').map_or("", |(_, d)| d).to_string();
        if !to_us {
            return Err(self.not_served(msg));
        }
        if !self.0.directory.serves(&from_domain) {
            // Not one of our users, and there is no federation: nothing to relay for them.
            let mut r = reply::response(msg, 403, agent);
            r.set_reason("Forbidden (unknown From domain)");
            return Err(r);
        }
        if let Some(flow) = req.source.flow {
            if let Some(identity) = self.0.transports.flows.identity(flow) {
                return if identity.eq_ignore_ascii_case(&from) {
                    Ok(())
                } else {
                    Err(reply::response(msg, 403, agent))
                };
            }
        }
        match self
            .0
            .auth
            .verify(msg, HeaderName::ProxyAuthorization, &from_domain, req.source.remote.ip(), &self.0.directory)
            .await
        {
            Verdict::Authenticated(u) if u.aor.eq_ignore_ascii_case(&from) => Ok(()),
            Verdict::Authenticated(_) => {
                let mut r = reply::response(msg, 403, agent);
                r.set_reason("Forbidden (From does not match the authenticated user)");
                Err(r)
            }
            other => Err(self.refusal(msg, other, 407, &from_domain)),
        }
    }

    fn refusal(&self, msg: &Message, verdict: Verdict, challenge_code: u16, realm: &str) -> Message {
        let agent = &self.0.agent;
        match verdict {
            Verdict::Authenticated(_) => reply::response(msg, 500, agent),
            Verdict::Challenge { stale } => self.0.auth.challenge(msg, challenge_code, realm, stale, agent),
            Verdict::Reject(code, reason) => {
                let mut r = reply::response(msg, code, agent);
                r.set_reason(format!("{} ({reason})", sipfront_proto::reason_phrase(code)));
                r
            }
            Verdict::Unavailable => {
                metrics::counter!(m::STORE_ERRORS).increment(1);
                let mut r = reply::response(msg, 503, agent);
                r.push_header(HeaderName::RetryAfter, "5");
                r
            }
        }
    }

    /// 404 for a domain this server does not serve (there is no federation to relay to).
    fn not_served(&self, msg: &Message) -> Message {
        let mut r = reply::response(msg, 404, &self.0.agent);
        r.set_reason("Domain Not Served");
        r
    }

    /// Whether a Request-URI names this server: a domain it serves, or the address the
    /// request arrived on (clients often register to the server's IP).
    fn is_ours(&self, uri: &Uri<'_>, req: &Incoming) -> bool {
        match uri.host() {
            Host::Name(n) => {
                let n = String::from_utf8_lossy(n).to_ascii_lowercase();
                n == "localhost" || self.0.directory.serves(n.trim_end_matches('.'))
            }
            Host::V4(ip) => std::net::IpAddr::V4(ip) == req.source.local.ip(),
            Host::V6(ip) => std::net::IpAddr::V6(ip) == req.source.local.ip(),
        }
    }
}

fn has_to_tag(msg: &Message) -> bool {
    msg.to().is_some_and(|t| t.tag().is_some())
}

/// The 420 for a request that requires (in `header`) an extension we do not support (RFC 3261
/// 8.2.2.3); `None` when there is none.
fn unsupported(msg: &Message, header: HeaderName, agent: &str) -> Option<Message> {
    let unknown: Vec<String> = msg
        .list(header)
        .filter(|t| !SUPPORTED_TAGS.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(t)))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let mut r = reply::response(msg, 420, agent);
    r.push_header(HeaderName::Unsupported, unknown.join(", "));
    Some(r)
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

/// `user@domain` of a SIP URI in a From or To: the user unescaped, the domain in lower case.
pub fn aor_of(a: &NameAddr<'_>) -> Option<String> {
    if !a.uri.is_sip() {
        return None;
    }
    let user = sipfront_proto::unescape(a.uri.user()?);
    let Host::Name(domain) = a.uri.host() else { return None };
    Some(format!("{}@{}", String::from_utf8_lossy(&user), String::from_utf8_lossy(domain).to_ascii_lowercase()))
}

impl TransactionUser for Core {
    fn on_request(&self, req: Incoming, tx: ServerTx) {
        let method = req.msg.method();
        if method == Some(&Method::Options) && !has_to_tag(&req.msg) {
            // Health probes and capability queries: no store, no auth.
            tx.respond(options::answer(&req.msg, &self.0.agent));
            return;
        }
        let core = self.clone();
        if method != Some(&Method::Register) {
            // A proxy honours Proxy-Require only (RFC 3261 16.3 item 5); Require is for the UAS.
            if let Some(r) = unsupported(&req.msg, HeaderName::ProxyRequire, &self.0.agent) {
                return tx.respond(r);
            }
            if has_to_tag(&req.msg) {
                return run(async move { core.in_dialog(req, Some(tx)).await });
            }
            if method == Some(&Method::Invite) {
                return run(async move { core.invite(req, tx).await });
            }
            if method == Some(&Method::Subscribe) {
                return run(async move { core.subscribe(req, tx).await });
            }
        }
        run(async move {
            let resp = core.answer(&req).await;
            tx.respond(resp);
        });
    }

    fn on_cancel(&self, invite: &crate::transaction::key::TxKey) {
        self.0.proxy.on_cancel(invite);
    }

    fn on_stray_ack(&self, req: Incoming) {
        if has_to_tag(&req.msg) {
            let core = self.clone();
            run(async move { core.in_dialog(req, None).await });
        }
    }

    fn on_stray_response(&self, resp: Message, _source: crate::transport::Source) {
        if !self.0.proxy.stray_response(resp) {
            metrics::counter!(m::STRAY_RESPONSES).increment(1);
        }
    }

    /// RFC 5626: a client is reached over the flow it registered on; once that flow is gone,
    /// so are the bindings that depended on it.
    fn on_flow_closed(&self, flow: FlowId, identity: Option<Arc<str>>) {
        if let Some(aor) = identity {
            self.0.registrar.bindings.update(&aor, |v| v.retain(|b| b.source.flow != Some(flow)));
        }
    }
}

/// Runs a request's handling on the receiving task when it completes without waiting (every
/// cache hit), and on a task of its own only when it has to wait for the store.
fn run(fut: impl Future<Output = ()> + Send + 'static) {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        // The next poll, by the spawned task, registers the real waker.
        tokio::spawn(fut);
    }
}
