//! What this server supports, and what it says of it: OPTIONS addressed to it (RFC 3261 11.2),
//! answered without touching the store because load balancers use it as their health probe;
//! the Allow of every 405/501; and the 420 for an extension it is required to support and
//! does not (RFC 3261 8.2.2.3).

use sipfront_proto::reply;
use sipfront_proto::{HeaderName, Message};

/// Methods this server implements; the `Allow` of every 200 to OPTIONS and of every 405/501.
pub const ALLOW: &str =
    "OPTIONS, REGISTER, MESSAGE, INVITE, ACK, CANCEL, BYE, INFO, UPDATE, PRACK, PUBLISH, SUBSCRIBE, NOTIFY";
/// Body types it accepts.
pub const ACCEPT: &str = "application/sdp, text/plain, text/html, message/cpim, application/im-iscomposing+xml";
/// Extensions it supports (RFC 3327 path, RFC 5626 outbound, RFC 5627 gruu).
pub const SUPPORTED: &str = "path, outbound, gruu";
const SUPPORTED_TAGS: [&str; 3] = ["path", "outbound", "gruu"];

/// The 200 to an OPTIONS addressed to us.
pub fn answer(req: &Message, agent: &str) -> Message {
    let mut r = reply::response(req, 200, agent);
    r.push_header(HeaderName::Allow, ALLOW);
    r.push_header(HeaderName::Accept, ACCEPT);
    r.push_header(HeaderName::Supported, SUPPORTED);
    r
}

/// The answer to an OPTIONS while this front end drains: 503 with Retry-After (RFC 3261
/// 21.5.4), which a load balancer's SIP health check reads as "send no new clients here".
pub fn draining(req: &Message, agent: &str) -> Message {
    let mut r = reply::response(req, 503, agent);
    r.set_reason("Service Unavailable (draining)");
    r.push_header(HeaderName::RetryAfter, "30");
    r
}

/// RFC 3261 8.2.1: a method we do not implement is answered 501 with Allow.
pub fn not_implemented(req: &Message, agent: &str) -> Message {
    let mut r = reply::response(req, 501, agent);
    r.push_header(HeaderName::Allow, ALLOW);
    r
}

/// The 420 for a request that requires (in `header`: Require of a UAS, Proxy-Require of a
/// proxy) an extension we do not support (RFC 3261 8.2.2.3); `None` when there is none.
pub fn unsupported(msg: &Message, header: HeaderName, agent: &str) -> Option<Message> {
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
