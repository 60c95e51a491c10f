//! The same suite against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

use sipfront_storage::{
    expand_group, testing, Change, Expansion, FederationAction, FederationDomain, FederationMode, GroupMember, NewUser,
    PgStore, SqliteStore, Store, StoreError,
};
use std::sync::Arc;

fn user(name: &str, domain: &str) -> NewUser {
    NewUser {
        username: name.into(),
        domain: domain.into(),
        display_name: format!("{name} display"),
        ha1_md5: "0123456789abcdef0123456789abcdef".into(),
        ha1_sha256: "0123456789abcdef".repeat(4),
    }
}

/// Runs `suite` on a fresh SQLite file and, when the test PostgreSQL is there, a fresh database.
async fn on_both<F, Fut>(name: &str, suite: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
    sqlite.migrate().await.unwrap();
    suite(sqlite).await;
    if let Some(url) = testing::fresh_postgres(name).await {
        let pg: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
        pg.migrate().await.unwrap();
        suite(pg).await;
    }
}

#[tokio::test]
async fn domains_and_users() {
    on_both("domains_and_users", |s| async move {
        assert!(s.add_domain("example.test").await.unwrap());
        assert!(!s.add_domain("example.test").await.unwrap());
        assert!(s.has_domain("example.test").await.unwrap());
        assert!(!s.has_domain("other.test").await.unwrap());

        s.add_user(&user("alice", "example.test")).await.unwrap();
        // Adding a user of a new domain adds the domain.
        s.add_user(&user("bob", "other.test")).await.unwrap();
        assert_eq!(s.domains().await.unwrap(), vec!["example.test", "other.test"]);
        assert!(matches!(s.add_user(&user("alice", "example.test")).await, Err(StoreError::Conflict(_))));

        let alice = s.user("alice@example.test").await.unwrap().unwrap();
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.display_name, "alice display");
        assert!(alice.enabled);
        assert!(s.user("nobody@example.test").await.unwrap().is_none());
        assert_eq!(s.users(Some("other.test")).await.unwrap().len(), 1);
        assert_eq!(s.users(None).await.unwrap().len(), 2);

        s.set_enabled("alice@example.test", false).await.unwrap();
        assert!(!s.user("alice@example.test").await.unwrap().unwrap().enabled);
        s.set_credentials("alice@example.test", &"f".repeat(32), &"e".repeat(64)).await.unwrap();
        assert_eq!(s.user("alice@example.test").await.unwrap().unwrap().ha1_md5, "f".repeat(32));

        s.remove_user("bob@other.test").await.unwrap();
        assert!(matches!(s.remove_user("bob@other.test").await, Err(StoreError::NotFound(_))));
        assert!(matches!(s.set_enabled("bob@other.test", true).await, Err(StoreError::NotFound(_))));
    })
    .await;
}

/// A user part names its account whatever its ASCII case: the lookup finds the account as it
/// was written, and a case variant of an account cannot be added beside it.
#[tokio::test]
async fn a_user_is_found_whatever_the_case_of_the_user_part() {
    on_both("folded_aor", |s| async move {
        s.add_user(&user("Alice", "example.test")).await.unwrap();
        for asked in ["Alice@example.test", "alice@example.test", "ALICE@example.test"] {
            let found = s.user(asked).await.unwrap().unwrap();
            assert_eq!(found.aor, "Alice@example.test", "asked {asked}");
        }
        // Only ASCII folds: a different letter is a different user.
        assert!(s.user("Alicé@example.test").await.unwrap().is_none());
        assert!(matches!(s.add_user(&user("ALICE", "example.test")).await, Err(StoreError::Conflict(_))));
        assert!(matches!(
            s.add_users(&[user("carol", "example.test"), user("Carol", "example.test")]).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.user("carol@example.test").await.unwrap().is_none(), "the batch went in whole or not at all");
    })
    .await;
}

#[tokio::test]
async fn invalid_input_is_refused() {
    on_both("invalid_input", |s| async move {
        let mut u = user("carol", "Example.TEST");
        assert!(matches!(s.add_user(&u).await, Err(StoreError::Invalid(_))));
        u.domain = "example.test".into();
        u.ha1_md5 = "plaintext".into();
        assert!(matches!(s.add_user(&u).await, Err(StoreError::Invalid(_))));
        assert!(matches!(s.add_user(&user("a@b", "example.test")).await, Err(StoreError::Invalid(_))));
        assert!(matches!(s.add_domain("bad domain").await, Err(StoreError::Invalid(_))));
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    on_both("batch", |s| async move {
        let batch: Vec<_> = (0..500).map(|i| user(&format!("u{i}"), "example.test")).collect();
        assert_eq!(s.add_users(&batch).await.unwrap(), 500);
        let mut clash: Vec<_> = (500..600).map(|i| user(&format!("u{i}"), "example.test")).collect();
        clash.push(user("u3", "example.test"));
        assert!(matches!(s.add_users(&clash).await, Err(StoreError::Conflict(_))));
        assert_eq!(s.users(None).await.unwrap().len(), 500);
    })
    .await;
}

#[tokio::test]
async fn the_change_log_names_every_changed_user() {
    on_both("changes", |s| async move {
        let head = s.changes_head().await.unwrap();
        s.add_domain("new.test").await.unwrap();
        assert_eq!(s.changes_since(head).await.unwrap().entries, vec![Change::Domain("new.test".into())]);
        let head = s.changes_head().await.unwrap();
        s.add_user(&user("dave", "example.test")).await.unwrap();
        s.set_enabled("dave@example.test", false).await.unwrap();
        s.remove_user("dave@example.test").await.unwrap();
        let c = s.changes_since(head).await.unwrap();
        let dave = Change::User("dave@example.test".into());
        assert_eq!(c.entries, vec![Change::Domain("example.test".into()), dave.clone(), dave.clone(), dave]);
        assert!(c.last > head);
        assert!(s.changes_since(c.last).await.unwrap().entries.is_empty());
    })
    .await;
}

/// Readiness reads real data: on a SQLite database locked by another process, `ping` does not
/// succeed (where `SELECT 1`, which reads no table, would), and it does again once unlocked.
#[tokio::test(flavor = "multi_thread")]
async fn ping_notices_a_locked_sqlite() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let store = SqliteStore::open(&db).await.unwrap();
    store.migrate().await.unwrap();
    store.add_domain("example.test").await.unwrap();
    store.ping().await.unwrap();

    let Some(mut lock) = testing::SqliteLock::take(&db) else { return };
    let locked = tokio::time::timeout(Duration::from_millis(500), store.ping()).await;
    assert!(!matches!(locked, Ok(Ok(()))), "ping fails or hangs while the database is locked: {locked:?}");

    lock.release();
    let back = tokio::time::timeout(Duration::from_secs(5), store.ping()).await;
    assert!(matches!(back, Ok(Ok(()))), "ping succeeds once the lock is gone: {back:?}");
}

#[tokio::test]
async fn offline_messages_are_kept_in_order_up_to_a_limit() {
    on_both("offline", |s| async move {
        let head = s.changes_head().await.unwrap();
        for i in 0..3 {
            let body = format!("message {i}");
            assert!(s
                .store_offline("alice@example.test", "bob@example.test", "text/plain", body.as_bytes(), 3)
                .await
                .unwrap());
        }
        assert!(!s
            .store_offline("alice@example.test", "bob@example.test", "text/plain", b"one too many", 3)
            .await
            .unwrap());
        assert!(s.store_offline("carol@example.test", "bob@example.test", "text/html", b"<b>hi</b>", 3).await.unwrap());
        // Every front end learns who has messages waiting: from the change log as they come, and
        // from the store when it starts.
        let noted = s.changes_since(head).await.unwrap().entries;
        let waiting: Vec<&str> = noted
            .iter()
            .filter_map(|e| match e {
                Change::Waiting(aor) => Some(aor.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(waiting, ["alice@example.test", "alice@example.test", "alice@example.test", "carol@example.test"]);
        assert_eq!(noted.len(), 4, "nothing else noted: {noted:?}");
        let stats = |messages, recipients_near| sipfront_storage::OfflineStats { messages, recipients_near };
        assert_eq!(s.offline_stats(3).await.unwrap(), stats(4, 1), "alice is at her quota of 3");
        assert_eq!(s.offline_stats(1).await.unwrap(), stats(4, 2));
        let mut waiting = s.offline_recipients().await.unwrap();
        waiting.sort();
        assert_eq!(waiting, vec!["alice@example.test", "carol@example.test"]);

        let kept = s.offline_messages("alice@example.test", 10).await.unwrap();
        assert_eq!(
            kept.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
            vec![b"message 0".to_vec(), b"message 1".to_vec(), b"message 2".to_vec()]
        );
        assert_eq!(kept[0].sender, "bob@example.test");
        assert_eq!(kept[0].content_type, "text/plain");
        assert!(kept[0].received_at > 0);
        assert_eq!(s.offline_messages("alice@example.test", 2).await.unwrap().len(), 2);

        s.delete_offline(kept[0].id).await.unwrap();
        assert_eq!(s.offline_messages("alice@example.test", 10).await.unwrap()[0].body, b"message 1");
        // Binary bodies come back byte for byte.
        assert_eq!(s.offline_messages("carol@example.test", 10).await.unwrap()[0].body, b"<b>hi</b>");
        assert_eq!(s.purge_offline(i64::MAX).await.unwrap(), 3);
        assert!(s.offline_messages("alice@example.test", 10).await.unwrap().is_empty());
        assert!(s.offline_recipients().await.unwrap().is_empty());
        assert_eq!(s.offline_stats(1).await.unwrap(), stats(0, 0));
    })
    .await;
}

#[tokio::test]
async fn the_archive_finds_a_conversation_in_both_directions() {
    on_both("archive", |s| async move {
        let entry = |at: i64, from: &str, to: &str, body: &str| sipfront_storage::ArchiveEntry {
            at,
            sender: from.into(),
            recipient: to.into(),
            call_id: format!("c{at}"),
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
            first_in_session: at == 100,
        };
        s.archive(&[
            entry(100, "alice@x", "bob@x", "hi bob"),
            entry(101, "bob@x", "alice@x", "hi alice"),
            entry(102, "alice@x", "carol@x", "hi carol"),
            entry(200, "alice@x", "bob@x", "later"),
        ])
        .await
        .unwrap();
        let pair = s.search_archive("alice@x", Some("bob@x"), 0, i64::MAX, 100).await.unwrap();
        assert_eq!(
            pair.iter().map(|e| e.body.as_slice()).collect::<Vec<_>>(),
            vec![&b"hi bob"[..], b"hi alice", b"later"]
        );
        assert!(pair[0].first_in_session && !pair[1].first_in_session);
        assert_eq!(
            s.search_archive("bob@x", Some("alice@x"), 0, i64::MAX, 100).await.unwrap().len(),
            3,
            "either side asks"
        );
        assert_eq!(s.search_archive("alice@x", None, 0, i64::MAX, 100).await.unwrap().len(), 4, "any peer");
        assert_eq!(
            s.search_archive("alice@x", Some("bob@x"), 101, 200, 100).await.unwrap().len(),
            1,
            "since <= at < until"
        );
        assert_eq!(s.purge_archive(150).await.unwrap(), 3);
        assert_eq!(s.search_archive("alice@x", None, 0, i64::MAX, 100).await.unwrap().len(), 1);
    })
    .await;
}

// ---- presence rules and contact lists ----

const ALICE: &str = "alice@example.test";

fn contact(contact: &str, name: &str, group: &str) -> sipfront_storage::Contact {
    sipfront_storage::Contact {
        owner: ALICE.into(),
        contact: contact.into(),
        display_name: name.into(),
        group: group.into(),
    }
}

#[tokio::test]
async fn presence_rules_are_set_replaced_listed_and_removed() {
    use sipfront_storage::RuleAction;
    on_both("presence_rules", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        s.set_rule(ALICE, "bob@Example.TEST", RuleAction::Block).await.unwrap();
        s.set_rule(ALICE, "*@other.test", RuleAction::PoliteBlock).await.unwrap();
        // The same watcher again (its domain in another case): the rule is replaced, not added.
        s.set_rule(ALICE, "bob@example.test", RuleAction::Allow).await.unwrap();
        let rules = s.rules(ALICE).await.unwrap();
        let view: Vec<(&str, &str, RuleAction)> =
            rules.iter().map(|r| (r.owner.as_str(), r.watcher.as_str(), r.action)).collect();
        assert_eq!(
            view,
            vec![(ALICE, "*@other.test", RuleAction::PoliteBlock), (ALICE, "bob@example.test", RuleAction::Allow)],
            "by watcher, the domain in lower case"
        );
        assert!(rules.iter().all(|r| r.updated_at > 1_600_000_000), "{rules:?}");

        assert!(s.remove_rule(ALICE, "*@OTHER.test").await.unwrap());
        assert!(!s.remove_rule(ALICE, "*@other.test").await.unwrap(), "already gone");
        assert!(!s.remove_rule("nobody@example.test", "bob@example.test").await.unwrap());
        assert_eq!(s.rules(ALICE).await.unwrap().len(), 1);
        assert!(s.rules("nobody@example.test").await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn presence_rules_refuse_an_unknown_owner_and_a_bad_watcher() {
    use sipfront_storage::RuleAction;
    on_both("presence_rules_refused", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        let head = s.changes_head().await.unwrap();
        assert!(matches!(
            s.set_rule("nobody@example.test", "bob@example.test", RuleAction::Allow).await,
            Err(StoreError::NotFound(_))
        ));
        for bad in ["not an aor", "bob", "@example.test", "bob@", "sip:bob@example.test", "a@b@example.test", "*@"] {
            assert!(
                matches!(s.set_rule(ALICE, bad, RuleAction::Allow).await, Err(StoreError::Invalid(_))),
                "{bad:?} is neither user@domain nor *@domain"
            );
        }
        assert!(s.rules(ALICE).await.unwrap().is_empty());
        assert!(s.changes_since(head).await.unwrap().entries.is_empty(), "nothing changed, nothing noted");
        assert_eq!("polite-block".parse::<RuleAction>().unwrap(), RuleAction::PoliteBlock);
        assert_eq!(RuleAction::PoliteBlock.as_str(), "polite-block");
        assert!(matches!("deny".parse::<RuleAction>(), Err(StoreError::Invalid(_))));
    })
    .await;
}

#[tokio::test]
async fn contact_lists_keep_groups_and_lose_entries_from_one_group_or_all() {
    on_both("contact_lists", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        s.add_contact(&contact("bob@example.test", "Bob", "work")).await.unwrap();
        s.add_contact(&contact("bob@Example.TEST", "Bob", "friends")).await.unwrap();
        s.add_contact(&contact("carol@example.test", "Carol", "work")).await.unwrap();
        s.add_contact(&contact("dave@example.test", "", "")).await.unwrap();
        // Again in the same group: renamed, not doubled.
        s.add_contact(&contact("carol@example.test", "Carol C", "work")).await.unwrap();
        assert_eq!(
            s.contacts(ALICE).await.unwrap(),
            vec![
                contact("dave@example.test", "", ""),
                contact("bob@example.test", "Bob", "friends"),
                contact("bob@example.test", "Bob", "work"),
                contact("carol@example.test", "Carol C", "work"),
            ],
            "by group (none first), then contact"
        );

        assert_eq!(s.remove_contact(ALICE, "bob@example.test", Some("work")).await.unwrap(), 1);
        assert_eq!(s.remove_contact(ALICE, "bob@example.test", Some("work")).await.unwrap(), 0);
        s.add_contact(&contact("bob@example.test", "Bob", "family")).await.unwrap();
        assert_eq!(s.remove_contact(ALICE, "bob@EXAMPLE.test", None).await.unwrap(), 2, "from every group");
        assert_eq!(
            s.contacts(ALICE).await.unwrap(),
            vec![contact("dave@example.test", "", ""), contact("carol@example.test", "Carol C", "work")]
        );

        let stranger =
            sipfront_storage::Contact { owner: "nobody@example.test".into(), ..contact("bob@example.test", "", "") };
        assert!(matches!(s.add_contact(&stranger).await, Err(StoreError::NotFound(_))));
        assert_eq!(s.remove_contact("nobody@example.test", "bob@example.test", None).await.unwrap(), 0);
        for bad in ["*@example.test", "bob", "sip:bob@example.test"] {
            assert!(
                matches!(s.add_contact(&contact(bad, "", "")).await, Err(StoreError::Invalid(_))),
                "{bad:?} is not user@domain"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn contacts_in_bulk_go_in_together_or_not_at_all() {
    on_both("contacts_bulk", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        s.add_user(&user("bob", "example.test")).await.unwrap();
        let of = |owner: &str, c: &str| sipfront_storage::Contact { owner: owner.into(), ..contact(c, "", "") };
        let head = s.changes_head().await.unwrap();
        let batch = [of(ALICE, "bob@example.test"), of(ALICE, "carol@example.test"), of("bob@example.test", ALICE)];
        assert_eq!(s.add_contacts(&batch).await.unwrap(), 3);
        assert_eq!(s.contacts(ALICE).await.unwrap().len(), 2);
        assert_eq!(s.contacts("bob@example.test").await.unwrap(), vec![of("bob@example.test", ALICE)]);
        let c = s.changes_since(head).await.unwrap();
        assert_eq!(
            c.entries,
            vec![Change::User(ALICE.into()), Change::User("bob@example.test".into())],
            "one change per owner, not per contact"
        );

        // An owner that is no user, or a contact that is no AOR, spoils the whole batch.
        let spoilt = [of(ALICE, "dave@example.test"), of("nobody@example.test", ALICE)];
        assert!(matches!(s.add_contacts(&spoilt).await, Err(StoreError::NotFound(o)) if o == "nobody@example.test"));
        let spoilt = [of(ALICE, "dave@example.test"), of(ALICE, "dave")];
        assert!(matches!(s.add_contacts(&spoilt).await, Err(StoreError::Invalid(_))));
        assert_eq!(s.contacts(ALICE).await.unwrap().len(), 2, "nothing of either batch is kept");
        assert!(s.changes_since(c.last).await.unwrap().entries.is_empty());
        assert_eq!(s.add_contacts(&[]).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn rules_and_contact_list_go_with_their_owner() {
    use sipfront_storage::RuleAction;
    on_both("presence_cascade", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        s.add_user(&user("bob", "example.test")).await.unwrap();
        s.set_rule(ALICE, "bob@example.test", RuleAction::Block).await.unwrap();
        s.add_contact(&contact("bob@example.test", "Bob", "")).await.unwrap();
        s.set_rule("bob@example.test", ALICE, RuleAction::Allow).await.unwrap();

        s.remove_user(ALICE).await.unwrap();
        assert!(s.rules(ALICE).await.unwrap().is_empty(), "rules go with their owner");
        assert!(s.contacts(ALICE).await.unwrap().is_empty(), "so does the list");
        assert_eq!(s.rules("bob@example.test").await.unwrap().len(), 1, "others' rules about alice stay");

        // A user added again under the same AOR starts with nothing.
        s.add_user(&user("alice", "example.test")).await.unwrap();
        assert!(s.rules(ALICE).await.unwrap().is_empty());
        assert!(s.contacts(ALICE).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn presence_changes_are_noted_in_the_owners_change_log() {
    use sipfront_storage::RuleAction;
    on_both("presence_changes", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        let head = s.changes_head().await.unwrap();
        s.set_rule(ALICE, "bob@example.test", RuleAction::Block).await.unwrap();
        s.set_rule(ALICE, "bob@example.test", RuleAction::Allow).await.unwrap();
        s.remove_rule(ALICE, "bob@example.test").await.unwrap();
        s.add_contact(&contact("bob@example.test", "Bob", "work")).await.unwrap();
        s.remove_contact(ALICE, "bob@example.test", None).await.unwrap();
        let c = s.changes_since(head).await.unwrap();
        assert_eq!(c.entries, vec![Change::User(ALICE.into()); 5], "one entry, the owner's AOR, per change");

        // What changed nothing is not noted.
        assert!(!s.remove_rule(ALICE, "bob@example.test").await.unwrap());
        assert_eq!(s.remove_contact(ALICE, "bob@example.test", None).await.unwrap(), 0);
        assert!(s.changes_since(c.last).await.unwrap().entries.is_empty());
    })
    .await;
}

/// Writers that overlap (CLI and server, several front ends) all succeed: every change is one
/// write transaction from its first statement, never a read that SQLite must upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_presence_changes_all_succeed() {
    use sipfront_storage::RuleAction;
    on_both("presence_concurrent", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        let head = s.changes_head().await.unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let peer = format!("peer{i}@example.test");
                    s.set_rule(ALICE, &peer, RuleAction::Allow).await?;
                    s.add_contact(&contact(&peer, "", "")).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.rules(ALICE).await.unwrap().len(), 32);
        assert_eq!(s.contacts(ALICE).await.unwrap().len(), 32);
        assert_eq!(s.changes_since(head).await.unwrap().entries.len(), 64);
    })
    .await;
}

/// The migrations up to `version` (the schema as an older release left it).
/// Stores whose schema was at `version` when `before` ran on it, then upgraded to the latest:
/// SQLite, and PostgreSQL (a fresh database named for `test`) when the tests have one. The
/// directory holds the SQLite file: keep it while the stores are used.
async fn upgraded_from(version: i64, before: &[&str], test: &str) -> (tempfile::TempDir, Vec<Box<dyn Store>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        up_to(sqlx::migrate!("./migrations/sqlite"), version).run(&pool).await.unwrap();
        for sql in before {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let sqlite = SqliteStore::open(&path).await.unwrap();
    sqlite.migrate().await.unwrap();
    let mut stores: Vec<Box<dyn Store>> = vec![Box::new(sqlite)];
    if let Some(url) = testing::fresh_postgres(test).await {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        up_to(sqlx::migrate!("./migrations/postgres"), version).run(&pool).await.unwrap();
        for sql in before {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let pg = PgStore::connect(&url).await.unwrap();
        pg.migrate().await.unwrap();
        stores.push(Box::new(pg));
    }
    (dir, stores)
}

fn up_to(migrator: sqlx::migrate::Migrator, version: i64) -> sqlx::migrate::Migrator {
    let mut m = migrator;
    m.migrations = std::borrow::Cow::Owned(m.migrations.iter().filter(|m| m.version <= version).cloned().collect());
    m
}

/// Change-log entries written before the log had a `kind` column carried the kind in the
/// string (`@domain`, `offline:AOR`); migration 5 converts them.
#[tokio::test]
async fn change_log_entries_from_before_the_kind_column_are_converted() {
    let legacy = "INSERT INTO user_changes (aor, at) VALUES ('@example.test', 1), ('alice@example.test', 2), \
                  ('offline:bob@example.test', 3)";
    let expected = vec![
        Change::Domain("example.test".into()),
        Change::User("alice@example.test".into()),
        Change::Waiting("bob@example.test".into()),
    ];

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        up_to(sqlx::migrate!("./migrations/sqlite"), 4).run(&pool).await.unwrap();
        sqlx::query(legacy).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let s = SqliteStore::open(&path).await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(s.changes_since(0).await.unwrap().entries, expected);

    if let Some(url) = testing::fresh_postgres("legacy_changes").await {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        up_to(sqlx::migrate!("./migrations/postgres"), 4).run(&pool).await.unwrap();
        sqlx::query(legacy).execute(&pool).await.unwrap();
        pool.close().await;
        let pg = PgStore::connect(&url).await.unwrap();
        pg.migrate().await.unwrap();
        assert_eq!(pg.changes_since(0).await.unwrap().entries, expected);
    }
}

#[tokio::test]
async fn pool_members_beat_leave_and_are_forgotten() {
    on_both("pool_members", |s| async move {
        let member = |id: &str, users: i64| sipfront_storage::Member {
            id: id.into(),
            address: format!("{id}.pool.test:5060"),
            started_at: 1_795_000_000,
            users_homed: users,
            connections: users * 2,
        };
        assert!(s.members().await.unwrap().is_empty());
        s.heartbeat(&member("fe1", 10), 60_000).await.unwrap();
        s.heartbeat(&member("fe2", 20), 60_000).await.unwrap();
        let seen = s.members().await.unwrap();
        assert_eq!(
            seen.iter().map(|m| m.member.clone()).collect::<Vec<_>>(),
            vec![member("fe1", 10), member("fe2", 20)]
        );
        assert!(seen.iter().all(|m| (0..5_000).contains(&m.silent_ms) && !m.leaving), "{seen:?}");

        // A beat replaces what the member said before.
        s.heartbeat(&member("fe1", 11), 60_000).await.unwrap();
        assert_eq!(s.members().await.unwrap()[0].member.users_homed, 11);

        s.leave("fe2").await.unwrap();
        let seen = s.members().await.unwrap();
        assert!(!seen[0].leaving && seen[1].leaving, "{seen:?}");
        s.heartbeat(&member("fe2", 20), 60_000).await.unwrap();
        assert!(!s.members().await.unwrap()[1].leaving, "a member that beats again is back");

        // Silence is measured by the database's clock, and a long-silent member is forgotten.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let seen = s.members().await.unwrap();
        assert!(seen.iter().all(|m| m.silent_ms >= 40), "{seen:?}");
        s.heartbeat(&member("fe1", 11), 30).await.unwrap();
        let ids: Vec<String> = s.members().await.unwrap().into_iter().map(|m| m.member.id).collect();
        assert_eq!(ids, ["fe1"]);
    })
    .await;
}

/// Processes opening one new store at once (a server's first start and a CLI command, or a
/// pool's members on a fresh PostgreSQL) migrate it once, one after the other, and all succeed
/// (issue 18, item 3).
#[tokio::test(flavor = "multi_thread")]
async fn opening_a_new_store_at_once_migrates_it_once() {
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let opens = (0..4).map(|_| {
            let path = path.clone();
            async move { sipfront_storage::open("", &path).await }
        });
        for opened in futures_join_all(opens).await {
            let store = opened.expect("every opener succeeds");
            store.add_domain("example.test").await.unwrap();
        }
    }
    if let Some(url) = testing::fresh_postgres("migrate_at_once").await {
        let opens = (0..3).map(|_| {
            let url = url.clone();
            async move { sipfront_storage::open(&url, std::path::Path::new("/nonexistent")).await }
        });
        for opened in futures_join_all(opens).await {
            opened.expect("every member migrates or waits").add_domain("example.test").await.unwrap();
        }
    }
}

/// Runs the futures at once (each on its own task, as separate processes would) and returns
/// their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// What a front end saved when it stopped is taken back once, whole.
#[tokio::test]
async fn saved_state_is_taken_back_once() {
    on_both("saved_state", |s| async move {
        assert_eq!(s.take_state("fe1").await.unwrap(), None);
        s.save_state("fe1", "first").await.unwrap();
        s.save_state("fe1", "{\"bindings\":[]}").await.unwrap();
        s.save_state("fe2", "other").await.unwrap();
        let (at, data) = s.take_state("fe1").await.unwrap().unwrap();
        assert!(at > 0);
        assert_eq!(data, "{\"bindings\":[]}", "the last saved");
        assert_eq!(s.take_state("fe1").await.unwrap(), None, "taken once");
        assert_eq!(s.take_state("fe2").await.unwrap().unwrap().1, "other");
    })
    .await;
}

// ---- the federation policy ----

fn partner(domain: &str, action: FederationAction, via: Option<&str>) -> FederationDomain {
    FederationDomain { domain: domain.into(), action, via: via.map(Into::into) }
}

#[tokio::test]
async fn federation_domains_are_set_replaced_listed_and_removed() {
    use FederationAction::{Allow, Block};
    on_both("federation_domains", |s| async move {
        assert!(s.federation_domains().await.unwrap().is_empty());
        let head = s.changes_head().await.unwrap();
        s.set_federation_domain(&partner("Partner.EXAMPLE", Allow, None)).await.unwrap();
        s.set_federation_domain(&partner("other.example", Allow, Some("edge.other.example:5061"))).await.unwrap();
        s.set_federation_domain(&partner("spam.example", Block, None)).await.unwrap();
        // The same domain again (in another case): its entry is replaced, not added.
        s.set_federation_domain(&partner("PARTNER.example", Allow, Some("[2001:db8::7]:5061"))).await.unwrap();
        s.set_federation_domain(&partner("other.example", Block, None)).await.unwrap();
        assert_eq!(
            s.federation_domains().await.unwrap(),
            vec![
                partner("other.example", Block, None),
                partner("partner.example", Allow, Some("[2001:db8::7]:5061")),
                partner("spam.example", Block, None),
            ],
            "by domain, in lower case"
        );

        assert!(s.remove_federation_domain("SPAM.example").await.unwrap());
        assert!(!s.remove_federation_domain("spam.example").await.unwrap(), "already gone");
        assert!(!s.remove_federation_domain("never.example").await.unwrap());
        assert_eq!(s.federation_domains().await.unwrap().len(), 2);

        let c = s.changes_since(head).await.unwrap();
        let named = |d: &str| Change::Federation(d.into());
        assert_eq!(
            c.entries,
            vec![
                named("partner.example"),
                named("other.example"),
                named("spam.example"),
                named("partner.example"),
                named("other.example"),
                named("spam.example"),
            ],
            "one entry per change, naming the domain in lower case; removing nothing notes nothing"
        );
    })
    .await;
}

#[tokio::test]
async fn the_federation_policy_refuses_a_bad_domain_or_edge() {
    use FederationAction::{Allow, Block};
    on_both("federation_refused", |s| async move {
        let head = s.changes_head().await.unwrap();
        for bad in ["", "localhost", "bad domain", "192.0.2.1", "partner.example.", "sip:partner.example"] {
            assert!(
                matches!(s.set_federation_domain(&partner(bad, Allow, None)).await, Err(StoreError::Invalid(_))),
                "{bad:?} is no partner domain"
            );
        }
        for bad in ["edge.partner.example", "edge.partner.example:0", "edge.partner.example:65536", "bad host:5061"] {
            assert!(
                matches!(
                    s.set_federation_domain(&partner("partner.example", Allow, Some(bad))).await,
                    Err(StoreError::Invalid(_))
                ),
                "{bad:?} is no host:port"
            );
        }
        let edge = Some("edge.partner.example:5061");
        assert!(
            matches!(
                s.set_federation_domain(&partner("partner.example", Block, edge)).await,
                Err(StoreError::Invalid(_))
            ),
            "a blocked domain has no edge"
        );
        assert!(s.federation_domains().await.unwrap().is_empty());
        assert!(s.changes_since(head).await.unwrap().entries.is_empty(), "nothing changed, nothing noted");
        assert_eq!("block".parse::<FederationAction>().unwrap(), Block);
        assert_eq!(Allow.as_str(), "allow");
        assert!(matches!("deny".parse::<FederationAction>(), Err(StoreError::Invalid(_))));
    })
    .await;
}

#[tokio::test]
async fn the_federation_mode_is_closed_until_opened() {
    on_both("federation_mode", |s| async move {
        assert_eq!(s.federation_mode().await.unwrap(), FederationMode::Closed);
        let head = s.changes_head().await.unwrap();
        s.set_federation_mode(FederationMode::Open).await.unwrap();
        assert_eq!(s.federation_mode().await.unwrap(), FederationMode::Open);
        s.set_federation_mode(FederationMode::Closed).await.unwrap();
        assert_eq!(s.federation_mode().await.unwrap(), FederationMode::Closed);
        assert_eq!(
            s.changes_since(head).await.unwrap().entries,
            vec![Change::Federation(Change::FEDERATION_MODE.into()); 2]
        );
        assert_eq!(Change::FEDERATION_MODE, "*");
        assert_eq!("open".parse::<FederationMode>().unwrap(), FederationMode::Open);
        assert_eq!(FederationMode::Closed.as_str(), "closed");
        assert!(matches!("ajar".parse::<FederationMode>(), Err(StoreError::Invalid(_))));
    })
    .await;
}

#[tokio::test]
async fn federation_is_off_for_a_user_until_turned_on() {
    on_both("user_federation", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        s.add_user(&user("bob", "example.test")).await.unwrap();
        assert!(!s.user(ALICE).await.unwrap().unwrap().federation, "off for a new user");
        let head = s.changes_head().await.unwrap();
        s.set_user_federation(ALICE, true).await.unwrap();
        assert!(s.user(ALICE).await.unwrap().unwrap().federation);
        let flags: Vec<(String, bool)> =
            s.users(Some("example.test")).await.unwrap().into_iter().map(|u| (u.aor, u.federation)).collect();
        assert_eq!(flags, vec![(ALICE.to_string(), true), ("bob@example.test".to_string(), false)]);
        assert!(s.users(None).await.unwrap()[0].federation, "every read of users has it");
        s.set_user_federation(ALICE, false).await.unwrap();
        assert!(!s.user(ALICE).await.unwrap().unwrap().federation);

        assert!(matches!(s.set_user_federation("nobody@example.test", true).await, Err(StoreError::NotFound(_))));
        assert_eq!(s.changes_since(head).await.unwrap().entries, vec![Change::User(ALICE.into()); 2]);
    })
    .await;
}

/// Migration 9 gives the change log a new kind (on SQLite by copying it into a new table):
/// what was in it is kept, and positions go on past the highest ever handed out, even when
/// the last entry was deleted, so that a front end that had read up to it misses nothing
/// after. Existing users start with federation off.
#[tokio::test]
async fn the_change_log_goes_on_from_its_position_across_migration_9() {
    const BEFORE: [&str; 5] = [
        "INSERT INTO domains (name, created_at) VALUES ('example.test', 1)",
        "INSERT INTO users (aor, username, domain, ha1_md5, ha1_sha256, enabled, created_at, updated_at) \
         VALUES ('alice@example.test', 'alice', 'example.test', 'x', 'y', TRUE, 1, 1)",
        "INSERT INTO user_changes (kind, subject, at) VALUES ('domain', 'example.test', 1)",
        "INSERT INTO user_changes (kind, subject, at) VALUES ('user', 'alice@example.test', 1), \
         ('waiting', 'alice@example.test', 2)",
        "DELETE FROM user_changes WHERE kind = 'waiting'",
    ];
    async fn check(s: &dyn Store) {
        let old = s.changes_since(0).await.unwrap();
        assert_eq!(old.entries, vec![Change::Domain("example.test".into()), Change::User(ALICE.into())]);
        assert!(!s.user(ALICE).await.unwrap().unwrap().federation);
        s.set_federation_mode(FederationMode::Open).await.unwrap();
        // Position 3 (the deleted entry) was handed out before: the next is past it.
        let c = s.changes_since(3).await.unwrap();
        assert_eq!(c.entries, vec![Change::Federation("*".into())], "{c:?}");
        assert!(c.last > 3);
    }

    let (_dir, stores) = upgraded_from(8, &BEFORE, "change_log_migration_9").await;
    for s in stores {
        check(s.as_ref()).await;
    }
}

// ---- distribution groups ----

const SALES: &str = "sales@example.test";

fn group_changes(aors: &[&str]) -> Vec<Change> {
    aors.iter().map(|a| Change::Group(a.to_string())).collect()
}

#[tokio::test]
async fn groups_are_added_listed_and_removed() {
    on_both("groups", |s| async move {
        s.add_user(&user("alice", "example.test")).await.unwrap();
        let head = s.changes_head().await.unwrap();
        s.add_group("Sales@Example.TEST", "Sales").await.unwrap();
        s.add_group("all@example.test", "").await.unwrap();
        // A group of a domain not served yet brings the domain, as a user does.
        s.add_group("team@other.test", "Team").await.unwrap();
        assert!(s.has_domain("other.test").await.unwrap());

        let sales = s.group("SALES@example.test").await.unwrap().unwrap();
        assert_eq!((sales.aor.as_str(), sales.display_name.as_str(), sales.direct_members), (SALES, "Sales", 0));
        assert!(sales.created_at > 0 && sales.updated_at == sales.created_at);
        assert!(s.group("nobody@example.test").await.unwrap().is_none());
        let aors = |groups: Vec<sipfront_storage::Group>| groups.into_iter().map(|g| g.aor).collect::<Vec<_>>();
        assert_eq!(aors(s.groups(None).await.unwrap()), ["all@example.test", SALES, "team@other.test"]);
        assert_eq!(aors(s.groups(Some("Example.TEST")).await.unwrap()), ["all@example.test", SALES]);
        assert!(s.groups(Some("none.test")).await.unwrap().is_empty());

        for taken in ["sales@example.test", "SALES@example.test", "alice@example.test", "ALICE@Example.test"] {
            assert!(
                matches!(s.add_group(taken, "again").await, Err(StoreError::Conflict(_))),
                "{taken} is a group's or a user's"
            );
        }
        for bad in ["sales", "@example.test", "sales@", "sip:sales@example.test", "sa les@example.test", "*@example.test"]
        {
            assert!(matches!(s.add_group(bad, "").await, Err(StoreError::Invalid(_))), "{bad:?}");
        }
        // Both ways: no user may take a group's AOR either, whatever its case.
        assert!(matches!(s.add_user(&user("Sales", "example.test")).await, Err(StoreError::Conflict(a)) if a == "Sales@example.test"));
        let batch = [user("bob", "example.test"), user("sales", "example.test")];
        assert!(matches!(s.add_users(&batch).await, Err(StoreError::Conflict(_))));
        assert!(s.user("bob@example.test").await.unwrap().is_none(), "nothing of the batch is kept");

        s.remove_group("Team@other.test").await.unwrap();
        assert!(matches!(s.remove_group("team@other.test").await, Err(StoreError::NotFound(a)) if a == "team@other.test"));
        assert!(s.group("team@other.test").await.unwrap().is_none());
        // Its AOR is free again, for a user as for a group.
        s.add_user(&user("team", "other.test")).await.unwrap();

        let c = s.changes_since(head).await.unwrap();
        let mut expected = group_changes(&[SALES, "all@example.test"]);
        expected.extend([Change::Domain("other.test".into()), Change::Group("team@other.test".into())]);
        expected.extend([Change::Group("team@other.test".into()), Change::User("team@other.test".into())]);
        assert_eq!(c.entries, expected, "each change once, in lower case; refusals note nothing");
    })
    .await;
}

#[tokio::test]
async fn group_members_are_added_and_removed() {
    on_both("group_members", |s| async move {
        s.add_user(&user("Alice", "example.test")).await.unwrap();
        s.add_group(SALES, "Sales").await.unwrap();
        let head = s.changes_head().await.unwrap();
        // Users (whatever case they were written in), groups and remote addresses alike.
        assert!(s.add_group_member("Sales@example.test", "Alice@Example.TEST").await.unwrap());
        assert!(s.add_group_member(SALES, "zoe@partner.example").await.unwrap());
        assert!(s.add_group_member(SALES, "all@example.test").await.unwrap(), "a group may come later");
        assert!(!s.add_group_member(SALES, "ALICE@example.test").await.unwrap(), "there already");
        assert_eq!(
            s.group_members(SALES).await.unwrap(),
            ["alice@example.test", "all@example.test", "zoe@partner.example"],
            "direct members by AOR, in lower case"
        );
        assert_eq!(s.group(SALES).await.unwrap().unwrap().direct_members, 3);

        assert!(matches!(s.add_group_member("nobody@example.test", ALICE).await, Err(StoreError::NotFound(g)) if g == "nobody@example.test"));
        assert!(matches!(s.group_members("nobody@example.test").await, Err(StoreError::NotFound(_))));
        assert!(matches!(s.remove_group_member("nobody@example.test", ALICE).await, Err(StoreError::NotFound(_))));
        for bad in ["alice", "sip:alice@example.test", "alice@", "a b@example.test", "*@example.test", ""] {
            assert!(matches!(s.add_group_member(SALES, bad).await, Err(StoreError::Invalid(_))), "{bad:?}");
        }
        for itself in [SALES, "SALES@Example.test"] {
            assert!(matches!(s.add_group_member(SALES, itself).await, Err(StoreError::Invalid(_))), "{itself}");
        }

        assert!(s.remove_group_member(SALES, "ZOE@partner.example").await.unwrap());
        assert!(!s.remove_group_member(SALES, "zoe@partner.example").await.unwrap(), "gone already");
        assert!(matches!(s.remove_group_member(SALES, "zoe").await, Err(StoreError::Invalid(_))));
        assert_eq!(s.group_members(SALES).await.unwrap(), ["alice@example.test", "all@example.test"]);

        s.add_group("empty@example.test", "").await.unwrap();
        assert!(s.group_members("empty@example.test").await.unwrap().is_empty(), "known, with no members");

        let c = s.changes_since(head).await.unwrap();
        let mut expected = group_changes(&[SALES, SALES, SALES, SALES]);
        expected.push(Change::Group("empty@example.test".into()));
        assert_eq!(c.entries, expected, "one per change; what changed nothing is not noted");
    })
    .await;
}

#[tokio::test]
async fn a_group_goes_with_its_members_and_from_the_groups_that_list_it() {
    on_both("group_removed", |s| async move {
        for g in ["all@example.test", SALES, "emea@example.test", "team@example.test"] {
            s.add_group(g, "").await.unwrap();
        }
        s.add_group_member("all@example.test", SALES).await.unwrap();
        s.add_group_member("emea@example.test", SALES).await.unwrap();
        s.add_group_member("emea@example.test", "bob@example.test").await.unwrap();
        s.add_group_member(SALES, ALICE).await.unwrap();
        s.add_group_member(SALES, "team@example.test").await.unwrap();
        let head = s.changes_head().await.unwrap();

        s.remove_group(SALES).await.unwrap();
        assert!(s.group_members("all@example.test").await.unwrap().is_empty());
        assert_eq!(s.group_members("emea@example.test").await.unwrap(), ["bob@example.test"]);
        assert!(s.group("team@example.test").await.unwrap().is_some(), "a member group stays");
        let c = s.changes_since(head).await.unwrap();
        assert_eq!(
            c.entries,
            group_changes(&[SALES, "all@example.test", "emea@example.test"]),
            "the group, then each group that listed it"
        );

        // Added again, it starts empty and in no group.
        s.add_group(SALES, "").await.unwrap();
        assert!(s.group_members(SALES).await.unwrap().is_empty());
        assert!(s.group_members("all@example.test").await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn group_memberships_in_bulk_go_in_together_or_not_at_all() {
    on_both("group_members_bulk", |s| async move {
        s.add_group(SALES, "").await.unwrap();
        s.add_group("all@example.test", "").await.unwrap();
        s.add_group_member(SALES, "bob@example.test").await.unwrap();
        let head = s.changes_head().await.unwrap();
        let pair = |g: &str, m: &str| (g.to_string(), m.to_string());
        let batch = [
            pair(SALES, ALICE),
            pair("all@example.test", SALES),
            pair("SALES@example.test", "Bob@example.test"),
            pair(SALES, "carol@example.test"),
            pair(SALES, "carol@example.test"),
        ];
        assert_eq!(s.add_group_members(&batch).await.unwrap(), 3, "new memberships only");
        assert_eq!(s.group_members(SALES).await.unwrap(), [ALICE, "bob@example.test", "carol@example.test"]);
        let c = s.changes_since(head).await.unwrap();
        assert_eq!(c.entries, group_changes(&["all@example.test", SALES]), "one change per group");

        // An unknown group, a bad member or a group in itself spoils the whole batch.
        let spoilt = [pair(SALES, "dave@example.test"), pair("nobody@example.test", ALICE)];
        assert!(
            matches!(s.add_group_members(&spoilt).await, Err(StoreError::NotFound(g)) if g == "nobody@example.test")
        );
        let spoilt = [pair(SALES, "dave@example.test"), pair(SALES, "dave")];
        assert!(matches!(s.add_group_members(&spoilt).await, Err(StoreError::Invalid(_))));
        let spoilt = [pair(SALES, "dave@example.test"), pair("all@example.test", "all@example.test")];
        assert!(matches!(s.add_group_members(&spoilt).await, Err(StoreError::Invalid(_))));
        assert_eq!(s.group_members(SALES).await.unwrap().len(), 3, "nothing of those batches is kept");
        assert_eq!(s.add_group_members(&batch).await.unwrap(), 0, "all there already");
        assert_eq!(s.add_group_members(&[]).await.unwrap(), 0);
        assert!(s.changes_since(c.last).await.unwrap().entries.is_empty());
    })
    .await;
}

/// Adding a user and a group under one AOR at the same time: exactly one of them is kept,
/// never both (each holds the domain while it checks the other).
#[tokio::test(flavor = "multi_thread")]
async fn a_user_and_a_group_racing_for_one_aor_cannot_both_win() {
    on_both("group_user_race", |s| async move {
        s.add_domain("example.test").await.unwrap();
        s.add_group(SALES, "").await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let name = format!("team{i}");
                    let (new_user, aor, member) =
                        (user(&name, "example.test"), format!("{name}@example.test"), format!("m{i}@example.test"));
                    let (u, g, m) =
                        tokio::join!(s.add_user(&new_user), s.add_group(&aor, ""), s.add_group_member(SALES, &member),);
                    assert!(m.unwrap());
                    (u.is_ok(), g.is_ok(), u, g)
                })
            })
            .collect();
        for t in tasks {
            let (user_won, group_won, u, g) = t.await.unwrap();
            assert!(user_won != group_won, "one of them: {u:?} {g:?}");
            let loser = if user_won { g } else { u };
            assert!(matches!(loser, Err(StoreError::Conflict(_))), "{loser:?}");
        }
        assert_eq!(s.group_members(SALES).await.unwrap().len(), 16);
    })
    .await;
}

/// Members as [`expand_group`] reports them.
fn expansion(members: &[&str], loops: &[&[&str]], too_deep: &[&str], truncated: bool) -> Expansion {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Expansion {
        members: strings(members),
        loops: loops.iter().map(|l| strings(l)).collect(),
        too_deep: strings(too_deep),
        truncated,
    }
}

/// Sets up groups `g@x.test` from `(group, members)`: a member named without `@` is another
/// of these groups, one with `@` a user or remote address.
async fn groups_of(s: &dyn Store, spec: &[(&str, &[&str])]) {
    for (g, _) in spec {
        s.add_group(&format!("{g}@x.test"), "").await.unwrap();
    }
    let mut memberships = Vec::new();
    for (g, members) in spec {
        for m in *members {
            let m = if m.contains('@') { m.to_string() } else { format!("{m}@x.test") };
            memberships.push((format!("{g}@x.test"), m));
        }
    }
    s.add_group_members(&memberships).await.unwrap();
}

#[tokio::test]
async fn nested_groups_expand_depth_first_each_member_once() {
    on_both("group_expansion", |s| async move {
        groups_of(
            &*s,
            &[
                ("a", &["b", "zed@x.test", "c", "amy@partner.example"]),
                ("b", &["bob@x.test", "x@x.test", "d"]),
                ("c", &["x@x.test", "carl@x.test", "d"]),
                ("d", &["dora@x.test", "zed@x.test"]),
            ],
        )
        .await;
        // Depth first, each group's members by AOR: a's are amy, b, c, zed; b's bob, d, x.
        let all = ["amy@partner.example", "bob@x.test", "dora@x.test", "zed@x.test", "x@x.test", "carl@x.test"];
        assert_eq!(expand_group(&*s, "A@x.test", 10, 100).await.unwrap(), expansion(&all, &[], &[], false));
        // The diamond: x (under b and c) and d (under b and c) come once.
        assert_eq!(expand_group(&*s, "c@x.test", 10, 100).await.unwrap().members, ["carl@x.test", "dora@x.test", "zed@x.test", "x@x.test"]);

        // Depth 0: direct members only; 1: a's groups' members, d left out.
        let direct = expansion(&["amy@partner.example", "zed@x.test"], &[], &["b@x.test", "c@x.test"], false);
        assert_eq!(expand_group(&*s, "a@x.test", 0, 100).await.unwrap(), direct);
        let one = ["amy@partner.example", "bob@x.test", "x@x.test", "carl@x.test", "zed@x.test"];
        assert_eq!(expand_group(&*s, "a@x.test", 1, 100).await.unwrap(), expansion(&one, &[], &["d@x.test"], false));
        assert_eq!(expand_group(&*s, "a@x.test", 2, 100).await.unwrap().members, all);

        assert!(matches!(expand_group(&*s, "nobody@x.test", 10, 100).await, Err(StoreError::NotFound(g)) if g == "nobody@x.test"));
        // A group with no members, and a page of a group read past its end.
        s.add_group("empty@x.test", "").await.unwrap();
        assert_eq!(expand_group(&*s, "empty@x.test", 10, 100).await.unwrap(), Expansion::default());
        assert_eq!(
            s.group_members_after("b@x.test", "bob@x.test", 10).await.unwrap(),
            [
                GroupMember { aor: "d@x.test".into(), is_group: true },
                GroupMember { aor: "x@x.test".into(), is_group: false }
            ]
        );
        assert!(s.group_members_after("b@x.test", "x@x.test", 10).await.unwrap().is_empty());
        assert!(s.group_members_after("nobody@x.test", "", 10).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_loop_of_groups_is_reported_and_not_followed() {
    on_both("group_loops", |s| async move {
        groups_of(&*s, &[("a", &["b", "amy@x.test"]), ("b", &["a", "bob@x.test", "c"]), ("c", &["b", "carl@x.test"])])
            .await;
        let a = expand_group(&*s, "a@x.test", 10, 100).await.unwrap();
        assert_eq!(
            a,
            expansion(
                &["amy@x.test", "bob@x.test", "carl@x.test"],
                &[&["a@x.test", "b@x.test", "a@x.test"], &["b@x.test", "c@x.test", "b@x.test"]],
                &[],
                false
            )
        );
        let b = expand_group(&*s, "b@x.test", 10, 100).await.unwrap();
        assert_eq!(b.members, ["amy@x.test", "bob@x.test", "carl@x.test"]);
        assert_eq!(b.loops, [["b@x.test", "a@x.test", "b@x.test"], ["b@x.test", "c@x.test", "b@x.test"]]);
    })
    .await;
}

/// A group of 50,000 goes in as one batch, and expanding it stops reading at the limit.
#[tokio::test]
async fn a_large_group_is_expanded_no_further_than_its_limit() {
    on_both("group_large", |s| async move {
        s.add_group("all@example.test", "All").await.unwrap();
        s.add_group("vip@example.test", "").await.unwrap();
        let mut batch: Vec<(String, String)> =
            (0..50_000).map(|i| ("all@example.test".to_string(), format!("u{i:05}@example.test"))).collect();
        batch.push(("all@example.test".into(), "vip@example.test".into()));
        batch.push(("vip@example.test".into(), "u00001@example.test".into()));
        batch.push(("vip@example.test".into(), "zz@example.test".into()));
        let started = std::time::Instant::now();
        assert_eq!(s.add_group_members(&batch).await.unwrap(), 50_003);
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(20), "50,000 memberships in {took:?}");
        assert_eq!(s.group("all@example.test").await.unwrap().unwrap().direct_members, 50_001);

        let first = expand_group(&*s, "all@example.test", 5, 100).await.unwrap();
        assert!(first.truncated);
        assert_eq!(first.members.len(), 100);
        assert_eq!(
            (first.members[0].as_str(), first.members[99].as_str()),
            ("u00000@example.test", "u00099@example.test")
        );

        let all = expand_group(&*s, "all@example.test", 5, 60_000).await.unwrap();
        assert!(!all.truncated);
        assert_eq!(all.members.len(), 50_001, "every user once, then zz through vip (after the u's)");
        assert_eq!(all.members.last().map(String::as_str), Some("zz@example.test"));
        // Exactly at the limit is all of them; one under is not.
        assert!(!expand_group(&*s, "all@example.test", 5, 50_001).await.unwrap().truncated);
        let short = expand_group(&*s, "all@example.test", 5, 50_000).await.unwrap();
        assert!(short.truncated && short.members.len() == 50_000);
        // A limit of none: truncated as soon as there is anyone.
        assert!(expand_group(&*s, "all@example.test", 5, 0).await.unwrap().truncated);
    })
    .await;
}

/// Migration 10 gives the change log a fifth kind, as migration 9 gave it a fourth (on SQLite
/// by copying it): what was in it is kept and positions go on past the highest handed out.
#[tokio::test]
async fn the_change_log_goes_on_from_its_position_across_migration_10() {
    const BEFORE: [&str; 4] = [
        "INSERT INTO domains (name, created_at) VALUES ('example.test', 1)",
        "INSERT INTO user_changes (kind, subject, at) VALUES ('domain', 'example.test', 1)",
        "INSERT INTO user_changes (kind, subject, at) VALUES ('federation', '*', 1), ('waiting', 'a@example.test', 2)",
        "DELETE FROM user_changes WHERE kind = 'waiting'",
    ];
    async fn check(s: &dyn Store) {
        let old = s.changes_since(0).await.unwrap();
        assert_eq!(old.entries, vec![Change::Domain("example.test".into()), Change::Federation("*".into())]);
        s.add_group(SALES, "Sales").await.unwrap();
        let c = s.changes_since(3).await.unwrap();
        assert_eq!(c.entries, vec![Change::Group(SALES.into())], "{c:?}");
        assert!(c.last > 3);
    }

    let (_dir, stores) = upgraded_from(9, &BEFORE, "change_log_migration_10").await;
    for s in stores {
        check(s.as_ref()).await;
    }
}
