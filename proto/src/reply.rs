//! Building the responses a SIP element sends as a UAS, for every layer that answers: the
//! transport (a 400 to what it cannot parse), the transaction layer (CANCEL) and the core.

use crate::{HeaderName, Message};

/// A response to `req` with a To tag (RFC 3261 8.2.6.2) and a Server header naming `agent`;
/// the caller adds what the status needs (Allow, WWW-Authenticate, Contact...). Content-Length
/// is written when it is sent.
pub fn response(req: &Message, code: u16, agent: &str) -> Message {
    let mut r = req.response_to(code);
    if code > 100 {
        r.set_to_tag(&new_tag());
    }
    r.push_header(HeaderName::Server, agent.to_string());
    r
}

/// A fresh tag: 10 random alphanumerics, about 59 bits (RFC 3261 19.3 asks for 32 at least),
/// unpredictable ([`crate::random`]).
pub fn new_tag() -> String {
    crate::random::alphanumeric(10)
}
