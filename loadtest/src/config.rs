//! What a run does: the scenario, the target, the users, the rate and the bounds. Built by the
//! CLI or directly by a test; serialized whole into the JSON report so runs can be compared.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Each transaction: REGISTER -> 401 -> authenticated REGISTER -> 200.
    Register,
    /// Pairs of registered users: the sender's MESSAGE (answering 407) reaches the receiver,
    /// which answers 200.
    Message,
    /// Watchers subscribe to presentities (or to their resource lists); each transaction is one
    /// PUBLISH by a presentity, whose change the server fans out as NOTIFYs, which the
    /// watchers count and answer.
    Presence,
    /// The OCS user model, every user doing all of it at its own pace, time-compressible.
    Model,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::Message => "message",
            Scenario::Presence => "presence",
            Scenario::Model => "model",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Udp,
    Tcp,
    /// TLS over TCP (RFC 3261 26.2.1), one connection per user like TCP.
    Tls,
}

impl TransportKind {
    /// As written in a Via header (RFC 3261 20.42).
    pub fn via_name(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }

    /// As written in a `transport=` URI parameter.
    pub fn param(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
        }
    }
}

/// One account: `user` is the user part of the AOR and the digest username.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user: String,
    pub password: String,
}

/// Users `user{n}` for n in `offset..offset+count`, password from `pattern` (`{n}` replaced).
pub fn pattern_accounts(count: usize, offset: usize, pattern: &str) -> impl Iterator<Item = Account> + '_ {
    (offset..offset + count)
        .map(move |n| Account { user: format!("user{n}"), password: pattern.replace("{n}", &n.to_string()) })
}

/// Writes `accounts` as `user@domain,password` records for `sipfront user import`: RFC 4180
/// CSV from the `csv` crate, which quotes a field holding a comma, a quote (doubled), a line
/// break or a `#` (a comment line to the import); spaces are kept as they are, as the import
/// keeps them.
pub fn write_users_csv<'a>(
    out: impl std::io::Write,
    domain: &str,
    accounts: impl IntoIterator<Item = &'a Account>,
) -> anyhow::Result<()> {
    let mut out = csv::WriterBuilder::new().comment(Some(b'#')).from_writer(out);
    for a in accounts {
        out.write_record([format!("{}@{domain}", a.user).as_str(), &a.password]).context("write CSV")?;
    }
    out.flush().context("write CSV")
}

/// The accounts of a users file, read by the rules of `sipfront user import`: RFC 4180 CSV (a
/// quoted field may hold commas, doubled quotes and line breaks), fields taken as written,
/// spaces included; blank lines, lines starting with `#` and a first `aor,...` header record
/// skipped; `aor,password` or `aor,password,display name` per record. Errors name the record
/// (the `csv` crate's line numbers are off after the lines it skips).
pub fn read_users_csv(text: &[u8]) -> anyhow::Result<Vec<Account>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).comment(Some(b'#')).from_reader(text);
    let (mut accounts, mut first) = (Vec::new(), true);
    for (i, record) in reader.records().enumerate() {
        let record = record.context("read CSV")?;
        let fields: Vec<&str> = record.iter().collect();
        if let [blank] = fields[..] {
            if blank.trim().is_empty() {
                continue;
            }
        }
        let header = std::mem::replace(&mut first, false)
            && fields.first().is_some_and(|f| f.trim().eq_ignore_ascii_case("aor"));
        let (aor, password) = match fields[..] {
            _ if header => continue,
            // As the import: no empty password, and no line break (a quote left open).
            [aor, password] | [aor, password, _] if !password.is_empty() && !password.contains(['\r', '\n']) => {
                (aor, password)
            }
            // Not the record itself in the message: it may hold a password.
            _ => bail!("record {}: expected aor,password[,display name]", i + 1),
        };
        let aor = aor.trim().trim_start_matches("sip:");
        let user = aor.split_once('@').map_or(aor, |(u, _)| u);
        accounts.push(Account { user: user.to_string(), password: password.to_string() });
    }
    Ok(accounts)
}

/// When a run stops sending.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// This many transactions, at the rate.
    Count(u64),
    /// Transactions at the rate for this long.
    Seconds(f64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub scenario: Scenario,
    pub target: SocketAddr,
    pub transport: TransportKind,
    /// TLS: verify the server's certificate against this PEM file; `None` accepts any.
    pub tls_ca: Option<std::path::PathBuf>,
    /// TLS: the name to verify and send as SNI; `None` is the target's address.
    pub tls_server_name: Option<String>,
    pub domain: String,
    /// How the users were given (`user{n}` pattern or a CSV path), for the report.
    pub users_from: String,
    #[serde(skip)]
    pub accounts: Vec<Account>,
    pub users: usize,
    /// Transactions per second, scheduled whether or not earlier ones have been answered.
    pub rate: f64,
    pub bound: Bound,
    /// Ramp mode: steps of rising rate instead of `rate` and `bound`.
    pub ramp: Option<crate::ramp::Ramp>,
    /// Set-up and teardown requests per second (registrations, subscriptions, their ends).
    pub setup_rate: f64,
    /// Local addresses the clients bind to (one UDP socket each; TCP connections spread over them).
    pub local_ips: Vec<IpAddr>,
    /// Timer F / B: a transaction with no final response after this long has timed out
    /// (RFC 3261 17.1.2.2: 64*T1 = 32 s).
    pub timeout_ms: u64,
    /// RFC 3261 T1, the first UDP retransmission interval.
    pub t1_ms: u64,
    pub expires: u32,
    /// Body size of each MESSAGE (the OCS user model's 400 bytes).
    pub message_bytes: usize,
    /// Presence: how many of the users are presentities (the first ones); `None`: half.
    pub presentities: Option<usize>,
    /// Presence: presentities each watcher subscribes to, one SUBSCRIBE each.
    pub watch: usize,
    /// Presence: each watcher subscribes once to its resource list instead (RFC 4662).
    pub resource_lists: bool,
    /// What follows a user part to make its list's URI (`user7+contacts@domain`).
    pub list_suffix: String,
    /// The model scenario's user model and time scale.
    pub model: crate::scenario::model::Model,
    pub allow_remote: bool,
    /// Honour a 503's Retry-After (RFC 3261 21.5.4): wait as long as it says, then try the
    /// request again (up to [`crate::scenario::RETRIES_AFTER_503`] times), as a well-behaved
    /// client does when a server is overloaded. Off: a 503 is a failure.
    #[serde(default)]
    pub retry_after: bool,
    /// Write the Call-ID of every MESSAGE answered 2xx to this file, one a line: what the
    /// server acknowledged, to compare with its archive after a fault.
    #[serde(default)]
    pub acked_messages: Option<std::path::PathBuf>,
}

impl Config {
    /// A configuration with the defaults the CLI has; tests change what they need.
    pub fn new(scenario: Scenario, target: SocketAddr) -> Config {
        let mut c = Config {
            scenario,
            target,
            transport: TransportKind::Udp,
            tls_ca: None,
            tls_server_name: None,
            domain: "example.test".into(),
            users_from: String::new(),
            accounts: Vec::new(),
            users: 0,
            rate: 100.0,
            bound: Bound::Count(1000),
            ramp: None,
            setup_rate: 1000.0,
            local_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            timeout_ms: 32_000,
            t1_ms: 500,
            expires: 3600,
            message_bytes: 400,
            presentities: None,
            watch: 5,
            resource_lists: false,
            list_suffix: "+contacts".into(),
            model: crate::scenario::model::Model::default(),
            allow_remote: false,
            retry_after: false,
            acked_messages: None,
        };
        c.set_pattern_users(100, 0, "pw{n}");
        c
    }

    /// Users `user{n}` for n in `offset..offset+count`, password from `pattern` (`{n}` replaced).
    pub fn set_pattern_users(&mut self, count: usize, offset: usize, pattern: &str) {
        self.accounts = pattern_accounts(count, offset, pattern).collect();
        self.users = count;
        self.users_from = format!("user{{n}} for n in {offset}..{}, password {pattern:?}", offset + count);
    }

    /// Users from a CSV file of `aor,password[,display name]` records, the format `sipfront user
    /// import` reads, with its rules (see [`read_users_csv`]); a user part alone is taken in the
    /// run's domain.
    pub fn set_csv_users(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let accounts = read_users_csv(&text).with_context(|| path.display().to_string())?;
        if accounts.is_empty() {
            bail!("{}: no users", path.display());
        }
        self.users = accounts.len();
        self.accounts = accounts;
        self.users_from = path.display().to_string();
        Ok(())
    }

    /// How many transactions the run schedules (a ramp: if every step passes).
    pub fn planned(&self) -> u64 {
        if let Some(r) = &self.ramp {
            return r.rates().map(|rate| r.count(rate)).sum();
        }
        if let (Scenario::Model, Bound::Seconds(s)) = (self.scenario, self.bound) {
            return crate::scenario::model::Model::planned(self, s);
        }
        match self.bound {
            Bound::Count(n) => n,
            Bound::Seconds(s) => (s * self.rate).round() as u64,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Refuses what would make the run meaningless or aim it somewhere it should not go.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.allow_remote {
            if !self.target.ip().is_loopback() {
                bail!("target {} is not a loopback address; pass --allow-remote to load a remote server", self.target);
            }
            if let Some(ip) = self.local_ips.iter().find(|ip| !ip.is_loopback()) {
                bail!("local address {ip} is not a loopback address; pass --allow-remote to use it");
            }
        }
        let positive = |r: f64| r > 0.0 && r.is_finite();
        if !positive(self.rate) || !positive(self.setup_rate) {
            bail!("the rate must be a positive number");
        }
        if self.local_ips.is_empty() {
            bail!("no local addresses");
        }
        match self.scenario {
            Scenario::Register if self.accounts.is_empty() => bail!("the register scenario needs at least one user"),
            Scenario::Message if self.accounts.len() < 2 => bail!("the message scenario needs at least two users"),
            Scenario::Presence => {
                let p = crate::scenario::presence::presentities(self);
                if p == 0 || p >= self.accounts.len() {
                    bail!("the presence scenario needs at least one presentity and one watcher ({p} of {} users are presentities)", self.accounts.len());
                }
                if !self.resource_lists && !(1..=p).contains(&self.watch) {
                    bail!("--watch must be 1 to the number of presentities ({p}), got {}", self.watch);
                }
            }
            Scenario::Model => {
                if !(1..self.accounts.len()).contains(&self.watch) {
                    bail!("the model scenario needs more users than contacts (--watch {})", self.watch);
                }
                if !matches!(self.bound, Bound::Seconds(_)) || self.ramp.is_some() {
                    bail!("the model scenario runs for --duration seconds, at the model's rates (no --count, --ramp)");
                }
                let m = &self.model;
                let rates = [m.publishes_per_hour, m.im_sessions_per_hour, m.fetches_per_day];
                if !positive(m.time_scale)
                    || m.reregister_secs <= 0.0
                    || m.keepalive_secs <= 0.0
                    || rates.iter().any(|r| *r < 0.0)
                    || self.expires < 2
                {
                    bail!("the model needs a positive --time-scale and intervals, rates not below zero, --expires of 2 s or more");
                }
            }
            _ => {}
        }
        if let Some(r) = &self.ramp {
            r.check()?;
        }
        if self.planned() == 0 {
            bail!("the run would send nothing (count or duration is zero)");
        }
        Ok(())
    }
}

/// `127.0.0.2-127.0.0.20`, `127.0.0.1`, or a comma-separated list of either.
pub fn parse_local_ips(s: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a.trim().parse().with_context(|| format!("bad address {a:?}"))?;
                let b: Ipv4Addr = b.trim().parse().with_context(|| format!("bad address {b:?}"))?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || b - a >= 1 << 20 {
                    bail!("bad address range {part:?}");
                }
                ips.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
            None => ips.push(part.parse().with_context(|| format!("bad address {part:?}"))?),
        }
    }
    if ips.is_empty() {
        bail!("no local addresses in {s:?}");
    }
    Ok(ips)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn local_ip_ranges() {
        let ips = parse_local_ips("127.0.0.2-127.0.0.4,127.0.1.1").unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        assert!(parse_local_ips("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_local_ips("x").is_err());
    }

    #[test]
    fn refuses_remote_targets() {
        let mut c = Config::new(Scenario::Register, "192.0.2.1:5060".parse().unwrap());
        assert!(c.check().is_err());
        c.allow_remote = true;
        c.check().unwrap();
        c.target = "127.0.0.1:5060".parse().unwrap();
        c.allow_remote = false;
        c.check().unwrap();
        c.local_ips = vec!["10.0.0.1".parse().unwrap()];
        assert!(c.check().is_err());
    }

    #[test]
    fn users_files_round_trip() {
        let accounts = vec![
            Account { user: "zoe".into(), password: " p,w\"x ".into() },
            Account { user: "bj\u{f6}rn".into(), password: "Zo\u{eb} \"Z\" O'Brien, Jr.".into() },
            Account { user: "#hash".into(), password: "  two spaces  ".into() },
            Account { user: "plain".into(), password: "#pw".into() },
        ];
        let mut text = Vec::new();
        write_users_csv(&mut text, "example.test", &accounts).unwrap();
        assert_eq!(read_users_csv(&text).unwrap(), accounts, "{}", String::from_utf8_lossy(&text));
    }

    #[test]
    fn users_files_are_read_as_sipfront_user_import_reads_them() {
        let text = "AOR,Password,Display name\r\n\
            # staff, \"quoted\"\r\n\
            \r\n\
            sip:zoe@example.test,\" p,w\"\"x \",\"Zo\u{eb} \"\"Z\"\" O'Brien,\r\n Jr.\"\r\n\
            \x20\x20\n\
            bob,  two spaces  \n";
        let accounts = read_users_csv(text.as_bytes()).unwrap();
        assert_eq!(
            accounts,
            vec![
                Account { user: "zoe".into(), password: " p,w\"x ".into() },
                Account { user: "bob".into(), password: "  two spaces  ".into() },
            ]
        );
        let err = read_users_csv(b"a@x,pw\nb@x\n").unwrap_err().to_string();
        assert_eq!(err, "record 2: expected aor,password[,display name]");
        assert!(read_users_csv(b"a@x,\n").is_err(), "an empty password");
        assert!(read_users_csv(b"a@x,pw,name,more\n").is_err());
        assert!(read_users_csv(b"a@x,\"pw\nb@x,pw\n").is_err(), "a quote left open");
    }

    #[test]
    fn pattern_users() {
        let mut c = Config::new(Scenario::Message, "127.0.0.1:5060".parse().unwrap());
        c.set_pattern_users(3, 10, "secret-{n}");
        assert_eq!(c.accounts[2], Account { user: "user12".into(), password: "secret-12".into() });
    }

    #[test]
    fn the_model_runs_for_a_duration() {
        let mut c = Config::new(Scenario::Model, "127.0.0.1:5060".parse().unwrap());
        assert!(c.check().is_err(), "bounded by count");
        c.bound = Bound::Seconds(10.0);
        c.check().unwrap();
        c.watch = 100;
        assert!(c.check().is_err(), "as many contacts as users");
        c.watch = 5;
        c.model.time_scale = 0.0;
        assert!(c.check().is_err());
    }
}
