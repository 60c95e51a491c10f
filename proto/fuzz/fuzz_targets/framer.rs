//! Arbitrary bytes pushed into a `StreamFramer` in arbitrary chunk sizes, as a hostile TCP peer
//! would send them. Every message frame is parsed; the framer must never hold more than
//! `max_message_size` plus what was just pushed, and must hand out the same frames whatever the
//! chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfront_proto::{Frame, Limits, Message, StreamFramer};

fuzz_target!(|data: &[u8]| {
    // First byte: limits and the chunk-size seed; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else { return };
    let limits = if seed & 1 == 0 {
        Limits::default()
    } else {
        Limits { max_message_size: 200 + usize::from(seed), ..Limits::default() }
    };

    let chunked = run(stream, &limits, |i| 1 + (usize::from(seed >> 1) * 7 + i * 13) % 97);
    // The whole stream in one push frames the same way, error included.
    let whole = run(stream, &limits, |_| usize::MAX);
    assert_eq!(chunked, whole, "framing depends on how the stream was cut");
});

/// Pushes `stream` in chunks of `size(i)` bytes and drains frames after each; returns what came
/// out, ending at the first error (after which a connection is closed).
fn run(stream: &[u8], limits: &Limits, size: impl Fn(usize) -> usize) -> (Vec<Frame>, Option<String>) {
    let mut framer = StreamFramer::new(limits.clone());
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size(i).min(rest.len()));
        rest = tail;
        i += 1;
        framer.push(chunk);
        assert!(
            framer.buffered() <= limits.max_message_size + chunk.len(),
            "buffered {} > limit {} + push {}",
            framer.buffered(),
            limits.max_message_size,
            chunk.len()
        );
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    if let Frame::Message(m) = &frame {
                        assert!(m.len() <= limits.max_message_size, "frame of {} bytes", m.len());
                        let _ = Message::parse(m.clone(), limits);
                    }
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(format!("{e:?}"))),
            }
        }
        assert!(framer.buffered() <= limits.max_message_size, "{} left buffered after draining", framer.buffered());
    }
    (frames, None)
}
