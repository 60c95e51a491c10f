//! Memory per presence subscription: the resident size of the process before and after the
//! subscription table holds N subscriptions shaped like real ones (Call-ID, tags, URIs and a
//! Contact as SIP clients send them; a TCP flow to reach the watcher), so everything a
//! subscription costs in the table and its indexes is counted.
//!
//!   cargo bench -p sipfront --bench subscriptions          # N = 500,000 (10,000 users x 50)
//!
//! `SUBSCRIPTIONS_BENCH_N` sets N.

use sipfront::state::subscriptions::{Dialog, Grant, Package, Subscription, Subscriptions, Throttle};
use sipfront::transport::{Target, Transport};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
    pages * 4096
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u64 = std::env::var("SUBSCRIPTIONS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let users = 10_000;
    let subs = Subscriptions::default();
    let before = rss_bytes();
    let local = "127.0.0.1:5060".parse().expect("address");
    let now = Instant::now();
    for i in 0..n {
        let (watcher, presentity) = (i % users, (i * 7 + 1) % users);
        let sub = Subscription {
            id: subs.new_id(),
            package: Package::Presence,
            resource: Arc::from(format!("user{presentity}@example.test").as_str()),
            watcher: Arc::from(format!("user{watcher}@example.test").as_str()),
            event_id: None,
            dialog: Dialog {
                call_id: format!("{:032x}@192.0.2.{}", i * 2_654_435_761, i % 250),
                our_tag: format!("{:010x}", i),
                our_uri: format!("<sip:user{presentity}@example.test>"),
                resource_uri: format!("sip:user{presentity}@example.test"),
                their_from: format!("<sip:user{watcher}@example.test>;tag={:08x}", i ^ 0x5bd1_e995),
                target: Mutex::new((
                    format!("sip:user{watcher}@192.0.2.{}:{};transport=tcp", i % 250, 40_000 + i % 20_000),
                    Target { transport: Transport::Tcp, remote: local, flow: Some(i), local: None },
                )),
                route_set: Vec::new(),
                local,
                cseq: AtomicU32::new(1),
            },
            expires_at: Mutex::new(now + Duration::from_secs(3600)),
            grant: Mutex::new(Grant::Active),
            version: AtomicU32::new(0),
            members: Mutex::new(Vec::new()),
            throttle: Mutex::new(Throttle::default()),
            notifying: tokio::sync::Mutex::new(false),
        };
        subs.insert(sub);
    }
    let after = rss_bytes();
    assert_eq!(subs.count() as u64, n);
    println!(
        "{n} subscriptions: {:.0} MB resident more, {:.0} bytes per subscription (table, indexes, expiry heap)",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / n as f64
    );
}
