//! `sipfront group ...` as an operator runs it, against the store of a running server (SQLite,
//! and PostgreSQL when the tests have one): what it prints, and one clear line with a non-zero
//! exit for an unknown group, a bad address, a duplicate or an address a user has. That the
//! store notes each change in its change log, and how nested groups expand, is tested in
//! `storage/tests/store.rs`.

mod common;

use common::*;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_added_listed_shown_and_removed() {
    for backend in backends("groups_cli_groups").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        assert_eq!(cli(&s, &["group", "list"], "").await, "", "{backend:?}: none yet");

        let out = cli(&s, &["group", "add", "sip:Sales@Example.TEST", "--display-name", "Sales, EMEA"], "").await;
        assert_eq!(out, "sales@example.test: added\n", "{backend:?}");
        assert_eq!(cli(&s, &["group", "add", "all@example.test"], "").await, "all@example.test: added\n");
        // A group of a domain not served yet brings the domain, as a user does.
        assert_eq!(
            cli(&s, &["group", "add", "team@other.test", "--display-name", "Team"], "").await,
            "team@other.test: added\n"
        );
        assert_eq!(cli(&s, &["domain", "list"], "").await, "example.test\nother.test\n");
        cli(&s, &["group", "member", "add", "sales@example.test", "alice@example.test"], "").await;

        assert_eq!(
            cli(&s, &["group", "list"], "").await,
            "all@example.test\t\t0\nsales@example.test\tSales, EMEA\t1\nteam@other.test\tTeam\t0\n",
            "by AOR: display name, direct members"
        );
        let list = cli(&s, &["group", "list", "--domain", "Example.TEST"], "").await;
        assert_eq!(list, "all@example.test\t\t0\nsales@example.test\tSales, EMEA\t1\n");

        let show = cli(&s, &["group", "show", "SALES@example.test"], "").await;
        assert_eq!(
            show,
            "group: sales@example.test\n\
             display name: Sales, EMEA\n\
             direct members: 1\n  \
             alice@example.test\n\
             expanded: 1 member\n"
        );

        assert_eq!(cli(&s, &["group", "remove", "Team@other.test"], "").await, "team@other.test: removed\n");
        let err = cli_fails(&s, &["group", "remove", "team@other.test"]).await;
        assert!(err.contains("team@other.test: no such group"), "{err}");
        let err = cli_fails(&s, &["group", "show", "team@other.test"]).await;
        assert!(err.contains("team@other.test: no such group"), "{err}");
        assert_eq!(cli(&s, &["group", "list", "--domain", "other.test"], "").await, "");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_are_added_removed_and_nested_groups_shown_expanded() {
    for backend in backends("groups_cli_members").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        for g in ["sales@example.test", "emea@example.test", "all@example.test"] {
            cli(&s, &["group", "add", g], "").await;
        }
        let add = |g: &'static str, m: &'static str| {
            let s = &s;
            async move { cli(s, &["group", "member", "add", g, m], "").await }
        };
        let out = add("sales@example.test", "sip:Alice@Example.TEST").await;
        assert_eq!(out, "sales@example.test: alice@example.test added\n", "{backend:?}");
        assert_eq!(
            add("sales@example.test", "emea@example.test").await,
            "sales@example.test: emea@example.test added\n"
        );
        add("sales@example.test", "zoe@partner.example").await;
        add("emea@example.test", "bob@example.test").await;
        add("emea@example.test", "alice@example.test").await;
        add("emea@example.test", "all@example.test").await;
        add("all@example.test", "sales@example.test").await;

        let show = cli(&s, &["group", "show", "sales@example.test"], "").await;
        assert_eq!(
            show,
            "group: sales@example.test\n\
             display name: \n\
             direct members: 3\n  \
             alice@example.test\n  \
             emea@example.test (group)\n  \
             zoe@partner.example\n\
             expanded: 3 members\n\
             loop: sales@example.test -> emea@example.test -> all@example.test -> sales@example.test\n",
            "direct members, groups marked; then alice, bob (through emea) and zoe, and the loop"
        );
        let show =
            cli(&s, &["group", "show", "sales@example.test", "--max-depth", "0", "--max-members", "1"], "").await;
        assert!(
            show.ends_with(
                "expanded: more than 1 member (--max-members)\n\
                 too deep: emea@example.test (deeper than --max-depth 0, not expanded)\n"
            ),
            "{show}"
        );

        let out = cli(&s, &["group", "member", "remove", "sales@example.test", "ZOE@partner.example"], "").await;
        assert_eq!(out, "sales@example.test: zoe@partner.example removed\n");
        let err = cli_fails(&s, &["group", "member", "remove", "sales@example.test", "zoe@partner.example"]).await;
        assert!(err.contains("zoe@partner.example is not a member of sales@example.test"), "{err}");
        let err = cli_fails(&s, &["group", "member", "add", "sales@example.test", "ALICE@example.test"]).await;
        assert!(err.contains("alice@example.test is a member of sales@example.test already"), "{err}");

        // A group removed leaves the groups that listed it.
        cli(&s, &["group", "remove", "emea@example.test"], "").await;
        let show = cli(&s, &["group", "show", "sales@example.test"], "").await;
        assert!(show.contains("direct members: 1\n  alice@example.test\nexpanded: 1 member\n"), "{show}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memberships_are_imported_after_the_whole_file_is_checked() {
    for backend in backends("groups_cli_import").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        cli(&s, &["group", "add", "sales@example.test"], "").await;
        cli(&s, &["group", "add", "all@example.test"], "").await;
        let file = s.dir.path().join("groups.csv");
        let path = file.to_str().expect("a UTF-8 path");
        std::fs::write(
            &file,
            "group,member\n\
             # sales\n\
             Sales@example.test, sip:alice@Example.TEST\n\
             sales@example.test,\"zoe@partner.example\"\n\
             \n\
             all@example.test,sales@example.test\n\
             all@example.test,bob@example.test\n",
        )
        .expect("write the file");
        assert_eq!(
            cli(&s, &["group", "import", path], "").await,
            "imported 4 memberships (0 there already)\n",
            "{backend:?}"
        );
        // Again: every membership is there already.
        assert_eq!(
            cli(&s, &["group", "import", path, "--batch", "2"], "").await,
            "imported 0 memberships (4 there already)\n"
        );
        let list = cli(&s, &["group", "list"], "").await;
        assert_eq!(list, "all@example.test\t\t2\nsales@example.test\t\t2\n");

        // A bad line, a group in itself or an unknown group stops the import before anything
        // is written.
        for (text, expected) in [
            ("sales@example.test,carol@example.test\nsales@example.test,carol\n", "line 2: member"),
            ("sales@example.test,carol@example.test\nsales@example.test\n", "line 2: expected group,member"),
            (
                "sales@example.test,carol@example.test\nall@example.test,ALL@example.test\n",
                "line 2: all@example.test cannot be a member of itself",
            ),
            (
                "sales@example.test,carol@example.test\nnobody@example.test,alice@example.test\n",
                "line 2: nobody@example.test: no such group (nothing imported)",
            ),
        ] {
            std::fs::write(&file, text).expect("write the file");
            let err = cli_fails(&s, &["group", "import", path]).await;
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert_eq!(cli(&s, &["group", "list"], "").await, list, "nothing of those files was kept");
        let err = cli_fails(&s, &["group", "import", "/nonexistent/groups.csv"]).await;
        assert!(err.contains("reading /nonexistent/groups.csv"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_addresses_unknown_groups_and_taken_addresses_are_one_clear_error() {
    for backend in backends("groups_cli_refused").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        cli(&s, &["group", "add", "sales@example.test"], "").await;

        let err = cli_fails(&s, &["group", "add", "Sales@example.test"]).await;
        assert!(err.contains("sales@example.test: a group already"), "{backend:?}: {err}");
        let err = cli_fails(&s, &["group", "add", "ALICE@example.test"]).await;
        assert!(err.contains("alice@example.test is a user's address"), "{err}");
        let err = cli_fails(&s, &["group", "add", "bob+Contacts@example.test"]).await;
        assert!(err.contains("names a contact list (presence.list_suffix)"), "{err}");
        // And the other way: no user takes a group's address, whatever its case.
        let users = s.dir.path().join("users.csv");
        std::fs::write(&users, "carol@example.test,secret\nSales@example.test,secret\n").expect("write the file");
        let err = cli_fails(&s, &["user", "import", users.to_str().expect("a UTF-8 path")]).await;
        assert!(err.contains("already exists: Sales@example.test"), "{err}");
        assert!(!cli(&s, &["user", "list"], "").await.contains("carol"), "nothing of that batch was kept");

        for bad in ["sales", "@example.test", "sales@"] {
            let err = cli_fails(&s, &["group", "add", bad]).await;
            assert!(err.contains("is not an address of record (user@domain)"), "{bad:?}: {err}");
            let err = cli_fails(&s, &["group", "member", "add", "sales@example.test", bad]).await;
            assert!(err.contains("is not an address of record (user@domain)"), "{bad:?}: {err}");
        }
        let err = cli_fails(&s, &["group", "member", "add", "sales@example.test", "a b@example.test"]).await;
        assert!(err.contains("is not user@domain"), "{err}");
        let err = cli_fails(&s, &["group", "member", "add", "sales@example.test", "sip:SALES@example.test"]).await;
        assert!(err.contains("sales@example.test cannot be a member of itself"), "{err}");
        for args in [
            &["group", "member", "add", "nobody@example.test", "alice@example.test"][..],
            &["group", "member", "remove", "nobody@example.test", "alice@example.test"],
            &["group", "remove", "nobody@example.test"],
            &["group", "show", "nobody@example.test"],
        ] {
            let err = cli_fails(&s, args).await;
            assert!(err.contains("nobody@example.test: no such group"), "{args:?}: {err}");
        }
        assert_eq!(cli(&s, &["group", "list"], "").await, "sales@example.test\t\t0\n", "nothing was kept");
    }
}
