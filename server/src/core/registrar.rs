//! The registrar (RFC 3261 10.3): adds, refreshes, removes and lists the bindings of an AOR
//! whose owner has already authenticated. With RFC 5626 outbound (a binding per instance and
//! reg-id, reached over the flow it registered on), RFC 5627 GRUUs, RFC 3327 Path and RFC
//! 3608 Service-Route. It decides; `state::bindings` stores.

use super::date::sip_date;
use super::gate::Gate;
use super::messaging::Messaging;
use super::options::SUPPORTED;
use super::refusal::Refusal;
use crate::config;
use crate::state::bindings::{Binding, Bindings};
use crate::transaction::Incoming;
use crate::transport::flows::FlowId;
use crate::transport::{Transport, Transports};
use sipfront_proto::reply;
use sipfront_proto::{Aor, Contact, HeaderName, Message, NameAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

pub struct Registrar {
    cfg: config::Registrar,
    bindings: Arc<Bindings>,
    gate: Arc<Gate>,
    messaging: Arc<Messaging>,
    transports: Arc<Transports>,
    agent: String,
}

/// One Contact of the request, understood.
struct Requested<'a> {
    addr: NameAddr<'a>,
    expires: u32,
    instance: Option<String>,
    reg_id: Option<u32>,
}

impl Registrar {
    pub fn new(
        cfg: config::Registrar,
        bindings: Arc<Bindings>,
        gate: Arc<Gate>,
        messaging: Arc<Messaging>,
        transports: Arc<Transports>,
        agent: String,
    ) -> Registrar {
        Registrar { cfg, bindings, gate, messaging, transports, agent }
    }

    /// A REGISTER: its owner authenticated (steps 1 to 4, the [`Gate`]), its bindings
    /// updated (steps 5 to 8); then what waited for the user goes out, and the connection it
    /// came on speaks for the user.
    pub async fn handle(&self, req: &Incoming) -> Message {
        let aor = match self.gate.registrant(req).await {
            Ok(aor) => aor,
            Err(refusal) => return refusal,
        };
        let resp = self.register(req, &aor);
        if resp.status() == Some(200) {
            self.messaging.registered(aor.as_str());
            if let (Some(flow), None) = (req.source.flow, &req.relayed) {
                if self.bindings.get(aor.as_str()).iter().any(|b| b.source.flow == Some(flow)) {
                    // The connection now speaks for this user (as OCS binds a connection to
                    // its security association): later requests on it need no challenge.
                    self.transports.flows.bind_identity(flow, aor.as_str());
                } else {
                    // It unregistered what it held there: it speaks for nobody any more.
                    self.transports.flows.unbind_identity(flow);
                }
            }
        }
        resp
    }

    pub fn bindings(&self) -> &Arc<Bindings> {
        &self.bindings
    }

    /// RFC 5626: a client is reached over the flow it registered on; once that flow is gone,
    /// so are the bindings that depended on it.
    pub fn flow_closed(&self, flow: FlowId, aor: &str) {
        self.bindings.update(aor, |v| v.retain(|b| b.source.flow != Some(flow)));
    }

    fn error(&self, req: &Message, refusal: Refusal) -> Message {
        metrics::counter!(crate::ops::metrics::REGISTRATIONS, "result" => refusal.label()).increment(1);
        refusal.response(req, &self.agent)
    }

    /// Steps 5 to 8 of RFC 3261 10.3 for `aor` (`user@domain`), whose owner sent `req`.
    fn register(&self, req: &Incoming, aor: &Aor) -> Message {
        let msg = &req.msg;
        let mut contacts = Vec::new();
        let mut star = false;
        for c in msg.contacts() {
            match c {
                Ok(Contact::Star) => star = true,
                Ok(Contact::Addr(a)) => contacts.push(a),
                Err(_) => return self.error(msg, Refusal::BadContact),
            }
        }
        let header_expires = match msg.expires() {
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => return self.error(msg, Refusal::BadExpires),
            None => None,
        };
        let Some(cseq) = msg.cseq().map(|c| c.seq) else { return self.error(msg, Refusal::BadCSeq) };
        let call_id = String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned();

        // Step 6: "*" only alone and with Expires: 0.
        if star {
            if !contacts.is_empty() || header_expires != Some(0) {
                return self.error(msg, Refusal::StarNeedsExpiresZero);
            }
            let refused = self.bindings.update(aor.as_str(), |v| {
                if v.iter().any(|b| *b.call_id == *call_id && b.cseq >= cseq) {
                    return true;
                }
                v.clear();
                false
            });
            if refused {
                return self.error(msg, Refusal::CSeqOutOfOrder);
            }
            return self.ok(req, aor, false);
        }

        let supports = |tag: &str| msg.list_has(HeaderName::Supported, tag) || msg.list_has(HeaderName::Require, tag);
        let outbound = supports("outbound");
        let mut wanted = Vec::with_capacity(contacts.len());
        for addr in contacts {
            let expires = match addr.params.get("expires") {
                Some(Some(v)) => match sipfront_proto::scan::parse_u32(v) {
                    Some(e) => e,
                    None if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => u32::MAX,
                    None => return self.error(msg, Refusal::BadExpires),
                },
                Some(None) => return self.error(msg, Refusal::BadExpires),
                None => header_expires.unwrap_or(self.cfg.default_expires),
            };
            if expires != 0 && expires < self.cfg.min_expires {
                // RFC 3261 10.3 step 6 / 10.2.8.
                metrics::counter!(crate::ops::metrics::REGISTRATIONS, "result" => "interval_too_brief").increment(1);
                let mut r = reply::response(msg, 423, &self.agent);
                r.push_header(HeaderName::MinExpires, self.cfg.min_expires.to_string());
                return r;
            }
            let instance = addr
                .params
                .value("+sip.instance")
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .filter(|v| !v.is_empty());
            // RFC 5626 6: reg-id counts only with an instance and Supported: outbound.
            let reg_id = addr
                .params
                .get("reg-id")
                .flatten()
                .and_then(sipfront_proto::scan::parse_u32)
                .filter(|_| outbound && instance.is_some());
            wanted.push(Requested { addr, expires: expires.min(self.cfg.max_expires), instance, reg_id });
        }
        let uses_outbound = wanted.iter().any(|w| w.reg_id.is_some());
        if uses_outbound && msg.list(HeaderName::Via).count() > 1 && !path_has_ob(msg) {
            // RFC 5626 6: the first hop did not vouch for the flow.
            return self.error(msg, Refusal::FirstHopLacksOutbound);
        }

        let path: Box<[Box<str>]> = msg.list(HeaderName::Path).map(|p| String::from_utf8_lossy(p).into()).collect();
        let now = Instant::now();
        let max_bindings = self.cfg.max_bindings.max(1);
        let refused = self.bindings.update(aor.as_str(), |v| {
            for w in &wanted {
                let uri = String::from_utf8_lossy(w.addr.uri.raw());
                let found = v.iter().position(|b| match (&w.instance, w.reg_id, &b.instance, b.reg_id) {
                    (Some(i), Some(r), Some(bi), Some(br)) => **bi == **i && br == r,
                    _ => b.uri.eq_ignore_ascii_case(&uri),
                });
                if let Some(i) = found {
                    // Step 7: a request older than the binding must not change it.
                    if *v[i].call_id == *call_id && v[i].cseq >= cseq {
                        return true;
                    }
                    if w.expires == 0 {
                        v.remove(i);
                        continue;
                    }
                    let keep_gruu = *v[i].call_id == *call_id;
                    let b = &mut v[i];
                    b.uri = uri.into();
                    b.params = header_params(&w.addr).into();
                    b.call_id = call_id.as_str().into();
                    b.cseq = cseq;
                    b.expires_at = now + Duration::from_secs(w.expires.into());
                    b.path = path.clone();
                    b.source = req.source;
                    if !keep_gruu && b.instance.is_some() {
                        b.temp_gruu = Some(new_temp_gruu());
                    }
                } else if w.expires > 0 {
                    v.push(Binding {
                        id: self.bindings.new_id(),
                        uri: uri.into(),
                        params: header_params(&w.addr).into(),
                        instance: w.instance.as_deref().map(Into::into),
                        reg_id: w.reg_id,
                        call_id: call_id.as_str().into(),
                        cseq,
                        expires_at: now + Duration::from_secs(w.expires.into()),
                        registered_at: now,
                        path: path.clone(),
                        source: req.source,
                        temp_gruu: w.instance.as_ref().map(|_| new_temp_gruu()),
                    });
                    if v.len() > max_bindings {
                        // The oldest registration gives way to the new one.
                        if let Some(oldest) = v.iter().enumerate().min_by_key(|(_, b)| b.registered_at).map(|(i, _)| i)
                        {
                            v.remove(oldest);
                        }
                    }
                }
            }
            false
        });
        if refused {
            return self.error(msg, Refusal::CSeqOutOfOrder);
        }
        self.ok(req, aor, uses_outbound)
    }

    /// Step 8: 200 with every current binding and its remaining time.
    fn ok(&self, req: &Incoming, aor: &Aor, outbound: bool) -> Message {
        let msg = &req.msg;
        metrics::counter!(crate::ops::metrics::REGISTRATIONS, "result" => "ok").increment(1);
        let gruu = msg.list_has(HeaderName::Supported, "gruu");
        let domain = aor.domain();
        let mut r = reply::response(msg, 200, &self.agent);
        let now = Instant::now();
        for b in self.bindings.get(aor.as_str()) {
            let mut c = format!("<{}>{};expires={}", b.uri, b.params, b.remaining(now));
            if let (true, Some(instance)) = (gruu, &b.instance) {
                let urn = instance.trim_start_matches('<').trim_end_matches('>');
                c.push_str(&format!(";pub-gruu=\"sip:{aor};gr={urn}\""));
                if let Some(t) = &b.temp_gruu {
                    c.push_str(&format!(";temp-gruu=\"sip:{t}@{domain};gr\""));
                }
            }
            r.push_header(HeaderName::Contact, c);
        }
        for p in msg.header_all(HeaderName::Path) {
            r.push_header(HeaderName::Path, p.to_vec());
        }
        let scheme_transport = match req.source.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        if req.relayed.is_none() {
            // Relayed by an edge, the client's next hop is the edge, not us.
            r.push_header(HeaderName::ServiceRoute, format!("<sip:{}{scheme_transport};lr>", req.source.local));
        }
        if outbound {
            r.push_header(HeaderName::Require, "outbound");
        }
        r.push_header(HeaderName::Supported, SUPPORTED);
        r.push_header(HeaderName::Date, sip_date(SystemTime::now()));
        r
    }
}

/// The Contact's header parameters as written, without `expires` (the 200 states its own)
/// and without GRUUs a client may have copied back.
fn header_params(a: &NameAddr<'_>) -> String {
    let mut out = String::new();
    for (name, value) in a.params.iter() {
        let n = String::from_utf8_lossy(name);
        if ["expires", "pub-gruu", "temp-gruu"].iter().any(|x| n.eq_ignore_ascii_case(x)) {
            continue;
        }
        out.push(';');
        out.push_str(&n);
        if let Some(v) = value {
            out.push('=');
            out.push_str(&String::from_utf8_lossy(v));
        }
    }
    out
}

fn path_has_ob(msg: &Message) -> bool {
    msg.name_addrs(HeaderName::Path).next().is_some_and(|p| p.is_ok_and(|p| p.uri.params().has("ob")))
}

/// A temp-gruu user part: unguessable, so that it reveals nothing about the AOR and cannot be
/// forged (RFC 5627 3.2).
fn new_temp_gruu() -> Box<str> {
    let mut s = String::from("tgruu.");
    s.push_str(&sipfront_proto::digest::hex(&super::secure_random(12)));
    s.into()
}
