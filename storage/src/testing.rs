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

/// What [`SqliteLock`] runs: takes `length` bytes at `start` of a WAL index (`-shm`) with an
/// exclusive POSIX lock, retrying while the database's own readers hold some of them (for at
/// most 10 s), says "locked", and holds them until its standard input closes (or a minute
/// passes: a lost test never leaves them taken for ever).
const HOLD_LOCKS: &str = r#"
import fcntl, os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
start, length = int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 10
while True:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the WAL-index locks stayed taken for 10 s")
        time.sleep(0.001)
print("locked", flush=True)
select.select([sys.stdin], [], [], 60)
"#;

/// Another process (`python3`) holding the read-mark locks of a SQLite database in WAL mode,
/// the way a database is locked in real life: while it lives no connection can start a read
/// (SQLite retries for about 10 s, then fails with SQLITE_PROTOCOL); statements that read no
/// table, such as `SELECT 1`, still succeed. It has to be another process: POSIX locks of one
/// process never conflict with each other. Dropping it releases the locks.
pub struct SqliteLock {
    child: std::process::Child,
}

impl SqliteLock {
    /// The bytes of the `-shm` file SQLite's unix VFS locks for WAL_READ_LOCK(0) to
    /// WAL_READ_LOCK(4): from UNIX_SHM_BASE (120) + 3, five of them.
    const READ_MARKS: (u64, u64) = (123, 5);

    /// Locks the database at `db` (which a connection must have open, so that its `-shm`
    /// file exists); returns once the locks are held. `None` when python3 is not installed
    /// (under CI that is an error).
    pub fn take(db: &std::path::Path) -> Option<SqliteLock> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("python3").is_file()));
        if !found {
            assert!(std::env::var_os("CI").is_none(), "python3 is not installed, and CI needs it");
            println!("skipped: python3 (to lock the SQLite database from another process) not installed");
            return None;
        }
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let shm = std::path::PathBuf::from(shm);
        assert!(shm.is_file(), "{} exists while the database is open", shm.display());
        let (start, len) = Self::READ_MARKS;
        let child = Command::new("python3")
            .args(["-c", HOLD_LOCKS])
            .arg(&shm)
            .args([start.to_string(), len.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let mut lock = SqliteLock { child };
        // The script says "locked" or exits within its 10 s: this read is bounded.
        let mut line = String::new();
        let stdout = lock.child.stdout.take().expect("piped stdout");
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        assert!(
            read.is_ok() && line.trim() == "locked",
            "the locking process did not take the locks: {read:?} {line:?}"
        );
        Some(lock)
    }

    /// Closes the process's standard input and waits for it to exit (at once: it waits for
    /// nothing else), which releases the locks.
    pub fn release(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        self.release();
    }
}
