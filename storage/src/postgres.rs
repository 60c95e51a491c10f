//! PostgreSQL: one database shared by every front end of a pool.

use crate::sql::{Backend, RowsAffected, SqlStore};
use crate::{Result, StoreError};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPoolOptions, PgQueryResult, Postgres};
use std::time::Duration;

pub type PgStore = SqlStore<Postgres>;

impl Backend for Postgres {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
    // clock_timestamp(), not now(): the time of the statement, not of its transaction.
    const NOW_MS: &'static str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
    const AOR_FOLDED_IS_1: &'static str = r#"lower(aor COLLATE "C") = lower($1 COLLATE "C")"#;
}

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| StoreError::unavailable("connecting to PostgreSQL", e))?;
        Ok(SqlStore { pool })
    }
}
