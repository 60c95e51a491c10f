//! Request methods (RFC 3261 7.1 and the extensions a presence and IM server meets), case
//! sensitive, with extension methods kept by name.

use std::fmt;

/// A request method. Methods are case-sensitive (RFC 3261 7.1): `invite` is an extension
/// method, not INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Ack,
    Bye,
    Cancel,
    Info,
    Invite,
    Message,
    Notify,
    Options,
    Prack,
    Publish,
    Refer,
    Register,
    Subscribe,
    Update,
    /// Any other token.
    Extension(Box<str>),
}

impl Method {
    /// Parses a method token; `None` if it is not a token (RFC 3261 25.1).
    pub fn from_bytes(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"INFO" => Method::Info,
            b"INVITE" => Method::Invite,
            b"MESSAGE" => Method::Message,
            b"NOTIFY" => Method::Notify,
            b"OPTIONS" => Method::Options,
            b"PRACK" => Method::Prack,
            b"PUBLISH" => Method::Publish,
            b"REFER" => Method::Refer,
            b"REGISTER" => Method::Register,
            b"SUBSCRIBE" => Method::Subscribe,
            b"UPDATE" => Method::Update,
            _ if !b.is_empty() && b.iter().all(|&c| crate::scan::is_token(c)) => {
                // A token is ASCII, so this cannot fail; the fallback keeps it total anyway.
                Method::Extension(std::str::from_utf8(b).unwrap_or_default().into())
            }
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Extension(s) => s,
            m => m.standard_name().unwrap_or_default(),
        }
    }

    /// The name of a method RFC 3261 or an extension RFC defines; `None` for other tokens
    /// (so that, say, a metric label set cannot be grown by a peer).
    pub fn standard_name(&self) -> Option<&'static str> {
        Some(match self {
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Info => "INFO",
            Method::Invite => "INVITE",
            Method::Message => "MESSAGE",
            Method::Notify => "NOTIFY",
            Method::Options => "OPTIONS",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Update => "UPDATE",
            Method::Extension(_) => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
