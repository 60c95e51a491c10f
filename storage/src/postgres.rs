//! PostgreSQL: one database shared by every front end of a pool.

use crate::{Result, StoreError};
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| StoreError::unavailable("connecting to PostgreSQL", e))?;
        Ok(PgStore { pool })
    }
}

crate::sql::sql_store!(PgStore, sqlx::Postgres, sqlx::migrate!("./migrations/postgres"));
