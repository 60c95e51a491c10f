//! sipfront's persistent data: domains, users and their digest credentials (and, as later
//! features arrive, contact lists, presence rules, the IM archive, the federation policy and
//! distribution groups), behind one async [`Store`] trait with two implementations: SQLite,
//! the embedded default for a single node, and PostgreSQL, shared by the front ends of a pool.
//!
//! This crate never sees a SIP message: it stores strings and numbers. Digest hashes are
//! computed by the caller (`sipfront-proto` owns the digest math) and stored as given; no
//! plaintext password ever reaches it.

mod groups;
mod postgres;
mod sql;
mod sqlite;
pub mod testing;

pub use groups::{expand, expand_group, Expansion};
pub use postgres::PgStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// A user as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// `username@domain`.
    pub aor: String,
    pub username: String,
    pub domain: String,
    pub display_name: String,
    /// Hex MD5 HA1 (`MD5(username:domain:password)`).
    pub ha1_md5: String,
    /// Hex SHA-256 HA1 (`SHA-256(username:domain:password)`).
    pub ha1_sha256: String,
    pub enabled: bool,
    /// May talk with partner domains (OCS's per-user "federation enabled"): off until the
    /// operator turns it on.
    pub federation: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What it takes to add a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub domain: String,
    pub display_name: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl NewUser {
    pub fn aor(&self) -> String {
        format!("{}@{}", self.username, self.domain)
    }
}

/// What a presence rule grants a watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Block,
    /// The watcher's subscription looks active and shows the presentity offline.
    PoliteBlock,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Block => "block",
            RuleAction::PoliteBlock => "polite-block",
        }
    }
}

impl std::str::FromStr for RuleAction {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<RuleAction> {
        match s {
            "allow" => Ok(RuleAction::Allow),
            "block" => Ok(RuleAction::Block),
            "polite-block" => Ok(RuleAction::PoliteBlock),
            other => Err(StoreError::Invalid(format!("rule action {other:?}"))),
        }
    }
}

/// A presence rule of `owner`: `watcher` is an AOR or `*@domain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub owner: String,
    pub watcher: String,
    pub action: RuleAction,
    pub updated_at: i64,
}

/// An entry of `owner`'s contact list; `group` is empty for none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub owner: String,
    pub contact: String,
    pub display_name: String,
    pub group: String,
}

/// What the operator's federation policy says of one partner domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FederationAction {
    /// Federate with it, in either mode.
    Allow,
    /// Never federate with it, in either mode (in `closed` mode no entry does the same; the
    /// entry keeps the domain out should the mode become `open`).
    Block,
}

impl FederationAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FederationAction::Allow => "allow",
            FederationAction::Block => "block",
        }
    }
}

impl std::str::FromStr for FederationAction {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<FederationAction> {
        match s {
            "allow" => Ok(FederationAction::Allow),
            "block" => Ok(FederationAction::Block),
            other => Err(StoreError::Invalid(format!("federation action {other:?}"))),
        }
    }
}

/// Which partner domains federation reaches, beyond what [`FederationDomain`] entries say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FederationMode {
    /// Only the allowed domains: the default, so that nothing is federated before the
    /// operator decides.
    #[default]
    Closed,
    /// Any domain whose edge DNS SRV finds, except the blocked ones.
    Open,
}

impl FederationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FederationMode::Closed => "closed",
            FederationMode::Open => "open",
        }
    }
}

impl std::str::FromStr for FederationMode {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<FederationMode> {
        match s {
            "closed" => Ok(FederationMode::Closed),
            "open" => Ok(FederationMode::Open),
            other => Err(StoreError::Invalid(format!("federation mode {other:?}"))),
        }
    }
}

/// A partner domain the operator named in the federation policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationDomain {
    /// The partner's SIP domain, in lower case.
    pub domain: String,
    pub action: FederationAction,
    /// The partner's edge, `host:port`, when the operator names it instead of letting DNS SRV
    /// find it; only for an allowed domain.
    pub via: Option<String>,
}

impl FederationDomain {
    /// The entry as the store keeps it, the domain in lower case; `Invalid` unless the domain
    /// is a plausible name in public DNS (two labels or more of letters, digits and hyphens;
    /// no IP address, scheme, port or trailing dot) and `via`, if any, is `host:port` (a DNS
    /// name, an IPv4 address or a bracketed IPv6 address, and a port 1-65535) on an allowed
    /// domain. The CLI checks with it before it opens the store.
    pub fn checked(&self) -> Result<FederationDomain> {
        let domain = self.domain.to_ascii_lowercase();
        check_partner_domain(&domain)?;
        let via = match (&self.via, self.action) {
            (None, _) => None,
            (Some(via), FederationAction::Allow) => {
                check_via(via)?;
                Some(via.clone())
            }
            (Some(_), FederationAction::Block) => {
                return Err(StoreError::Invalid(format!("{domain}: a blocked domain has no edge to name (via)")))
            }
        };
        Ok(FederationDomain { domain, action: self.action, via })
    }
}

/// A distribution group: an address of a served domain that stands for its members (users,
/// other groups, remote addresses), as OCS's distribution groups do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// `name@domain`, in lower case; never a user's AOR.
    pub aor: String,
    pub display_name: String,
    /// How many members it lists itself (a nested group counts as one).
    pub direct_members: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// When the group or its list of members last changed, Unix seconds.
    pub updated_at: i64,
}

/// A direct member of a group as [`Store::group_members_after`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// The member's AOR, in lower case.
    pub aor: String,
    /// A group has this AOR now (a nested group, expanded in turn); otherwise the member is a
    /// user or a remote address.
    pub is_group: bool,
}

/// Why the store refused or failed. Each kind is one answer upstream: a CLI error naming the
/// key, or (unavailable, timeout) a 503 with Retry-After while the store heals.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such row; the key it was looked up by (an AOR, a domain).
    #[error("not found: {0}")]
    NotFound(String),
    /// The row exists already; its key.
    #[error("already exists: {0}")]
    Conflict(String),
    /// What was given breaks a rule of the data (a malformed AOR, domain or hash); says which.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database cannot be reached, is locked or failed: the caller answers 503 and
    /// retries later.
    #[error("store unavailable ({during}): {cause}")]
    Unavailable {
        /// What was being done (`opening ...`, `commit`, the key of the row).
        during: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store did not answer within the caller's deadline.
    #[error("store did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl StoreError {
    /// The database is not usable now (as opposed to a refusal of what was asked).
    pub fn unavailable(during: impl Into<String>, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Unavailable { during: during.into(), cause: cause.into() }
    }

    /// The kind as a metric label (`sipfront_store_errors_total{kind}`).
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Conflict(_) => "conflict",
            StoreError::Invalid(_) => "invalid",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Timeout(_) => "timeout",
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One entry of the store's change log: what changed, so that every front end's caches and
/// live subscriptions follow the store within a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A domain was added (the served domains changed).
    Domain(String),
    /// A user (by AOR) was added, removed or changed: credentials, enabled, presence rules or
    /// contact list.
    User(String),
    /// An offline message was kept for this user (by AOR). Nothing of the user changed: caches
    /// of users, rules and lists need not hear of it; offline delivery does.
    Waiting(String),
    /// The federation policy changed: a partner domain's entry (the domain) was set or
    /// removed, or the mode ([`Change::FEDERATION_MODE`]) was set. Front ends reload the policy.
    Federation(String),
    /// A distribution group (by AOR) was added or removed, or its list of direct members
    /// changed (removing a group takes it off the lists of the groups that listed it: each of
    /// those is noted too). Groups that reach it only through nesting are not noted: whoever
    /// keeps an expansion follows the nested groups it read.
    Group(String),
}

impl Change {
    /// The subject of a [`Change::Federation`] entry for the mode (no domain is `*`).
    pub const FEDERATION_MODE: &'static str = "*";

    /// The kind as the `kind` column keeps it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Change::Domain(_) => "domain",
            Change::User(_) => "user",
            Change::Waiting(_) => "waiting",
            Change::Federation(_) => "federation",
            Change::Group(_) => "group",
        }
    }

    /// The domain or AOR it names (`*` for the federation mode).
    pub(crate) fn subject(&self) -> &str {
        match self {
            Change::Domain(s) | Change::User(s) | Change::Waiting(s) | Change::Federation(s) | Change::Group(s) => s,
        }
    }

    /// A row of the change log; `None` for a kind this version does not know (a newer front
    /// end's entry, which is skipped).
    pub(crate) fn from_row(kind: &str, subject: String) -> Option<Change> {
        match kind {
            "domain" => Some(Change::Domain(subject)),
            "user" => Some(Change::User(subject)),
            "waiting" => Some(Change::Waiting(subject)),
            "federation" => Some(Change::Federation(subject)),
            "group" => Some(Change::Group(subject)),
            _ => None,
        }
    }
}

/// The change log past some position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The position to ask from next time.
    pub last: i64,
    pub entries: Vec<Change>,
    /// The log goes on past `last`: this was a full batch.
    pub more: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the schema.
    async fn migrate(&self) -> Result<()>;
    /// Whether the database answers a read of its data (readiness).
    async fn ping(&self) -> Result<()>;

    /// Adds a domain; `false` if it was there already.
    async fn add_domain(&self, domain: &str) -> Result<bool>;
    async fn domains(&self) -> Result<Vec<String>>;
    async fn has_domain(&self, domain: &str) -> Result<bool>;

    /// Adds a user, and its domain if new. `Conflict` if the AOR exists, whatever the case of
    /// its user part, or is a distribution group's.
    async fn add_user(&self, user: &NewUser) -> Result<()>;
    /// Adds many users in one transaction (an import batch); all or none. Returns how many.
    async fn add_users(&self, users: &[NewUser]) -> Result<usize>;
    async fn remove_user(&self, aor: &str) -> Result<()>;
    async fn user(&self, aor: &str) -> Result<Option<User>>;
    /// Users of one domain, or all, ordered by AOR.
    async fn users(&self, domain: Option<&str>) -> Result<Vec<User>>;
    async fn set_credentials(&self, aor: &str, ha1_md5: &str, ha1_sha256: &str) -> Result<()>;
    async fn set_enabled(&self, aor: &str, enabled: bool) -> Result<()>;
    /// Turns federation on or off for a user ([`User::federation`]); `NotFound` for an unknown
    /// AOR. Noted as a change of the user ([`Change::User`]).
    async fn set_user_federation(&self, aor: &str, on: bool) -> Result<()>;

    /// The change log after position `since` (0: from the start).
    async fn changes_since(&self, since: i64) -> Result<Changes>;
    /// The current position of the change log, to start watching from.
    async fn changes_head(&self) -> Result<i64>;

    /// Keeps a message for `recipient` unless it already has `max` waiting; whether it was kept.
    /// A kept message is noted in the change log ([`Change::Waiting`]), so that every front end
    /// learns that the recipient has messages waiting.
    async fn store_offline(
        &self,
        recipient: &str,
        sender: &str,
        content_type: &str,
        body: &[u8],
        max: u32,
    ) -> Result<bool>;
    /// Every recipient with messages kept.
    async fn offline_recipients(&self) -> Result<Vec<String>>;
    /// Up to `limit` messages kept for `recipient`, oldest first.
    async fn offline_messages(&self, recipient: &str, limit: u32) -> Result<Vec<OfflineMessage>>;
    async fn delete_offline(&self, id: i64) -> Result<()>;
    /// Deletes messages received before `before` (Unix seconds); how many.
    async fn purge_offline(&self, before: i64) -> Result<u64>;
    /// How full the offline store is: messages kept in all, and recipients with `near` or more.
    async fn offline_stats(&self, near: u32) -> Result<OfflineStats>;

    /// Writes archive entries, all in one transaction.
    async fn archive(&self, entries: &[ArchiveEntry]) -> Result<()>;

    // ---- presence rules and contact lists (each change is noted in the owner's change log) ----

    /// Sets `owner`'s rule for `watcher` (an AOR or `*@domain`), replacing any; `NotFound` for
    /// an unknown owner, `Invalid` for a watcher of neither form.
    async fn set_rule(&self, owner: &str, watcher: &str, action: RuleAction) -> Result<()>;
    /// Whether there was such a rule.
    async fn remove_rule(&self, owner: &str, watcher: &str) -> Result<bool>;
    /// `owner`'s rules, by watcher.
    async fn rules(&self, owner: &str) -> Result<Vec<Rule>>;
    /// Adds (or renames) a contact in a group of the owner's list.
    async fn add_contact(&self, contact: &Contact) -> Result<()>;
    /// Adds (or renames) many contacts, of any owners, in one transaction: all of them, or
    /// none if one fails (`NotFound` naming an owner that is no user). How many were given.
    async fn add_contacts(&self, contacts: &[Contact]) -> Result<usize>;
    /// Removes a contact from one group, or from every group (`None`); how many entries went.
    async fn remove_contact(&self, owner: &str, contact: &str, group: Option<&str>) -> Result<u64>;
    /// `owner`'s contact list, by group then contact.
    async fn contacts(&self, owner: &str) -> Result<Vec<Contact>>;
    /// Archived messages between `user` and `peer` (either direction), or between `user` and
    /// anyone when `peer` is `None`, with `since <= at < until`, oldest first, at most `limit`.
    async fn search_archive(
        &self,
        user: &str,
        peer: Option<&str>,
        since: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<ArchiveEntry>>;
    /// Deletes entries before `before` (Unix seconds); how many.
    async fn purge_archive(&self, before: i64) -> Result<u64>;

    // ---- the federation policy (each change is noted as a [`Change::Federation`]) ----

    /// Sets a partner domain's entry, replacing any; `Invalid` unless it passes
    /// [`FederationDomain::checked`]. The domain is kept in lower case.
    async fn set_federation_domain(&self, entry: &FederationDomain) -> Result<()>;
    /// Removes a partner domain's entry (the domain in any case); whether there was one.
    async fn remove_federation_domain(&self, domain: &str) -> Result<bool>;
    /// Every partner domain's entry, by domain (byte order, on either backend).
    async fn federation_domains(&self) -> Result<Vec<FederationDomain>>;
    /// Sets the mode (noted under [`Change::FEDERATION_MODE`]).
    async fn set_federation_mode(&self, mode: FederationMode) -> Result<()>;
    /// The mode: [`FederationMode::Closed`] until set.
    async fn federation_mode(&self) -> Result<FederationMode>;

    // ---- distribution groups (each change is noted as a [`Change::Group`]) ----
    //
    // Addresses (groups' and members') are `user@domain` and kept in lower case, user part
    // included, as the server compares AORs; `sip:` is the caller's to strip. A member is a
    // user, another group or a remote address: which, is decided when the group is read
    // ([`GroupMember::is_group`]), so a member may name a group added later.

    /// Adds a group, and its domain if new (as [`Store::add_user`] does: a group is an address
    /// of a domain served here). `Invalid` for an AOR that is not `user@domain`; `Conflict` if
    /// a group or a user (whatever the case of its user part) has that AOR.
    async fn add_group(&self, aor: &str, display_name: &str) -> Result<()>;
    /// Removes a group with its list of members; the groups that listed it as a member lose
    /// that membership (each noted as changed too). `NotFound` for an unknown group.
    async fn remove_group(&self, aor: &str) -> Result<()>;
    /// The groups of one domain (in any case), or all, by AOR (byte order, on either backend).
    async fn groups(&self, domain: Option<&str>) -> Result<Vec<Group>>;
    /// A group by AOR (in any case).
    async fn group(&self, aor: &str) -> Result<Option<Group>>;
    /// Adds `member` to `group`'s direct members; `false` if it was there already (nothing is
    /// noted then). `NotFound` for an unknown group; `Invalid` for a group or member that is
    /// not `user@domain`, or a member that is the group itself (a longer loop is allowed, and
    /// found by [`expand_group`]).
    async fn add_group_member(&self, group: &str, member: &str) -> Result<bool>;
    /// Adds many `(group, member)` memberships, of any groups, in one transaction (an import
    /// batch): all of them, or none if one is refused as [`Store::add_group_member`] would
    /// (`NotFound` naming an unknown group). How many were new; those already there are
    /// left as they were.
    async fn add_group_members(&self, memberships: &[(String, String)]) -> Result<usize>;
    /// Removes `member` from `group`'s direct members; whether it was one. `NotFound` for an
    /// unknown group, `Invalid` for a member that is not `user@domain`.
    async fn remove_group_member(&self, group: &str, member: &str) -> Result<bool>;
    /// `group`'s direct members, by AOR (byte order). `NotFound` for an unknown group.
    async fn group_members(&self, group: &str) -> Result<Vec<String>>;
    /// Up to `limit` of `group`'s direct members whose AOR comes after `after` (`""`: from the
    /// first), by AOR, each saying whether it is a group: one page of a large group, so that
    /// [`expand_group`] reads no more than it keeps. Empty for an unknown group.
    async fn group_members_after(&self, group: &str, after: &str, limit: u32) -> Result<Vec<GroupMember>>;

    // ---- the pool's members ----

    /// Announces `member`, or renews its announcement, stamped with the database's clock; a
    /// member that said it was leaving and beats again is back. Members silent for longer than
    /// `forget_after_ms` are deleted.
    async fn heartbeat(&self, member: &Member, forget_after_ms: i64) -> Result<()>;
    /// Says that member `id` is leaving (a graceful stop), so the others stop counting on it at
    /// once rather than after the member timeout.
    async fn leave(&self, id: &str) -> Result<()>;
    /// Every member announced, by id, with how long each has been silent.
    async fn members(&self) -> Result<Vec<MemberSeen>>;

    // ---- dynamic state across a restart ----

    /// Keeps `data`, the state front end `member` stopped with (replacing any kept before).
    async fn save_state(&self, member: &str, data: &str) -> Result<()>;
    /// Takes back (reads and deletes) what `member` saved: when (Unix seconds) and the data.
    async fn take_state(&self, member: &str) -> Result<Option<(i64, String)>>;
}

/// A front end of the pool, as it announced itself ([`Store::heartbeat`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's name (`pool.member_id`), unique in the pool.
    pub id: String,
    /// Where the other members reach it (`host:port`, SIP over TCP).
    pub address: String,
    /// When it started, Unix seconds.
    pub started_at: i64,
    /// How many users have it as their home, and how many client connections it holds, at its
    /// last heartbeat.
    pub users_homed: i64,
    pub connections: i64,
}

/// A member as the others see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSeen {
    pub member: Member,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub silent_ms: i64,
    /// It announced that it is leaving (a graceful stop).
    pub leaving: bool,
}

/// One archived instant message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Unix seconds.
    pub at: i64,
    pub sender: String,
    pub recipient: String,
    pub call_id: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The first message of a conversation (pager mode: none between the pair for a while).
    pub first_in_session: bool,
}

/// How full the offline store is ([`Store::offline_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfflineStats {
    /// Messages kept, for everyone.
    pub messages: u64,
    /// Recipients with at least the number asked about waiting.
    pub recipients_near: u64,
}

/// A message kept for a user who was not signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineMessage {
    pub id: i64,
    pub recipient: String,
    pub sender: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Unix seconds.
    pub received_at: i64,
}

/// Opens the store a `database.url` names: `postgres://...` for PostgreSQL, `sqlite://PATH`
/// or empty for SQLite at `DATA_DIR/sipfront.db`. Migrates it.
pub async fn open(url: &str, data_dir: &Path) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PgStore::connect(url).await?)
    } else {
        let path = match url.strip_prefix("sqlite://") {
            Some(p) => p.into(),
            None if url.is_empty() => data_dir.join("sipfront.db"),
            None => {
                return Err(StoreError::Invalid(format!(
                    "database.url {url:?}: expected postgres://... or sqlite://PATH"
                )))
            }
        };
        // SQLite has no lock to hold across sqlx's migrations (PostgreSQL has: sqlx takes an
        // advisory lock), so two processes opening a new file at once (a first `serve` and a
        // CLI command) would both create its tables: one waits on a lock file beside it.
        let lock = migration_lock(&path).await?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await?);
        store.migrate().await?;
        drop(lock);
        return Ok(store);
    };
    store.migrate().await?;
    Ok(store)
}

/// An exclusive lock on `DB-PATH.migrate-lock`, held until dropped (or the process ends).
async fn migration_lock(db: &Path) -> Result<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".migrate-lock");
    let path = std::path::PathBuf::from(name);
    let during = format!("locking {}", path.display());
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::unavailable(during.clone(), e))?
    .map_err(|e| StoreError::unavailable(during, e))
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Checks what the schema cannot: a lower-case, non-empty domain; a username without `@`.
pub(crate) fn check_new_user(u: &NewUser) -> Result<()> {
    if u.username.is_empty() || u.username.contains('@') || u.username.chars().any(char::is_whitespace) {
        return Err(StoreError::Invalid(format!("username {:?}", u.username)));
    }
    check_domain(&u.domain)?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !hex(&u.ha1_md5, 32) || !hex(&u.ha1_sha256, 64) {
        return Err(StoreError::Invalid(format!("{}: HA1 values must be hex MD5 and SHA-256", u.aor())));
    }
    Ok(())
}

/// `user@domain` (or, when `wildcard`, `*@domain`) with the domain in lower case, as user AORs
/// are kept. RFC 3261 25.1 allows neither `@` nor `:` in the user part (a second `@` fails the
/// domain check), so `sip:bob@x` is refused rather than kept as a rule or contact that could
/// never match anyone.
pub(crate) fn normal_aor(aor: &str, wildcard: bool) -> Result<String> {
    let invalid =
        || StoreError::Invalid(format!("{aor:?} is not user@domain{}", if wildcard { " or *@domain" } else { "" }));
    let (user, domain) = aor.split_once('@').ok_or_else(invalid)?;
    let domain = domain.to_ascii_lowercase();
    if user.is_empty()
        || user.contains(':')
        || user.contains(char::is_whitespace)
        || (user == "*" && !wildcard)
        || check_domain(&domain).is_err()
    {
        return Err(invalid());
    }
    Ok(format!("{user}@{domain}"))
}

/// A group's or a member's address as the store keeps it: `user@domain` (see [`normal_aor`]),
/// all in lower case, so that one address is one row whatever case it was written in.
pub(crate) fn folded_aor(aor: &str) -> Result<String> {
    Ok(normal_aor(aor, false)?.to_ascii_lowercase())
}

/// Checks a partner's domain (in lower case) is a name its edge can be looked up by in public
/// DNS (RFC 1035 2.3.1, RFC 1123 2.1): at least two labels of letters, digits and inner
/// hyphens, 1-63 characters each, 253 in all, the last not all digits (RFC 3696 2: so that an
/// IPv4 address is refused). No trailing dot, no scheme or port: the domain of a SIP URI.
fn check_partner_domain(d: &str) -> Result<()> {
    if !is_dns_name(d) || !d.contains('.') {
        return Err(StoreError::Invalid(format!(
            "domain {d:?} is not a DNS name (labels of letters, digits and hyphens, such as partner.example)"
        )));
    }
    Ok(())
}

/// Checks a partner's edge as the operator names it: `host:port`, the host a DNS name, an
/// IPv4 address or an IPv6 address in brackets (RFC 3986 3.2.2), the port 1-65535 in digits.
fn check_via(via: &str) -> Result<()> {
    let invalid = || {
        StoreError::Invalid(format!(
            "via {via:?} is not host:port (a DNS name, IPv4 address or [IPv6] address, and a port 1-65535)"
        ))
    };
    let (host, port) = via.rsplit_once(':').ok_or_else(invalid)?;
    // `u16::from_str` takes a leading `+`, which is no port.
    if !port.bytes().all(|b| b.is_ascii_digit()) || !matches!(port.parse::<u16>(), Ok(1..)) {
        return Err(invalid());
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(&host.to_ascii_lowercase()),
    };
    if !host_ok {
        return Err(invalid());
    }
    Ok(())
}

/// Whether `name` (lower case) is a host name in DNS's preferred syntax, with a last label
/// that is not all digits (see [`check_partner_domain`]); one label is enough.
fn is_dns_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253
        && name.split('.').all(label_ok)
        && name.rsplit('.').next().is_some_and(|last| !last.bytes().all(|c| c.is_ascii_digit()))
}

pub(crate) fn check_domain(d: &str) -> Result<()> {
    if d.is_empty()
        || d != d.to_ascii_lowercase()
        || d.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return Err(StoreError::Invalid(format!("domain {d:?}")));
    }
    Ok(())
}

/// Maps a database error: constraint violations are conflicts, the rest means the store is
/// not usable right now.
pub(crate) fn map_err(what: &str, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.to_string()),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Invalid(format!("{what}: {db}")),
        sqlx::Error::RowNotFound => StoreError::NotFound(what.to_string()),
        _ => StoreError::unavailable(what, e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn entry(domain: &str, action: FederationAction, via: Option<&str>) -> FederationDomain {
        FederationDomain { domain: domain.into(), action, via: via.map(Into::into) }
    }

    #[test]
    fn a_partner_domain_is_a_dns_name_kept_in_lower_case() {
        let allow = |d: &str| entry(d, FederationAction::Allow, None).checked();
        assert_eq!(allow("Partner.EXAMPLE").unwrap().domain, "partner.example");
        for good in
            ["a.b", "xn--bcher-kva.example", "sip-1.partner.example", format!("{}.example", "a".repeat(63)).as_str()]
        {
            assert!(allow(good).is_ok(), "{good:?}");
        }
        let too_long = format!("{}.example", vec!["a".repeat(60); 5].join("."));
        for bad in [
            "",
            "localhost",
            "partner example",
            "-partner.example",
            "partner-.example",
            "partner..example",
            "partner.example.",
            ".partner.example",
            "under_score.example",
            "192.0.2.1",
            "sip:partner.example",
            "partner.example:5061",
            "alice@partner.example",
            "*.partner.example",
            "p\u{e4}rtner.example",
            format!("{}.example", "a".repeat(64)).as_str(),
            too_long.as_str(),
        ] {
            assert!(matches!(allow(bad), Err(StoreError::Invalid(_))), "{bad:?} is no partner domain");
        }
    }

    #[test]
    fn an_edge_is_host_and_port_on_an_allowed_domain() {
        let via = |v: &str| entry("partner.example", FederationAction::Allow, Some(v)).checked();
        for good in [
            "edge.partner.example:5061",
            "Edge.Partner.Example:5061",
            "edge:1",
            "192.0.2.7:65535",
            "[2001:db8::7]:5061",
        ] {
            assert_eq!(via(good).unwrap().via.as_deref(), Some(good), "kept as given");
        }
        for bad in [
            "",
            "edge.partner.example",
            "edge.partner.example:",
            ":5061",
            "edge.partner.example:0",
            "edge.partner.example:65536",
            "edge.partner.example:+5061",
            "edge.partner.example:sips",
            "edge.partner.example:5061;transport=tls",
            "sip:edge.partner.example:5061",
            "2001:db8::7:5061",
            "[2001:db8::7]",
            "[edge.partner.example]:5061",
            "edge partner.example:5061",
            "192.0.2:5061",
        ] {
            assert!(matches!(via(bad), Err(StoreError::Invalid(_))), "{bad:?} is no host:port");
        }
        let blocked = entry("partner.example", FederationAction::Block, Some("edge.partner.example:5061"));
        assert!(matches!(blocked.checked(), Err(StoreError::Invalid(_))), "a blocked domain has no edge");
    }
}
