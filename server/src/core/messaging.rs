//! Instant messages in pager mode (RFC 3428): a MESSAGE from an authenticated user to an AOR
//! we serve is forked in parallel to every binding of the recipient, each over the binding's
//! own flow (RFC 5626: a TCP or TLS client is reached over the connection it registered on,
//! never a new one), and the sender gets the best final response (RFC 3261 16.7).

use super::{reply, SUPPORTED};
use crate::config;
use crate::ops::metrics as m;
use crate::state::bindings::{Binding, Bindings};
use crate::transaction::{ClientTx, Transactions};
use crate::transport::{Target, Transport, Transports};
use sipfront_proto::{HeaderName, Host, Message, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub struct Messaging {
    cfg: config::Messaging,
    bindings: Arc<Bindings>,
    transports: Arc<Transports>,
    agent: String,
}

/// Who a Request-URI names: an AOR, and possibly one instance of it (a GRUU, RFC 5627).
pub struct Recipient {
    pub aor: String,
    /// pub-gruu: the `+sip.instance` (`<urn:...>`) it names.
    instance: Option<String>,
    /// temp-gruu: the temp-gruu user part.
    temp_gruu: Option<String>,
}

impl Messaging {
    pub fn new(
        cfg: config::Messaging,
        bindings: Arc<Bindings>,
        transports: Arc<Transports>,
        agent: String,
    ) -> Messaging {
        Messaging { cfg, bindings, transports, agent }
    }

    /// The AOR (and instance) a Request-URI addresses; `None` if it is not one of ours.
    pub fn recipient(&self, uri: &Uri<'_>) -> Option<Recipient> {
        let Host::Name(domain) = uri.host() else { return None };
        let domain = String::from_utf8_lossy(domain).to_ascii_lowercase();
        let user = String::from_utf8_lossy(&sipfront_proto::unescape(uri.user()?)).into_owned();
        match uri.params().get("gr") {
            // temp-gruu: `sip:tgruu.X@domain;gr`
            Some(None) => {
                let aor = self.bindings.temp_gruu_aor(&user)?;
                Some(Recipient { aor: aor.to_string(), instance: None, temp_gruu: Some(user) })
            }
            // pub-gruu: `sip:user@domain;gr=urn:uuid:...`
            Some(Some(urn)) => Some(Recipient {
                aor: format!("{user}@{domain}"),
                instance: Some(format!("<{}>", String::from_utf8_lossy(urn))),
                temp_gruu: None,
            }),
            None => Some(Recipient { aor: format!("{user}@{domain}"), instance: None, temp_gruu: None }),
        }
    }

    /// The answer refusing a MESSAGE that fails what RFC 3428 asks before it is relayed (a
    /// body of an accepted type, within the size limit, hops left); `None` if it passes.
    pub fn refusal(&self, msg: &Message) -> Option<Message> {
        let refuse = |code: u16, reason: Option<&str>| {
            metrics::counter!(m::MESSAGES, "result" => reply::code_label(code)).increment(1);
            let mut r = reply::response(msg, code, &self.agent);
            if let Some(reason) = reason {
                r.set_reason(reason.to_string());
            }
            r
        };
        if msg.max_forwards() == Some(0) {
            return Some(refuse(483, None));
        }
        if msg.body().len() > self.cfg.max_body {
            return Some(refuse(413, None));
        }
        let Some(content_type) = msg.content_type() else {
            return Some(refuse(400, Some("Bad Request (MESSAGE without Content-Type)")));
        };
        if msg.body().is_empty() {
            return Some(refuse(400, Some("Bad Request (MESSAGE without a body)")));
        }
        let (media, _) = sipfront_proto::scan::split_params(content_type);
        if !self.cfg.content_types.iter().any(|t| t.as_bytes().eq_ignore_ascii_case(media)) {
            // RFC 3428 7: an unsupported type is answered 415 with the types accepted.
            let mut r = refuse(415, None);
            r.push_header(HeaderName::Accept, self.cfg.content_types.join(", "));
            return Some(r);
        }
        None
    }

    /// The bindings a request for `to` may go to: live, of the right instance for a GRUU, and
    /// reachable (a stream binding whose connection is gone is skipped).
    pub fn targets(&self, to: &Recipient) -> Vec<Binding> {
        self.bindings
            .get(&to.aor)
            .into_iter()
            .filter(|b| to.instance.as_deref().is_none_or(|i| b.instance.as_deref() == Some(i)))
            .filter(|b| to.temp_gruu.as_deref().is_none_or(|t| b.temp_gruu.as_deref() == Some(t)))
            .filter(|b| {
                !b.source.transport.is_reliable() || b.source.flow.is_some_and(|f| self.transports.flows.is_open(f))
            })
            .collect()
    }

    /// The reachable bindings of an AOR, all instances.
    pub fn targets_of(&self, aor: &str) -> Vec<Binding> {
        self.targets(&Recipient { aor: aor.to_string(), instance: None, temp_gruu: None })
    }

    /// Forks `req` to every target and answers with the best final response.
    pub async fn relay(&self, txs: &Transactions, req: &Message, targets: Vec<Binding>) -> Message {
        metrics::histogram!(m::MESSAGE_FORKS).record(targets.len() as f64);
        if let [only] = targets.as_slice() {
            // One branch (the common case): its transaction runs right here, no task spawned.
            let (fork, target) = self.fork(req, only, &super::proxy::loops::branch(req));
            let mut resp = txs.final_response(fork, target).await;
            resp.pop_first_element(HeaderName::Via);
            metrics::counter!(m::MESSAGES, "result" => reply::code_label(resp.status().unwrap_or(0))).increment(1);
            return resp;
        }
        let mut branches: Vec<ClientTx> = Vec::with_capacity(targets.len());
        for b in &targets {
            let (fork, target) = self.fork(req, b, &super::proxy::loops::branch(req));
            branches.push(txs.request(fork, target));
        }
        // RFC 3261 16.7: a 2xx goes upstream at once; otherwise wait for every branch and pick.
        let (tx, mut finals) = tokio::sync::mpsc::channel(branches.len().max(1));
        for branch in branches {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(r) = branch.final_response().await {
                    let _ = tx.send(r).await;
                }
            });
        }
        drop(tx);
        let mut best: Option<Message> = None;
        while let Some(resp) = finals.recv().await {
            let code = resp.status().unwrap_or(500);
            if (200..300).contains(&code) {
                best = Some(resp);
                break;
            }
            if best.as_ref().is_none_or(|b| better(code, b.status().unwrap_or(500))) {
                best = Some(resp);
            }
        }
        let mut resp = match best {
            Some(r) => r,
            None => reply::response(req, 480, &self.agent),
        };
        // Our Via goes; the response continues on the request's Vias (RFC 3261 16.7 step 3).
        resp.pop_first_element(HeaderName::Via);
        metrics::counter!(m::MESSAGES, "result" => reply::code_label(resp.status().unwrap_or(0))).increment(1);
        resp
    }

    /// The copy of `req` for one binding (RFC 3261 16.6): new Request-URI, one hop less, the
    /// binding's Path as Route, our Via (with `branch`) on top, our own credentials and the
    /// Route entries naming us removed (the caller checked that only ours were there).
    pub fn fork(&self, req: &Message, b: &Binding, branch: &str) -> (Message, Target) {
        let mut f = req.clone();
        f.set_request_uri(b.uri.to_string());
        f.set_header(HeaderName::MaxForwards, req.max_forwards().unwrap_or(70).saturating_sub(1).to_string());
        // Credentials for our realm were consumed here (RFC 3261 22.3).
        f.remove_headers(HeaderName::ProxyAuthorization);
        f.remove_headers(HeaderName::Route);
        for p in b.path.iter().rev() {
            f.prepend_header(HeaderName::Route, p.to_string());
        }
        let local = b.source.local;
        f.prepend_header(
            HeaderName::Via,
            format!("SIP/2.0/{} {};branch={branch}", b.source.transport.via_name(), local),
        );
        let target = self.target_of(b);
        (f, target)
    }

    /// Where a request for binding `b` is sent: a TCP or TLS client over the flow it
    /// registered on; a UDP contact at the address its URI gives (when it is one; we never
    /// resolve names), or else where its REGISTER came from.
    pub fn target_of(&self, b: &Binding) -> Target {
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

    pub fn unavailable(&self, msg: &Message) -> Message {
        metrics::counter!(m::MESSAGES, "result" => "480").increment(1);
        let mut r = reply::response(msg, 480, &self.agent);
        r.push_header(HeaderName::Supported, SUPPORTED);
        r
    }
}

/// Whether final response `a` beats `b` (RFC 3261 16.7 step 6): 6xx first, then the lowest
/// class, so a 4xx beats a 5xx; within a class the first one received stays.
pub fn better(a: u16, b: u16) -> bool {
    let rank = |c: u16| if c >= 600 { 0 } else { c / 100 };
    rank(a) < rank(b)
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
    fn best_response_order() {
        assert!(better(603, 404));
        assert!(better(404, 503));
        assert!(better(486, 500));
        assert!(!better(404, 480));
        assert!(!better(500, 404));
    }

    #[test]
    fn contact_addresses() {
        assert_eq!(contact_addr("sip:alice@127.0.0.1:5090"), Some("127.0.0.1:5090".parse().unwrap()));
        assert_eq!(contact_addr("sip:alice@[::1]"), Some("[::1]:5060".parse().unwrap()));
        assert_eq!(contact_addr("sip:alice@host.example.test:5090"), None);
    }
}
