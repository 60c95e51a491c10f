//! The routing core: what a request means and who answers it. It never touches sockets: it
//! answers through the [`ServerTx`] it is given and sends through client transactions.

pub mod options;
pub mod reply;

use crate::transaction::{Incoming, ServerTx, TransactionUser};
use sipfront_proto::{HeaderName, Method};

/// Methods this server implements; the `Allow` of every 200 to OPTIONS and of every 405/501.
pub const ALLOW: &str = "OPTIONS, ACK, CANCEL";
/// Body types it accepts (none it acts on yet).
pub const ACCEPT: &str = "application/sdp";
/// Extensions it supports.
pub const SUPPORTED: &str = "";

pub struct Core {
    agent: String,
}

impl Core {
    pub fn new(agent: String) -> Core {
        Core { agent }
    }
}

impl TransactionUser for Core {
    fn on_request(&self, req: Incoming, tx: ServerTx) {
        let msg = &req.msg;
        let resp = match msg.method() {
            Some(Method::Options) => options::answer(msg, &self.agent),
            _ => {
                // RFC 3261 8.2.1: a method we do not implement is answered 501 with Allow.
                let mut r = reply::response(msg, 501, &self.agent);
                r.push_header(HeaderName::Allow, ALLOW);
                r
            }
        };
        tx.respond(resp);
    }
}
