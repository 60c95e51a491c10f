//! The operator's HTTP endpoint: `GET /metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (listeners bound and not draining). Deliberately tiny: one request per
//! connection, bounded head, bounded time.

use super::shutdown::{Readiness, Shutdown};
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, metrics: PrometheusHandle, ready: Readiness, mut shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &metrics, &ready).await {
                tracing::debug!(error = %e, "http request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &PrometheusHandle, ready: &Readiness) -> std::io::Result<()> {
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
            let mut text = metrics.render();
            super::process::render(
                &mut text,
                &super::process::State { ready: ready.get(), store_up: ready.store_ok() },
            );
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
