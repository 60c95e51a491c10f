//! The Event header (RFC 6665 8.2.1): the event package and its parameters (`id`).

use super::InvalidHeader;
use crate::scan::{is_token, split_params, Params};

/// `Event: presence;id=7` (RFC 6665 8.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub package: &'a [u8],
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    pub fn parse(v: &'a [u8]) -> Result<Event<'a>, InvalidHeader> {
        let (package, params) = split_params(v);
        if package.is_empty() || !package.iter().all(|&c| is_token(c)) {
            return Err(InvalidHeader);
        }
        Ok(Event { package, params })
    }

    pub fn id(&self) -> Option<&'a [u8]> {
        self.params.get("id").flatten()
    }

    /// Whether this is the event package `package`. Compared without regard to case, as
    /// deployed stacks do, so that `Presence` and `presence` reach the same package.
    pub fn is(&self, package: &str) -> bool {
        self.package.eq_ignore_ascii_case(package.as_bytes())
    }
}
