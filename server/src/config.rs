//! `sipfront.toml`: every key has a default, and every key can be overridden by an environment
//! variable named after it: `[listen] sip` is `SIPFRONT_LISTEN_SIP`. Lists are comma-separated
//! in the environment. The README's configuration reference documents each key.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
    pub transport: Transport,
    pub limits: Limits,
    pub transaction: Transaction,
    pub database: Database,
    pub auth: Auth,
    pub registrar: Registrar,
    pub messaging: Messaging,
    pub archive: Archive,
    pub presence: Presence,
    pub proxy: Proxy,
    pub flood: Flood,
    pub server: Server,
    pub pool: Pool,
    pub federation: Federation,
    pub groups: Groups,
    pub directory: Directory,
    pub log: Log,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// `postgres://user@host/db` for a pool; empty: SQLite at `DATA_DIR/sipfront.db`.
    pub url: String,
    /// How often the credential cache asks the store what changed.
    pub poll_ms: u64,
    /// A store read on a request's path that takes longer is answered 503 with Retry-After.
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Digest algorithms offered, in order: one challenge header each. `MD5` alone by default,
    /// as clients such as baresip fail on a SHA-256 challenge (see the README's security notes).
    pub algorithms: Vec<String>,
    /// How long a nonce is good for; after it, a `stale=true` challenge.
    pub nonce_lifetime_secs: u64,
    /// Key that signs nonces (and derives unknown users' dummy HA1); empty: a random one per
    /// process. A nonce is accepted only by the process that issued it; give every front end
    /// of a pool the same key so that another's nonce is told from a forgery (and answered
    /// stale, which clients retry at once), and so that the pool's seal has a shared key.
    pub secret: String,
    /// Failed attempts per (user, source IP) within `failure_window_secs` before a lockout.
    pub max_failures: u32,
    pub failure_window_secs: u64,
    pub lockout_secs: u64,
    /// Distinct users one IP may fail for within the window before the IP is locked out
    /// for every user (password spraying).
    pub max_users_per_ip: u32,
    /// Failure windows (per user and address, per address) remembered at once; beyond it a
    /// failure from a new pair or address is answered as ever but not counted (an attacker
    /// choosing user names and addresses must not grow memory without bound).
    pub max_tracked_failures: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Messaging {
    /// Larger MESSAGE bodies are refused with 413.
    pub max_body: usize,
    /// Body types relayed (RFC 3428: others get 415 with Accept).
    pub content_types: Vec<String>,
    /// The answer to a MESSAGE for a disabled user: 403, or 404 to not reveal the account.
    pub disabled_user_status: u16,
    /// Keep messages for users with no binding (202) and deliver them at their next REGISTER;
    /// off: such messages get 480.
    pub offline: bool,
    /// Messages kept per user; beyond it, 480.
    pub offline_max_per_user: u32,
    /// Kept messages older than this are deleted undelivered.
    pub offline_max_age_days: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Presence {
    /// Subscription length when the SUBSCRIBE asks none (RFC 3856: 3600).
    pub default_expires: u32,
    /// Shorter subscriptions and publications (other than 0) get 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer ones are granted this long.
    pub max_expires: u32,
    /// A watcher gets at most one NOTIFY per presentity per this interval (RFC 6446).
    pub notify_interval_ms: u64,
    /// Subscriptions one watcher may hold; beyond it, 403.
    pub max_subscriptions_per_watcher: usize,
    /// Subscriptions the watchers of one partner domain (federation) may hold together;
    /// beyond it 403.
    pub max_subscriptions_per_partner: usize,
    /// Publications one presentity may hold (one per device, RFC 3903); a new one beyond it
    /// gets 403.
    pub max_publications_per_presentity: usize,
    /// A watcher with no rule: `same-domain` allows watchers of the presentity's domain and
    /// leaves others pending; `pending` leaves everyone pending; `allow` allows everyone.
    pub default_policy: String,
    /// The user part of a resource-list URI is the owner's followed by this (`alice+contacts`).
    pub list_suffix: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Archive {
    /// Archive instant messages.
    pub enabled: bool,
    /// Refuse IM with 503 when it cannot be archived, rather than deliver it unarchived.
    pub critical: bool,
    /// Delete entries older than this many days; 0 keeps them forever.
    pub retention_days: u32,
    /// Archive only messages to or from these domains; empty: every domain.
    pub domains: Vec<String>,
    /// AORs whose messages are never archived.
    pub exclude_users: Vec<String>,
    /// Entries waiting for the writer at most; beyond it they are dropped (or, critical, refused).
    pub queue: usize,
    /// A message between two users after this long a silence starts a new conversation.
    pub session_gap_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Flood {
    /// Messages one source (an IPv4 address, an IPv6 /64) may send within `window_ms` (a
    /// sliding window); past it the source is banned. 0: no limit.
    pub max_requests: u32,
    pub window_ms: u64,
    /// How long a banned source's datagrams are dropped and its connections refused.
    pub ban_secs: u64,
    /// Sources tracked at once; beyond it new ones are not counted.
    pub max_sources: usize,
    /// Addresses or CIDR blocks never counted (trusted peers; load balancers named in
    /// `transport.proxy_protocol_from` and pool members never are).
    pub allow: Vec<String>,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            max_requests: 500,
            window_ms: 2000,
            ban_secs: 60,
            max_sources: 100_000,
            allow: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    /// A dialog this server record-routed (a call, an IM session) is routed for this long at
    /// most: its route token expires then (the route set of a dialog never changes, RFC 3261
    /// 12.2.1.2, so a longer dialog must be set up anew).
    pub dialog_max_hours: u32,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy { dialog_max_hours: 24 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Registrar {
    /// Below this (and above zero) a REGISTER gets 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer requests are shortened to this (the OCS planning guide's REGISTER refresh).
    pub max_expires: u32,
    /// When a REGISTER asks for no expiry at all.
    pub default_expires: u32,
    /// Bindings per AOR; a new one beyond this replaces the oldest.
    pub max_bindings: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// SIP over UDP and TCP, on each address.
    pub sip: Vec<SocketAddr>,
    /// SIP over TLS.
    pub tls: Vec<SocketAddr>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub http: SocketAddr,
    /// Directory search over HTTPS (`GET /directory/v1/search`), with the TLS certificate of
    /// `tls`; empty: not served.
    pub directory: Vec<SocketAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain; empty: a self-signed certificate in the data directory.
    pub cert: String,
    /// PEM private key for `cert`.
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Transport {
    /// A TCP or TLS connection with nothing received for this long is closed.
    pub idle_timeout_secs: u64,
    /// A TCP or TLS connection whose peer has not authenticated this long after it opened (no
    /// request on it passed digest authentication) is closed; 0: never. Keep-alives do not
    /// count.
    pub unauthenticated_timeout_secs: u64,
    pub tls_handshake_timeout_secs: u64,
    /// Open connections allowed from one IP address.
    pub max_connections_per_ip: usize,
    /// Open connections allowed in all.
    pub max_connections: usize,
    /// Outgoing messages queued for one connection before further ones are dropped.
    pub connection_queue: usize,
    /// Outgoing bytes queued for one connection before further messages are dropped (one
    /// message of any size may always wait alone).
    pub connection_queue_bytes: usize,
    /// Load balancers (their addresses) whose TCP and TLS connections may open with a PROXY
    /// protocol header (v1 or v2) naming the client, as HAProxy's `send-proxy-v2` sends: the
    /// client's address then counts for the per-address caps, lockouts, Via and logs. From
    /// any other address a header is not looked for.
    pub proxy_protocol_from: Vec<IpAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_headers: usize,
    pub max_header_len: usize,
    pub max_vias: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Transaction {
    /// RFC 3261 17.1.1.1 T1: round-trip time estimate.
    pub t1_ms: u64,
    /// T2: the longest retransmission interval for non-INVITE requests and INVITE responses.
    pub t2_ms: u64,
    /// T4: how long a message may stay in the network.
    pub t4_ms: u64,
    /// Server transactions kept at once (a UDP request's answer is kept 64*T1 for its
    /// retransmissions); beyond it, requests that need one are answered 503 with Retry-After.
    pub max_server_transactions: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Worker threads; 0: one per CPU.
    pub workers: usize,
    /// On SIGINT/SIGTERM, how long in-flight transactions may take to finish.
    pub drain_timeout_secs: u64,
    /// The Server / User-Agent header value.
    pub agent: String,
    /// Requests waiting on something (the store, another member) at most; beyond it new
    /// requests outside dialogs get 503 with Retry-After (refreshes and dialogs go on).
    pub max_pending_requests: usize,
    /// The runtime running later than this is overload too (its workers are all busy).
    pub max_lag_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Pool {
    /// This front end's name in the pool, unique among its members; empty: `HOST:PORT`, the
    /// machine's host name and the port of the first SIP listener.
    pub member_id: String,
    /// Where the other members reach this one (SIP over TCP, `host:port`); empty: the first
    /// SIP listener's address, with the host name when it listens on every address.
    pub address: String,
    /// How often this front end renews its announcement in the store and reads the others'.
    pub heartbeat_ms: u64,
    /// A member silent for this long is dead to the others.
    pub member_timeout_ms: u64,
    /// The key every inter-member request is signed with (HMAC-SHA256), the same on every
    /// member; empty: derived from `auth.secret`, which a pool shares anyway.
    pub secret: String,
}

/// Federation with partner organisations' domains (IM and presence over mutual TLS). Which
/// domains, the mode and who may federate are policy in the store (`sipfront federation`,
/// `sipfront user federation`); these keys say how.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Federation {
    /// Off: requests for domains we do not serve are refused, as without federation.
    pub enabled: bool,
    /// `host:port` our Via and Record-Route name toward partners: the edge's host name (its
    /// SRV target), where partners reach us; empty: the first TLS listener's address.
    pub address: String,
    /// In a pool, the member (`pool.member_id`) that sends every request to partner domains;
    /// empty (or that member not live): any member does, as the partner user's home.
    pub edge_member: String,
    /// PEM file of the certificate authorities partners' certificates must chain to (their
    /// edges' server certificates, and the client certificates they present to us). Required
    /// when enabled: a partner is only ever who a trusted certificate says it is.
    pub trust_roots: String,
    /// DNS servers (`ip:port`) asked for partners' `_sipfederationtls._tcp` SRV records and
    /// their targets' addresses; empty: the system's resolver configuration.
    pub dns_servers: Vec<SocketAddr>,
    /// A DNS query not answered within this is retried once, then the lookup fails (504 to
    /// the sender).
    pub dns_timeout_ms: u64,
    /// Connecting to a partner's edge, TLS handshake included, within this; past it the next
    /// edge is tried.
    pub connect_timeout_ms: u64,
    /// Off: edges that DNS names at loopback, private, link-local or other non-Internet
    /// addresses are skipped (a partner's DNS must not have us probe our own network). An
    /// edge named with `--via` is always used. On for a private federation network.
    pub private_edges: bool,
    /// Requests one partner domain may send us per second (over all its connections); past
    /// it they are answered 503 with Retry-After, and local traffic is not slowed.
    pub max_requests_per_partner: u32,
    /// Connections one partner domain may hold open to us at once.
    pub max_connections_per_partner: usize,
}

impl Default for Federation {
    fn default() -> Self {
        Federation {
            enabled: false,
            address: String::new(),
            edge_member: String::new(),
            trust_roots: String::new(),
            dns_servers: Vec::new(),
            dns_timeout_ms: 2000,
            connect_timeout_ms: 5000,
            private_edges: false,
            max_requests_per_partner: 200,
            max_connections_per_partner: 16,
        }
    }
}

/// Distribution groups (issue 21): a MESSAGE to a group's address goes to its members, a
/// SUBSCRIBE with `Supported: eventlist` watches them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Groups {
    /// A MESSAGE to a group of more members (nested groups expanded) is refused with 403.
    pub max_members_for_message: usize,
    /// A subscription to a group of more members is refused with 403 (and a live one whose
    /// group grows past it ends with `rejected`).
    pub max_members_for_subscription: usize,
    /// Users (AORs) who may send to every group besides its members (an announcements
    /// account); a group's own members always may.
    pub senders: Vec<String>,
    /// Copies of group MESSAGEs under way at once (each until its member's final response); a
    /// group MESSAGE that would go past it is refused with 503 and Retry-After.
    pub max_copies_in_flight: usize,
}

impl Default for Groups {
    fn default() -> Self {
        Groups {
            max_members_for_message: 500,
            max_members_for_subscription: 100,
            senders: Vec::new(),
            max_copies_in_flight: 10_000,
        }
    }
}

/// Directory search over HTTPS (`listen.directory`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Directory {
    /// Off: a search finds the users of the caller's own domain only; on: of every domain
    /// served here.
    pub all_domains: bool,
    /// Each entry carries the user's presence (basic status and note) when the user's
    /// presence rules let the caller see it.
    pub presence: bool,
}

impl Default for Directory {
    fn default() -> Self {
        Directory { all_domains: false, presence: true }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `tracing` filter: `info`, `debug` (one line per request), `sipfront=debug,warn`...
    pub level: String,
    /// `human` or `json`.
    pub format: String,
}

impl Default for Listen {
    fn default() -> Self {
        let addr = |s: &str| s.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Listen {
            sip: vec![addr("0.0.0.0:5060"), addr("[::]:5060")],
            tls: vec![addr("0.0.0.0:5061"), addr("[::]:5061")],
            http: addr("127.0.0.1:9090"),
            directory: vec![addr("0.0.0.0:5443")],
        }
    }
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            // The OCS 2007 R2 planning guide's figure: idle connections close after 20 minutes.
            idle_timeout_secs: 20 * 60,
            tls_handshake_timeout_secs: 10,
            max_connections_per_ip: 4096,
            max_connections: 200_000,
            connection_queue: 1024,
            connection_queue_bytes: 1 << 20,
            proxy_protocol_from: Vec::new(),
            unauthenticated_timeout_secs: 60,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let l = sipfront_proto::Limits::default();
        Limits {
            max_message_size: l.max_message_size,
            max_headers: l.max_headers,
            max_header_len: l.max_header_len,
            max_vias: l.max_vias,
        }
    }
}

impl Default for Transaction {
    fn default() -> Self {
        Transaction { t1_ms: 500, t2_ms: 4000, t4_ms: 5000, max_server_transactions: 500_000 }
    }
}

impl Default for Database {
    fn default() -> Self {
        Database { url: String::new(), poll_ms: 1000, timeout_ms: 2000 }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            algorithms: vec!["MD5".into()],
            nonce_lifetime_secs: 300,
            secret: String::new(),
            max_failures: 5,
            failure_window_secs: 300,
            lockout_secs: 900,
            max_users_per_ip: 20,
            max_tracked_failures: 100_000,
        }
    }
}

impl Default for Messaging {
    fn default() -> Self {
        Messaging {
            max_body: 65_536,
            content_types: [
                "text/plain",
                "text/html",
                "message/cpim",
                "application/im-iscomposing+xml",
                "message/imdn+xml",
            ]
            .map(String::from)
            .to_vec(),
            disabled_user_status: 403,
            offline: true,
            offline_max_per_user: 100,
            offline_max_age_days: 7,
        }
    }
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86_400,
            notify_interval_ms: 1000,
            max_subscriptions_per_watcher: 500,
            max_subscriptions_per_partner: 100_000,
            max_publications_per_presentity: 16,
            default_policy: "same-domain".into(),
            list_suffix: "+contacts".into(),
        }
    }
}

impl Default for Archive {
    fn default() -> Self {
        Archive {
            enabled: true,
            critical: false,
            retention_days: 0,
            domains: Vec::new(),
            exclude_users: Vec::new(),
            queue: 10_000,
            session_gap_secs: 600,
        }
    }
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar { min_expires: 60, max_expires: 900, default_expires: 3600, max_bindings: 8 }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            workers: 0,
            drain_timeout_secs: 10,
            agent: format!("sipfront/{}", env!("CARGO_PKG_VERSION")),
            max_pending_requests: 10_000,
            max_lag_ms: 300,
        }
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            member_id: String::new(),
            address: String::new(),
            heartbeat_ms: 1000,
            member_timeout_ms: 3000,
            secret: String::new(),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log { level: "info".into(), format: "human".into() }
    }
}

impl Config {
    /// Worker threads to run: `server.workers`, or one per CPU when it is 0.
    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

impl Limits {
    pub fn proto(&self) -> sipfront_proto::Limits {
        sipfront_proto::Limits {
            max_message_size: self.max_message_size,
            max_headers: self.max_headers,
            max_header_len: self.max_header_len,
            max_vias: self.max_vias,
        }
    }
}

/// `scheme://user:password@host/...` with the password replaced (a URL without one is kept).
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The credentials end at the last `@` before the path (a password may hold `@`).
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    let Some(colon) = rest[..at].find(':') else { return url.to_string() };
    format!("{scheme}://{}:{REDACTED}{}", &rest[..colon], &rest[at..])
}

/// What `sipfront config` prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// This configuration with its secrets hidden, for printing: `auth.secret`, `pool.secret`
    /// and a password inside `database.url`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for secret in [&mut c.auth.secret, &mut c.pool.secret] {
            if !secret.is_empty() {
                *secret = REDACTED.to_string();
            }
        }
        c.database.url = redact_url_password(&c.database.url);
        c
    }

    /// Reads the file (if given), then applies `SIPFRONT_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
        let mut tree = toml::Value::try_from(Config::default()).context("default configuration")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let file_tree: toml::Value =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            merge(&mut tree, file_tree);
        }
        apply_env(&mut tree, env)?;
        let config: Config = tree.try_into().context("configuration")?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if !matches!(self.log.format.as_str(), "human" | "json") {
            bail!("log.format must be \"human\" or \"json\", not {:?}", self.log.format);
        }
        if self.transaction.t1_ms == 0 || self.transaction.t2_ms < self.transaction.t1_ms {
            bail!("transaction timers need 0 < t1_ms <= t2_ms");
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            bail!("tls.cert and tls.key go together");
        }
        if self.auth.algorithms.is_empty() {
            bail!("auth.algorithms needs at least one algorithm");
        }
        for a in &self.auth.algorithms {
            if sipfront_proto::digest::Algorithm::parse(a.as_bytes()).is_none() {
                bail!("auth.algorithms: unknown algorithm {a:?} (MD5, SHA-256, MD5-sess, SHA-256-sess)");
            }
        }
        if !matches!(self.messaging.disabled_user_status, 403 | 404) {
            bail!("messaging.disabled_user_status must be 403 or 404");
        }
        if self.registrar.min_expires > self.registrar.max_expires {
            bail!("registrar.min_expires is above registrar.max_expires");
        }
        if self.pool.heartbeat_ms == 0 || self.pool.member_timeout_ms <= self.pool.heartbeat_ms {
            bail!("pool needs 0 < heartbeat_ms < member_timeout_ms");
        }
        if self.federation.enabled && self.federation.trust_roots.is_empty() {
            bail!("federation.enabled needs federation.trust_roots (the partners' certificate authorities)");
        }
        if self.limits.max_message_size > u32::MAX as usize / 2 {
            bail!("limits.max_message_size is too large");
        }
        Ok(())
    }

    /// Every key with its environment variable and default, for `sipfront config` and the docs.
    pub fn reference() -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        if let Ok(toml::Value::Table(sections)) = toml::Value::try_from(Config::default()) {
            for (section, keys) in sections {
                if let toml::Value::Table(keys) = keys {
                    for (key, value) in keys {
                        out.push((format!("{section}.{key}"), env_name(&section, &key), value.to_string()));
                    }
                }
            }
        }
        out
    }
}

pub fn env_name(section: &str, key: &str) -> String {
    format!("SIPFRONT_{}_{}", section.to_ascii_uppercase(), key.to_ascii_uppercase())
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Overrides each leaf `section.key` whose variable is set, parsed as the type of its default.
fn apply_env(tree: &mut toml::Value, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<()> {
    let vars: std::collections::HashMap<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with("SIPFRONT_")).collect();
    let toml::Value::Table(sections) = tree else { return Ok(()) };
    for (section, keys) in sections.iter_mut() {
        let toml::Value::Table(keys) = keys else { continue };
        for (key, value) in keys.iter_mut() {
            let name = env_name(section, key);
            let Some(raw) = vars.get(&name) else { continue };
            *value = match value {
                toml::Value::String(_) => toml::Value::String(raw.clone()),
                toml::Value::Integer(_) => {
                    toml::Value::Integer(raw.trim().parse().with_context(|| format!("{name}: not a number: {raw:?}"))?)
                }
                toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    _ => bail!("{name}: not a boolean: {raw:?}"),
                }),
                toml::Value::Array(_) => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
                other => bail!("{name}: cannot be set from the environment ({})", other.type_str()),
            };
        }
    }
    Ok(())
}

/// Where runtime files live: the SQLite database, the self-signed certificate.
pub fn data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_for_printing() {
        let mut c = Config::default();
        c.auth.secret = "the auth secret".into();
        c.pool.secret = "the pool secret".into();
        c.database.url = "postgres://sipfront:p@ss:w@rd@db.example:5432/sipfront".into();
        let printed = toml::to_string_pretty(&c.redacted()).unwrap();
        for secret in ["the auth secret", "the pool secret", "p@ss:w@rd", "ss:w@rd"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        let r = c.redacted();
        assert_eq!(r.database.url, "postgres://sipfront:<redacted>@db.example:5432/sipfront");
        assert_eq!(r.auth.secret, REDACTED);
        // What has no secret is left as it is.
        for url in ["postgres://sipfront@db/sipfront", "sqlite:///var/lib/sipfront/db", ""] {
            let mut c = Config::default();
            c.database.url = url.into();
            assert_eq!(c.redacted().database.url, url);
        }
        assert_eq!(Config::default().redacted().auth.secret, "", "an unset secret stays unset");
    }

    #[test]
    fn defaults_file_and_environment() {
        let dir = std::env::temp_dir().join(format!("sipfront-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sipfront.toml");
        std::fs::write(&file, "[transport]\nidle_timeout_secs = 60\n[log]\nformat = \"json\"\n").unwrap();
        let env = vec![
            ("SIPFRONT_LISTEN_SIP".to_string(), "127.0.0.1:5070, [::1]:5070".to_string()),
            ("SIPFRONT_TRANSACTION_T1_MS".to_string(), "100".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.transport.idle_timeout_secs, 60);
        assert_eq!(c.log.format, "json");
        assert_eq!(c.listen.sip, vec!["127.0.0.1:5070".parse().unwrap(), "[::1]:5070".parse().unwrap()]);
        assert_eq!(c.transaction.t1_ms, 100);
        assert_eq!(c.transaction.t2_ms, 4000);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_directory_listener_is_on_by_default_and_an_empty_list_turns_it_off() {
        assert_eq!(Config::default().listen.directory, vec!["0.0.0.0:5443".parse().unwrap()]);
        let off = Config::load(None, vec![("SIPFRONT_LISTEN_DIRECTORY".into(), String::new())]).unwrap();
        assert!(off.listen.directory.is_empty());
    }

    #[test]
    fn bad_values_are_one_clear_error() {
        let e = Config::load(None, vec![("SIPFRONT_TRANSACTION_T1_MS".into(), "fast".into())]).unwrap_err();
        assert!(format!("{e:#}").contains("SIPFRONT_TRANSACTION_T1_MS"));
        let e = Config::load(None, vec![("SIPFRONT_LOG_FORMAT".into(), "xml".into())]).unwrap_err();
        assert!(format!("{e:#}").contains("log.format"));
    }

    #[test]
    fn the_readme_documents_every_key() {
        let readme = include_str!("../../README.md");
        for (key, env, _) in Config::reference() {
            assert!(readme.contains(&format!("`{key}`")), "README.md lacks {key}");
            assert!(readme.contains(&format!("`{env}`")), "README.md lacks {env}");
        }
    }

    #[test]
    fn every_key_has_a_reference_entry() {
        let r = Config::reference();
        assert!(r.iter().any(|(k, e, _)| k == "listen.sip" && e == "SIPFRONT_LISTEN_SIP"));
        assert!(r.len() > 15);
    }
}
