//! Assembling a server: bind every listener, wire transport -> transaction -> core, start the
//! tasks, and drain gracefully on shutdown.

use crate::config::Config;
use crate::core::directory::Directory;
use crate::core::directory_http::DirectorySearch;
use crate::core::federation::Federation;
use crate::core::pool::Membership;
use crate::core::Core;
use crate::ops::shutdown::{self, InFlight, Readiness, ShutdownTrigger};
use crate::ops::{http, metrics as m};
use crate::state::bindings::Bindings;
use crate::transaction::timers::Timers;
use crate::transaction::{TransactionUser, Transactions};
use crate::transport::accept::{Acceptor, Admission};
use crate::transport::connect::Connector;
use crate::transport::stream::StreamSettings;
use crate::transport::{listen, tls, udp, Inbound, Transports};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// A started server: where it listens, and how to stop it.
pub struct RunningServer {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub http: SocketAddr,
    /// Directory search over HTTPS (`listen.directory`; empty when not served).
    pub directory_search: Vec<SocketAddr>,
    pub transactions: Transactions,
    pub bindings: Arc<Bindings>,
    pub directory: Arc<Directory>,
    pub readiness: Readiness,
    pub membership: Arc<Membership>,
    core: Core,
    /// The transaction user (the core), which the transaction layer holds only weakly.
    _user: Arc<dyn TransactionUser>,
    trigger: ShutdownTrigger,
    /// Stops the HTTP endpoint, which answers through the drain.
    http_stop: ShutdownTrigger,
    inflight: InFlight,
    drain: Duration,
    /// Stops the archive writer once nothing more comes, and its end: its queue written out.
    archive: (ShutdownTrigger, Option<tokio::task::JoinHandle<()>>),
    tasks: JoinSet<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Drains: readiness goes false, listeners close, in-flight transactions get up to the
    /// drain timeout to finish; then every task ends.
    pub async fn shutdown(mut self) {
        self.readiness.set(false);
        self.membership.leave().await;
        // What this member homes goes to the others before its connections close.
        self.core.rehome().await;
        self.trigger.trigger();
        tracing::info!(in_flight = self.inflight.count(), "draining");
        if tokio::time::timeout(self.drain, self.inflight.idle()).await.is_err() {
            tracing::warn!(in_flight = self.inflight.count(), "drain timeout; stopping anyway");
        }
        // A single node keeps its bindings, publications and subscriptions for its restart.
        self.core.save().await;
        // Nothing new is archived now: what is queued is written (within its own drain time).
        self.archive.0.trigger();
        if let Some(writer) = self.archive.1.take() {
            let _ = writer.await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.http_stop.trigger();
        // UDP receivers notice within their read timeout.
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
        tracing::info!("stopped");
    }
}

/// Binds everything in `config` and starts serving.
pub async fn start(config: &Config, data_dir: &Path) -> anyhow::Result<RunningServer> {
    let metrics = m::install();
    // Connections past what the descriptor limit holds are refused as over the cap (counted),
    // not left to fail in accept().
    let max_connections =
        config.transport.max_connections.min(crate::ops::process::raise_file_limit(config.transport.max_connections));
    let limits = config.limits.proto();
    let workers = config.workers();

    // Bind first, so that a taken port is reported before anything starts.
    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    for &addr in &config.listen.sip {
        match listen::udp(addr).and_then(|u| Ok((u, listen::tcp(addr)?))) {
            Ok((u, t)) => {
                udp_sockets.push(Arc::new(u));
                tcp_listeners.push(t);
            }
            Err(e) if listen::is_no_ipv6(addr, &e) => {
                tracing::warn!(%addr, "no IPv6 on this machine; not listening there")
            }
            Err(e) => return Err(e),
        }
    }
    let tls_listeners = bind_tcp(&config.listen.tls)?;
    let directory_listeners = bind_tcp(&config.listen.directory)?;
    let federation_roots = if config.federation.enabled {
        if tls_listeners.is_empty() {
            anyhow::bail!("federation.enabled needs a TLS listener (listen.tls): partners connect over TLS");
        }
        Some(tls::trust_roots(&config.federation.trust_roots)?)
    } else {
        None
    };
    let tls_config = if tls_listeners.is_empty() {
        None
    } else {
        Some(tls::server_config(&config.tls.cert, &config.tls.key, data_dir, federation_roots.clone())?)
    };
    // Users' HTTPS clients present no certificate: no federation verifier here.
    let directory_tls = if directory_listeners.is_empty() {
        None
    } else {
        Some(tls::server_config(&config.tls.cert, &config.tls.key, data_dir, None)?)
    };
    let http_listener = std::net::TcpListener::bind(config.listen.http)
        .with_context(|| format!("binding HTTP {}", config.listen.http))?;

    let udp_addrs: Vec<SocketAddr> = udp_sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
    let tcp_addrs: Vec<SocketAddr> = tcp_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let tls_addrs: Vec<SocketAddr> = tls_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let directory_addrs: Vec<SocketAddr> = directory_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let http_addr = http_listener.local_addr()?;

    let (trigger, shutdown) = shutdown::channel();
    let readiness = Readiness::default();
    let inflight = InFlight::default();
    let flood = crate::transport::flood::FloodGuard::new(&config.flood, &config.transport.proxy_protocol_from)?;
    let transports = Arc::new(Transports::new(udp_sockets.clone(), limits, flood));
    let t = &config.transaction;
    let timers = Timers {
        t1: Duration::from_millis(t.t1_ms),
        t2: Duration::from_millis(t.t2_ms),
        t4: Duration::from_millis(t.t4_ms),
    };
    let transactions = Transactions::new(
        transports.clone(),
        timers,
        inflight.clone(),
        config.server.agent.clone(),
        config.transaction.max_server_transactions,
    );
    let store = sipfront_storage::open(&config.database.url, data_dir).await.context("opening the store")?;
    let directory = Arc::new(
        Directory::load(store.clone(), Duration::from_millis(config.database.timeout_ms))
            .await
            .context("reading the store")?,
    );
    let bindings = Arc::new(Bindings::default());
    let inbound: Arc<dyn Inbound> = Arc::new(transactions.clone());
    let settings = Arc::new(StreamSettings {
        idle_timeout: Duration::from_secs(config.transport.idle_timeout_secs),
        unauthenticated_timeout: Duration::from_secs(config.transport.unauthenticated_timeout_secs),
        queue: (config.transport.connection_queue, config.transport.connection_queue_bytes),
    });
    let connector = Arc::new(Connector::new(transports.clone(), inbound.clone(), settings.clone(), shutdown.clone()));
    let secret = match (config.pool.secret.as_str(), config.auth.secret.as_str()) {
        ("", "") => {
            // No shared key: a seal of this member is good nowhere else, so no other member
            // takes its requests (nor it theirs); the membership warns if it meets any.
            Vec::new()
        }
        ("", auth) => auth.as_bytes().to_vec(),
        (pool, _) => pool.as_bytes().to_vec(),
    };
    let membership = Arc::new(Membership::new(
        config.pool.clone(),
        tcp_addrs.first().copied(),
        store.clone(),
        bindings.clone(),
        transports.clone(),
        connector.clone(),
        &secret,
    ));
    let federation = match federation_roots {
        None => None,
        Some(roots) => {
            let client_tls = tls::client_config(&config.tls.cert, &config.tls.key, data_dir, roots)?;
            let f = Federation::new(
                &config.federation,
                store.clone(),
                client_tls,
                connector.clone(),
                tls_addrs.clone(),
                transactions.clone(),
                config.server.agent.clone(),
                {
                    let directory = directory.clone();
                    move |domain: &str| directory.serves(domain)
                },
            )
            .await
            .context("starting federation")?;
            Some(Arc::new(f))
        }
    };
    let (core, archive_writer) =
        Core::new(config, directory.clone(), bindings.clone(), transactions.clone(), membership.clone(), federation);
    let user: Arc<dyn TransactionUser> = Arc::new(core.clone());
    let kept_core = core.clone();
    transactions.set_user(&user);
    // Before anything is served: what this front end held when it last stopped.
    core.restore().await;
    let directory_search = match directory_tls {
        None => None,
        Some(tls) => {
            // From the users the directory read at start: the store is not read twice.
            let search = DirectorySearch::load(kept_core.clone(), directory.clone(), config.directory.clone());
            Some((Arc::new(search), tls))
        }
    };

    let drain = Duration::from_secs(config.server.drain_timeout_secs);
    let (archive_trigger, archive_stop) = shutdown::channel();
    let archive_flushed;
    let mut tasks = JoinSet::new();
    {
        let txs = transactions.clone();
        tasks.spawn(async move { txs.run_timers().await });
        tasks.spawn(async move { core.run().await });
        // Not one of `tasks`: the shutdown lets it write out its queue rather than abort it.
        archive_flushed = tokio::spawn(archive_writer.run(archive_stop, drain));
        let b = bindings.clone();
        tasks.spawn(async move { b.run_expiry().await });
        let (d, every) = (directory.clone(), Duration::from_millis(config.database.poll_ms.max(50)));
        tasks.spawn(async move { d.run_invalidation(every).await });
        tasks.spawn(watch_store(store.clone(), readiness.clone()));
        let m = membership.clone();
        tasks.spawn(async move { m.run().await });
        let t = transports.clone();
        tasks.spawn(async move { t.flood.run().await });
    }
    let mut threads = Vec::new();
    for socket in &udp_sockets {
        let runtime = tokio::runtime::Handle::current();
        threads.extend(
            udp::start_receivers(
                socket.clone(),
                workers,
                transports.clone(),
                inbound.clone(),
                shutdown.clone(),
                runtime,
            )
            .context("starting UDP receivers")?,
        );
    }
    let admission = Arc::new(Admission::new(max_connections, config.transport.max_connections_per_ip));
    let acceptor = Acceptor {
        transports: transports.clone(),
        inbound: inbound.clone(),
        settings,
        admission,
        proxies: config.transport.proxy_protocol_from.clone().into(),
        shutdown: shutdown.clone(),
    };
    for l in tcp_listeners {
        tasks.spawn(acceptor.clone().run(l, None, Duration::ZERO));
    }
    if let Some(tls_config) = tls_config {
        let handshake = Duration::from_secs(config.transport.tls_handshake_timeout_secs);
        let tls = tokio_rustls::TlsAcceptor::from(tls_config);
        for l in tls_listeners {
            tasks.spawn(acceptor.clone().run(l, Some(tls.clone()), handshake));
        }
    }
    if let Some((search, tls)) = directory_search {
        let handshake = Duration::from_secs(config.transport.tls_handshake_timeout_secs);
        let follower = search.clone();
        tasks.spawn(async move { follower.follow().await });
        for l in directory_listeners {
            tasks.spawn(search.clone().serve(l, tls.clone(), handshake, shutdown.clone()));
        }
    }
    let (http_stop, http_stopped) = shutdown::channel();
    let (flows, txs, core) = (transports.clone(), transactions.clone(), kept_core.clone());
    let sources = http::Sources {
        metrics,
        ready: readiness.clone(),
        live: Arc::new(move || {
            let queued = flows.flows.queued();
            crate::ops::process::Live {
                write_queue_messages: queued.messages,
                write_queue_bytes: queued.bytes,
                server_transactions: txs.server_count(),
                pending_requests: core.pending_requests(),
            }
        }),
    };
    threads.push(http::start(http_listener, sources, http_stopped).context("starting the HTTP endpoint")?);

    readiness.set(true);
    readiness.set_store(true);
    tracing::info!(
        udp = ?udp_addrs, tcp = ?tcp_addrs, tls = ?tls_addrs, http = %http_addr, directory = ?directory_addrs, workers,
        "sipfront listening"
    );
    Ok(RunningServer {
        udp: udp_addrs,
        tcp: tcp_addrs,
        tls: tls_addrs,
        http: http_addr,
        directory_search: directory_addrs,
        transactions,
        bindings,
        directory,
        readiness,
        membership,
        core: kept_core,
        _user: user,
        trigger,
        http_stop,
        inflight,
        drain,
        archive: (archive_trigger, Some(archive_flushed)),
        tasks,
        threads,
    })
}

/// A TCP listener on each address; an IPv6 one is skipped, with a warning, on a machine without
/// IPv6.
fn bind_tcp(addrs: &[SocketAddr]) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::new();
    for &addr in addrs {
        match listen::tcp(addr) {
            Ok(t) => listeners.push(t),
            Err(e) if listen::is_no_ipv6(addr, &e) => {
                tracing::warn!(%addr, "no IPv6 on this machine; not listening there")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(listeners)
}

/// Keeps `/readyz` honest about the store: pinged every two seconds.
async fn watch_store(store: Arc<dyn sipfront_storage::Store>, readiness: Readiness) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ok = tokio::time::timeout(Duration::from_secs(2), m::store_op("ping", store.ping()))
            .await
            .is_ok_and(|r| r.is_ok());
        if ok != readiness.store_ok() {
            tracing::warn!(reachable = ok, "store reachability changed");
        }
        readiness.set_store(ok);
    }
}
