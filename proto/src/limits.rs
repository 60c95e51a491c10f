//! The bounds every parsed message stays within, named and with defaults, so that a peer can
//! never make the parser buffer or scan more than an operator allowed.

/// The bounds a parsed message must stay within. Each is checked before any work or allocation
/// proportional to it, so a peer cannot make us buffer or scan more than these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, start line to the end of the body (RFC 3261 18.1.1 wants at least
    /// 65,535 bytes possible over streams; UDP datagrams cannot exceed it anyway).
    pub max_message_size: usize,
    /// Header fields (lines after unfolding) in one message.
    pub max_headers: usize,
    /// Bytes in one header field, name and folded continuation lines included.
    pub max_header_len: usize,
    /// Via entries, counted across every Via header field and comma-separated value.
    pub max_vias: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_size: 65_535, max_headers: 256, max_header_len: 8_192, max_vias: 70 }
    }
}
