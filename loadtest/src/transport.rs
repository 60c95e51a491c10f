//! The client side of the wire: a UDP socket, a TCP connection or a TLS connection (an
//! [`Endpoint`]) with
//! non-INVITE client transactions on it (RFC 3261 17.1.2), and a user agent server that answers
//! every request it is sent with 200 (what a receiving IM client does), but a NOTIFY for a
//! subscription none of its users holds with 481.
//!
//! Responses are matched to transactions by the branch of their top Via alone: every branch we
//! send is fresh and random, and the server echoes Via unchanged (RFC 3261 17.1.3).

use crate::stats::{Counters, Stats};
use bytes::Bytes;
use sipfront_proto::{Frame, HeaderName, Limits, Message, Method, StreamFramer};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// RFC 3261 17.1.2.2: retransmissions of a non-INVITE request back off up to T2.
const T2: Duration = Duration::from_secs(4);

/// How a client transaction ended.
#[derive(Debug)]
pub enum TxResult {
    Final(Message),
    /// No final response before Timer F.
    Timeout,
    /// The request could not be sent, or the connection closed under it.
    Failed,
}

/// Timer settings shared by every transaction of a run.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub t1: Duration,
    pub timeout: Duration,
    /// A 503 with Retry-After is tried again after it (see `Config::retry_after`).
    pub retry_after: bool,
}

/// One UDP socket or one TCP or TLS connection to the target, with its receive task.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
}

struct Shared {
    link: Link,
    local: SocketAddr,
    remote: SocketAddr,
    /// Open client transactions by branch: where their responses go.
    pending: Mutex<HashMap<Box<str>, mpsc::UnboundedSender<Message>>>,
    stats: Arc<Stats>,
    timers: Timers,
    closed: AtomicBool,
    /// Branches of the MESSAGE requests delivered lately, to tell a retransmission from a new
    /// one; two generations, so memory stays bounded on long runs.
    delivered: Mutex<[HashSet<Box<str>>; 2]>,
    /// Subscriptions this endpoint's users hold, by Call-ID: the subscriber's tag, which every
    /// NOTIFY of the subscription carries as its To tag (RFC 6665 4.1.2.4 and 4.4.1).
    subscriptions: Mutex<HashMap<Box<str>, Box<str>>>,
    /// Keep-alive pings sent on this connection and not answered yet.
    pings: std::sync::atomic::AtomicU64,
}

enum Link {
    Udp(UdpSocket),
    /// The sending half of a TCP or TLS connection.
    Stream(tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>),
}

/// Each UDP socket's receive buffer.
const UDP_BUFFER: usize = 4 << 20;

/// Branches remembered per generation of `delivered`.
const DELIVERED_GENERATION: usize = 50_000;

impl Endpoint {
    /// A UDP socket on `local_ip` (port chosen by the kernel) that sends to `remote`.
    pub async fn udp(
        local_ip: IpAddr,
        remote: SocketAddr,
        stats: Arc<Stats>,
        timers: Timers,
    ) -> std::io::Result<Endpoint> {
        let addr = SocketAddr::new(local_ip, 0);
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
        // A burst of answers (a registration storm's) must not overflow the default buffer:
        // what the kernel drops here would be counted as the server's slowness. Best effort:
        // the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(UDP_BUFFER);
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket.into())?;
        let local = socket.local_addr()?;
        let e = Endpoint::new(Link::Udp(socket), local, remote, stats, timers);
        let reader = e.clone();
        tokio::spawn(async move { reader.read_datagrams().await });
        Ok(e)
    }

    /// A TCP connection from `local_ip` to `remote`.
    pub async fn tcp(
        local_ip: IpAddr,
        remote: SocketAddr,
        stats: Arc<Stats>,
        timers: Timers,
    ) -> std::io::Result<Endpoint> {
        let stream = connect(local_ip, remote).await?;
        let local = stream.local_addr()?;
        let (read, write) = stream.into_split();
        Ok(Endpoint::stream(read, Box::new(write), local, remote, stats, timers))
    }

    /// A TLS connection from `local_ip` to `remote`, the handshake done by `tls`.
    pub async fn tls(
        local_ip: IpAddr,
        remote: SocketAddr,
        tls: &crate::tls::Client,
        stats: Arc<Stats>,
        timers: Timers,
    ) -> std::io::Result<Endpoint> {
        let stream = connect(local_ip, remote).await?;
        let local = stream.local_addr()?;
        // A handshake that never completes must not hold its user past Timer F.
        let stream = tokio::time::timeout(timers.timeout, tls.connect(stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (read, write) = tokio::io::split(stream);
        Ok(Endpoint::stream(read, Box::new(write), local, remote, stats, timers))
    }

    fn stream(
        read: impl AsyncRead + Send + Unpin + 'static,
        write: Box<dyn AsyncWrite + Send + Unpin>,
        local: SocketAddr,
        remote: SocketAddr,
        stats: Arc<Stats>,
        timers: Timers,
    ) -> Endpoint {
        let e = Endpoint::new(Link::Stream(tokio::sync::Mutex::new(write)), local, remote, stats, timers);
        let reader = e.clone();
        tokio::spawn(async move { reader.read_stream(read).await });
        e
    }

    fn new(link: Link, local: SocketAddr, remote: SocketAddr, stats: Arc<Stats>, timers: Timers) -> Endpoint {
        Endpoint {
            shared: Arc::new(Shared {
                link,
                local,
                remote,
                pending: Mutex::new(HashMap::new()),
                stats,
                timers,
                closed: AtomicBool::new(false),
                delivered: Mutex::new([HashSet::new(), HashSet::new()]),
                subscriptions: Mutex::new(HashMap::new()),
                pings: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.shared.local
    }

    pub fn timers(&self) -> Timers {
        self.shared.timers
    }

    pub fn is_reliable(&self) -> bool {
        matches!(self.shared.link, Link::Stream(_))
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// A keep-alive on a connection (RFC 5626 3.5.1: CRLFCRLF, which the server answers with
    /// CRLF, counted as a pong). `false` on UDP, which would need STUN, or a closed connection.
    pub async fn keepalive(&self) -> bool {
        if !self.is_reliable() || self.is_closed() {
            return false;
        }
        // Counted before it leaves, so that however soon the pong comes it is known for one.
        self.shared.pings.fetch_add(1, Ordering::Relaxed);
        if self.send(b"\r\n\r\n", self.shared.remote).await.is_err() {
            self.shared.pings.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        Counters::add(&self.shared.stats.counters.keepalives);
        true
    }

    /// A subscription with this Call-ID and subscriber tag is being made: its NOTIFYs are
    /// answered 200 (even one that comes before the SUBSCRIBE's 200, RFC 6665 4.1.2.4).
    pub fn subscribing(&self, call_id: &str, tag: &str) {
        self.shared.lock_subscriptions().insert(call_id.into(), tag.into());
    }

    /// The subscription is over (refused, or ended by us): later NOTIFYs get 481.
    pub fn unsubscribed(&self, call_id: &str) {
        self.shared.lock_subscriptions().remove(call_id);
    }

    /// Runs one non-INVITE client transaction: sends `req` (whose top Via carries `branch`),
    /// retransmits it over UDP (Timer E: T1, doubling, at most T2; T2 once a provisional
    /// response came), and waits for a final response until Timer F.
    pub async fn transact(&self, req: &Message, branch: &str) -> TxResult {
        let s = &self.shared;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let key: Box<str> = branch.into();
        s.lock_pending().insert(key.clone(), tx);
        // Forget the transaction however this future ends (answered, timed out, dropped).
        let _forget = Forget { shared: &self.shared, key };
        let bytes = req.to_bytes();
        if self.is_closed() || self.send(&bytes, s.remote).await.is_err() {
            Counters::add(&s.stats.counters.transport_errors);
            return TxResult::Failed;
        }
        Counters::add(&s.stats.counters.sent);
        let start = Instant::now();
        let deadline = start + s.timers.timeout;
        let mut interval = s.timers.t1;
        let mut next = start + interval;
        let mut proceeding = false;
        loop {
            let wake = if self.is_reliable() { deadline } else { next.min(deadline) };
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) if m.status().is_some_and(|c| c >= 200) => return TxResult::Final(m),
                    Some(_) => proceeding = true,
                    None => {
                        Counters::add(&s.stats.counters.transport_errors);
                        return TxResult::Failed;
                    }
                },
                _ = sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return TxResult::Timeout;
                    }
                    if self.send(&bytes, s.remote).await.is_err() {
                        Counters::add(&s.stats.counters.transport_errors);
                        return TxResult::Failed;
                    }
                    Counters::add(&s.stats.counters.retransmissions);
                    interval = if proceeding { T2 } else { (interval * 2).min(T2) };
                    next = Instant::now() + interval;
                }
            }
        }
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match &self.shared.link {
            Link::Udp(socket) => socket.send_to(bytes, to).await.map(|_| ()),
            Link::Stream(write) => {
                let mut w = write.lock().await;
                // A TLS writer holds records until flushed; flushing a TCP one costs nothing.
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }

    async fn read_datagrams(self) {
        let Link::Udp(socket) = &self.shared.link else { return };
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) => self.received(Bytes::copy_from_slice(&buf[..n]), from).await,
                // An ICMP port unreachable from an earlier send surfaces here on Linux; the
                // transaction it belonged to will time out and be counted then.
                Err(_) => Counters::add(&self.shared.stats.counters.transport_errors),
            }
        }
    }

    async fn read_stream(self, mut read: impl AsyncRead + Unpin) {
        let mut framer = StreamFramer::new(Limits::default());
        'conn: loop {
            loop {
                // RFC 5626 4.4.1: after our ping, a CRLF is its pong, even alone in the buffer,
                // where the framer (which knows nothing of our pings) would hold it back as the
                // possible start of a ping, and would take two pongs together for one.
                let buf = framer.buffer_mut();
                if buf.starts_with(b"\r\n") && self.shared.pings.load(Ordering::Relaxed) > 0 {
                    let _ = buf.split_to(2);
                    self.shared.pings.fetch_sub(1, Ordering::Relaxed);
                    Counters::add(&self.shared.stats.counters.pongs);
                    continue;
                }
                match framer.next_frame() {
                    Ok(Some(Frame::Message(bytes))) => self.received(bytes, self.shared.remote).await,
                    Ok(Some(Frame::Ping)) => {
                        // RFC 5626 3.5.1: a CRLFCRLF ping is answered with one CRLF.
                        let _ = self.send(b"\r\n", self.shared.remote).await;
                    }
                    Ok(Some(Frame::Pong)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        Counters::add(&self.shared.stats.counters.malformed);
                        break 'conn;
                    }
                }
            }
            match read.read_buf(framer.buffer_mut()).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        // The connection is gone: every transaction on it fails now rather than at Timer F.
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.lock_pending().clear();
    }

    async fn received(&self, bytes: Bytes, from: SocketAddr) {
        let counters = &self.shared.stats.counters;
        let msg = match Message::parse(bytes, &Limits::default()) {
            Ok(m) => m,
            Err(_) => return Counters::add(&counters.malformed),
        };
        if msg.is_request() {
            return self.answer(msg, from).await;
        }
        let Some(branch) = msg.top_via().and_then(|v| v.branch().map(<[u8]>::to_vec)) else {
            return Counters::add(&counters.malformed);
        };
        let tx = std::str::from_utf8(&branch).ok().and_then(|b| self.shared.lock_pending().get(b).cloned());
        match tx {
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => Counters::add(&counters.unmatched),
        }
    }

    /// The receiving client: 200 to every request but ACK (RFC 3428 7: a MESSAGE is answered
    /// by the UAS with a final response and no dialog).
    async fn answer(&self, req: Message, from: SocketAddr) {
        let counters = &self.shared.stats.counters;
        match req.method() {
            Some(Method::Ack) => return,
            Some(Method::Message) => {
                let branch = req.top_via().and_then(|v| v.branch()).map(|b| String::from_utf8_lossy(b).into_owned());
                if self.first_delivery(branch) {
                    Counters::add(&counters.deliveries);
                } else {
                    Counters::add(&counters.duplicate_deliveries);
                }
            }
            Some(Method::Notify) => return self.notified(req, from).await,
            _ => Counters::add(&counters.other_requests),
        }
        self.reply(&req, 200, from).await;
    }

    /// A NOTIFY: 200 and counted by its Subscription-State when it belongs to a subscription
    /// one of our users holds (a `terminated` one ends it), else 481 (RFC 6665 4.1.3).
    async fn notified(&self, req: Message, from: SocketAddr) {
        let stats = &self.shared.stats;
        let call_id = req.call_id().map(String::from_utf8_lossy).unwrap_or_default();
        let to_tag = req.to().and_then(|t| t.tag().map(|t| String::from_utf8_lossy(t).into_owned()));
        let ours = {
            let subs = self.shared.lock_subscriptions();
            subs.get(call_id.as_ref()).is_some_and(|tag| Some(tag.as_ref()) == to_tag.as_deref())
        };
        if !ours {
            Counters::add(&stats.counters.unmatched_notifies);
            return self.reply(&req, 481, from).await;
        }
        let state = req.header(HeaderName::SubscriptionState).unwrap_or_default();
        let state = state.split(|&b| b == b';').next().unwrap_or_default().trim_ascii().to_ascii_lowercase();
        stats.notified(&state, presence_states(&req));
        if state == b"terminated" {
            self.unsubscribed(&call_id);
        }
        self.reply(&req, 200, from).await;
    }

    async fn reply(&self, req: &Message, code: u16, from: SocketAddr) {
        let counters = &self.shared.stats.counters;
        let mut resp = req.response_to(code);
        resp.set_to_tag(&crate::sip::token());
        resp.push_header(HeaderName::ContentLength, "0");
        if self.send(&resp.to_bytes(), from).await.is_err() {
            Counters::add(&counters.transport_errors);
        }
    }

    fn first_delivery(&self, branch: Option<String>) -> bool {
        let Some(branch) = branch else { return true };
        let mut d = self.shared.delivered.lock().unwrap_or_else(|e| e.into_inner());
        if d[0].contains(branch.as_str()) || d[1].contains(branch.as_str()) {
            return false;
        }
        if d[0].len() >= DELIVERED_GENERATION {
            d.swap(0, 1);
            d[0].clear();
        }
        d[0].insert(branch.into_boxed_str());
        true
    }
}

/// A TCP connection from `local_ip` to `remote`, Nagle off (requests are small and latency
/// is what we measure).
async fn connect(local_ip: IpAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if local_ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(local_ip, 0))?;
    let stream = socket.connect(remote).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Shared {
    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Box<str>>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, mpsc::UnboundedSender<Message>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Forget<'a> {
    shared: &'a Shared,
    key: Box<str>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.lock_pending().remove(&self.key);
    }
}

/// The presentity states a NOTIFY carries: the resources of its RLMI document (RFC 4662: a
/// list NOTIFY names each member it reports), else one for a body, none without.
fn presence_states(req: &Message) -> u64 {
    let body = req.body();
    let multipart = req.content_type().is_some_and(|t| t.to_ascii_lowercase().starts_with(b"multipart/"));
    if !multipart {
        return u64::from(!body.is_empty());
    }
    const RESOURCE: &[u8] = b"<resource ";
    body.windows(RESOURCE.len()).filter(|w| *w == RESOURCE).count() as u64
}
