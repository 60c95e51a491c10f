//! [`StreamFramer`] against streams cut at every byte, dribbled one byte at a time, batched,
//! interleaved with keep-alives, and hostile: no Content-Length, a bad one, a huge one, a header
//! block that never ends.

// Tests unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use sipfront_proto::{Frame, FrameError, HeaderName, Limits, Message, StreamFramer};

fn sip(lines: &[&str]) -> Vec<u8> {
    lines.join("\r\n").into_bytes()
}

/// An INVITE whose SDP body holds an empty line, so that a framer looking for CRLFCRLF past the
/// header block would cut it wrong.
fn invite() -> Vec<u8> {
    let body = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";
    let cl = format!("Content-Length: {}", body.len());
    sip(&[
        "INVITE sip:bob@example.test SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-framer-1",
        "Max-Forwards: 70",
        "To: <sip:bob@example.test>",
        "From: <sip:alice@example.test>;tag=fr1",
        "Call-ID: framer-1@192.0.2.10",
        "CSeq: 1 INVITE",
        "Content-Type: application/sdp",
        &cl,
        "",
        body,
    ])
}

/// A MESSAGE with a compact `l:` and a body that starts with CRLF.
fn message() -> Vec<u8> {
    sip(&[
        "MESSAGE sip:bob@example.test SIP/2.0",
        "v: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-framer-2",
        "Max-Forwards: 70",
        "t: <sip:bob@example.test>",
        "f: <sip:alice@example.test>;tag=fr2",
        "i: framer-2@192.0.2.10",
        "CSeq: 2 MESSAGE",
        "c: text/plain",
        "l: 9",
        "",
        "\r\nhello\r\n",
    ])
}

/// A response with an empty body and a folded header before its Content-Length.
fn response() -> Vec<u8> {
    sip(&[
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-framer-1",
        "To: <sip:bob@example.test>;tag=b1",
        "From: <sip:alice@example.test>;tag=fr1",
        "Call-ID: framer-1@192.0.2.10",
        "CSeq: 1 INVITE",
        "Subject: folded",
        " Content-Length: 99",
        "content-length  :  0",
        "",
        "",
    ])
}

/// A stream of the three messages with a ping before them and a pong between two of them,
/// and the frames it must yield.
fn stream() -> (Vec<u8>, Vec<Frame>) {
    let mut buf = b"\r\n\r\n".to_vec();
    buf.extend_from_slice(&invite());
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(&message());
    buf.extend_from_slice(&response());
    buf.extend_from_slice(&message());
    let frames = vec![
        Frame::Ping,
        Frame::Message(Bytes::from(invite())),
        Frame::Pong,
        Frame::Message(Bytes::from(message())),
        Frame::Message(Bytes::from(response())),
        Frame::Message(Bytes::from(message())),
    ];
    (buf, frames)
}

fn drain(framer: &mut StreamFramer, into: &mut Vec<Frame>) {
    while let Some(frame) = framer.next_frame().expect("valid stream") {
        into.push(frame);
    }
}

fn assert_frames_parse(frames: &[Frame]) {
    for frame in frames {
        if let Frame::Message(b) = frame {
            if let Err(e) = Message::parse(b.clone(), &Limits::default()) {
                panic!("frame does not parse ({e}): {}", String::from_utf8_lossy(b));
            }
        }
    }
}

#[test]
fn whole_stream_in_one_push() {
    let (buf, expected) = stream();
    let mut framer = StreamFramer::new(Limits::default());
    framer.push(&buf);
    let mut frames = Vec::new();
    drain(&mut framer, &mut frames);
    assert_eq!(frames, expected);
    assert_eq!(framer.buffered(), 0);
    assert_frames_parse(&frames);
    let Frame::Message(m) = &frames[3] else { panic!("not a message") };
    let m = Message::parse(m.clone(), &Limits::default()).unwrap();
    assert_eq!(m.body(), b"\r\nhello\r\n");
}

#[test]
fn split_at_every_byte() {
    let (buf, expected) = stream();
    for i in 0..=buf.len() {
        let mut framer = StreamFramer::new(Limits::default());
        let mut frames = Vec::new();
        framer.push(&buf[..i]);
        drain(&mut framer, &mut frames);
        framer.push(&buf[i..]);
        drain(&mut framer, &mut frames);
        assert_eq!(frames, expected, "split at {i}");
        assert_eq!(framer.buffered(), 0, "split at {i}");
    }
}

#[test]
fn split_twice_at_many_points() {
    // Every pair of cut points 7 bytes apart, so that a header block, then its body, arrive in
    // three pieces.
    let (buf, expected) = stream();
    for i in (0..buf.len()).step_by(7) {
        for j in (i..=buf.len()).step_by(13) {
            let mut framer = StreamFramer::new(Limits::default());
            let mut frames = Vec::new();
            for piece in [&buf[..i], &buf[i..j], &buf[j..]] {
                framer.push(piece);
                drain(&mut framer, &mut frames);
            }
            assert_eq!(frames, expected, "split at {i} and {j}");
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    let (buf, expected) = stream();
    let mut framer = StreamFramer::new(Limits::default());
    let mut frames = Vec::new();
    for b in &buf {
        framer.push(std::slice::from_ref(b));
        drain(&mut framer, &mut frames);
    }
    assert_eq!(frames, expected);
    assert_frames_parse(&frames);
}

#[test]
fn reading_into_the_buffer_directly() {
    let (buf, expected) = stream();
    let mut framer = StreamFramer::new(Limits::default());
    let mut frames = Vec::new();
    for chunk in buf.chunks(100) {
        framer.buffer_mut().extend_from_slice(chunk);
        drain(&mut framer, &mut frames);
    }
    assert_eq!(frames, expected);
}

#[test]
fn keepalives_alone_and_in_runs() {
    let mut framer = StreamFramer::new(Limits::default());
    let mut frames = Vec::new();
    framer.push(b"\r\n\r\n\r\n\r\n");
    drain(&mut framer, &mut frames);
    assert_eq!(frames, [Frame::Ping, Frame::Ping]);

    // A lone CRLF could still become a ping: nothing until the next bytes say which.
    frames.clear();
    framer.push(b"\r\n");
    drain(&mut framer, &mut frames);
    assert!(frames.is_empty());
    framer.push(&invite());
    drain(&mut framer, &mut frames);
    assert_eq!(frames, [Frame::Pong, Frame::Message(Bytes::from(invite()))]);

    // A ping, a pong, then a message, all in one push.
    frames.clear();
    let mut buf = b"\r\n\r\n\r\n".to_vec();
    buf.extend_from_slice(&response());
    framer.push(&buf);
    drain(&mut framer, &mut frames);
    assert_eq!(frames, [Frame::Ping, Frame::Pong, Frame::Message(Bytes::from(response()))]);
}

#[test]
fn many_messages_in_one_push() {
    let mut buf = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        let m = if i % 2 == 0 { invite() } else { message() };
        buf.extend_from_slice(&m);
        expected.push(Frame::Message(Bytes::from(m)));
    }
    let mut framer = StreamFramer::new(Limits::default());
    framer.push(&buf);
    let mut frames = Vec::new();
    drain(&mut framer, &mut frames);
    assert_eq!(frames, expected);
    assert_frames_parse(&frames);
}

fn without_content_length() -> Vec<u8> {
    sip(&[
        "OPTIONS sip:bob@example.test SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-nocl",
        "Max-Forwards: 70",
        "To: <sip:bob@example.test>",
        "From: <sip:alice@example.test>;tag=nocl",
        "Call-ID: nocl@192.0.2.10",
        "CSeq: 1 OPTIONS",
        // A Content-Length on a continuation line is part of Subject, not a header field.
        "Subject: x",
        " Content-Length: 0",
        "",
        "",
    ])
}

#[test]
fn missing_content_length_hands_back_the_header_block() {
    let mut framer = StreamFramer::new(Limits::default());
    let head = without_content_length();
    framer.push(&head);
    framer.push(b"trailing bytes of something");
    let e = framer.next_frame().unwrap_err();
    assert_eq!(e, FrameError::MissingContentLength { headers: Bytes::from(head.clone()) });
    assert_eq!((e.status(), e.label()), (400, "missing_content_length"));
    // The header block is enough to answer.
    let m = Message::parse_head(e.headers().unwrap().clone(), &Limits::default()).unwrap();
    assert_eq!(m.call_id(), Some(&b"nocl@192.0.2.10"[..]));
    let r = m.response_to(400);
    assert_eq!(r.top_via().and_then(|v| v.branch()), Some(&b"z9hG4bK-nocl"[..]));
}

#[test]
fn bad_content_lengths() {
    for cl in ["Content-Length: -1", "Content-Length: ten", "l: 1 2", "Content-Length:", "CONTENT-LENGTH: 0x10"] {
        let raw = String::from_utf8(without_content_length())
            .unwrap()
            .replace("Subject: x\r\n Content-Length: 0\r\n", &format!("{cl}\r\n"));
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(raw.as_bytes());
        let e = framer.next_frame().unwrap_err();
        assert!(matches!(e, FrameError::BadContentLength { .. }), "{cl}: {e:?}");
        assert_eq!(e.headers().map(|h| &h[..]), Some(raw.as_bytes()), "{cl}");
        assert_eq!((e.status(), e.label()), (400, "bad_content_length"));
    }
}

#[test]
fn huge_content_length_is_refused_before_any_body_arrives() {
    for (cl, declared) in [
        ("Content-Length: 4294967296", 4_294_967_296),
        ("l: 99999999999999999999999999", u64::MAX),
        ("l: 65536", 65_536),
    ] {
        let raw = String::from_utf8(without_content_length())
            .unwrap()
            .replace("Subject: x\r\n Content-Length: 0\r\n", &format!("{cl}\r\n"));
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(raw.as_bytes());
        let e = framer.next_frame().unwrap_err();
        assert_eq!(
            e,
            FrameError::BodyTooLarge { declared, limit: 65_535, headers: Bytes::copy_from_slice(raw.as_bytes()) }
        );
        assert_eq!((e.status(), e.label()), (413, "body_too_large"));
        // Nothing was reserved for the body.
        assert!(framer.buffer_mut().capacity() < 65_536, "{}", framer.buffer_mut().capacity());
        let head = Message::parse_head(e.headers().unwrap().clone(), &Limits::default()).unwrap();
        assert_eq!(head.header(HeaderName::ContentLength), Some(cl.split_once(": ").unwrap().1.as_bytes()));
    }
}

#[test]
fn body_up_to_the_limit_is_framed() {
    let limits = Limits { max_message_size: 1_000, ..Limits::default() };
    let head_len = without_content_length().len() - "Subject: x\r\n Content-Length: 0\r\n".len();
    let body_len = 1_000 - head_len - "Content-Length: 000\r\n".len();
    let raw = String::from_utf8(without_content_length())
        .unwrap()
        .replace("Subject: x\r\n Content-Length: 0\r\n", &format!("Content-Length: {body_len}\r\n"));
    assert_eq!(raw.len() + body_len, 1_000);
    let body = "b".repeat(body_len);
    let mut framer = StreamFramer::new(limits.clone());
    framer.push(raw.as_bytes());
    assert_eq!(framer.next_frame(), Ok(None));
    framer.push(body.as_bytes());
    let Ok(Some(Frame::Message(m))) = framer.next_frame() else { panic!("no frame") };
    assert_eq!(m.len(), 1_000);
    assert_eq!(Message::parse(m, &limits).unwrap().body(), body.as_bytes());

    // One more byte of body is one too many.
    let raw = raw.replace(&format!("Content-Length: {body_len}"), &format!("Content-Length: {}", body_len + 1));
    let mut framer = StreamFramer::new(limits);
    framer.push(raw.as_bytes());
    assert!(matches!(framer.next_frame(), Err(FrameError::BodyTooLarge { limit: 1_000, .. })));
}

#[test]
fn endless_header_block() {
    let limits = Limits { max_message_size: 500, ..Limits::default() };

    // All at once.
    let mut framer = StreamFramer::new(limits.clone());
    framer.push(b"INVITE sip:bob@example.test SIP/2.0\r\n");
    framer.push(&b"X: y\r\n".repeat(100));
    assert_eq!(framer.next_frame(), Err(FrameError::HeadersTooLarge { limit: 500 }));

    // One byte at a time: fine up to the limit, refused past it.
    let mut framer = StreamFramer::new(limits.clone());
    let junk = b"A".repeat(600);
    let mut failed_at = None;
    for (i, b) in junk.iter().enumerate() {
        framer.push(std::slice::from_ref(b));
        match framer.next_frame() {
            Ok(None) => {}
            Err(e) => {
                assert_eq!(e, FrameError::HeadersTooLarge { limit: 500 });
                assert_eq!((e.status(), e.label(), e.headers()), (513, "headers_too_large", None));
                failed_at = Some(i + 1);
                break;
            }
            Ok(Some(f)) => panic!("framed {f:?}"),
        }
    }
    assert_eq!(failed_at, Some(501));

    // A header block that does end, but past the limit.
    let mut framer = StreamFramer::new(limits);
    let mut big = b"OPTIONS sip:bob@example.test SIP/2.0\r\n".to_vec();
    big.extend_from_slice(&b"X: y\r\n".repeat(100));
    big.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    framer.push(&big);
    assert_eq!(framer.next_frame(), Err(FrameError::HeadersTooLarge { limit: 500 }));
}

#[test]
fn frames_cover_every_byte_but_the_keepalives() {
    let (buf, expected) = stream();
    let mut framer = StreamFramer::new(Limits::default());
    framer.push(&buf);
    let mut frames = Vec::new();
    drain(&mut framer, &mut frames);
    assert_eq!(frames.len(), expected.len());
    let sizes: usize = frames.iter().map(|f| if let Frame::Message(b) = f { b.len() } else { 0 }).sum();
    assert_eq!(sizes + 4 + 2, buf.len());
}

/// An idle connection holds no read buffer: once every frame is out the framer can give its
/// memory back, and it makes room again for what comes next (issue 19).
#[test]
fn the_buffer_is_given_back_when_empty_and_made_again_for_the_next_message() {
    let mut f = StreamFramer::new(Limits::default());
    assert_eq!(f.capacity(), 0, "nothing held before the first byte");
    assert!(f.buffer_mut().capacity() >= 4096, "room for a message to be read into");
    let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    f.push(&msg[..1]);
    f.release();
    assert!(f.capacity() > 0, "a message under way keeps its buffer");
    f.push(&msg[1..]);
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
    f.release();
    assert_eq!(f.capacity(), 0, "every frame out: the memory is given back");
    f.push(msg);
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))), "and the next message is framed as ever");
}
