//! The IM archive (issue 5): what is relayed is archived and found again by the archive search
//! CLI; in critical mode, IM is refused while the archive cannot be written, and nothing that
//! was accepted is lost.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")];

/// Sends `text` from `from` (whose client is `client`) to `to`, answered 200 by `to_client`.
async fn converse(client: &mut UdpClient, from: &str, password: &str, to_client: &UdpClient, to: &str, text: &str) {
    let mut msg = Request::message(client, from, to);
    msg.body = text.into();
    let (r, _) = tokio::join!(with_credentials(client, &msg, from, password), answer_next(to_client, 200));
    assert_eq!(r.status(), Some(200), "{from} -> {to}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_archive_search_returns_the_whole_conversation() {
    for backend in backends("archive_search").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let (mut alice, mut bob, mut carol) = (s.udp_client().await, s.udp_client().await, s.udp_client().await);
        register(&mut alice, "alice", "wonderland", None).await;
        register(&mut bob, "bob", "builder", None).await;
        register(&mut carol, "carol", "singer", None).await;
        converse(&mut bob, "bob", "builder", &alice, "alice", "hi alice").await;
        converse(&mut alice, "alice", "wonderland", &bob, "bob", "hi bob, \"quoted\", with commas").await;
        converse(&mut carol, "carol", "singer", &alice, "alice", "carol here").await;

        let store = s.server.directory.store().clone();
        let written = eventually(Duration::from_secs(5), async || {
            store.search_archive("alice@example.test", None, 0, i64::MAX, 100).await.unwrap().len() == 3
        })
        .await;
        assert!(written, "the writer stored all three on {backend:?}");

        let json = cli(
            &s,
            &["archive", "search", "--user", "alice@example.test", "--peer", "bob@example.test", "--format", "json"],
            "",
        )
        .await;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON from archive search");
        assert_eq!(rows.len(), 2, "both directions, nothing of Carol's: {json}");
        assert_eq!(rows[0]["from"], "bob@example.test");
        assert_eq!(rows[0]["to"], "alice@example.test");
        assert_eq!(rows[0]["text"], "hi alice");
        assert_eq!(rows[0]["content_type"], "text/plain");
        assert_eq!(rows[0]["first_in_session"], true);
        assert_eq!(rows[1]["text"], "hi bob, \"quoted\", with commas");
        assert_eq!(rows[1]["first_in_session"], false, "the same conversation");

        let csv =
            cli(&s, &["archive", "search", "--user", "alice@example.test", "--peer", "any", "--format", "csv"], "")
                .await;
        assert_eq!(csv.lines().count(), 4, "a header and three messages: {csv}");
        assert!(csv.contains(r#""hi bob, ""quoted"", with commas""#), "RFC 4180 quoting: {csv}");

        let table = cli(
            &s,
            &[
                "archive",
                "search",
                "--user",
                "bob@example.test",
                "--peer",
                "alice@example.test",
                "--since",
                "2000-01-01",
            ],
            "",
        )
        .await;
        assert!(table.contains("hi alice") && table.contains("(2 messages)"), "{table}");
        let none = cli(&s, &["archive", "search", "--user", "alice@example.test", "--until", "2000-01-01"], "").await;
        assert!(none.contains("(0 messages)"), "{none}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn critical_mode_refuses_im_while_the_archive_cannot_be_written() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.archive.critical = true;
        c.database.timeout_ms = 500;
    })
    .await;
    let (mut alice, mut bob) = (s.udp_client().await, s.udp_client().await);
    register(&mut alice, "alice", "wonderland", None).await;
    register(&mut bob, "bob", "builder", None).await;
    converse(&mut bob, "bob", "builder", &alice, "alice", "archived").await;

    // Another process locks the database: archive writes fail.
    let Some(mut lock) = sipfront_storage::testing::SqliteLock::take(&s.dir.path().join("sipfront.db")) else { return };
    let mut sent = 0;
    let refused = eventually(Duration::from_secs(30), async || {
        sent += 1;
        let mut msg = Request::message(&bob, "bob", "alice");
        msg.body = format!("during the outage {sent}");
        // Answered by Alice if it gets through; the sender's answer is what counts here.
        let (r, _) = tokio::join!(with_credentials(&mut bob, &msg, "bob", "builder"), async {
            if let Some((bytes, from)) = alice.recv(Duration::from_millis(500)).await {
                let m = parse(&bytes);
                let mut ok = m.response_to(200);
                ok.set_to_tag("a");
                ok.ensure_content_length();
                alice.socket.send_to(&ok.to_bytes(), from).await.expect("answer");
            }
        });
        r.status() == Some(503)
    })
    .await;
    assert!(refused, "critical mode: 503 once the archive cannot be written");
    assert!(s.metric("sipfront_archive_entries_total").await >= 1.0);

    lock.release();
    let healed = eventually(Duration::from_secs(30), async || {
        let msg = Request::message(&bob, "bob", "alice");
        let (r, _) = tokio::join!(with_credentials(&mut bob, &msg, "bob", "builder"), async {
            if let Some((bytes, from)) = alice.recv(Duration::from_millis(500)).await {
                let mut ok = parse(&bytes).response_to(200);
                ok.set_to_tag("a");
                ok.ensure_content_length();
                alice.socket.send_to(&ok.to_bytes(), from).await.expect("answer");
            }
        });
        r.status() == Some(200)
    })
    .await;
    assert!(healed, "IM flows again once the archive can be written");
    // What was accepted during the outage was kept and written afterwards: nothing lost.
    let store = s.server.directory.store().clone();
    let all = store.search_archive("alice@example.test", Some("bob@example.test"), 0, i64::MAX, 1000).await.unwrap();
    let accepted_during =
        all.iter().filter(|e| String::from_utf8_lossy(&e.body).starts_with("during the outage")).count();
    assert!(accepted_during >= 1, "the message queued as the outage began was written after it: {all:?}");
}

/// `--since`/`--until` refuse a date that does not exist, before opening the store, instead of
/// rolling it over (2026-02-31 once became 3 March).
#[test]
fn the_archive_search_refuses_impossible_dates() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, date) in [("--since", "2026-02-31"), ("--until", "2026-13-01"), ("--since", "2026-01-01T24:00")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipfront"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["archive", "search", "--user", "alice@example.test", flag, date])
            .env_remove("SIPFRONT_DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {date} accepted");
        assert!(stderr.contains(&format!("{date:?} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)")), "{stderr}");
    }
    assert!(!dir.path().join("sipfront.db").exists(), "refused before the store was opened");
}

/// Message text with quotes, commas, line breaks, spaces and UTF-8 comes back whole from
/// `archive search --format csv` to a CSV reader.
#[tokio::test(flavor = "multi_thread")]
async fn the_archive_search_csv_gives_tricky_text_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let text = " Zo\u{eb} \"Z\" O'Brien, Jr.\r\nsays: p,w\"x \n#not a comment ";
    {
        let store = sipfront_storage::open("", dir.path()).await.unwrap();
        let entry = sipfront_storage::ArchiveEntry {
            at: 1_795_000_000,
            sender: "zoe@example.test".into(),
            recipient: "bob@example.test".into(),
            call_id: "a,b\"c".into(),
            content_type: "text/plain; charset=utf-8".into(),
            body: text.as_bytes().to_vec(),
            first_in_session: true,
        };
        store.archive(&[entry]).await.unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipfront"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["archive", "search", "--user", "zoe@example.test", "--format", "csv"])
        .env_remove("SIPFRONT_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&out.stdout[..]);
    let rows: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    assert_eq!(
        rows,
        vec![
            vec!["time", "from", "to", "call_id", "content_type", "first_in_session", "text"],
            vec![
                "2026-11-18 11:06:40",
                "zoe@example.test",
                "bob@example.test",
                "a,b\"c",
                "text/plain; charset=utf-8",
                "true",
                text
            ],
        ]
    );
}
