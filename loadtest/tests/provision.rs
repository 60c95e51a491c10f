//! `--provision`: the users are created in a sipfront data directory through sipfront's own
//! command line (here the `sipfront-cli` example, the same CLI built from the server library),
//! then a sipfront started on that directory registers them.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::{Server, DOMAIN};
use sipfront_loadtest::provision::{Provision, Provisioned};
use sipfront_loadtest::Scenario;
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sipfront-load");

/// The `sipfront-cli` example, built now if `cargo test` has not built it (nextest does not
/// build examples). Only a link step: the server library is built already, as a dev-dependency.
fn sipfront_cli() -> PathBuf {
    let profile_dir = std::path::Path::new(BIN).parent().unwrap();
    let bin = profile_dir.join("examples").join("sipfront-cli");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet", "-p", "sipfront-loadtest", "--example", "sipfront-cli"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    // What cargo set for this test process must not reach the build: build scripts that watch
    // a variable (ring watches CARGO_MANIFEST_DIR) would rebuild for it, then again for the
    // next `cargo test`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"]
            .iter()
            .any(|p| name.starts_with(p))
            || name == "CARGO_TARGET_TMPDIR"
            || name == "CARGO_RUSTC_CURRENT_DIR";
        if set_for_tests {
            cargo.env_remove(&*name);
        }
    }
    // Always: cargo does nothing when the example is up to date, and rebuilds it when not.
    let status = cargo.current_dir(env!("CARGO_MANIFEST_DIR")).status().unwrap();
    assert!(status.success() && bin.is_file(), "cargo build --example sipfront-cli");
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_users_register() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config(Scenario::Register, "127.0.0.1:5060".parse().unwrap(), 30, 200.0, 60);
    c.set_pattern_users(30, 0, "secret,{n}");
    let p = Provision { data_dir: dir.path().to_path_buf(), bin: sipfront_cli(), config: None };
    let accounts = c.accounts.clone();
    let done = tokio::task::spawn_blocking(move || p.run(DOMAIN, &accounts, &[]).unwrap()).await.unwrap();
    assert_eq!(done, Provisioned { imported: 30, already_there: 0, contacts: 0 });

    // Again, with 10 more: only those are imported (an import of an existing user would fail).
    c.set_pattern_users(40, 0, "secret,{n}");
    let p = Provision { data_dir: dir.path().to_path_buf(), bin: sipfront_cli(), config: None };
    let accounts = c.accounts.clone();
    let done = tokio::task::spawn_blocking(move || p.run(DOMAIN, &accounts, &[]).unwrap()).await.unwrap();
    assert_eq!(done, Provisioned { imported: 10, already_there: 30, contacts: 0 });

    let server = Server::start_in(dir).await;
    c.target = server.udp();
    c.bound = sipfront_loadtest::Bound::Count(80);
    let r = common::run(c).await;
    assert_eq!((r.succeeded, r.failed), (80, 0), "every provisioned user registers, password with a comma too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_provisions_then_runs() {
    let dir = tempfile::tempdir().unwrap();
    let provision = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["register", "--users", "10", "--provision"]).arg(dir.path());
        cmd.arg("--sipfront-bin").arg(sipfront_cli()).args(extra);
        cmd
    };
    // Only provisioning: nothing is sent (the default target has no server).
    let out = provision(&["--provision-only"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(stdout.contains("10 users imported, 0 already there") && !stdout.contains("sent"), "{stdout}");

    // Provisioning again, with a configuration passed on, then a run (to a server that has
    // its users already).
    let running = Server::start(10).await;
    let config = dir.path().join("sipfront.toml");
    std::fs::write(&config, "[database]\npoll_ms = 500\n").unwrap();
    let target = running.udp().to_string();
    let mut cmd = provision(&["--target", &target, "--rate", "100", "--count", "20", "--sipfront-config"]);
    cmd.arg(&config);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(stdout.contains("0 users imported, 10 already there"), "says what it did");
    assert!(stdout.contains("ok 20  failed 0"), "then runs");

    // A configuration sipfront refuses: the provisioning fails, and nothing is sent.
    std::fs::write(&config, "[database]\npoll_ms = \"soon\"\n").unwrap();
    let out = provision(&["--target", &target, "--count", "1", "--sipfront-config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--provision") && stderr.contains("poll_ms"), "{stderr}");

    let server = Server::start_in(dir).await;
    let r = common::run(common::config(Scenario::Register, server.udp(), 10, 100.0, 10)).await;
    assert_eq!((r.succeeded, r.failed), (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_lists_of_a_resource_list_run_are_provisioned() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["presence", "--users", "20", "--watch", "3", "--resource-lists", "--provision-only", "--provision"])
        .arg(dir.path())
        .arg("--sipfront-bin")
        .arg(sipfront_cli())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(stdout.contains("20 users imported") && stdout.contains("30 contact-list entries"), "{stdout}");
    let list = Command::new(sipfront_cli())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["contacts", "list", &format!("user10@{DOMAIN}"), "--format", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&list.stdout);
    let expected = format!("group,contact,name\n,user0@{DOMAIN},\n,user1@{DOMAIN},\n,user2@{DOMAIN},\n");
    assert_eq!(csv, expected, "watcher 0 (user10) watches presentities 0, 1 and 2");

    // A sipfront on that directory answers the watchers' list subscriptions with the lists.
    let server = Server::start_in(dir).await;
    let mut c = common::config(Scenario::Presence, server.udp(), 20, 100.0, 50);
    (c.resource_lists, c.watch) = (true, 3);
    let r = common::run(c).await;
    assert_eq!((r.transactions["subscribe"].ok, r.succeeded, r.failed), (10, 50, 0));
    assert!(r.measured_notifies >= 10 && r.unmatched_notifies == 0, "{}", r.measured_notifies);
}

/// Passwords with quotes, commas, spaces and UTF-8, and a user part starting with `#`: the
/// users file the generator writes is imported by `sipfront user import` with exactly those
/// passwords, and read back by `--users-csv` as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_passwords_are_imported_exactly() {
    use sipfront_loadtest::config::{read_users_csv, write_users_csv, Account};
    use sipfront_proto::digest::{ha1, Algorithm};
    let dir = tempfile::tempdir().unwrap();
    let accounts: Vec<Account> = [
        ("zoe", " p,w\"x "),
        ("bjorn", "Zo\u{eb} \"Z\" O'Brien, Jr."),
        ("carol", "  two spaces  "),
        ("#dave", "#not a comment"),
        ("erin", "\u{1F511}"),
    ]
    .into_iter()
    .map(|(user, password)| Account { user: user.into(), password: password.into() })
    .collect();
    let p = Provision { data_dir: dir.path().to_path_buf(), bin: sipfront_cli(), config: None };
    let provisioned = accounts.clone();
    let done = tokio::task::spawn_blocking(move || p.run(DOMAIN, &provisioned, &[]).unwrap()).await.unwrap();
    assert_eq!(done, Provisioned { imported: 5, already_there: 0, contacts: 0 });

    let store = sipfront_storage::open("", dir.path()).await.unwrap();
    for a in &accounts {
        let user = store.user(&format!("{}@{DOMAIN}", a.user)).await.unwrap().unwrap();
        assert_eq!(user.ha1_md5, ha1(Algorithm::Md5, &a.user, DOMAIN, &a.password), "{a:?}");
        assert_eq!(user.ha1_sha256, ha1(Algorithm::Sha256, &a.user, DOMAIN, &a.password), "{a:?}");
    }
    let mut text = Vec::new();
    write_users_csv(&mut text, DOMAIN, &accounts).unwrap();
    assert_eq!(read_users_csv(&text).unwrap(), accounts);
}
