//! What a request from outside must pass before a service acts on it: the domain is ours, the
//! sender is one of our users and proves it (digest, or a connection it registered on), its
//! Route names only us, and the user it is for exists and is enabled. Every service asks here,
//! so that no method can be sent around these checks.

// Every check's error is the response that refuses the request, sent next: boxing it would
// only add an allocation to each refusal.
#![allow(clippy::result_large_err)]

use super::auth::{Auth, Verdict};
use super::directory::Directory;
use super::location::{Location, Recipient};
use super::refusal::Refusal;
use crate::core::federation::Federation;
use crate::ops::metrics as m;
use crate::transaction::Incoming;
use crate::transport::Transports;
use sipfront_proto::reply;
use sipfront_proto::{Aor, HeaderName, Host, Message, Uri};
use std::sync::Arc;

pub struct Gate {
    auth: Auth,
    directory: Arc<Directory>,
    location: Arc<Location>,
    transports: Arc<Transports>,
    agent: String,
    /// The answer to a request for a disabled user (403 or 404, `messaging.disabled_user_status`).
    disabled_user_status: u16,
    /// Partner domains' requests come in, and ours go out to them, only with federation on.
    federation: Option<Arc<Federation>>,
}

impl Gate {
    pub fn new(
        auth: Auth,
        directory: Arc<Directory>,
        location: Arc<Location>,
        transports: Arc<Transports>,
        agent: String,
        disabled_user_status: u16,
        federation: Option<Arc<Federation>>,
    ) -> Gate {
        Gate { auth, directory, location, transports, agent, disabled_user_status, federation }
    }

    /// Nonce and lockout timers; runs until dropped.
    pub async fn run(&self) {
        self.auth.run().await
    }

    /// The digest authentication every request passes here, for the directory's HTTPS
    /// endpoint: one set of nonces and one lockout per user and address, whatever the protocol.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// REGISTER: the AOR's domain must be ours, its owner must authenticate, and may only
    /// register itself (RFC 3261 10.3 steps 1 to 4). The AOR to register, or the refusal.
    pub async fn registrant(&self, req: &Incoming) -> Result<Aor, Message> {
        let msg = &req.msg;
        let agent = &self.agent;
        let Some(to) = msg.to() else { return Err(reply::response(msg, 400, agent)) };
        let Some(aor) = Aor::from_uri(&to.uri) else { return Err(reply::response(msg, 404, agent)) };
        let domain = aor.domain();
        let uri_ok = msg.request_uri().and_then(|u| Uri::parse(u).ok()).is_some_and(|u| self.is_ours(&u, req));
        if !self.directory.serves(domain) || !uri_ok {
            return Err(Refusal::DomainNotServed.response(msg, agent));
        }
        if let Some(r) = req.relayed.as_ref().filter(|r| r.replay) {
            // A member replays what this user registered through it: the connection it holds
            // authenticated as the user, which is what the credentials would prove.
            return match r.identity.as_deref() {
                Some(identity) if aor == *identity => Ok(account(identity, aor)),
                _ => Err(reply::response(msg, 403, agent)),
            };
        }
        let verdict = self.auth.verify(msg, HeaderName::Authorization, domain, req.client_ip(), &self.directory).await;
        let user = match verdict {
            Verdict::Authenticated(u) => u,
            other => return Err(self.refusal(msg, other, 401, domain)),
        };
        if aor != user.aor {
            // Only one's own AOR may be registered (third-party registration is not allowed).
            return Err(reply::response(msg, 403, agent));
        }
        self.proven(req);
        // Bound under the account's own spelling, whatever the case of the To (finding 5).
        Ok(account(&user.aor, aor))
    }

    /// An out-of-dialog request from one of our users: its From is one of ours and is who
    /// authenticated, and a Route names only us. The sender's AOR, or the refusal.
    pub async fn sender(&self, req: &Incoming) -> Result<Aor, Message> {
        let sender = self.authenticate_sender(req).await?;
        self.check_route(req)?;
        Ok(sender)
    }

    /// Out-of-dialog requests from our users carry their credentials (407 otherwise), unless
    /// they come on a connection that user authenticated with a REGISTER; and their From must
    /// be the authenticated identity.
    async fn authenticate_sender(&self, req: &Incoming) -> Result<Aor, Message> {
        let msg = &req.msg;
        let agent = &self.agent;
        let uri = msg.request_uri().and_then(|u| Uri::parse(u).ok());
        let to_us = uri.as_ref().is_some_and(|u| self.is_ours(u, req));
        let Some(from) = msg.from().and_then(|f| Aor::from_uri(&f.uri)) else {
            return Err(reply::response(msg, 400, agent));
        };
        let from_domain = from.domain();
        let ours = self.directory.serves(from_domain);
        // Our users may send to partner domains (whether they may is asked by the service,
        // per user and domain); nobody else may send anywhere but here.
        if !(to_us || ours && self.federation.is_some()) {
            return Err(Refusal::DomainNotServed.response(msg, agent));
        }
        if !ours {
            return self.partner(req, from);
        }
        // The user the client's connection authenticated as: here, or at the member that
        // relayed the request (never the identity of a member's own connection).
        let identity = match &req.relayed {
            Some(r) => r.identity.as_deref().map(Arc::<str>::from),
            None => req.source.flow.and_then(|f| self.transports.flows.identity(f)),
        };
        if let Some(identity) = identity {
            return if from == *identity {
                Ok(account(&identity, from))
            } else {
                Err(reply::response(msg, 403, agent))
            };
        }
        let ip = req.client_ip();
        match self.auth.verify(msg, HeaderName::ProxyAuthorization, from_domain, ip, &self.directory).await {
            Verdict::Authenticated(u) if from == u.aor => {
                self.proven(req);
                Ok(account(&u.aor, from))
            }
            Verdict::Authenticated(_) => Err(Refusal::NotTheAuthenticatedUser.response(msg, agent)),
            other => Err(self.refusal(msg, other, 407, from_domain)),
        }
    }

    /// A request From a domain we do not serve: a partner's, if federation is on, its
    /// connection's verified certificate names that domain (RFC 5922 7.3), and the policy
    /// admits it within its request rate.
    fn partner(&self, req: &Incoming, from: Aor) -> Result<Aor, Message> {
        let msg = &req.msg;
        let agent = &self.agent;
        let Some(federation) = &self.federation else {
            // Not one of our users, and there is no federation: nothing to relay for them.
            return Err(Refusal::UnknownFromDomain.response(msg, agent));
        };
        // The partner's certificate names the From domain: checked here on its connection, or
        // by the member it connected to, which says so under the pool's seal.
        let named = match &req.relayed {
            Some(r) => r.partner.as_deref().map(|p| p == from.domain()),
            None => {
                req.source.flow.and_then(|f| self.transports.flows.certificate(f)).map(|ids| ids.names(from.domain()))
            }
        };
        let Some(named) = named else {
            return Err(Refusal::UnknownFromDomain.response(msg, agent));
        };
        if !named {
            metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "in", "result" => "certificate_not_of_domain")
                .increment(1);
            tracing::info!(from = from.as_str(), remote = %req.source.remote, "partner's From domain is not its certificate's");
            return Err(Refusal::CertificateNotOfDomain.response(msg, agent));
        }
        // Counted against the partner's connection cap on the connection it holds here; a
        // member relaying it says so under seal, and its link is no partner's connection.
        let flow = req.source.flow.filter(|_| req.relayed.is_none());
        federation.admit(from.domain(), flow, msg)?;
        if let Some(flow) = flow {
            self.transports.flows.mark_partner(flow);
        }
        Ok(from)
    }

    /// The users and groups requests are checked against.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Whether `domain` (lower case) is one we serve.
    pub fn serves(&self, domain: &str) -> bool {
        self.directory.serves(domain)
    }

    /// The partner domain a request of one of our users is for: its Request-URI names a
    /// domain we do not serve, and federation is on. `None` for a request to us.
    pub fn foreign_domain(&self, msg: &Message) -> Option<String> {
        self.federation.as_ref()?;
        let uri = msg.request_uri().and_then(|u| Uri::parse(u).ok())?;
        let Host::Name(n) = uri.host() else { return None };
        let n = String::from_utf8_lossy(n).to_ascii_lowercase();
        let n = n.trim_end_matches('.');
        (n != "localhost" && !self.directory.serves(n)).then(|| n.to_string())
    }

    /// Federation, for a request of our user `sender` going out: they must be enabled for it.
    pub async fn federating(&self, sender: &Aor, msg: &Message) -> Result<&Arc<Federation>, Message> {
        let Some(federation) = &self.federation else {
            return Err(Refusal::DomainNotServed.response(msg, &self.agent));
        };
        match self.directory.user(sender.as_str()).await {
            Ok(Some(u)) if u.federation => Ok(federation),
            Ok(_) => {
                let refusal = Refusal::SenderNotFederated;
                metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "out", "result" => refusal.label())
                    .increment(1);
                Err(refusal.response(msg, &self.agent))
            }
            Err(_) => Err(self.refusal(msg, Verdict::Unavailable, 407, "")),
        }
    }

    /// A request passed digest authentication: its connection's peer has proven who it is,
    /// and may stay connected past `transport.unauthenticated_timeout_secs`.
    fn proven(&self, req: &Incoming) {
        if let (Some(flow), None) = (req.source.flow, &req.relayed) {
            self.transports.flows.mark_authenticated(flow);
        }
    }

    /// An initial request may carry a Route naming us (a preloaded outbound proxy); a Route to
    /// anywhere else is refused: we are not an open relay (RFC 3261 16.4).
    fn check_route(&self, req: &Incoming) -> Result<(), Message> {
        if req.msg.name_addrs(HeaderName::Route).any(|r| r.map_or(true, |r| !self.is_ours(&r.uri, req))) {
            return Err(Refusal::RouteElsewhere.response(&req.msg, &self.agent));
        }
        Ok(())
    }

    /// The user a request is addressed to: one of ours, enabled, and enabled for federation
    /// when the request is a partner's (the sender passed [`Gate::sender`]).
    pub async fn callee(&self, msg: &Message) -> Result<Recipient, Message> {
        let from_partner =
            msg.from().and_then(|f| Aor::from_uri(&f.uri)).is_some_and(|f| !self.directory.serves(f.domain()));
        let recipient = msg.request_uri().and_then(|u| Uri::parse(u).ok()).and_then(|u| self.location.recipient(&u));
        let not_federated = || {
            let refusal = Refusal::RecipientNotFederated;
            metrics::counter!(m::FEDERATION_REQUESTS, "direction" => "in", "result" => refusal.label()).increment(1);
            refusal.response(msg, &self.agent)
        };
        let Some(to) = recipient else {
            return Err(if from_partner { not_federated() } else { reply::response(msg, 404, &self.agent) });
        };
        match self.directory.user(to.aor.as_str()).await {
            // A partner hears the same of a user who does not federate, is disabled or does
            // not exist: nothing to enumerate our users by.
            Ok(Some(u)) if from_partner && !(u.enabled && u.federation) => Err(not_federated()),
            Ok(None) if from_partner => Err(not_federated()),
            Ok(Some(u)) if u.enabled => {
                let mut to = to;
                to.aor = account(&u.aor, to.aor.clone());
                Ok(to)
            }
            Ok(Some(_)) => Err(reply::response(msg, self.disabled_user_status, &self.agent)),
            Ok(None) => Err(reply::response(msg, 404, &self.agent)),
            Err(_) => Err(self.refusal(msg, Verdict::Unavailable, 407, "")),
        }
    }

    fn refusal(&self, msg: &Message, verdict: Verdict, challenge_code: u16, realm: &str) -> Message {
        let agent = &self.agent;
        match verdict {
            Verdict::Authenticated(_) => reply::response(msg, 500, agent),
            Verdict::Challenge { stale } => self.auth.challenge(msg, challenge_code, realm, stale, agent),
            Verdict::Reject(refusal) => refusal.response(msg, agent),
            Verdict::Unavailable => {
                metrics::counter!(m::STORE_ERRORS).increment(1);
                let mut r = reply::response(msg, 503, agent);
                r.push_header(HeaderName::RetryAfter, "5");
                r
            }
        }
    }

    /// Whether a Request-URI names this server: a domain it serves, or the address the
    /// request arrived on (clients often register to the server's IP).
    fn is_ours(&self, uri: &Uri<'_>, req: &Incoming) -> bool {
        match uri.host() {
            Host::Name(n) => {
                let n = String::from_utf8_lossy(n).to_ascii_lowercase();
                n == "localhost" || self.directory.serves(n.trim_end_matches('.'))
            }
            Host::V4(ip) => std::net::IpAddr::V4(ip) == req.source.local.ip(),
            Host::V6(ip) => std::net::IpAddr::V6(ip) == req.source.local.ip(),
        }
    }
}

/// The account's AOR as the store spells it (`written`), which bindings, publications,
/// subscriptions, rules and the archive are all keyed by; `asked`, the same AOR in another ASCII
/// case, should the store's ever fail to parse.
fn account(written: &str, asked: Aor) -> Aor {
    Aor::parse(written).unwrap_or(asked)
}
