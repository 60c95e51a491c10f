//! The IM archive's sustained write rate, through the server's own path: `Archive::record`
//! (what the SIP path calls) into the bounded queue, and the batching writer into the store.
//! Offers N messages of 400 bytes as fast as the queue takes them and reports how many the
//! store had durably written per second, on SQLite and (when `SIPFRONT_TEST_PG_URL` is set)
//! on PostgreSQL.
//!
//!   cargo bench -p sipfront --bench archive                    # SQLite
//!   SIPFRONT_TEST_PG_URL=$(PGTEST_FSYNC=on .ci/postgres.sh start) cargo bench -p sipfront --bench archive
//!
//! `ARCHIVE_BENCH_MESSAGES` sets N (default 100,000).

use bytes::Bytes;
use sipfront::config;
use sipfront::core::archive::Archive;
use sipfront_proto::{Limits, Message};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("ARCHIVE_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut backends = vec![("sqlite", String::new())];
    match std::env::var(sipfront_storage::testing::PG_URL_VAR) {
        Ok(url) => backends.push(("postgresql", url)),
        Err(_) => println!("postgresql: skipped ({} not set)", sipfront_storage::testing::PG_URL_VAR),
    }
    for (name, url) in backends {
        let store = sipfront_storage::open(&url, dir.path()).await.expect("open the store");
        store.migrate().await.expect("migrate");
        // Start from an empty archive so that the count below is this run's.
        store.purge_archive(i64::MAX).await.expect("empty the archive");
        let cfg = config::Archive { queue: 10_000, ..config::Archive::default() };
        let (archive, writer) = Archive::new(cfg, store.clone(), Duration::from_secs(2));
        // Never stopped: the bench ends by dropping it.
        let (_stop, never) = sipfront::ops::shutdown::channel();
        let writing = tokio::spawn(writer.run(never, Duration::ZERO));
        let msg = message();
        let started = Instant::now();
        for i in 0..n {
            let (from, to) =
                (format!("user{}@example.test", i % 1000), format!("user{}@example.test", 1000 + i % 1000));
            while !archive.record(&msg, &from, &to, None) {
                // The queue is full: the writer is the limit, which is what is measured.
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        // The writer keeps the queue's order, so once this last one is stored, all are.
        while !archive.record(&msg, "sentinel@example.test", "user0@example.test", None) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let offered = started.elapsed();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let found = store.search_archive("sentinel@example.test", None, 0, i64::MAX, 1).await.expect("search");
            if !found.is_empty() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(600), "{name}: the writer stalled");
        }
        let took = started.elapsed();
        assert_eq!(count(&*store).await, n + 1, "{name}: every message stored");
        println!(
            "{name:>10}: {n} messages of 400 bytes archived in {:.2} s: {:.0} messages/s sustained (queueing took {:.2} s)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            offered.as_secs_f64()
        );
        writing.abort();
    }
}

/// Entries stored, counted through the search the CLI uses: every message of the run has one
/// of user0..user999 at one end (the sentinel went to user0).
async fn count(store: &dyn sipfront_storage::Store) -> usize {
    let mut total = 0;
    for u in 0..1000 {
        let user = format!("user{u}@example.test");
        total += store.search_archive(&user, None, 0, i64::MAX, 1_000_000).await.expect("search").len();
    }
    total
}

fn message() -> Message {
    let body = "x".repeat(400);
    let text = format!(
        "MESSAGE sip:user1000@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbench\r\nMax-Forwards: 70\r\nFrom: <sip:user0@example.test>;tag=1\r\nTo: <sip:user1000@example.test>\r\nCall-ID: bench\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Message::parse(Bytes::from(text), &Limits::default()).expect("a valid MESSAGE")
}
