//! Text in a message: a span of its buffer, a static string or owned bytes, so that building
//! a response from a request copies nothing it does not change.

use std::fmt;

/// A piece of text in a [`crate::Message`]: a span of the message's own buffer (everything the
/// parser produces), a static string, or bytes the message owns (what a builder adds).
#[derive(Clone)]
pub struct Text(pub(crate) Repr);

#[derive(Clone)]
pub(crate) enum Repr {
    Span { start: u32, end: u32 },
    Static(&'static [u8]),
    Owned(Box<[u8]>),
}

impl Text {
    pub(crate) fn span(start: usize, end: usize) -> Text {
        // Spans are only made by the parser, which refuses messages above Limits::max_message_size
        // (far below u32::MAX) before making any.
        Text(Repr::Span { start: start as u32, end: end as u32 })
    }

    /// The bytes of this text; `buf` is the buffer of the message that holds it.
    pub(crate) fn resolve<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match &self.0 {
            Repr::Span { start, end } => buf.get(*start as usize..*end as usize).unwrap_or_default(),
            Repr::Static(s) => s,
            Repr::Owned(b) => b,
        }
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text(Repr::Static(s.as_bytes()))
    }
}

impl From<&'static [u8]> for Text {
    fn from(s: &'static [u8]) -> Text {
        Text(Repr::Static(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Repr::Owned(s.into_bytes().into_boxed_slice()))
    }
}

impl From<Vec<u8>> for Text {
    fn from(v: Vec<u8>) -> Text {
        Text(Repr::Owned(v.into_boxed_slice()))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Span { start, end } => write!(f, "span({start}..{end})"),
            Repr::Static(s) => write!(f, "{:?}", String::from_utf8_lossy(s)),
            Repr::Owned(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
        }
    }
}
