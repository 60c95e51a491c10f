//! Test support shared by every crate's tests: the one way a test is skipped (visibly, and
//! never under CI), whether an outside program is installed, polling for a condition with a
//! deadline, and a fresh PostgreSQL database per test, from the server `.ci/run` starts
//! (`SIPFRONT_TEST_PG_URL`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable naming the test PostgreSQL (a role allowed to create databases).
pub const PG_URL_VAR: &str = "SIPFRONT_TEST_PG_URL";

/// The environment variable naming the file every skip is appended to (`.ci/test` sets it and
/// reads it back for its summary line); without it, `sipfront-skipped.txt` in the target
/// directory.
pub const SKIP_LOG_VAR: &str = "SIPFRONT_SKIP_LOG";

/// Whether a missing tool must fail the test instead of skipping it: under CI (`CI` set, as CI
/// services and `.ci/run` set it), where everything the tests use is installed.
pub fn skips_are_failures() -> bool {
    std::env::var_os("CI").is_some()
}

/// Skips (part of) the calling test because `why`: under CI that is a failure (this panics);
/// otherwise it prints a line and appends `test: why` to the skip log, so that `.ci/test` names
/// it in its summary at the end of the run (captured output of a passing test is never seen).
/// `why` is short and the same for every test skipped for one reason ("sipp not installed").
pub fn skip(why: &str) {
    let test = current_test();
    assert!(!skips_are_failures(), "{test}: {why}, and CI is set: under CI nothing may be skipped");
    println!("skipped: {test}: {why}");
    let log = skip_log();
    let written = std::fs::create_dir_all(log.parent().unwrap_or(Path::new(".")))
        .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&log))
        // One write of one short line: concurrent test processes append whole lines.
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{test}\t{why}\n").as_bytes()));
    if let Err(e) = written {
        panic!("{test} is skipped ({why}), but the skip log {} cannot be written: {e}", log.display());
    }
}

/// The test that is running: the test binary (`sipfront::tools`, as nextest names it, or the
/// executable's name) and the test thread's name, which the test harness sets to the test's.
fn current_test() -> String {
    let binary = std::env::var("NEXTEST_BINARY_ID").ok().unwrap_or_else(|| {
        let exe = std::env::current_exe().ok();
        let stem = exe.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
        // Cargo names test executables NAME-HASH.
        stem.map(|s| s.rsplit_once('-').map_or(s.clone(), |(name, _)| name.to_string())).unwrap_or_default()
    });
    let thread = std::thread::current();
    format!("{binary} {}", thread.name().unwrap_or("?"))
}

/// Where skips are noted: [`SKIP_LOG_VAR`], or `sipfront-skipped.txt` in the workspace's target
/// directory (`CARGO_TARGET_DIR` when set).
pub fn skip_log() -> PathBuf {
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        return path.into();
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    target.join("sipfront-skipped.txt")
}

/// The repository's root: the workspace this crate (`storage/`) is a member of.
pub fn workspace_root() -> PathBuf {
    let storage = Path::new(env!("CARGO_MANIFEST_DIR"));
    storage.parent().unwrap_or(storage).to_path_buf()
}

/// Whether `program` is installed: on `PATH`, or in `/usr/sbin` (where Debian puts daemons
/// such as kamailio, which is not on an ordinary user's `PATH`). When it is not, the test is
/// [`skip`]ped, naming the Debian package that has it.
pub fn require_program(program: &str, package: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    let found = on_path || Path::new("/usr/sbin").join(program).is_file();
    if !found {
        skip(&format!("{program} not installed ({package})"));
    }
    found
}

/// Polls `check` every 100 ms until it holds, for at most `limit`; whether it did. What a test
/// waits for (a change reaching the server, a client having registered) it waits for with this,
/// never with a fixed sleep, which is either too short on a loaded machine or wastes time.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A URL to a new, empty database on the test PostgreSQL, or `None` (after [`skip`], which
/// fails under CI) when there is none configured.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let Ok(base) = std::env::var(PG_URL_VAR) else {
        // `SIPFRONT_TEST_PG_URL=$(.ci/postgres.sh start)` gives one.
        skip(&format!("no PostgreSQL ({PG_URL_VAR} not set)"));
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
        if !require_program("python3", "python3") {
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
