//! Test support shared by every crate's tests: a fresh PostgreSQL database per test, from the
//! server `.ci/run` starts (`SIPFRONT_TEST_PG_URL`).

/// The environment variable naming the test PostgreSQL (a role allowed to create databases).
pub const PG_URL_VAR: &str = "SIPFRONT_TEST_PG_URL";

/// A URL to a new, empty database on the test PostgreSQL, or `None` when there is none
/// configured. Under CI (`CI` set) a missing PostgreSQL is an error, never a silent skip.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let Ok(base) = std::env::var(PG_URL_VAR) else {
        assert!(std::env::var_os("CI").is_none(), "{PG_URL_VAR} is not set under CI: PostgreSQL tests cannot run");
        println!("skipped: PostgreSQL part of {test} ({PG_URL_VAR} not set; .ci/postgres.sh start gives one)");
        return None;
    };
    let name = format!("t_{}_{}", test.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), fastrand_suffix());
    let admin = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| panic!("{PG_URL_VAR}={base}: {e}"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap_or((&base, ""));
    Some(format!("{prefix}/{name}"))
}

fn fastrand_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}_{nanos}", std::process::id())
}
