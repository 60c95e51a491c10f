//! `sipfront rules ...` and `sipfront contacts ...` as an operator runs them, against the store
//! of a running server (SQLite, and PostgreSQL when the tests have one): what they print in
//! each format, and one clear line with a non-zero exit for an unknown owner or a bad address.
//! That a running server follows these changes is tested in `presence.rs`.

mod common;

use common::*;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// The non-empty lines of a table, minus the last ("(N entries)"), each split on whitespace.
fn table_rows(out: &str) -> Vec<Vec<&str>> {
    let mut lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.pop().is_some_and(|l| l.starts_with('(') && l.ends_with(')')), "a count at the end: {out}");
    lines.into_iter().map(|l| l.split_whitespace().collect()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_set_listed_in_every_format_and_removed() {
    for backend in backends("presence_cli_rules").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let out = cli(&s, &["rules", "allow", "sip:alice@Example.TEST", "sip:bob@Example.TEST"], "").await;
        assert_eq!(out, "alice@example.test: allow bob@example.test\n", "{backend:?}");
        cli(&s, &["rules", "block", "alice@example.test", "*@other.test"], "").await;
        cli(&s, &["rules", "polite-block", "alice@example.test", "carol@partner.test"], "").await;
        // The same watcher again replaces its rule.
        let out = cli(&s, &["rules", "block", "alice@example.test", "bob@example.test"], "").await;
        assert_eq!(out, "alice@example.test: block bob@example.test\n");

        let table = cli(&s, &["rules", "list", "alice@example.test"], "").await;
        let rows = table_rows(&table);
        let cells: Vec<&[&str]> = rows.iter().map(|r| &r[..2]).collect();
        assert_eq!(
            cells,
            vec![
                &["watcher", "action"][..],
                &["*@other.test", "block"],
                &["bob@example.test", "block"],
                &["carol@partner.test", "polite-block"],
            ],
            "{table}"
        );
        assert!(table.ends_with("(3 entries)\n"), "{table}");

        let csv = cli(&s, &["rules", "list", "alice@example.test", "--format", "csv"], "").await;
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "watcher,action,updated", "{csv}");
        assert!(lines[1].starts_with("*@other.test,block,20"), "an ISO time: {csv}");
        assert_eq!(lines.len(), 4, "{csv}");

        let json = cli(&s, &["rules", "list", "alice@example.test", "--format", "json"], "").await;
        let rules: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON rules");
        let view: Vec<(&str, &str)> =
            rules.iter().map(|r| (r["watcher"].as_str().unwrap_or(""), r["action"].as_str().unwrap_or(""))).collect();
        assert_eq!(
            view,
            vec![("*@other.test", "block"), ("bob@example.test", "block"), ("carol@partner.test", "polite-block")]
        );

        let out = cli(&s, &["rules", "remove", "alice@example.test", "*@OTHER.test"], "").await;
        assert_eq!(out, "alice@example.test: rule for *@other.test removed\n");
        let err = cli_fails(&s, &["rules", "remove", "alice@example.test", "*@other.test"]).await;
        assert!(err.contains("alice@example.test has no rule for *@other.test"), "{err}");
        let json = cli(&s, &["rules", "list", "alice@example.test", "--format", "json"], "").await;
        assert_eq!(serde_json::from_str::<Vec<serde_json::Value>>(&json).expect("JSON").len(), 2);

        let empty = cli(&s, &["rules", "list", "bob@example.test", "--format", "json"], "").await;
        assert!(serde_json::from_str::<Vec<serde_json::Value>>(&empty).expect("JSON").is_empty(), "{empty}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn contacts_are_kept_in_groups_and_removed_from_one_group_or_all() {
    for backend in backends("presence_cli_contacts").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let a = "alice@example.test";
        let out = cli(
            &s,
            &["contacts", "add", a, "sip:bob@Example.TEST", "--group", "work", "--name", "Bob, the builder"],
            "",
        )
        .await;
        assert_eq!(out, "alice@example.test: bob@example.test added\n", "{backend:?}");
        cli(&s, &["contacts", "add", a, "bob@example.test", "--group", "friends", "--name", "Bob"], "").await;
        cli(&s, &["contacts", "add", a, "carol@partner.test"], "").await;
        // Again in the same group: renamed.
        cli(&s, &["contacts", "add", a, "carol@partner.test", "--name", "Carol"], "").await;

        let csv = cli(&s, &["contacts", "list", a, "--format", "csv"], "").await;
        assert_eq!(
            csv,
            "group,contact,name\n\
             ,carol@partner.test,Carol\n\
             friends,bob@example.test,Bob\n\
             work,bob@example.test,\"Bob, the builder\"\n",
            "by group (none first), then contact; RFC 4180 quoting"
        );
        let json = cli(&s, &["contacts", "list", a, "--format", "json"], "").await;
        let list: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON contacts");
        assert_eq!(list.len(), 3, "{json}");
        assert_eq!(list[2]["group"], "work");
        assert_eq!(list[2]["contact"], "bob@example.test");
        assert_eq!(list[2]["name"], "Bob, the builder");

        let out = cli(&s, &["contacts", "remove", a, "bob@example.test", "--group", "work"], "").await;
        assert_eq!(out, "alice@example.test: bob@example.test removed (1 entry)\n");
        let err = cli_fails(&s, &["contacts", "remove", a, "bob@example.test", "--group", "work"]).await;
        assert!(err.contains("bob@example.test is not in alice@example.test's group \"work\""), "{err}");
        cli(&s, &["contacts", "add", a, "bob@example.test", "--group", "family"], "").await;
        let out = cli(&s, &["contacts", "remove", a, "sip:bob@example.test"], "").await;
        assert_eq!(out, "alice@example.test: bob@example.test removed (2 entries)\n", "from every group");
        let err = cli_fails(&s, &["contacts", "remove", a, "bob@example.test"]).await;
        assert!(err.contains("bob@example.test is not on alice@example.test's list"), "{err}");

        let table = cli(&s, &["contacts", "list", a], "").await;
        assert_eq!(table_rows(&table), vec![vec!["group", "contact", "name"], vec!["carol@partner.test", "Carol"]]);
        assert!(table.ends_with("(1 entry)\n"), "{table}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn contacts_are_imported_in_bulk_all_of_a_batch_or_none() {
    for backend in backends("presence_cli_contacts_import").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let file = s.dir.path().join("contacts.csv");
        std::fs::write(
            &file,
            "owner,contact,group,name\n\
             # alice's list\n\
             alice@example.test,sip:bob@Example.TEST,work,\"Bob, the builder\"\n\
             alice@example.test,carol@partner.test\n\
             \n\
             bob@example.test,alice@example.test,,Alice\n",
        )
        .expect("write the file");
        let path = file.to_str().expect("a UTF-8 path");
        let out = cli(&s, &["contacts", "import", path], "").await;
        assert_eq!(out, "imported 3 contacts\n", "{backend:?}");
        let csv = cli(&s, &["contacts", "list", "alice@example.test", "--format", "csv"], "").await;
        assert_eq!(csv, "group,contact,name\n,carol@partner.test,\nwork,bob@example.test,\"Bob, the builder\"\n");
        let csv = cli(&s, &["contacts", "list", "bob@example.test", "--format", "csv"], "").await;
        assert_eq!(csv, "group,contact,name\n,alice@example.test,Alice\n");

        // A bad line stops the import before anything is written.
        std::fs::write(&file, "bob@example.test,dave@example.test\nbob@example.test,dave\n").expect("write");
        let err = cli_fails(&s, &["contacts", "import", path]).await;
        assert!(err.contains("line 2: contact") && err.contains("dave"), "{err}");
        // An unknown owner spoils its batch (here, one line each): the batches before it stay.
        std::fs::write(&file, "bob@example.test,dave@example.test\nnobody@example.test,alice@example.test\n")
            .expect("write");
        let err = cli_fails(&s, &["contacts", "import", path, "--batch", "1"]).await;
        assert!(err.contains("lines 2-2") && err.contains("nobody@example.test: no such user"), "{err}");
        assert!(err.contains("1 contacts before them were"), "{err}");
        let csv = cli(&s, &["contacts", "list", "bob@example.test", "--format", "csv"], "").await;
        assert_eq!(csv, "group,contact,name\n,alice@example.test,Alice\n,dave@example.test,\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_owners_and_bad_addresses_are_one_clear_error() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let nobody = "nobody@example.test";
    for args in [
        &["rules", "allow", nobody, "bob@example.test"][..],
        &["rules", "polite-block", nobody, "*@example.test"],
        &["rules", "remove", nobody, "bob@example.test"],
        &["rules", "list", nobody],
        &["contacts", "add", nobody, "bob@example.test"],
        &["contacts", "remove", nobody, "bob@example.test", "--group", "work"],
        &["contacts", "list", nobody, "--format", "json"],
    ] {
        let err = cli_fails(&s, args).await;
        assert!(err.contains("nobody@example.test: no such user"), "{args:?}: {err}");
    }

    for watcher in ["bob", "@example.test", "bob@", "bob@bad domain"] {
        let err = cli_fails(&s, &["rules", "block", "alice@example.test", watcher]).await;
        assert!(err.contains("user@domain") && err.contains("*@domain"), "{watcher:?}: {err}");
    }
    let err = cli_fails(&s, &["rules", "allow", "alice", "bob@example.test"]).await;
    assert!(err.contains("\"alice\" is not an address of record"), "{err}");
    let err = cli_fails(&s, &["contacts", "add", "alice@example.test", "*@example.test"]).await;
    assert!(err.contains("is not user@domain"), "a contact is one user, not a domain: {err}");
    let err = cli_fails(&s, &["contacts", "add", "alice@example.test", "bob"]).await;
    assert!(err.contains("\"bob\" is not an address of record"), "{err}");

    // Nothing of the above was kept.
    let rules = cli(&s, &["rules", "list", "alice@example.test", "--format", "csv"], "").await;
    assert_eq!(rules, "watcher,action,updated\n");
    let contacts = cli(&s, &["contacts", "list", "alice@example.test", "--format", "csv"], "").await;
    assert_eq!(contacts, "group,contact,name\n");
}

/// A contacts file with quotes, commas, spaces and a line break inside quotes, UTF-8, a header
/// and a comment: `contacts import` keeps every field as written, and `contacts list --format
/// csv` gives the same fields back to a CSV reader.
#[tokio::test(flavor = "multi_thread")]
async fn a_tricky_contacts_file_round_trips_through_import_and_list() {
    for backend in backends("presence_cli_tricky_contacts").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let file = s.dir.path().join("contacts.csv");
        std::fs::write(
            &file,
            "owner,contact,group,name\n\
             # a comment, \"with quotes\"\n\
             alice@example.test,zoe@example.test,\" Friends, \"\"close\"\" \",\"Zo\u{eb} \"\"Z\"\" O'Brien,\r\n Jr.\"\n\
             \n\
             alice@example.test, sip:bob@Example.TEST ,#work,  Bob  \n",
        )
        .expect("write contacts.csv");
        let out = cli(&s, &["contacts", "import", file.to_str().expect("a UTF-8 path")], "").await;
        assert_eq!(out, "imported 2 contacts\n", "{backend:?}");
        let csv = cli(&s, &["contacts", "list", "alice@example.test", "--format", "csv"], "").await;
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(csv.as_bytes());
        let mut rows: Vec<Vec<String>> =
            reader.records().map(|r| r.expect("CSV from contacts list").iter().map(String::from).collect()).collect();
        rows[1..].sort();
        assert_eq!(
            rows,
            vec![
                vec!["group", "contact", "name"],
                vec![" Friends, \"close\" ", "zoe@example.test", "Zo\u{eb} \"Z\" O'Brien,\r\n Jr."],
                vec!["#work", "bob@example.test", "  Bob  "],
            ],
            "{backend:?}: {csv}"
        );
    }
}
