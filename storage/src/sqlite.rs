//! SQLite: the embedded default (`DATA_DIR/sipfront.db`), in WAL mode so that readers never
//! wait for the writer.

use crate::sql::{Backend, RowsAffected, SqlStore};
use crate::{Result, StoreError};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;

pub type SqliteStore = SqlStore<Sqlite>;

impl Backend for Sqlite {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
    // julianday('now') carries milliseconds.
    const NOW_MS: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    const AOR_FOLDED_IS_1: &'static str = "aor = $1 COLLATE NOCASE";
}

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::unavailable(format!("creating {}", dir.display()), e))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across application crashes; only an OS crash may lose
            // the last transactions, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::unavailable(format!("opening {}", path.display()), e))?;
        Ok(SqlStore { pool })
    }
}
