//! The SQL both backends share, written once as ordinary generic code: [`SqlStore<DB>`]
//! implements [`Store`] for a sqlx database `DB`, and [`crate::SqliteStore`] and
//! [`crate::PgStore`] are `SqlStore<Sqlite>` and `SqlStore<Postgres>`. SQLite and PostgreSQL
//! accept the same statements here (`$N` parameters, `ON CONFLICT DO NOTHING`, booleans bound
//! as such); what differs (connect options, the migrations, where the count of rows a
//! statement touched comes from) is in `sqlite.rs` and `postgres.rs`, behind [`Backend`].
//!
//! Why generic code: the `macro_rules!` this was hid the store from grep and rust-analyzer;
//! a module per backend would hold the same SQL twice; sqlx's `Any` driver would choose the
//! backend at run time, copy every row into an `AnyRow` (the archive writer and offline store
//! are busy paths) and take SQLite's settings (WAL, synchronous, busy timeout, foreign keys)
//! from a URL and PRAGMAs rather than typed options. The generic store costs nothing at run
//! time: like the macro, it is compiled once for each backend.
//!
//! sqlx says what a database can do as bounds on other types (`&str: Encode<'q, DB>`,
//! `&mut DB::Connection: Executor`). Rust carries a trait's supertraits to its users but not
//! such where-clauses, so they are spelled out on the two `impl` blocks that need them; only
//! bounds on `DB`'s own associated types fit in [`Backend`].

use crate::{
    check_domain, check_new_user, folded_aor, map_err, normal_aor, now, ArchiveEntry, Change, Changes, Contact,
    FederationDomain, FederationMode, Group, GroupMember, Member, MemberSeen, NewUser, OfflineMessage, Result, Rule,
    RuleAction, Store, StoreError, User,
};
use sqlx::database::Database;
use sqlx::decode::Decode;
use sqlx::encode::Encode;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::Arguments;
use sqlx::{ColumnIndex, Executor, IntoArguments, Pool, Type};
use std::collections::BTreeMap;

/// A database the store runs on, beyond what sqlx's `Database` says: its migrations (the
/// schema is written per backend) and how many rows a statement touched.
pub trait Backend: Database<Connection: Migrate, QueryResult: RowsAffected> {
    const MIGRATOR: Migrator;
    /// An SQL expression for the database's clock, in milliseconds since the Unix epoch: the
    /// pool's heartbeats are stamped and aged by it, so members' clocks need not agree.
    const NOW_MS: &'static str;
    /// An SQL condition true for the users whose AOR is `$1` ignoring ASCII case (using the
    /// index of migration 0007).
    const AOR_FOLDED_IS_1: &'static str;
}

/// How many rows a statement touched: each backend's result type has the method, but sqlx
/// has no trait for it.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

/// A statement with its parameters as [`sqlx::query`] makes it.
type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// The store on one backend: [`crate::SqliteStore`] or [`crate::PgStore`].
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
}

#[async_trait::async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    // NULL for none; sqlx implements it per backend rather than for every `Option`.
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn migrate(&self) -> Result<()> {
        DB::MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::unavailable("migrating", e))
    }

    async fn ping(&self) -> Result<()> {
        // A real read: `SELECT 1` never touches SQLite's file, so it would not notice a
        // database that is locked or broken.
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM domains")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| map_err("ping", e))
    }

    async fn add_domain(&self, domain: &str) -> Result<bool> {
        check_domain(domain)?;
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let created = self.insert_domain(&mut tx, domain, now()).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(created)
    }

    async fn domains(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM domains ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err("domains", e))
    }

    async fn has_domain(&self, domain: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE name = $1")
            .bind(domain)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_err(domain, e))?;
        Ok(n > 0)
    }

    async fn add_user(&self, user: &NewUser) -> Result<()> {
        self.add_users(std::slice::from_ref(user)).await.map(|_| ())
    }

    async fn add_users(&self, users: &[NewUser]) -> Result<usize> {
        for u in users {
            check_new_user(u)?;
        }
        let now = now();
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let mut domains: Vec<&str> = users.iter().map(|u| u.domain.as_str()).collect();
        domains.sort_unstable();
        domains.dedup();
        for d in domains {
            self.insert_domain(&mut tx, d, now).await?;
            self.hold_domain(&mut tx, d).await?;
        }
        // Groups keep their AOR in lower case.
        let taken = format!(
            "SELECT (SELECT COUNT(*) FROM users WHERE {}) + (SELECT COUNT(*) FROM distribution_groups WHERE aor = $2)",
            DB::AOR_FOLDED_IS_1
        );
        for u in users {
            let aor = u.aor();
            // `Alice@x` next to `alice@x` would be the same user to the server; a group's
            // address would be two things at once.
            let n: i64 = sqlx::query_scalar(&taken)
                .bind(&aor)
                .bind(aor.to_ascii_lowercase())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| map_err(&aor, e))?;
            if n > 0 {
                return Err(StoreError::Conflict(aor));
            }
            sqlx::query(
                "INSERT INTO users (aor, username, domain, display_name, ha1_md5, ha1_sha256, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(&aor)
            .bind(&u.username)
            .bind(&u.domain)
            .bind(&u.display_name)
            .bind(&u.ha1_md5)
            .bind(&u.ha1_sha256)
            .bind(true)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(&aor, e))?;
            self.note_change(&mut tx, &Change::User(aor)).await?;
        }
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(users.len())
    }

    async fn remove_user(&self, aor: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let r = sqlx::query("DELETE FROM users WHERE aor = $1")
            .bind(aor)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(aor, e))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(aor.to_string()));
        }
        self.note_change(&mut tx, &Change::User(aor.to_string())).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))
    }

    async fn user(&self, aor: &str) -> Result<Option<User>> {
        // Whatever the case of the user part; the AOR as written first, should accounts made
        // before case variants were refused differ only in case.
        let sql = format!(
            "SELECT aor, username, domain, display_name, ha1_md5, ha1_sha256, enabled, federation, created_at, updated_at \
             FROM users WHERE {} ORDER BY aor = $1 DESC, aor LIMIT 1",
            DB::AOR_FOLDED_IS_1
        );
        let row = sqlx::query_as::<_, UserRow>(&sql)
            .bind(aor)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(aor, e))?;
        Ok(row.map(Into::into))
    }

    async fn users(&self, domain: Option<&str>) -> Result<Vec<User>> {
        let rows = match domain {
            Some(d) => sqlx::query_as::<_, UserRow>("SELECT aor, username, domain, display_name, ha1_md5, ha1_sha256, enabled, federation, created_at, updated_at FROM users WHERE domain = $1 ORDER BY aor")
                .bind(d)
                .fetch_all(&self.pool)
                .await,
            None => sqlx::query_as::<_, UserRow>("SELECT aor, username, domain, display_name, ha1_md5, ha1_sha256, enabled, federation, created_at, updated_at FROM users ORDER BY aor")
                .fetch_all(&self.pool)
                .await,
        }
        .map_err(|e| map_err("users", e))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn set_credentials(&self, aor: &str, ha1_md5: &str, ha1_sha256: &str) -> Result<()> {
        self.change_user(aor, "UPDATE users SET ha1_md5 = $2, ha1_sha256 = $3, updated_at = $4 WHERE aor = $1", |q| {
            q.bind(ha1_md5.to_string()).bind(ha1_sha256.to_string()).bind(now())
        })
        .await
        .map(|_| ())
    }

    async fn set_enabled(&self, aor: &str, enabled: bool) -> Result<()> {
        self.change_user(aor, "UPDATE users SET enabled = $2, updated_at = $3 WHERE aor = $1", |q| {
            q.bind(enabled).bind(now())
        })
        .await
        .map(|_| ())
    }

    async fn set_user_federation(&self, aor: &str, on: bool) -> Result<()> {
        self.change_user(aor, "UPDATE users SET federation = $2, updated_at = $3 WHERE aor = $1", |q| {
            q.bind(on).bind(now())
        })
        .await
        .map(|_| ())
    }

    async fn changes_since(&self, since: i64) -> Result<Changes> {
        const BATCH: usize = 10_000;
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT seq, kind, subject FROM user_changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(since)
                .bind(BATCH as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("changes", e))?;
        let last = rows.last().map_or(since, |(s, _, _)| *s);
        let more = rows.len() == BATCH;
        let entries = rows.into_iter().filter_map(|(_, kind, subject)| Change::from_row(&kind, subject)).collect();
        Ok(Changes { last, entries, more })
    }

    async fn changes_head(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM user_changes")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_err("changes", e))
    }

    async fn store_offline(
        &self,
        recipient: &str,
        sender: &str,
        content_type: &str,
        body: &[u8],
        max: u32,
    ) -> Result<bool> {
        // One statement, so that the quota check and the insert are atomic without a
        // read-then-write transaction (which SQLite in WAL mode fails outright, without
        // waiting, when another connection wrote in between); the transaction begins
        // with that write.
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let r = sqlx::query(
            "INSERT INTO offline_messages (recipient, sender, content_type, body, received_at) \
             SELECT $1, $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM offline_messages WHERE recipient = $1) < $6",
        )
        .bind(recipient)
        .bind(sender)
        .bind(content_type)
        .bind(body)
        .bind(now())
        .bind(i64::from(max))
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(recipient, e))?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        self.note_change(&mut tx, &Change::Waiting(recipient.to_string())).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(true)
    }

    async fn offline_recipients(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT recipient FROM offline_messages")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err("offline recipients", e))
    }

    async fn offline_messages(&self, recipient: &str, limit: u32) -> Result<Vec<OfflineMessage>> {
        let rows: Vec<(i64, String, String, String, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT id, recipient, sender, content_type, body, received_at FROM offline_messages \
             WHERE recipient = $1 ORDER BY id LIMIT $2",
        )
        .bind(recipient)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err(recipient, e))?;
        Ok(rows
            .into_iter()
            .map(|(id, recipient, sender, content_type, body, received_at)| OfflineMessage {
                id,
                recipient,
                sender,
                content_type,
                body,
                received_at,
            })
            .collect())
    }

    async fn delete_offline(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM offline_messages WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| map_err("offline message", e))
    }

    async fn purge_offline(&self, before: i64) -> Result<u64> {
        sqlx::query("DELETE FROM offline_messages WHERE received_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| map_err("offline purge", e))
    }

    async fn offline_stats(&self, near: u32) -> Result<crate::OfflineStats> {
        // SUM over COUNT is NUMERIC on PostgreSQL: cast back to a 64-bit integer.
        let (messages, recipients_near): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT), CAST(COALESCE(SUM(CASE WHEN n >= $1 THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM (SELECT COUNT(*) AS n FROM offline_messages GROUP BY recipient) AS waiting",
        )
        .bind(i64::from(near))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err("offline stats", e))?;
        Ok(crate::OfflineStats { messages: messages.max(0) as u64, recipients_near: recipients_near.max(0) as u64 })
    }

    async fn archive(&self, entries: &[crate::ArchiveEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        // Many rows per statement (7 parameters a row stays far below either backend's
        // parameter limit at 500 rows). Each placeholder is written as the backend spells it
        // (`?` for SQLite, `$N` for PostgreSQL), as sqlx's QueryBuilder does: SQLite takes `$N`
        // as a *named* parameter and matches every name against those before it, which made a
        // 500-row insert quadratic to prepare (40% more CPU at 8,000 archived MESSAGE/s).
        // QueryBuilder itself cannot be used in generic code: the query it builds borrows the
        // builder for as long as the bound values live.
        for chunk in entries.chunks(500) {
            let mut sql = String::from(
                "INSERT INTO im_archive (at, sender, recipient, call_id, content_type, body, first_in_session) VALUES ",
            );
            let mut args = DB::Arguments::default();
            for (i, e) in chunk.iter().enumerate() {
                sql.push_str(if i == 0 { "(" } else { ", (" });
                push_bind(&mut sql, &mut args, e.at, false)?;
                push_bind(&mut sql, &mut args, e.sender.as_str(), true)?;
                push_bind(&mut sql, &mut args, e.recipient.as_str(), true)?;
                push_bind(&mut sql, &mut args, e.call_id.as_str(), true)?;
                push_bind(&mut sql, &mut args, e.content_type.as_str(), true)?;
                push_bind(&mut sql, &mut args, e.body.as_slice(), true)?;
                push_bind(&mut sql, &mut args, e.first_in_session, true)?;
                sql.push(')');
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await.map_err(|err| map_err("archive", err))?;
        }
        tx.commit().await.map_err(|e| map_err("commit", e))
    }

    async fn search_archive(
        &self,
        user: &str,
        peer: Option<&str>,
        since: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<ArchiveEntry>> {
        let rows: Vec<(i64, String, String, String, String, Vec<u8>, bool)> = match peer {
            Some(peer) => {
                sqlx::query_as(
                    "SELECT at, sender, recipient, call_id, content_type, body, first_in_session FROM im_archive \
                 WHERE ((sender = $1 AND recipient = $2) OR (sender = $2 AND recipient = $1)) AND at >= $3 AND at < $4 \
                 ORDER BY at, id LIMIT $5",
                )
                .bind(user)
                .bind(peer)
                .bind(since)
                .bind(until)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query_as(
                    "SELECT at, sender, recipient, call_id, content_type, body, first_in_session FROM im_archive \
                 WHERE (sender = $1 OR recipient = $1) AND at >= $2 AND at < $3 ORDER BY at, id LIMIT $4",
                )
                .bind(user)
                .bind(since)
                .bind(until)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| map_err("archive search", e))?;
        Ok(rows
            .into_iter()
            .map(|(at, sender, recipient, call_id, content_type, body, first_in_session)| ArchiveEntry {
                at,
                sender,
                recipient,
                call_id,
                content_type,
                body,
                first_in_session,
            })
            .collect())
    }

    async fn purge_archive(&self, before: i64) -> Result<u64> {
        sqlx::query("DELETE FROM im_archive WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| map_err("archive purge", e))
    }

    async fn set_rule(&self, owner: &str, watcher: &str, action: RuleAction) -> Result<()> {
        let watcher = normal_aor(watcher, true)?;
        self.change_user(
            owner,
            "INSERT INTO presence_rules (owner, watcher, action, updated_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users WHERE aor = $1) \
             ON CONFLICT (owner, watcher) DO UPDATE SET action = excluded.action, updated_at = excluded.updated_at",
            |q| q.bind(watcher).bind(action.as_str()).bind(now()),
        )
        .await
        .map(|_| ())
    }

    async fn remove_rule(&self, owner: &str, watcher: &str) -> Result<bool> {
        let watcher = normal_aor(watcher, true)?;
        let n = self
            .change_user(owner, "DELETE FROM presence_rules WHERE owner = $1 AND watcher = $2", |q| q.bind(watcher))
            .await;
        match n {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rules(&self, owner: &str) -> Result<Vec<Rule>> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT owner, watcher, action, updated_at FROM presence_rules WHERE owner = $1 ORDER BY watcher",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("rules", e))?;
        rows.into_iter()
            .map(|(owner, watcher, action, updated_at)| {
                Ok(Rule { owner, watcher, action: action.parse()?, updated_at })
            })
            .collect()
    }

    async fn add_contact(&self, c: &Contact) -> Result<()> {
        self.add_contacts(std::slice::from_ref(c)).await.map(|_| ())
    }

    async fn add_contacts(&self, contacts: &[crate::Contact]) -> Result<usize> {
        let normal: Vec<String> = contacts.iter().map(|c| normal_aor(&c.contact, false)).collect::<Result<_>>()?;
        let now = now();
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        for (c, contact) in contacts.iter().zip(&normal) {
            let r = sqlx::query(
                "INSERT INTO contacts (owner, contact, display_name, group_name, created_at) \
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM users WHERE aor = $1) \
                 ON CONFLICT (owner, contact, group_name) DO UPDATE SET display_name = excluded.display_name",
            )
            .bind(&c.owner)
            .bind(contact)
            .bind(&c.display_name)
            .bind(&c.group)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(&c.owner, e))?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound(c.owner.clone()));
            }
        }
        let mut owners: Vec<&str> = contacts.iter().map(|c| c.owner.as_str()).collect();
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            self.note_change(&mut tx, &Change::User(owner.to_string())).await?;
        }
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(contacts.len())
    }

    async fn remove_contact(&self, owner: &str, contact: &str, group: Option<&str>) -> Result<u64> {
        let contact = normal_aor(contact, false)?;
        let r = match group {
            Some(g) => {
                let g = g.to_string();
                self.change_user(
                    owner,
                    "DELETE FROM contacts WHERE owner = $1 AND contact = $2 AND group_name = $3",
                    |q| q.bind(contact).bind(g),
                )
                .await
            }
            None => {
                self.change_user(owner, "DELETE FROM contacts WHERE owner = $1 AND contact = $2", |q| q.bind(contact))
                    .await
            }
        };
        match r {
            Err(StoreError::NotFound(_)) => Ok(0),
            other => other,
        }
    }

    async fn contacts(&self, owner: &str) -> Result<Vec<Contact>> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT owner, contact, display_name, group_name FROM contacts WHERE owner = $1 ORDER BY group_name, contact",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("contacts", e))?;
        Ok(rows
            .into_iter()
            .map(|(owner, contact, display_name, group)| Contact { owner, contact, display_name, group })
            .collect())
    }

    async fn set_federation_domain(&self, entry: &FederationDomain) -> Result<()> {
        let entry = entry.checked()?;
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        sqlx::query(
            "INSERT INTO federation_domains (domain, action, via, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (domain) DO UPDATE SET action = excluded.action, via = excluded.via, \
             updated_at = excluded.updated_at",
        )
        .bind(entry.domain.as_str())
        .bind(entry.action.as_str())
        .bind(entry.via)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(&entry.domain, e))?;
        self.note_change(&mut tx, &Change::Federation(entry.domain)).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))
    }

    async fn remove_federation_domain(&self, domain: &str) -> Result<bool> {
        // Not checked: whatever is there can be removed.
        let domain = domain.to_ascii_lowercase();
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let r = sqlx::query("DELETE FROM federation_domains WHERE domain = $1")
            .bind(domain.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(&domain, e))?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        self.note_change(&mut tx, &Change::Federation(domain)).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(true)
    }

    async fn federation_domains(&self) -> Result<Vec<FederationDomain>> {
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("SELECT domain, action, via FROM federation_domains")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err("federation domains", e))?;
        let mut entries = rows
            .into_iter()
            .map(|(domain, action, via)| Ok(FederationDomain { domain, action: action.parse()?, via }))
            .collect::<Result<Vec<_>>>()?;
        // Sorted here, not by ORDER BY: PostgreSQL's collation may order `-` and `.` unlike
        // SQLite's bytes, and the list reads the same on either backend.
        entries.sort_unstable_by(|a, b| a.domain.cmp(&b.domain));
        Ok(entries)
    }

    async fn set_federation_mode(&self, mode: FederationMode) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        sqlx::query(
            "INSERT INTO federation_settings (id, mode, updated_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, updated_at = excluded.updated_at",
        )
        .bind(mode.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err("federation mode", e))?;
        self.note_change(&mut tx, &Change::Federation(Change::FEDERATION_MODE.to_string())).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))
    }

    async fn federation_mode(&self) -> Result<FederationMode> {
        let mode: Option<String> = sqlx::query_scalar("SELECT mode FROM federation_settings WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err("federation mode", e))?;
        // No row until the operator sets a mode: the default.
        mode.map_or(Ok(FederationMode::default()), |m| m.parse())
    }

    async fn add_group(&self, aor: &str, display_name: &str) -> Result<()> {
        let aor = folded_aor(aor)?;
        // `folded_aor` checked there is one `@`, before the domain.
        let domain = aor.rsplit_once('@').map_or("", |(_, d)| d);
        let now = now();
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        self.insert_domain(&mut tx, domain, now).await?;
        self.hold_domain(&mut tx, domain).await?;
        let user = format!("SELECT COUNT(*) FROM users WHERE {}", DB::AOR_FOLDED_IS_1);
        let n: i64 = sqlx::query_scalar(&user).bind(&aor).fetch_one(&mut *tx).await.map_err(|e| map_err(&aor, e))?;
        if n > 0 {
            return Err(StoreError::Conflict(aor));
        }
        // A group there already is a unique violation: `Conflict`.
        sqlx::query(
            "INSERT INTO distribution_groups (aor, domain, display_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&aor)
        .bind(domain)
        .bind(display_name)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(&aor, e))?;
        self.note_change(&mut tx, &Change::Group(aor)).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))
    }

    async fn remove_group(&self, aor: &str) -> Result<()> {
        let aor = aor.to_ascii_lowercase();
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        // Its own members go with it (ON DELETE CASCADE).
        let r = sqlx::query("DELETE FROM distribution_groups WHERE aor = $1")
            .bind(&aor)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(&aor, e))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(aor));
        }
        let mut listing: Vec<String> =
            sqlx::query_scalar("DELETE FROM group_members WHERE member = $1 RETURNING group_aor")
                .bind(&aor)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| map_err(&aor, e))?;
        self.note_change(&mut tx, &Change::Group(aor)).await?;
        // RETURNING's order is no order.
        listing.sort_unstable();
        for group in listing {
            self.touch_group(&mut tx, &group).await?;
        }
        tx.commit().await.map_err(|e| map_err("commit", e))
    }

    async fn groups(&self, domain: Option<&str>) -> Result<Vec<Group>> {
        // Addresses collate as bytes on both backends (migration 10): ORDER BY is byte order.
        let rows: Vec<GroupRow> = match domain {
            Some(d) => {
                sqlx::query_as(&format!("{GROUP_SELECT} WHERE g.domain = $1 ORDER BY g.aor"))
                    .bind(d.to_ascii_lowercase())
                    .fetch_all(&self.pool)
                    .await
            }
            None => sqlx::query_as(&format!("{GROUP_SELECT} ORDER BY g.aor")).fetch_all(&self.pool).await,
        }
        .map_err(|e| map_err("groups", e))?;
        Ok(rows.into_iter().map(group_of_row).collect())
    }

    async fn group(&self, aor: &str) -> Result<Option<Group>> {
        let aor = aor.to_ascii_lowercase();
        let row: Option<GroupRow> = sqlx::query_as(&format!("{GROUP_SELECT} WHERE g.aor = $1"))
            .bind(&aor)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(&aor, e))?;
        Ok(row.map(group_of_row))
    }

    async fn add_group_member(&self, group: &str, member: &str) -> Result<bool> {
        self.add_group_members(&[(group.to_string(), member.to_string())]).await.map(|added| added == 1)
    }

    async fn add_group_members(&self, memberships: &[(String, String)]) -> Result<usize> {
        // Every membership is checked before the transaction begins, and each group's members
        // go in together, many rows per statement (a 50,000-member group is one import).
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (group, member) in memberships {
            let group = folded_aor(group)?;
            let member = folded_aor(member)?;
            if member == group {
                return Err(StoreError::Invalid(format!("{group} cannot be a member of itself")));
            }
            by_group.entry(group).or_default().push(member);
        }
        for members in by_group.values_mut() {
            // A member twice in one statement would be a conflict within it.
            members.sort_unstable();
            members.dedup();
        }
        let now = now();
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let mut added = 0;
        for (group, members) in &by_group {
            // A write first, changing nothing: it finds the group and holds it until commit (a
            // row lock on PostgreSQL, the write lock on SQLite), so that a group removed at the
            // same time is `NotFound` here rather than a foreign key's failure.
            let r = sqlx::query("UPDATE distribution_groups SET updated_at = updated_at WHERE aor = $1")
                .bind(group.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| map_err(group, e))?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound(group.clone()));
            }
            let mut new = 0;
            // 3 parameters a row: far below either backend's limit at 500 rows.
            for chunk in members.chunks(500) {
                let mut sql = String::from("INSERT INTO group_members (group_aor, member, added_at) VALUES ");
                let mut args = DB::Arguments::default();
                for (i, member) in chunk.iter().enumerate() {
                    sql.push_str(if i == 0 { "(" } else { ", (" });
                    push_bind(&mut sql, &mut args, group.as_str(), false)?;
                    push_bind(&mut sql, &mut args, member.as_str(), true)?;
                    push_bind(&mut sql, &mut args, now, true)?;
                    sql.push(')');
                }
                sql.push_str(" ON CONFLICT (group_aor, member) DO NOTHING");
                let r = sqlx::query_with(&sql, args).execute(&mut *tx).await.map_err(|e| map_err(group, e))?;
                new += r.rows_affected();
            }
            if new > 0 {
                self.touch_group(&mut tx, group).await?;
                added += new;
            }
        }
        if added == 0 {
            // Every membership was there: the transaction is dropped (rolled back), so that
            // nothing is noted.
            return Ok(0);
        }
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
    }

    async fn remove_group_member(&self, group: &str, member: &str) -> Result<bool> {
        let group = group.to_ascii_lowercase();
        let member = folded_aor(member)?;
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let r = sqlx::query("DELETE FROM group_members WHERE group_aor = $1 AND member = $2")
            .bind(&group)
            .bind(&member)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(&group, e))?;
        if r.rows_affected() == 0 {
            drop(tx);
            if self.group(&group).await?.is_none() {
                return Err(StoreError::NotFound(group));
            }
            return Ok(false);
        }
        self.touch_group(&mut tx, &group).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(true)
    }

    async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        let group = group.to_ascii_lowercase();
        // One row with no member for a group without members, none for an unknown group.
        let rows: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT m.member FROM distribution_groups g LEFT JOIN group_members m ON m.group_aor = g.aor \
             WHERE g.aor = $1 ORDER BY m.member",
        )
        .bind(&group)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err(&group, e))?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(group));
        }
        Ok(rows.into_iter().flatten().collect())
    }

    async fn group_members_after(&self, group: &str, after: &str, limit: u32) -> Result<Vec<GroupMember>> {
        let group = group.to_ascii_lowercase();
        // The primary key's order (group, member), so that each page is a range of its index.
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT m.member, g.aor FROM group_members m LEFT JOIN distribution_groups g ON g.aor = m.member \
             WHERE m.group_aor = $1 AND m.member > $2 ORDER BY m.member LIMIT $3",
        )
        .bind(&group)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err(&group, e))?;
        Ok(rows.into_iter().map(|(aor, g)| GroupMember { aor, is_group: g.is_some() }).collect())
    }

    async fn heartbeat(&self, member: &Member, forget_after_ms: i64) -> Result<()> {
        let now = DB::NOW_MS;
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        sqlx::query(&format!(
            "INSERT INTO pool_members (id, address, started_at, heartbeat_ms, leaving, users_homed, connections) \
             VALUES ($1, $2, $3, {now}, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, started_at = excluded.started_at, \
             heartbeat_ms = excluded.heartbeat_ms, leaving = excluded.leaving, \
             users_homed = excluded.users_homed, connections = excluded.connections"
        ))
        .bind(member.id.as_str())
        .bind(member.address.as_str())
        .bind(member.started_at)
        .bind(false)
        .bind(member.users_homed)
        .bind(member.connections)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(&member.id, e))?;
        sqlx::query(&format!("DELETE FROM pool_members WHERE heartbeat_ms < {now} - $1"))
            .bind(forget_after_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err("forgetting silent members", e))?;
        tx.commit().await.map_err(|e| map_err("commit", e))
    }

    async fn leave(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE pool_members SET leaving = $2 WHERE id = $1")
            .bind(id)
            .bind(true)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| map_err(id, e))
    }

    async fn members(&self) -> Result<Vec<MemberSeen>> {
        let rows: Vec<(String, String, i64, i64, bool, i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, address, started_at, {} - heartbeat_ms, leaving, users_homed, connections \
             FROM pool_members ORDER BY id",
            DB::NOW_MS
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_err("pool members", e))?;
        Ok(rows
            .into_iter()
            .map(|(id, address, started_at, silent_ms, leaving, users_homed, connections)| MemberSeen {
                member: Member { id, address, started_at, users_homed, connections },
                silent_ms,
                leaving,
            })
            .collect())
    }

    async fn save_state(&self, member: &str, data: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO saved_state (member, saved_at, data) VALUES ($1, $2, $3) \
             ON CONFLICT (member) DO UPDATE SET saved_at = excluded.saved_at, data = excluded.data",
        )
        .bind(member)
        .bind(now())
        .bind(data)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(|e| map_err(member, e))
    }

    async fn take_state(&self, member: &str) -> Result<Option<(i64, String)>> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let row: Option<(i64, String)> = sqlx::query_as("SELECT saved_at, data FROM saved_state WHERE member = $1")
            .bind(member)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(member, e))?;
        sqlx::query("DELETE FROM saved_state WHERE member = $1")
            .bind(member)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(member, e))?;
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(row)
    }
}

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// Runs a statement that changes one user's data (`$1` is the AOR: the user's row, or the
    /// owner of presence rules and contacts) and notes the change in the change log; how many
    /// rows it touched, `NotFound` when none.
    async fn change_user<'q>(
        &self,
        owner: &'q str,
        sql: &'q str,
        bind: impl FnOnce(Query<'q, DB>) -> Query<'q, DB>,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err("begin", e))?;
        let r = bind(sqlx::query(sql).bind(owner)).execute(&mut *tx).await.map_err(|e| map_err(owner, e))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(owner.to_string()));
        }
        self.note_change(&mut tx, &Change::User(owner.to_string())).await?;
        tx.commit().await.map_err(|e| map_err("commit", e))?;
        Ok(r.rows_affected())
    }

    /// Adds a domain created `at` unless it is there, noting it in the change log if it was
    /// added; whether it was.
    async fn insert_domain(&self, tx: &mut sqlx::Transaction<'_, DB>, domain: &str, at: i64) -> Result<bool> {
        let r = sqlx::query("INSERT INTO domains (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(domain)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(|e| map_err(domain, e))?;
        let created = r.rows_affected() == 1;
        if created {
            self.note_change(tx, &Change::Domain(domain.to_string())).await?;
        }
        Ok(created)
    }

    /// Holds `domain`'s row until the transaction ends, by a write that changes nothing (a row
    /// lock on PostgreSQL; on SQLite any write holds the database's one write lock), so that
    /// a user and a group added with one AOR at the same time cannot both pass the check that
    /// the other has not taken it.
    async fn hold_domain(&self, tx: &mut sqlx::Transaction<'_, DB>, domain: &str) -> Result<()> {
        sqlx::query("UPDATE domains SET created_at = created_at WHERE name = $1")
            .bind(domain)
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(|e| map_err(domain, e))
    }

    /// Notes that `group`'s list of members changed: when, in its row, and in the change log.
    async fn touch_group(&self, tx: &mut sqlx::Transaction<'_, DB>, group: &str) -> Result<()> {
        sqlx::query("UPDATE distribution_groups SET updated_at = $2 WHERE aor = $1")
            .bind(group)
            .bind(now())
            .execute(&mut **tx)
            .await
            .map_err(|e| map_err(group, e))?;
        self.note_change(tx, &Change::Group(group.to_string())).await
    }

    async fn note_change(&self, tx: &mut sqlx::Transaction<'_, DB>, change: &Change) -> Result<()> {
        sqlx::query("INSERT INTO user_changes (kind, subject, at) VALUES ($1, $2, $3)")
            .bind(change.kind())
            .bind(change.subject())
            .bind(now())
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(|e| map_err(change.subject(), e))
    }
}

/// A group's row with its count of direct members: AOR, display name, members, created,
/// updated.
type GroupRow = (String, String, i64, i64, i64);

/// A group's row as [`GroupRow`] reads it, its direct members counted; a query adds its
/// `WHERE` and `ORDER BY`.
const GROUP_SELECT: &str = "SELECT g.aor, g.display_name, \
    (SELECT COUNT(*) FROM group_members m WHERE m.group_aor = g.aor), g.created_at, g.updated_at \
    FROM distribution_groups g";

fn group_of_row((aor, display_name, members, created_at, updated_at): GroupRow) -> Group {
    Group { aor, display_name, direct_members: members.max(0) as u64, created_at, updated_at }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    aor: String,
    username: String,
    domain: String,
    display_name: String,
    ha1_md5: String,
    ha1_sha256: String,
    enabled: bool,
    federation: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            aor: r.aor,
            username: r.username,
            domain: r.domain,
            display_name: r.display_name,
            ha1_md5: r.ha1_md5,
            ha1_sha256: r.ha1_sha256,
            enabled: r.enabled,
            federation: r.federation,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Binds `value` as the next argument and writes its placeholder as the backend spells it,
/// after a comma when `comma`.
fn push_bind<'q, DB, T>(sql: &mut String, args: &mut DB::Arguments<'q>, value: T, comma: bool) -> Result<()>
where
    DB: Database,
    T: Encode<'q, DB> + Type<DB> + 'q,
{
    if comma {
        sql.push_str(", ");
    }
    args.add(value).map_err(|e| StoreError::Invalid(format!("a value of a many-row insert: {e}")))?;
    args.format_placeholder(sql).map_err(|e| StoreError::Invalid(format!("a value of a many-row insert: {e}")))
}
