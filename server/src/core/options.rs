//! OPTIONS addressed to this server (RFC 3261 11.2): what it supports. Load balancers use it
//! as their health probe, so it is answered without touching the store.

use super::{reply, ACCEPT, ALLOW, SUPPORTED};
use sipfront_proto::{HeaderName, Message};

pub fn answer(req: &Message, agent: &str) -> Message {
    let mut r = reply::response(req, 200, agent);
    r.push_header(HeaderName::Allow, ALLOW);
    r.push_header(HeaderName::Accept, ACCEPT);
    if !SUPPORTED.is_empty() {
        r.push_header(HeaderName::Supported, SUPPORTED);
    }
    r
}
