//! The simulated users and how each reaches the server: over UDP every user of a local address
//! shares that address's socket (as a softphone farm behind one host would); over TCP and TLS
//! each user has a connection of its own (as OCS clients do), opened on first use from its
//! local address,
//! so that many local addresses allow many more connections than one address's ephemeral ports.

use crate::config::{Account, Config, TransportKind};
use crate::stats::{Counters, Stats};
use crate::transport::{Endpoint, Timers};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::OnceCell;

pub struct User {
    pub account: Account,
    /// One Call-ID and From tag per user for its registrations (RFC 3261 10.2: a UA keeps the
    /// Call-ID across refreshes and raises CSeq).
    pub call_id: String,
    pub from_tag: String,
    cseq: AtomicU32,
    connection: OnceCell<Endpoint>,
}

impl User {
    pub fn next_cseq(&self) -> u32 {
        self.cseq.fetch_add(1, Ordering::Relaxed) + 1
    }
}

pub struct Users {
    users: Vec<User>,
    udp: Vec<Endpoint>,
    tls: Option<crate::tls::Client>,
    config: Arc<Config>,
    stats: Arc<Stats>,
    timers: Timers,
    /// Where the Call-IDs of MESSAGEs answered 2xx go (`--acked-messages`).
    acked: Option<std::sync::Mutex<std::io::LineWriter<std::fs::File>>>,
}

impl Users {
    pub async fn new(config: Arc<Config>, stats: Arc<Stats>) -> anyhow::Result<Users> {
        let timers = Timers {
            t1: std::time::Duration::from_millis(config.t1_ms),
            timeout: config.timeout(),
            retry_after: config.retry_after,
        };
        let mut udp = Vec::new();
        if config.transport == TransportKind::Udp {
            for &ip in &config.local_ips {
                udp.push(Endpoint::udp(ip, config.target, stats.clone(), timers).await?);
            }
        }
        let tls = match config.transport {
            TransportKind::Tls => Some(crate::tls::Client::new(
                config.tls_ca.as_deref(),
                config.tls_server_name.as_deref(),
                config.target.ip(),
            )?),
            _ => None,
        };
        let users = config
            .accounts
            .iter()
            .map(|a| User {
                account: a.clone(),
                call_id: crate::sip::token(),
                from_tag: crate::sip::token(),
                cseq: AtomicU32::new(0),
                connection: OnceCell::new(),
            })
            .collect();
        let acked = match &config.acked_messages {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| anyhow::anyhow!("--acked-messages {}: {e}", path.display()))?;
                Some(std::sync::Mutex::new(std::io::LineWriter::new(file)))
            }
            None => None,
        };
        Ok(Users { users, udp, tls, config, stats, timers, acked })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn get(&self, i: usize) -> &User {
        &self.users[i % self.users.len()]
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Notes a MESSAGE the server answered 2xx (with `--acked-messages`), a line at once, so
    /// that the file is whole whenever the run stops.
    pub fn acked(&self, call_id: &str) {
        if let Some(w) = &self.acked {
            use std::io::Write;
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = writeln!(w, "{call_id}") {
                // The file is then short of what was acknowledged: say so where it is read.
                eprintln!("--acked-messages: {e}");
            }
        }
    }

    /// The socket or connection user `i` sends on; `None` (counted) if a connection cannot be
    /// opened. A connection that closed is not reopened: its user's transactions fail, which the
    /// report shows.
    pub async fn endpoint(&self, i: usize) -> Option<Endpoint> {
        let i = i % self.users.len();
        if !self.udp.is_empty() {
            return Some(self.udp[i % self.udp.len()].clone());
        }
        let ip = self.config.local_ips[i % self.config.local_ips.len()];
        let stats = self.stats.clone();
        let (target, timers) = (self.config.target, self.timers);
        let connect = || async move {
            match &self.tls {
                Some(tls) => Endpoint::tls(ip, target, tls, stats, timers).await,
                None => Endpoint::tcp(ip, target, stats, timers).await,
            }
        };
        match self.users[i].connection.get_or_try_init(connect).await {
            Ok(e) => Some(e.clone()),
            Err(_) => {
                Counters::add(&self.stats.counters.transport_errors);
                None
            }
        }
    }
}
