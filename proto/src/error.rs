//! What can be wrong with a message: one [`ErrorKind`] per fault, each mapped to the status
//! code that answers it and the metric label that counts it.

use crate::message::Message;
use crate::name::HeaderName;
use std::fmt;

/// What was wrong with a message. Each kind maps to one status code ([`ErrorKind::status`])
/// and one metric label ([`ErrorKind::label`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing but whitespace.
    Empty,
    /// Larger than [`crate::Limits::max_message_size`].
    MessageTooLarge {
        size: usize,
        limit: usize,
    },
    /// A Content-Length that would take the message past the size limit.
    BodyTooLarge {
        declared: u64,
        limit: usize,
    },
    TooManyHeaders {
        limit: usize,
    },
    HeaderTooLong {
        name: HeaderName,
        limit: usize,
    },
    TooManyVias {
        limit: usize,
    },
    /// The first line is neither `METHOD uri SIP/2.0` nor `SIP/2.0 code reason`.
    BadStartLine,
    /// A SIP version other than 2.0.
    UnsupportedVersion,
    BadRequestUri,
    /// A header line without a colon, a name that is not a token, or a fold before any header.
    BadHeaderLine,
    /// The header block does not end with an empty line.
    NoEndOfHeaders,
    /// A control character where RFC 3261 25.1 allows none: raw in the start line or in a
    /// header value (other than HTAB and the CRLF of a fold), or a `\` escaping a CR or LF in
    /// a quoted string.
    ControlCharacter,
    MissingHeader(HeaderName),
    /// A header that may appear once appears with several values.
    DuplicateHeader(HeaderName),
    /// A header whose value does not follow its grammar.
    BadHeader(HeaderName),
    /// CSeq names another method than the request line (RFC 3261 8.1.1.5).
    CSeqMethodMismatch,
    /// Fewer body bytes than Content-Length announces.
    BodyTruncated {
        declared: usize,
        actual: usize,
    },
}

impl ErrorKind {
    /// The status code that answers a request with this error.
    pub fn status(&self) -> u16 {
        match self {
            ErrorKind::MessageTooLarge { .. } => 513,
            ErrorKind::BodyTooLarge { .. } => 413,
            ErrorKind::TooManyVias { .. } => 483,
            ErrorKind::UnsupportedVersion => 505,
            _ => 400,
        }
    }

    /// A short, stable label for metrics (`sipfront_parse_errors_total{kind=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty",
            ErrorKind::MessageTooLarge { .. } => "message_too_large",
            ErrorKind::BodyTooLarge { .. } => "body_too_large",
            ErrorKind::TooManyHeaders { .. } => "too_many_headers",
            ErrorKind::HeaderTooLong { .. } => "header_too_long",
            ErrorKind::TooManyVias { .. } => "too_many_vias",
            ErrorKind::BadStartLine => "bad_start_line",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::BadRequestUri => "bad_request_uri",
            ErrorKind::BadHeaderLine => "bad_header_line",
            ErrorKind::NoEndOfHeaders => "no_end_of_headers",
            ErrorKind::ControlCharacter => "control_character",
            ErrorKind::MissingHeader(_) => "missing_header",
            ErrorKind::DuplicateHeader(_) => "duplicate_header",
            ErrorKind::BadHeader(_) => "bad_header",
            ErrorKind::CSeqMethodMismatch => "cseq_method_mismatch",
            ErrorKind::BodyTruncated { .. } => "body_truncated",
        }
    }
}

fn header_name(n: &HeaderName) -> &'static str {
    match n {
        HeaderName::Other => "header",
        n => n.as_str(),
    }
}

impl fmt::Display for ErrorKind {
    /// Short enough to serve as the reason phrase of the error response.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Empty => write!(f, "Empty message"),
            ErrorKind::MessageTooLarge { size, limit } => {
                write!(f, "Message Too Large ({size} > {limit})")
            }
            ErrorKind::BodyTooLarge { declared, limit } => {
                write!(f, "Body Too Large ({declared} > {limit})")
            }
            ErrorKind::TooManyHeaders { limit } => write!(f, "Too Many Headers (> {limit})"),
            ErrorKind::HeaderTooLong { name, limit } => {
                write!(f, "{} Too Long (> {limit})", header_name(name))
            }
            ErrorKind::TooManyVias { limit } => write!(f, "Too Many Hops (> {limit} Vias)"),
            ErrorKind::BadStartLine => write!(f, "Bad Start Line"),
            ErrorKind::UnsupportedVersion => write!(f, "Version Not Supported"),
            ErrorKind::BadRequestUri => write!(f, "Bad Request-URI"),
            ErrorKind::BadHeaderLine => write!(f, "Bad Header Line"),
            ErrorKind::NoEndOfHeaders => write!(f, "No End Of Headers"),
            ErrorKind::ControlCharacter => write!(f, "Control Character"),
            ErrorKind::MissingHeader(n) => write!(f, "Missing {}", header_name(n)),
            ErrorKind::DuplicateHeader(n) => write!(f, "Duplicate {}", header_name(n)),
            ErrorKind::BadHeader(n) => write!(f, "Bad {}", header_name(n)),
            ErrorKind::CSeqMethodMismatch => write!(f, "CSeq Method Mismatch"),
            ErrorKind::BodyTruncated { declared, actual } => {
                write!(f, "Body Truncated ({actual} < {declared})")
            }
        }
    }
}

/// A message that could not be accepted. When the structure (start line, headers) was intact
/// and only the validation failed, the parsed message is kept, so that the caller can answer
/// it (a 400 needs the request's Via, From, To, Call-ID and CSeq).
#[derive(Debug)]
pub struct ParseError {
    pub kind: ErrorKind,
    message: Option<Box<Message>>,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind) -> ParseError {
        ParseError { kind, message: None }
    }

    pub(crate) fn with_message(kind: ErrorKind, message: Message) -> ParseError {
        ParseError { kind, message: Some(Box::new(message)) }
    }

    /// The message as far as it was understood, when enough of it was to answer it.
    pub fn message(&self) -> Option<&Message> {
        self.message.as_deref()
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.kind.status())
    }
}

impl std::error::Error for ParseError {}
