//! Transaction identity (RFC 3261 17.1.3 and 17.2.3).

use sipfront_proto::{Message, Method};
use std::io::Write;
use std::sync::Arc;

/// Opaque, cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxKey(Arc<[u8]>);

const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// The server transaction a request belongs to. With an RFC 3261 branch: branch, sent-by and
/// method, where ACK belongs to the INVITE (17.2.3). Without one (RFC 2543 peers): Request-URI,
/// From tag, Call-ID, CSeq number and the top Via, as 17.2.3 describes for the older rules.
/// `method` lets CANCEL look up the INVITE it cancels.
pub fn server_key(req: &Message, method: &Method) -> Option<TxKey> {
    let via = req.top_via()?;
    let method = match method {
        Method::Ack => "INVITE",
        m => m.as_str(),
    };
    let mut k = Vec::with_capacity(96);
    match via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
        Some(branch) => {
            k.extend_from_slice(branch);
            k.push(0);
            // Writing to a Vec cannot fail.
            let _ = write!(k, "{}:{}", via.host, via.port.unwrap_or(0));
        }
        None => {
            // ACK's Request-URI equals the INVITE's (17.1.1.3), so it may take part.
            k.extend_from_slice(req.request_uri().unwrap_or_default());
            k.push(0);
            k.extend_from_slice(req.from().and_then(|f| f.tag()).unwrap_or_default());
            k.push(0);
            k.extend_from_slice(req.call_id().unwrap_or_default());
            k.push(0);
            let _ = write!(k, "{}", req.cseq().map(|c| c.seq).unwrap_or(0));
            k.push(0);
            k.extend_from_slice(req.list(sipfront_proto::HeaderName::Via).next().unwrap_or_default());
        }
    }
    k.push(0);
    k.extend_from_slice(method.as_bytes());
    Some(TxKey(k.into()))
}

/// The client transaction a response belongs to: our branch and the CSeq method (17.1.3).
pub fn client_key(msg: &Message) -> Option<TxKey> {
    let branch = msg.top_via()?.branch()?;
    let cseq = msg.cseq()?;
    let mut k = Vec::with_capacity(branch.len() + 12);
    k.extend_from_slice(branch);
    k.push(0);
    k.extend_from_slice(cseq.method.as_str().as_bytes());
    Some(TxKey(k.into()))
}

/// A new branch for a request we send: the magic cookie and enough randomness to be unique.
pub fn new_branch() -> String {
    let mut s = String::with_capacity(7 + 16);
    s.push_str("z9hG4bK");
    sipfront_proto::random::push_alphanumeric(&mut s, 16);
    s
}
