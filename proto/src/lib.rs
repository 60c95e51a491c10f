//! The SIP wire for sipfront: the message model, a zero-copy parser with limits, the serializer,
//! the stream framer, and typed views of the headers the server acts on.
//!
//! This crate never touches sockets or an async runtime; `server` frames and moves bytes, this
//! crate says what they mean.
//!
//! # Why our own parser
//! We measured `rsip` 0.4 (the usual Rust choice): it rejects compact header forms and folded
//! headers, cannot type a Contact carrying `+sip.instance="<urn:uuid:...>"` (RFC 5626, sent by
//! most modern clients), has no Content-Length framing for streams, and copies every header
//! into its own `String`. A front end parses every request it receives, so the parser is the
//! first thing on the hot path. Here a message is one [`bytes::Bytes`] buffer plus a vector of
//! spans into it: parsing allocates one `Vec` and copies nothing, and typed views ([`Via`],
//! [`NameAddr`], [`Uri`], [`CSeq`], [`DigestParams`], [`Event`]) borrow from the message and are
//! parsed only when asked for. `rsip` stays a dev-dependency, as the baseline of the parser
//! benchmark and the reference of the differential tests.
//!
//! # Limits
//! Every bound ([`Limits`]) is checked before any allocation that depends on it, and every
//! violation is a typed [`ErrorKind`] that maps to one SIP status code and one metric label.

mod aor;
pub mod digest;
mod error;
mod framer;
pub mod headers;
mod limits;
mod message;
mod method;
pub mod multipart;
mod name;
mod parse;
pub mod presence;
pub mod random;
mod reason;
pub mod reply;
pub mod scan;
mod serialize;
mod text;
mod uri;

pub use aor::Aor;
pub use error::{ErrorKind, ParseError};
pub use framer::{Frame, FrameError, StreamFramer};
pub use headers::auth::DigestParams;
pub use headers::cseq::CSeq;
pub use headers::event::Event;
pub use headers::name_addr::{Contact, NameAddr};
pub use headers::via::Via;
pub use limits::Limits;
pub use message::{HeaderRef, Message, StartLine};
pub use method::Method;
pub use name::HeaderName;
pub use reason::reason_phrase;
pub use scan::Params;
pub use text::Text;
pub use uri::{unescape, Host, Uri};
