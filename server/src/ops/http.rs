//! The operator's HTTP endpoint: `GET /metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (listeners bound, store reachable, not draining). Deliberately tiny: one
//! request per connection, bounded head, bounded time. It runs on a thread of its own, with a
//! runtime of its own, so that a scrape or a probe is answered at once however busy the SIP
//! workers are, and it keeps answering through the drain (`/readyz` then says 503).

use super::shutdown::{Readiness, Shutdown};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a scrape reads: the recorder, the server's state, and the figures taken only when
/// asked, none of which waits on SIP work or the store.
#[derive(Clone)]
pub struct Sources {
    pub metrics: PrometheusHandle,
    pub ready: Readiness,
    /// The server's tables, counted when scraped.
    pub live: Arc<dyn Fn() -> super::process::Live + Send + Sync>,
}

/// Serves on `listener` from a new thread until `stop` fires.
pub fn start(
    listener: std::net::TcpListener,
    sources: Sources,
    stop: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("sipfront-http".into()).spawn(move || {
        runtime.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => serve(listener, sources, stop).await,
                Err(e) => tracing::error!(error = %e, "the HTTP endpoint could not start"),
            }
        })
    })
}

async fn serve(listener: TcpListener, sources: Sources, mut stop: Shutdown) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let sources = sources.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &sources).await {
                tracing::debug!(error = %e, "http request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let ready = &sources.ready;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok(true)
    })
    .await;
    if !matches!(complete, Ok(Ok(true))) {
        return reply(&mut stream, "400 Bad Request", "text/plain", b"bad request\n", false).await;
    }
    let line = head.split(|&c| c == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&c| c == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split(|&c| c == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    if method != b"GET" && !head_only {
        return reply(&mut stream, "405 Method Not Allowed", "text/plain", b"GET only\n", head_only).await;
    }
    match path {
        b"/metrics" => {
            let mut text = sources.metrics.render();
            let state =
                super::process::State { ready: ready.get(), store_up: ready.store_ok(), live: (sources.live)() };
            super::process::render(&mut text, &state);
            reply(&mut stream, "200 OK", "text/plain; version=0.0.4", text.as_bytes(), head_only).await
        }
        b"/healthz" => reply(&mut stream, "200 OK", "text/plain", b"ok\n", head_only).await,
        b"/readyz" if ready.get() => reply(&mut stream, "200 OK", "text/plain", b"ready\n", head_only).await,
        b"/readyz" => reply(&mut stream, "503 Service Unavailable", "text/plain", b"not ready\n", head_only).await,
        _ => reply(&mut stream, "404 Not Found", "text/plain", b"not found\n", head_only).await,
    }
}

async fn reply(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}
