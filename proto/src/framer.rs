//! Framing a byte stream (TCP, TLS) into messages by Content-Length (RFC 3261 18.3), with
//! RFC 5626 CRLF keep-alives, bounded buffering, and resynchronisation never guessed: a
//! stream that cannot be framed is an error and the connection ends.

use crate::limits::Limits;
use bytes::{Bytes, BytesMut};
use std::fmt;

/// What a stream carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, ready for [`crate::Message::parse`].
    Message(Bytes),
    /// A CRLFCRLF keep-alive ping (RFC 5626 3.5.1); answer it with a single CRLF.
    Ping,
    /// A lone CRLF: a pong, or a keep-alive that wants no answer.
    Pong,
}

/// The stream cannot be framed any further; the connection must close (after an error
/// response where the header block is given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No end of the header block within the size limit.
    HeadersTooLarge {
        limit: usize,
    },
    /// RFC 3261 18.3: Content-Length is mandatory on streams.
    MissingContentLength {
        headers: Bytes,
    },
    BadContentLength {
        headers: Bytes,
    },
    /// The announced body would take the message past the size limit; nothing is buffered for it.
    BodyTooLarge {
        declared: u64,
        limit: usize,
        headers: Bytes,
    },
}

impl FrameError {
    /// The header block of the unframeable message, for an error response.
    pub fn headers(&self) -> Option<&Bytes> {
        match self {
            FrameError::HeadersTooLarge { .. } => None,
            FrameError::MissingContentLength { headers }
            | FrameError::BadContentLength { headers }
            | FrameError::BodyTooLarge { headers, .. } => Some(headers),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            FrameError::HeadersTooLarge { .. } => 513,
            FrameError::BodyTooLarge { .. } => 413,
            _ => 400,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            FrameError::HeadersTooLarge { .. } => "headers_too_large",
            FrameError::MissingContentLength { .. } => "missing_content_length",
            FrameError::BadContentLength { .. } => "bad_content_length",
            FrameError::BodyTooLarge { .. } => "body_too_large",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::HeadersTooLarge { limit } => {
                write!(f, "header block larger than {limit} bytes")
            }
            FrameError::MissingContentLength { .. } => write!(f, "Missing Content-Length"),
            FrameError::BadContentLength { .. } => write!(f, "Bad Content-Length"),
            FrameError::BodyTooLarge { declared, limit, .. } => write!(f, "Body Too Large ({declared} > {limit})"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Cuts a TCP or TLS byte stream into messages by Content-Length (RFC 3261 18.3).
///
/// Bytes are appended with [`StreamFramer::push`] (or read straight into
/// [`StreamFramer::buffer_mut`]); [`StreamFramer::next_frame`] hands out whole frames as they
/// complete, sharing the buffer's memory. The search for the end of the header block resumes
/// where it stopped, so a message dribbled one byte at a time costs linear time, and nothing
/// beyond `max_message_size` is ever buffered for one message.
pub struct StreamFramer {
    buf: BytesMut,
    /// How far the search for CRLFCRLF has looked in `buf` without finding it.
    scanned: usize,
    /// The length of the message whose header block is complete but whose body is not yet all
    /// here: once known, later calls only wait for the buffer to reach it.
    pending: Option<usize>,
    limits: Limits,
}

/// Room made for each read: a whole message of the usual size.
const READ_ROOM: usize = 4096;
/// Less spare room than this is topped up to [`READ_ROOM`] before a read.
const LOW_ROOM: usize = 512;

impl StreamFramer {
    pub fn new(limits: Limits) -> StreamFramer {
        StreamFramer { buf: BytesMut::new(), scanned: 0, pending: None, limits }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(READ_ROOM.max(data.len()));
        }
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into (for `AsyncReadExt::read_buf`), with room for a message.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < LOW_ROOM {
            self.buf.reserve(READ_ROOM);
        }
        &mut self.buf
    }

    /// Gives the buffer's memory back while nothing is buffered (an idle connection holds
    /// none); the next [`StreamFramer::push`] or [`StreamFramer::buffer_mut`] makes room again.
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.scanned = 0;
        }
    }

    /// The memory the buffer holds now.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(total) = self.pending {
            if self.buf.len() < total {
                return Ok(None);
            }
            self.pending = None;
            self.scanned = 0;
            return Ok(Some(Frame::Message(self.buf.split_to(total).freeze())));
        }
        // Keep-alives and stray line ends between messages (RFC 3261 7.5, RFC 5626 3.5.1).
        loop {
            match &self.buf[..] {
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    let _ = self.buf.split_to(4);
                    return Ok(Some(Frame::Ping));
                }
                [b'\r', b'\n', c, ..] if *c != b'\r' => {
                    let _ = self.buf.split_to(2);
                    return Ok(Some(Frame::Pong));
                }
                // Could still become a ping: wait for more.
                [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                [b'\n', ..] | [b'\r', _, ..] => {
                    let _ = self.buf.split_to(1);
                }
                _ => break,
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let from = self.scanned.saturating_sub(3);
        let Some(end) = memchr::memmem::find(&self.buf[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.limits.max_message_size {
                return Err(FrameError::HeadersTooLarge { limit: self.limits.max_message_size });
            }
            return Ok(None);
        };
        if end > self.limits.max_message_size {
            return Err(FrameError::HeadersTooLarge { limit: self.limits.max_message_size });
        }
        let headers = &self.buf[..end];
        let declared = match content_length(headers) {
            ContentLength::Missing => {
                return Err(FrameError::MissingContentLength { headers: Bytes::copy_from_slice(headers) })
            }
            ContentLength::Bad => {
                return Err(FrameError::BadContentLength { headers: Bytes::copy_from_slice(headers) })
            }
            ContentLength::Value(n) => n,
        };
        if declared.saturating_add(end as u64) > self.limits.max_message_size as u64 {
            return Err(FrameError::BodyTooLarge {
                declared,
                limit: self.limits.max_message_size,
                headers: Bytes::copy_from_slice(headers),
            });
        }
        // Within the size limit, so it fits a usize.
        let total = end + declared as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            // The header block is complete: remember where the message ends, so that neither the
            // search for CRLFCRLF nor Content-Length runs again. Searching on from `end` would
            // find an empty line inside the body (SDP has them) or in the next message, and
            // cut the stream in the wrong place (RFC 3261 18.3: the body is Content-Length
            // bytes, whatever they hold).
            self.pending = Some(total);
            return Ok(None);
        }
        self.scanned = 0;
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }
}

enum ContentLength {
    Missing,
    Bad,
    Value(u64),
}

/// Finds Content-Length (or its compact form `l`) in a header block, without parsing the rest.
fn content_length(block: &[u8]) -> ContentLength {
    // Skip the start line; header names are at line starts, never on continuation lines.
    for line in block.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = crate::scan::trim(&line[..colon]);
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = crate::scan::trim(&line[colon + 1..]);
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return ContentLength::Bad;
            }
            return ContentLength::Value(
                v.iter().fold(0u64, |n, &c| n.saturating_mul(10).saturating_add(u64::from(c - b'0'))),
            );
        }
    }
    ContentLength::Missing
}
