//! The operator's command line. Flags named here are an interface: tests, scripts and the
//! runbook use them.

use crate::config::Config;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

mod archive;
mod federation;
mod groups;
mod pool;
mod presence;
mod time;
mod users;

#[derive(Parser, Debug)]
#[command(name = "sipfront", version, about = "SIP registrar, presence server and proxy for an IM and presence pool")]
pub struct Cli {
    /// Configuration file (TOML); every key has a default.
    #[arg(long, global = true, env = "SIPFRONT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the server keeps its files (SQLite database, self-signed certificate).
    #[arg(long, global = true, env = "SIPFRONT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve {
        /// SIP over UDP and TCP on IP:PORT (repeatable; replaces listen.sip).
        #[arg(long = "sip-addr")]
        sip_addr: Vec<SocketAddr>,
        /// SIP over TLS on IP:PORT (repeatable; replaces listen.tls).
        #[arg(long = "tls-addr")]
        tls_addr: Vec<SocketAddr>,
        /// Metrics and health on IP:PORT (replaces listen.http).
        #[arg(long = "http-addr")]
        http_addr: Option<SocketAddr>,
    },
    /// Print the effective configuration as TOML (file and environment applied).
    Config,
    /// Domains this server serves.
    Domain {
        #[command(subcommand)]
        command: users::DomainCommand,
    },
    /// User accounts.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Presence authorization rules: who may watch whom.
    Rules {
        #[command(subcommand)]
        command: presence::RulesCommand,
    },
    /// Contact lists (what a resource-list subscription shows).
    Contacts {
        #[command(subcommand)]
        command: presence::ContactsCommand,
    },
    /// Distribution groups: addresses that stand for their members (users, groups, remote
    /// addresses).
    Group {
        #[command(subcommand)]
        command: groups::GroupCommand,
    },
    /// The IM archive.
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// The federation policy: which partner domains users may talk with.
    Federation {
        #[command(subcommand)]
        command: federation::FederationCommand,
    },
    /// The front ends of the pool sharing this store.
    Pool {
        #[command(subcommand)]
        command: pool::PoolCommand,
    },
    /// The database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Create or upgrade the schema (every other command and `serve` do it too; run this once
    /// before starting the front ends of a pool on a new version).
    Migrate,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Config => {
            // Secrets stay out of terminals, tickets and logs.
            print!("{}", toml::to_string_pretty(&config.redacted()).context("printing configuration")?);
            Ok(())
        }
        Command::Domain { command } => users::run_domain(&config, &cli.data_dir, command),
        Command::User { command } => users::run_user(&config, &cli.data_dir, command),
        Command::Archive { command } => archive::run(&config, &cli.data_dir, command),
        Command::Rules { command } => presence::run_rules(&config, &cli.data_dir, command),
        Command::Contacts { command } => presence::run_contacts(&config, &cli.data_dir, command),
        Command::Group { command } => groups::run(&config, &cli.data_dir, command),
        Command::Federation { command } => federation::run(&config, &cli.data_dir, command),
        Command::Pool { command } => pool::run(&config, &cli.data_dir, command),
        Command::Db { command: DbCommand::Migrate } => users::with_store(&config, &cli.data_dir, async |store| {
            store.migrate().await?;
            println!("schema up to date");
            Ok(())
        }),
        Command::Serve { sip_addr, tls_addr, http_addr } => {
            if !sip_addr.is_empty() {
                config.listen.sip = sip_addr;
            }
            if !tls_addr.is_empty() {
                config.listen.tls = tls_addr;
            }
            if let Some(h) = http_addr {
                config.listen.http = h;
            }
            init_logging(&config)?;
            let data_dir = crate::config::data_dir(&cli.data_dir)?;
            let workers = config.workers();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(async move {
                // Caught from before READY: a SIGTERM right after it must drain, not kill.
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let server = crate::server::start(&config, &data_dir).await?;
                // Listening, and the store answered: a `Type=notify` unit is started.
                crate::ops::systemd::notify("READY=1\nSTATUS=serving");
                wait_for_signal(term.as_mut()).await;
                crate::ops::systemd::notify("STOPPING=1\nSTATUS=draining");
                server.shutdown().await;
                Ok(())
            })
        }
    }
}

/// SIGINT, or SIGTERM when its handler could be installed.
async fn wait_for_signal(term: Option<&mut tokio::signal::unix::Signal>) {
    match term {
        Some(term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
                _ = term.recv() => tracing::info!("SIGTERM"),
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log.level: {:?} is not a tracing filter", config.log.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if config.log.format == "json" { builder.json().try_init() } else { builder.try_init() };
    // Already initialised (a test running several servers) is fine.
    let _ = result;
    Ok(())
}
