//! Typed views of the header values the server acts on. Each borrows from the message and is
//! parsed on demand; the parser itself only validates the ones a request cannot do without.

pub mod auth;
pub mod cseq;
pub mod event;
pub mod name_addr;
pub mod via;

/// A header value that does not follow its grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHeader;

impl From<crate::uri::UriError> for InvalidHeader {
    fn from(_: crate::uri::UriError) -> Self {
        InvalidHeader
    }
}
