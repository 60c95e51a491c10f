//! Writing a message in wire form, Content-Length always from the actual body.

use crate::message::{Message, StartLine};
use crate::name::HeaderName;
use bytes::Bytes;
use std::io::Write;

impl Message {
    /// Writes the message in wire form. Content-Length, where the message has one, is written
    /// from the actual body, so a changed body can never be framed wrong.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let buf = self.buffer();
        out.reserve(self.wire_len_hint());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(method.as_str().as_bytes());
                out.push(b' ');
                out.extend_from_slice(uri.resolve(buf));
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.extend_from_slice(b"SIP/2.0 ");
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{code} ");
                out.extend_from_slice(reason.resolve(buf));
                out.extend_from_slice(b"\r\n");
            }
        }
        let body = self.body();
        for h in &self.headers {
            let name = h.raw_name.resolve(buf);
            out.extend_from_slice(if name.is_empty() { h.name.as_str().as_bytes() } else { name });
            out.extend_from_slice(b": ");
            if h.name == HeaderName::ContentLength {
                let _ = write!(out, "{}", body.len());
            } else {
                out.extend_from_slice(h.value.resolve(buf));
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.to_vec())
    }

    fn wire_len_hint(&self) -> usize {
        let buf = self.buffer();
        let headers: usize =
            self.headers.iter().map(|h| h.raw_name.resolve(buf).len() + h.value.resolve(buf).len() + 4).sum();
        64 + headers + self.body().len()
    }
}
