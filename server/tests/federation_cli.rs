//! `sipfront federation ...` and `sipfront user federation` as an operator runs them, against
//! the store of a running server (SQLite, and PostgreSQL when the tests have one): what they
//! print, and one clear line with a non-zero exit for a bad domain or edge, an unknown user or
//! an entry that is not there. That the store notes each change in its change log is tested in
//! `storage/tests/store.rs`.

mod common;

use common::*;
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

#[tokio::test(flavor = "multi_thread")]
async fn partner_domains_are_allowed_blocked_listed_and_removed() {
    for backend in backends("federation_cli_domains").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        assert_eq!(cli(&s, &["federation", "list"], "").await, "mode: closed\n", "{backend:?}: no domain yet");

        let out = cli(&s, &["federation", "allow", "Partner.EXAMPLE"], "").await;
        assert_eq!(out, "partner.example: allow\n", "{backend:?}");
        let out = cli(&s, &["federation", "allow", "other.example", "--via", "edge.other.example:5061"], "").await;
        assert_eq!(out, "other.example: allow via edge.other.example:5061\n");
        let out = cli(&s, &["federation", "block", "spam.example"], "").await;
        assert_eq!(out, "spam.example: block\n");
        // A domain again replaces its entry, the edge named before included.
        let out = cli(&s, &["federation", "block", "other.example"], "").await;
        assert_eq!(out, "other.example: block\n");
        let out = cli(&s, &["federation", "allow", "partner.example", "--via", "[2001:db8::7]:5061"], "").await;
        assert_eq!(out, "partner.example: allow via [2001:db8::7]:5061\n");

        let list = cli(&s, &["federation", "list"], "").await;
        assert_eq!(
            list,
            "mode: closed\n\
             other.example\tblock\t-\n\
             partner.example\tallow\t[2001:db8::7]:5061\n\
             spam.example\tblock\t-\n",
            "the mode, then the domains in order: action and edge"
        );

        let out = cli(&s, &["federation", "remove", "SPAM.example"], "").await;
        assert_eq!(out, "spam.example: removed\n");
        let err = cli_fails(&s, &["federation", "remove", "spam.example"]).await;
        assert!(err.contains("spam.example is not in the federation policy"), "{err}");
        let list = cli(&s, &["federation", "list"], "").await;
        assert_eq!(list, "mode: closed\nother.example\tblock\t-\npartner.example\tallow\t[2001:db8::7]:5061\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mode_is_closed_until_opened() {
    for backend in backends("federation_cli_mode").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        assert_eq!(cli(&s, &["federation", "mode"], "").await, "closed\n", "{backend:?}: the default");
        assert_eq!(cli(&s, &["federation", "mode", "open"], "").await, "federation mode: open\n");
        assert_eq!(cli(&s, &["federation", "mode"], "").await, "open\n");
        cli(&s, &["federation", "block", "spam.example"], "").await;
        assert_eq!(cli(&s, &["federation", "list"], "").await, "mode: open\nspam.example\tblock\t-\n");
        assert_eq!(cli(&s, &["federation", "mode", "closed"], "").await, "federation mode: closed\n");
        assert_eq!(cli(&s, &["federation", "mode"], "").await, "closed\n");

        // Not a mode: the command line says which are (clap's usage error, before any store).
        let mut ajar = std::process::Command::new(env!("CARGO_BIN_EXE_sipfront"));
        ajar.arg("--data-dir").arg(s.dir.path()).args(["federation", "mode", "ajar"]);
        let (status, out, err) = run_tool(ajar, Duration::from_secs(30)).await;
        assert!(!status.success() && out.is_empty(), "{status}: {out}");
        assert!(err.contains("'ajar'") && err.contains("closed, open"), "{err}");
        assert_eq!(cli(&s, &["federation", "mode"], "").await, "closed\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn federation_is_turned_on_and_off_per_user() {
    for backend in backends("federation_cli_users").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let list = cli(&s, &["user", "list"], "").await;
        assert_eq!(
            list, "alice@example.test\tenabled\t\tfederation off\nbob@example.test\tenabled\t\tfederation off\n",
            "{backend:?}: off for every user until turned on; after the display name (empty here)"
        );

        let out = cli(&s, &["user", "federation", "sip:alice@Example.TEST", "on"], "").await;
        assert_eq!(out, "alice@example.test: federation on\n");
        let list = cli(&s, &["user", "list", "--domain", "example.test"], "").await;
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            ["alice@example.test\tenabled\t\tfederation on", "bob@example.test\tenabled\t\tfederation off"]
        );
        let out = cli(&s, &["user", "federation", "alice@example.test", "off"], "").await;
        assert_eq!(out, "alice@example.test: federation off\n");
        assert!(cli(&s, &["user", "list"], "").await.starts_with("alice@example.test\tenabled\t\tfederation off\n"));

        let err = cli_fails(&s, &["user", "federation", "nobody@example.test", "on"]).await;
        assert!(err.contains("nobody@example.test: no such user"), "{err}");
        let err = cli_fails(&s, &["user", "federation", "alice", "on"]).await;
        assert!(err.contains("\"alice\" is not an address of record"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_domains_and_edges_are_refused_and_nothing_is_kept() {
    for backend in backends("federation_cli_refused").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        for domain in ["localhost", "bad domain", "192.0.2.1", "partner.example.", "sip:partner.example", "a_b.example"]
        {
            for action in ["allow", "block"] {
                let err = cli_fails(&s, &["federation", action, domain]).await;
                assert!(err.contains("is not a DNS name"), "{backend:?} {action} {domain:?}: {err}");
            }
        }
        for via in [
            "edge.partner.example",
            "edge.partner.example:0",
            "edge.partner.example:65536",
            "2001:db8::7:5061",
            "bad host:5061",
        ] {
            let err = cli_fails(&s, &["federation", "allow", "partner.example", "--via", via]).await;
            assert!(err.contains("is not host:port"), "{via:?}: {err}");
        }
        let err = cli_fails(&s, &["federation", "allow", "Example.TEST"]).await;
        assert!(err.contains("example.test is served here, not a partner's domain"), "{err}");
        let err = cli_fails(&s, &["federation", "remove", "never.example"]).await;
        assert!(err.contains("never.example is not in the federation policy"), "{err}");
        assert_eq!(cli(&s, &["federation", "list"], "").await, "mode: closed\n", "nothing was kept");
    }
}
