//! Writing a message in wire form, Content-Length always from the actual body.

use crate::message::{Message, StartLine};
use crate::name::HeaderName;
use bytes::Bytes;
use std::io::Write;

impl Message {
    /// Writes the message in wire form. Content-Length is written from the actual body, so a
    /// changed body can never be framed wrong, and always, also when the message came without
    /// one (over UDP, where it may be left out): on a stream a message without it would let its
    /// body be read as the next message (RFC 3261 18.3), and a relayed body could then inject a
    /// request into another user's connection.
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
        let mut length_written = false;
        for h in &self.headers {
            let name = h.raw_name.resolve(buf);
            out.extend_from_slice(if name.is_empty() { h.name.as_str().as_bytes() } else { name });
            out.extend_from_slice(b": ");
            if h.name == HeaderName::ContentLength {
                let _ = write!(out, "{}", body.len());
                length_written = true;
            } else {
                out.extend_from_slice(h.value.resolve(buf));
            }
            out.extend_from_slice(b"\r\n");
        }
        if !length_written {
            let _ = write!(out, "Content-Length: {}\r\n", body.len());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use crate::{Frame, Limits, Message, StreamFramer};
    use bytes::Bytes;

    #[test]
    fn content_length_is_written_even_when_the_message_came_without_one() {
        // Over UDP a message may leave Content-Length out: its body is the rest of the datagram.
        let inner = "INVITE sip:victim@example.test SIP/2.0\r\nVia: SIP/2.0/TCP evil.test;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n";
        let datagram = format!(
            "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\r\n{inner}"
        );
        let m = Message::parse(Bytes::from(datagram), &Limits::default()).unwrap();
        assert_eq!(m.body(), inner.as_bytes());
        let wire = m.to_vec();
        assert!(String::from_utf8_lossy(&wire).contains(&format!("Content-Length: {}\r\n\r\n", inner.len())));

        // On a stream it frames as one message, its body whole: nothing is smuggled in.
        let mut framer = StreamFramer::new(Limits::default());
        framer.buffer_mut().extend_from_slice(&wire);
        let Some(Frame::Message(one)) = framer.next_frame().unwrap() else { panic!("a message") };
        assert_eq!(Message::parse(one, &Limits::default()).unwrap().body(), inner.as_bytes());
        assert!(framer.next_frame().unwrap().is_none(), "no second message");
    }
}
