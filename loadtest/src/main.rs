//! `sipfront-load`: the command line of the load generator. See loadtest/README.md.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sipfront_loadtest::config::{
    parse_local_ips, pattern_accounts, write_users_csv, Bound, Config, Scenario, TransportKind,
};
use sipfront_loadtest::provision::{find_sipfront, Provision};
use sipfront_loadtest::ramp::Ramp;
use sipfront_loadtest::scenario::model::Model;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "sipfront-load", version, about = "Open-loop SIP load generator (OCS user model)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// REGISTER -> 401 -> authenticated REGISTER -> 200, one user after another, at the rate.
    Register(RunArgs),
    /// Pairs of registered users; senders send MESSAGE to receivers at the rate.
    Message(RunArgs),
    /// Watchers SUBSCRIBE to presentities (or their lists); PUBLISH at the rate; NOTIFYs counted.
    Presence(RunArgs),
    /// The OCS user model for --duration seconds: registrations, keep-alives, subscriptions
    /// and their refreshes, PUBLISH, IM sessions, presence fetches; --time-scale compresses it.
    Model(RunArgs),
    /// Writes the pattern users as `aor,password` CSV records (for `sipfront user import`).
    Users(UsersArgs),
}

#[derive(Args)]
struct UsersArgs {
    #[arg(long, default_value_t = 100)]
    users: usize,
    #[arg(long, default_value_t = 0)]
    user_offset: usize,
    #[arg(long, default_value = "example.test")]
    domain: String,
    #[arg(long, default_value = "pw{n}")]
    password_pattern: String,
}

#[derive(Args)]
struct RunArgs {
    /// The server, as IP:port (no DNS).
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    #[arg(long, value_enum, default_value_t = TransportKind::Udp)]
    transport: TransportKind,
    /// TLS: verify the server's certificate against this PEM file (default: accept any).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// TLS: the name to verify and send as SNI (default: the target's address).
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Users `user{n}` for n in OFFSET..OFFSET+N.
    #[arg(long, default_value_t = 100)]
    users: usize,
    #[arg(long, default_value_t = 0)]
    user_offset: usize,
    /// Users from a CSV of `aor,password` lines instead of the pattern.
    #[arg(long, conflicts_with_all = ["users", "user_offset", "password_pattern"])]
    users_csv: Option<PathBuf>,
    #[arg(long, default_value = "example.test")]
    domain: String,
    /// `{n}` is replaced by the user's number.
    #[arg(long, default_value = "pw{n}")]
    password_pattern: String,
    /// Transactions per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Run for this many seconds at the rate.
    #[arg(long, conflicts_with = "count")]
    duration: Option<f64>,
    /// Run this many transactions at the rate (default 1000 when no --duration).
    #[arg(long)]
    count: Option<u64>,
    /// Ramp mode: steps at START, START+STEP, ... up to MAX per second, until one fails.
    #[arg(long, value_name = "START:STEP:MAX", conflicts_with_all = ["rate", "duration", "count"])]
    ramp: Option<String>,
    /// Ramp: seconds each step lasts [default: 10].
    #[arg(long)]
    step_duration: Option<f64>,
    /// Ramp: a step fails with this percentage of failed transactions or more [default: 1].
    #[arg(long)]
    max_failure_pct: Option<f64>,
    /// Ramp: a step fails with a p99 latency above this many milliseconds [default: 200].
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Set-up and teardown requests per second (registrations, subscriptions, their ends).
    #[arg(long, default_value_t = 1000.0)]
    setup_rate: f64,
    /// Local addresses to send from: `127.0.0.2-127.0.0.20`, or a list.
    #[arg(long, default_value = "127.0.0.1")]
    local_ips: String,
    /// Timer F: seconds without a final response before a transaction has timed out.
    #[arg(long, default_value_t = 32.0)]
    timeout: f64,
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Body size of each MESSAGE in bytes.
    #[arg(long, default_value_t = 400)]
    message_bytes: usize,
    /// Presence: how many of the users (the first ones) are presentities [default: half].
    #[arg(long)]
    presentities: Option<usize>,
    /// Presence: presentities each watcher subscribes to, one SUBSCRIBE each; model: contacts.
    #[arg(long, default_value_t = 5)]
    watch: usize,
    /// Presence: each watcher subscribes once to its resource list (RFC 4662) instead.
    #[arg(long)]
    resource_lists: bool,
    /// Presence: a list's URI is the watcher's user part followed by this, @ the domain.
    #[arg(long, default_value = "+contacts")]
    list_suffix: String,
    /// Model: model seconds per second of the run (60: an hour of the model in a minute).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Model: seconds between a user's registrations.
    #[arg(long, default_value_t = 900.0)]
    reregister_secs: f64,
    /// Model: seconds between a user's keep-alives (TCP and TLS).
    #[arg(long, default_value_t = 300.0)]
    keepalive_secs: f64,
    /// Model: presence changes (PUBLISH) per user per hour.
    #[arg(long, default_value_t = 4.0)]
    publishes_per_hour: f64,
    /// Model: IM sessions per user per hour.
    #[arg(long, default_value_t = 2.0)]
    im_sessions_per_hour: f64,
    /// Model: MESSAGEs per IM session.
    #[arg(long, default_value_t = 10)]
    im_messages: u32,
    /// Model: presence fetches (SUBSCRIBE with Expires 0) per user per day.
    #[arg(long, default_value_t = 60.0)]
    fetches_per_day: f64,
    /// Before the run, create the users (and the domain) in this sipfront data directory.
    #[arg(long, value_name = "DATA_DIR")]
    provision: Option<PathBuf>,
    /// The sipfront executable for --provision [default: `sipfront` beside sipfront-load, else
    /// on PATH].
    #[arg(long, requires = "provision")]
    sipfront_bin: Option<PathBuf>,
    /// A sipfront configuration file for --provision (passed as `sipfront --config FILE`).
    #[arg(long, value_name = "FILE", requires = "provision")]
    sipfront_config: Option<PathBuf>,
    /// With --provision: create the users, then exit without sending anything.
    #[arg(long, requires = "provision")]
    provision_only: bool,
    /// Honour a 503's Retry-After: wait as it says and try again (at most 8 times), as a
    /// well-behaved client does; without it a 503 is a failure.
    #[arg(long)]
    retry_after: bool,
    /// Write the Call-ID of every MESSAGE answered 2xx to FILE, one a line (to compare with
    /// the server's IM archive after a fault).
    #[arg(long, value_name = "FILE")]
    acked_messages: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Allow a target (and local addresses) outside loopback.
    #[arg(long)]
    allow_remote: bool,
    /// No live progress line even on a terminal.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    fn config(&self, scenario: Scenario) -> anyhow::Result<Config> {
        let mut c = Config::new(scenario, self.target);
        c.transport = self.transport;
        c.tls_ca = self.tls_ca.clone();
        c.tls_server_name = self.tls_server_name.clone();
        c.domain = self.domain.clone();
        match &self.users_csv {
            Some(path) => c.set_csv_users(path)?,
            None => c.set_pattern_users(self.users, self.user_offset, &self.password_pattern),
        }
        c.rate = self.rate;
        c.bound = match (self.duration, self.count) {
            (Some(s), _) => Bound::Seconds(s),
            (None, Some(n)) => Bound::Count(n),
            (None, None) if scenario == Scenario::Model => Bound::Seconds(60.0),
            (None, None) => Bound::Count(1000),
        };
        c.model = Model {
            time_scale: self.time_scale,
            reregister_secs: self.reregister_secs,
            keepalive_secs: self.keepalive_secs,
            publishes_per_hour: self.publishes_per_hour,
            im_sessions_per_hour: self.im_sessions_per_hour,
            im_messages: self.im_messages,
            fetches_per_day: self.fetches_per_day,
        };
        let ramp_options = [self.step_duration, self.max_failure_pct, self.max_p99_ms];
        if self.ramp.is_none() && ramp_options.iter().any(Option::is_some) {
            anyhow::bail!("--step-duration, --max-failure-pct and --max-p99-ms go with --ramp");
        }
        if let Some(spec) = &self.ramp {
            let r = Ramp::parse(spec)?;
            c.ramp = Some(Ramp {
                step_secs: self.step_duration.unwrap_or(r.step_secs),
                max_failure_pct: self.max_failure_pct.unwrap_or(r.max_failure_pct),
                max_p99_ms: self.max_p99_ms.unwrap_or(r.max_p99_ms),
                ..r
            });
        }
        c.setup_rate = self.setup_rate;
        c.local_ips = parse_local_ips(&self.local_ips)?;
        c.timeout_ms = (self.timeout * 1000.0) as u64;
        c.expires = self.expires;
        c.message_bytes = self.message_bytes;
        c.presentities = self.presentities;
        c.watch = self.watch;
        c.resource_lists = self.resource_lists;
        c.list_suffix = self.list_suffix.clone();
        c.allow_remote = self.allow_remote;
        c.retry_after = self.retry_after;
        c.acked_messages = self.acked_messages.clone();
        Ok(c)
    }
}

/// `--provision`: the run's users into sipfront's store, through sipfront's command line.
fn provision(args: &RunArgs, data_dir: &std::path::Path, config: &Config) -> anyhow::Result<()> {
    let bin = match &args.sipfront_bin {
        Some(b) => b.clone(),
        None => find_sipfront(std::env::current_exe().ok().as_deref(), std::env::var_os("PATH").as_deref())
            .context("--provision: no `sipfront` beside sipfront-load or on PATH; give --sipfront-bin")?,
    };
    let p = Provision { data_dir: data_dir.to_path_buf(), bin, config: args.sipfront_config.clone() };
    let lists = sipfront_loadtest::scenario::contact_lists(config);
    let done = p.run(&config.domain, &config.accounts, &lists).context("--provision")?;
    println!(
        "provisioned {}: {} users imported, {} already there (left as they were), {} contact-list entries",
        data_dir.display(),
        done.imported,
        done.already_there,
        done.contacts
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (scenario, args) = match cli.command {
        Command::Register(a) => (Scenario::Register, a),
        Command::Message(a) => (Scenario::Message, a),
        Command::Presence(a) => (Scenario::Presence, a),
        Command::Model(a) => (Scenario::Model, a),
        Command::Users(u) => {
            let accounts: Vec<_> = pattern_accounts(u.users, u.user_offset, &u.password_pattern).collect();
            return write_users_csv(std::io::stdout().lock(), &u.domain, &accounts);
        }
    };
    let config = args.config(scenario)?;
    if let Some(data_dir) = &args.provision {
        // Refuse a run that cannot start before changing anything.
        config.check()?;
        provision(&args, data_dir, &config)?;
        if args.provision_only {
            return Ok(());
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Ctrl-C: stop sending, print what was measured so far.
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let progress = !args.quiet && std::io::stdout().is_terminal();
    let report = sipfront_loadtest::run(config, stop_rx, progress).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))?;
        println!("report: {}", path.display());
    }
    // Exit status: 0 when the run finished, whatever it measured; 130 when interrupted.
    if report.interrupted {
        std::process::exit(130);
    }
    Ok(())
}
