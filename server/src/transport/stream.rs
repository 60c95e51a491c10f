//! One TCP or TLS connection: a reader that frames the stream (Content-Length, CRLF
//! keep-alives) and a writer that drains the flow's queue. Both end when either side closes,
//! the connection is idle too long, or the stream cannot be framed any more.

use super::flows::FlowId;
use super::{Inbound, Source, Transport, Transports};
use crate::ops::metrics as m;
use crate::ops::shutdown::Shutdown;
use bytes::Bytes;
use sipfront_proto::{Frame, Message, StreamFramer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A connection that sends nothing for this long gives its read buffer back until its next
/// byte: most connections are idle most of the time (a keep-alive every few minutes), and
/// their buffers would be most of their memory.
const QUIET: Duration = Duration::from_secs(1);

/// Reads what comes next into `framer`: `None` if nothing came within `idle`. While the
/// connection is busy it reads into the framer's buffer; once it has been quiet for [`QUIET`]
/// with nothing buffered, the buffer is given back and the wait goes on for one byte, after
/// which the framer makes room again for the rest. Both reads are cancel-safe: nothing is
/// lost when the caller's other branch wins.
async fn read_some<R: AsyncRead + Unpin>(
    rd: &mut R,
    framer: &mut StreamFramer,
    idle: Duration,
) -> Option<std::io::Result<usize>> {
    if framer.buffered() > 0 || idle <= QUIET {
        return tokio::time::timeout(idle, rd.read_buf(framer.buffer_mut())).await.ok();
    }
    if let Ok(r) = tokio::time::timeout(QUIET, rd.read_buf(framer.buffer_mut())).await {
        return Some(r);
    }
    framer.release();
    let mut first = [0u8; 1];
    let r = tokio::time::timeout(idle - QUIET, rd.read(&mut first)).await.ok()?;
    if let Ok(1) = r {
        framer.push(&first);
    }
    Some(r)
}

pub struct StreamSettings {
    pub idle_timeout: Duration,
    /// A connection whose peer has not authenticated by then is closed (zero: never).
    pub unauthenticated_timeout: Duration,
    /// A connection's write queue: at most this many messages and bytes.
    pub queue: (usize, usize),
}

/// Serves one connection whose flow is open already (accepted, or opened by us, in which case
/// a message may be queued on it before it was connected), until it closes.
// Every argument is one thing a connection needs; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S>(
    stream: S,
    (flow, mut queue): (FlowId, super::flows::Queue),
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    transports: Arc<Transports>,
    inbound: Arc<dyn Inbound>,
    settings: Arc<StreamSettings>,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let gauge = metrics::gauge!(m::CONNECTIONS_OPEN, "transport" => transport.label());
    gauge.increment(1.0);
    tracing::debug!(flow, %remote, transport = transport.label(), "connection open");
    let (mut rd, mut wr) = tokio::io::split(stream);

    let writer = tokio::spawn(async move {
        while let Some(data) = queue.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
            // Drain what else is queued before flushing (TLS buffers records until then).
            while let Some(more) = queue.try_recv() {
                if wr.write_all(&more).await.is_err() {
                    return;
                }
            }
            if wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let source = Source { transport, remote, local, flow: Some(flow) };
    // A partner's federation edge presented a certificate in the handshake; once the policy
    // has admitted it, its messages are limited per partner domain, not per address.
    let may_be_partner = transports.flows.certificate(flow).is_some();
    let mut framer = StreamFramer::new(transports.limits.clone());
    // Until its peer authenticates, a connection is held for a fixed time from its opening:
    // what it sends meanwhile (keep-alives included) does not extend it.
    let mut unproven = (!settings.unauthenticated_timeout.is_zero())
        .then(|| tokio::time::Instant::now() + settings.unauthenticated_timeout);
    'conn: loop {
        let deadline = unproven.unwrap_or_else(|| tokio::time::Instant::now() + settings.idle_timeout * 2);
        let read = tokio::select! {
            r = read_some(&mut rd, &mut framer, settings.idle_timeout) => r,
            _ = tokio::time::sleep_until(deadline), if unproven.is_some() => {
                if transports.flows.is_authenticated(flow) {
                    unproven = None;
                    continue;
                }
                metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "unauthenticated").increment(1);
                tracing::debug!(flow, %remote, "connection closed: not authenticated in time");
                break;
            }
            _ = shutdown.wait() => break,
        };
        match read {
            None => {
                tracing::debug!(flow, %remote, "idle connection closed");
                break;
            }
            Some(Err(_)) | Some(Ok(0)) => break,
            Some(Ok(_)) => {}
        }
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Message(bytes))) if may_be_partner && transports.flows.is_partner(flow) => {
                    transports.receive_from_partner(bytes, source, inbound.as_ref())
                }
                Ok(Some(Frame::Message(bytes))) => {
                    if !transports.receive(bytes, source, inbound.as_ref()) {
                        metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "flood").increment(1);
                        tracing::debug!(flow, %remote, "connection closed: its source is banned for flooding");
                        break 'conn;
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    // RFC 5626 3.5.1: a CRLFCRLF ping is answered with a CRLF pong.
                    metrics::counter!(m::KEEPALIVES, "kind" => "ping").increment(1);
                    let _ = transports.flows.send(flow, Bytes::from_static(b"\r\n"));
                }
                Ok(Some(Frame::Pong)) => {
                    metrics::counter!(m::KEEPALIVES, "kind" => "crlf").increment(1);
                }
                Err(e) => {
                    metrics::counter!(m::PARSE_ERRORS, "kind" => e.label(), "transport" => transport.label())
                        .increment(1);
                    tracing::debug!(flow, %remote, error = %e, "unframeable stream, closing");
                    // Answer if the header block says enough, then close: framing is lost.
                    if let Some(msg) = e.headers().and_then(|h| Message::parse_head(h.clone(), &transports.limits).ok())
                    {
                        transports.answer_malformed(&msg, e.status(), &e.to_string(), source);
                    }
                    break 'conn;
                }
            }
        }
    }
    let owner = transports.flows.owner(flow);
    transports.flows.close(flow, transport, remote);
    inbound.on_flow_closed(flow, owner);
    // The writer ends once the queue is closed and drained, so a final error response still
    // goes out before the connection closes.
    let _ = writer.await;
    gauge.decrement(1.0);
    tracing::debug!(flow, %remote, "connection closed");
}
