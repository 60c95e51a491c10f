//! The SQL both backends share. SQLite and PostgreSQL accept the same statements here
//! (`$N` parameters, `ON CONFLICT DO NOTHING`, booleans bound as such), so one implementation
//! of [`crate::Store`] is generated for each pool type; the backend files only connect and migrate.

macro_rules! sql_store {
    ($store:ty, $db:ty, $migrations:expr) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            async fn migrate(&self) -> $crate::Result<()> {
                $migrations.run(&self.pool).await.map_err(|e| $crate::StoreError::unavailable("migrating", e))
            }

            async fn ping(&self) -> $crate::Result<()> {
                // A real read: `SELECT 1` never touches SQLite's file, so it would not notice a
                // database that is locked or broken.
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM domains")
                    .fetch_one(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| $crate::map_err("ping", e))
            }

            async fn add_domain(&self, domain: &str) -> $crate::Result<bool> {
                $crate::check_domain(domain)?;
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
                let r = sqlx::query("INSERT INTO domains (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(domain)
                    .bind($crate::now())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::map_err(domain, e))?;
                let created = r.rows_affected() == 1;
                if created {
                    self.note_change(&mut tx, &$crate::Change::Domain(domain.to_string())).await?;
                }
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))?;
                Ok(created)
            }

            async fn domains(&self) -> $crate::Result<Vec<String>> {
                sqlx::query_scalar("SELECT name FROM domains ORDER BY name")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| $crate::map_err("domains", e))
            }

            async fn has_domain(&self, domain: &str) -> $crate::Result<bool> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE name = $1")
                    .bind(domain)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::map_err(domain, e))?;
                Ok(n > 0)
            }

            async fn add_user(&self, user: &$crate::NewUser) -> $crate::Result<()> {
                self.add_users(std::slice::from_ref(user)).await.map(|_| ())
            }

            async fn add_users(&self, users: &[$crate::NewUser]) -> $crate::Result<usize> {
                for u in users {
                    $crate::check_new_user(u)?;
                }
                let now = $crate::now();
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
                let mut domains: Vec<&str> = users.iter().map(|u| u.domain.as_str()).collect();
                domains.sort_unstable();
                domains.dedup();
                for d in domains {
                    let r = sqlx::query("INSERT INTO domains (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(d)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| $crate::map_err(d, e))?;
                    if r.rows_affected() == 1 {
                        self.note_change(&mut tx, &$crate::Change::Domain(d.to_string())).await?;
                    }
                }
                for u in users {
                    let aor = u.aor();
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
                    .map_err(|e| $crate::map_err(&aor, e))?;
                    self.note_change(&mut tx, &$crate::Change::User(aor)).await?;
                }
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))?;
                Ok(users.len())
            }

            async fn remove_user(&self, aor: &str) -> $crate::Result<()> {
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
                let r = sqlx::query("DELETE FROM users WHERE aor = $1")
                    .bind(aor)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::map_err(aor, e))?;
                if r.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound(aor.to_string()));
                }
                self.note_change(&mut tx, &$crate::Change::User(aor.to_string())).await?;
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))
            }

            async fn user(&self, aor: &str) -> $crate::Result<Option<$crate::User>> {
                let row = sqlx::query_as::<_, UserRow>("SELECT aor, username, domain, display_name, ha1_md5, ha1_sha256, enabled, created_at, updated_at FROM users WHERE aor = $1")
                    .bind(aor)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| $crate::map_err(aor, e))?;
                Ok(row.map(Into::into))
            }

            async fn users(&self, domain: Option<&str>) -> $crate::Result<Vec<$crate::User>> {
                let rows = match domain {
                    Some(d) => sqlx::query_as::<_, UserRow>("SELECT aor, username, domain, display_name, ha1_md5, ha1_sha256, enabled, created_at, updated_at FROM users WHERE domain = $1 ORDER BY aor")
                        .bind(d)
                        .fetch_all(&self.pool)
                        .await,
                    None => sqlx::query_as::<_, UserRow>("SELECT aor, username, domain, display_name, ha1_md5, ha1_sha256, enabled, created_at, updated_at FROM users ORDER BY aor")
                        .fetch_all(&self.pool)
                        .await,
                }
                .map_err(|e| $crate::map_err("users", e))?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn set_credentials(&self, aor: &str, ha1_md5: &str, ha1_sha256: &str) -> $crate::Result<()> {
                self.update(aor, "UPDATE users SET ha1_md5 = $2, ha1_sha256 = $3, updated_at = $4 WHERE aor = $1", |q| {
                    q.bind(ha1_md5.to_string()).bind(ha1_sha256.to_string())
                })
                .await
            }

            async fn set_enabled(&self, aor: &str, enabled: bool) -> $crate::Result<()> {
                self.update(aor, "UPDATE users SET enabled = $2, updated_at = $3 WHERE aor = $1", |q| q.bind(enabled)).await
            }

            async fn changes_since(&self, since: i64) -> $crate::Result<$crate::Changes> {
                let rows: Vec<(i64, String, String)> =
                    sqlx::query_as("SELECT seq, kind, subject FROM user_changes WHERE seq > $1 ORDER BY seq LIMIT 10000")
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| $crate::map_err("changes", e))?;
                let last = rows.last().map_or(since, |(s, _, _)| *s);
                let entries = rows.into_iter().filter_map(|(_, kind, subject)| $crate::Change::from_row(&kind, subject)).collect();
                Ok($crate::Changes { last, entries })
            }

            async fn changes_head(&self) -> $crate::Result<i64> {
                sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM user_changes")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::map_err("changes", e))
            }

            async fn store_offline(&self, recipient: &str, sender: &str, content_type: &str, body: &[u8], max: u32) -> $crate::Result<bool> {
                // One statement, so that the quota check and the insert are atomic without a
                // read-then-write transaction (which SQLite in WAL mode fails outright, without
                // waiting, when another connection wrote in between); the transaction begins
                // with that write.
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
                let r = sqlx::query(
                    "INSERT INTO offline_messages (recipient, sender, content_type, body, received_at) \
                     SELECT $1, $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM offline_messages WHERE recipient = $1) < $6",
                )
                .bind(recipient)
                .bind(sender)
                .bind(content_type)
                .bind(body)
                .bind($crate::now())
                .bind(i64::from(max))
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::map_err(recipient, e))?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                self.note_change(&mut tx, &$crate::Change::Waiting(recipient.to_string())).await?;
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))?;
                Ok(true)
            }

            async fn offline_recipients(&self) -> $crate::Result<Vec<String>> {
                sqlx::query_scalar("SELECT DISTINCT recipient FROM offline_messages")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| $crate::map_err("offline recipients", e))
            }

            async fn offline_messages(&self, recipient: &str, limit: u32) -> $crate::Result<Vec<$crate::OfflineMessage>> {
                let rows: Vec<(i64, String, String, String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT id, recipient, sender, content_type, body, received_at FROM offline_messages \
                     WHERE recipient = $1 ORDER BY id LIMIT $2",
                )
                .bind(recipient)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| $crate::map_err(recipient, e))?;
                Ok(rows
                    .into_iter()
                    .map(|(id, recipient, sender, content_type, body, received_at)| $crate::OfflineMessage {
                        id,
                        recipient,
                        sender,
                        content_type,
                        body,
                        received_at,
                    })
                    .collect())
            }

            async fn delete_offline(&self, id: i64) -> $crate::Result<()> {
                sqlx::query("DELETE FROM offline_messages WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| $crate::map_err("offline message", e))
            }

            async fn purge_offline(&self, before: i64) -> $crate::Result<u64> {
                sqlx::query("DELETE FROM offline_messages WHERE received_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| $crate::map_err("offline purge", e))
            }

            async fn archive(&self, entries: &[$crate::ArchiveEntry]) -> $crate::Result<()> {
                if entries.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
                // Many rows per statement (7 parameters a row stays far below either backend's
                // parameter limit at 500 rows).
                for chunk in entries.chunks(500) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO im_archive (at, sender, recipient, call_id, content_type, body, first_in_session) ",
                    );
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.at)
                            .push_bind(e.sender.as_str())
                            .push_bind(e.recipient.as_str())
                            .push_bind(e.call_id.as_str())
                            .push_bind(e.content_type.as_str())
                            .push_bind(e.body.as_slice())
                            .push_bind(e.first_in_session);
                    });
                    insert.build().execute(&mut *tx).await.map_err(|err| $crate::map_err("archive", err))?;
                }
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))
            }

            async fn search_archive(&self, user: &str, peer: Option<&str>, since: i64, until: i64, limit: u32) -> $crate::Result<Vec<$crate::ArchiveEntry>> {
                let rows: Vec<(i64, String, String, String, String, Vec<u8>, bool)> = match peer {
                    Some(peer) => sqlx::query_as(
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
                    .await,
                    None => sqlx::query_as(
                        "SELECT at, sender, recipient, call_id, content_type, body, first_in_session FROM im_archive \
                         WHERE (sender = $1 OR recipient = $1) AND at >= $2 AND at < $3 ORDER BY at, id LIMIT $4",
                    )
                    .bind(user)
                    .bind(since)
                    .bind(until)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await,
                }
                .map_err(|e| $crate::map_err("archive search", e))?;
                Ok(rows
                    .into_iter()
                    .map(|(at, sender, recipient, call_id, content_type, body, first_in_session)| $crate::ArchiveEntry {
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

            async fn purge_archive(&self, before: i64) -> $crate::Result<u64> {
                sqlx::query("DELETE FROM im_archive WHERE at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| $crate::map_err("archive purge", e))
            }

            async fn set_rule(&self, owner: &str, watcher: &str, action: $crate::RuleAction) -> $crate::Result<()> {
                let watcher = $crate::normal_aor(watcher, true)?;
                self.owned_change(
                    owner,
                    "INSERT INTO presence_rules (owner, watcher, action, updated_at) \
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users WHERE aor = $1) \
                     ON CONFLICT (owner, watcher) DO UPDATE SET action = excluded.action, updated_at = excluded.updated_at",
                    |q| q.bind(watcher).bind(action.as_str()).bind($crate::now()),
                )
                .await
                .map(|_| ())
            }

            async fn remove_rule(&self, owner: &str, watcher: &str) -> $crate::Result<bool> {
                let watcher = $crate::normal_aor(watcher, true)?;
                let n = self
                    .owned_change(owner, "DELETE FROM presence_rules WHERE owner = $1 AND watcher = $2", |q| q.bind(watcher))
                    .await;
                match n {
                    Ok(_) => Ok(true),
                    Err($crate::StoreError::NotFound(_)) => Ok(false),
                    Err(e) => Err(e),
                }
            }

            async fn rules(&self, owner: &str) -> $crate::Result<Vec<$crate::Rule>> {
                let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT owner, watcher, action, updated_at FROM presence_rules WHERE owner = $1 ORDER BY watcher",
                )
                .bind(owner)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| $crate::map_err("rules", e))?;
                rows.into_iter()
                    .map(|(owner, watcher, action, updated_at)| {
                        Ok($crate::Rule { owner, watcher, action: action.parse()?, updated_at })
                    })
                    .collect()
            }

            async fn add_contact(&self, c: &$crate::Contact) -> $crate::Result<()> {
                self.add_contacts(std::slice::from_ref(c)).await.map(|_| ())
            }

            async fn add_contacts(&self, contacts: &[$crate::Contact]) -> $crate::Result<usize> {
                let normal: Vec<String> =
                    contacts.iter().map(|c| $crate::normal_aor(&c.contact, false)).collect::<$crate::Result<_>>()?;
                let now = $crate::now();
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
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
                    .map_err(|e| $crate::map_err(&c.owner, e))?;
                    if r.rows_affected() == 0 {
                        return Err($crate::StoreError::NotFound(c.owner.clone()));
                    }
                }
                let mut owners: Vec<&str> = contacts.iter().map(|c| c.owner.as_str()).collect();
                owners.sort_unstable();
                owners.dedup();
                for owner in owners {
                    self.note_change(&mut tx, &$crate::Change::User(owner.to_string())).await?;
                }
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))?;
                Ok(contacts.len())
            }

            async fn remove_contact(&self, owner: &str, contact: &str, group: Option<&str>) -> $crate::Result<u64> {
                let contact = $crate::normal_aor(contact, false)?;
                let r = match group {
                    Some(g) => {
                        let g = g.to_string();
                        self.owned_change(owner, "DELETE FROM contacts WHERE owner = $1 AND contact = $2 AND group_name = $3", |q| q.bind(contact).bind(g)).await
                    }
                    None => self.owned_change(owner, "DELETE FROM contacts WHERE owner = $1 AND contact = $2", |q| q.bind(contact)).await,
                };
                match r {
                    Err($crate::StoreError::NotFound(_)) => Ok(0),
                    other => other,
                }
            }

            async fn contacts(&self, owner: &str) -> $crate::Result<Vec<$crate::Contact>> {
                let rows: Vec<(String, String, String, String)> = sqlx::query_as(
                    "SELECT owner, contact, display_name, group_name FROM contacts WHERE owner = $1 ORDER BY group_name, contact",
                )
                .bind(owner)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| $crate::map_err("contacts", e))?;
                Ok(rows
                    .into_iter()
                    .map(|(owner, contact, display_name, group)| $crate::Contact { owner, contact, display_name, group })
                    .collect())
            }
        }

        impl $store {
            /// Runs a statement on one owner's presence data (`$1` is the owner) and notes the
            /// change in the owner's change log; `NotFound` when it touched nothing.
            async fn owned_change<'q>(
                &self,
                owner: &'q str,
                sql: &'q str,
                bind: impl FnOnce(
                    sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
            ) -> $crate::Result<u64> {
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
                let r = bind(sqlx::query(sql).bind(owner)).execute(&mut *tx).await.map_err(|e| $crate::map_err(owner, e))?;
                if r.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound(owner.to_string()));
                }
                self.note_change(&mut tx, &$crate::Change::User(owner.to_string())).await?;
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))?;
                Ok(r.rows_affected())
            }

            async fn note_change(&self, tx: &mut sqlx::Transaction<'_, $db>, change: &$crate::Change) -> $crate::Result<()> {
                sqlx::query("INSERT INTO user_changes (kind, subject, at) VALUES ($1, $2, $3)")
                    .bind(change.kind())
                    .bind(change.subject())
                    .bind($crate::now())
                    .execute(&mut **tx)
                    .await
                    .map(|_| ())
                    .map_err(|e| $crate::map_err(change.subject(), e))
            }

            /// Runs an UPDATE of one user (`$1` is the AOR, the last parameter the time) and
            /// records the change; `NotFound` if there is no such user.
            async fn update<'q>(
                &self,
                aor: &'q str,
                sql: &'q str,
                bind: impl FnOnce(
                    sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
            ) -> $crate::Result<()> {
                let mut tx = self.pool.begin().await.map_err(|e| $crate::map_err("begin", e))?;
                let r = bind(sqlx::query(sql).bind(aor)).bind($crate::now()).execute(&mut *tx).await.map_err(|e| $crate::map_err(aor, e))?;
                if r.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound(aor.to_string()));
                }
                self.note_change(&mut tx, &$crate::Change::User(aor.to_string())).await?;
                tx.commit().await.map_err(|e| $crate::map_err("commit", e))
            }
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
            created_at: i64,
            updated_at: i64,
        }

        impl From<UserRow> for $crate::User {
            fn from(r: UserRow) -> $crate::User {
                $crate::User {
                    aor: r.aor,
                    username: r.username,
                    domain: r.domain,
                    display_name: r.display_name,
                    ha1_md5: r.ha1_md5,
                    ha1_sha256: r.ha1_sha256,
                    enabled: r.enabled,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                }
            }
        }
    };
}

pub(crate) use sql_store;
