//! `--provision DATA_DIR`: creates the run's accounts in a sipfront data directory before the
//! run, with sipfront's own command line (`domain add`, `user list`, `user import`), so that
//! the generator never depends on the server crate or its store. Users already there are left
//! as they are, so provisioning the same directory twice is harmless. With `--resource-lists`
//! the contact lists the run subscribes to are imported too (`contacts import`; an entry
//! already there is left as it is).

use crate::config::{write_users_csv, Account};
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one sipfront command may take (an import of 100,000 users takes seconds).
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

pub struct Provision {
    pub data_dir: PathBuf,
    /// The `sipfront` executable.
    pub bin: PathBuf,
    /// Passed on as `--config`.
    pub config: Option<PathBuf>,
}

/// What provisioning did.
#[derive(Debug, PartialEq, Eq)]
pub struct Provisioned {
    pub imported: usize,
    pub already_there: usize,
    /// Contact-list entries imported (or found there already).
    pub contacts: usize,
}

/// `sipfront` beside `exe` (as cargo builds them both into target/<profile>/), else the first
/// one on `path` (the `PATH` variable).
pub fn find_sipfront(exe: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let beside = exe.and_then(Path::parent).map(|d| d.join("sipfront"));
    let on_path = path.into_iter().flat_map(std::env::split_paths).map(|d| d.join("sipfront"));
    beside.into_iter().chain(on_path).find(|p| p.is_file())
}

impl Provision {
    /// Adds `domain` (if new), every account not there yet, and `lists` (owner and contacts,
    /// by account index).
    pub fn run(
        &self,
        domain: &str,
        accounts: &[Account],
        lists: &[(usize, Vec<usize>)],
    ) -> anyhow::Result<Provisioned> {
        let out = self.sipfront(&["domain", "add", domain])?;
        // Older versions fail on a domain that exists, newer ones say so and succeed.
        if !out.status.success() && !out.stderr.to_ascii_lowercase().contains("already") {
            bail!("sipfront domain add {domain}: {}", out.stderr.trim());
        }
        let out = self.sipfront(&["user", "list", "--domain", domain])?;
        if !out.status.success() {
            bail!("sipfront user list: {}", out.stderr.trim());
        }
        // `aor<TAB>enabled<TAB>display name` per line.
        let existing: std::collections::HashSet<&str> =
            out.stdout.lines().filter_map(|l| l.split('\t').next()).map(str::trim).collect();
        let missing: Vec<&Account> =
            accounts.iter().filter(|a| !existing.contains(format!("{}@{domain}", a.user).as_str())).collect();
        let mut result =
            Provisioned { imported: missing.len(), already_there: accounts.len() - missing.len(), contacts: 0 };
        if !missing.is_empty() {
            let mut text = Vec::with_capacity(missing.len() * 40);
            write_users_csv(&mut text, domain, missing)?;
            self.import(&["user", "import"], &text)?;
        }
        let aor = |i: &usize| accounts.get(*i).map(|a| format!("{}@{domain}", a.user));
        let mut text = csv::WriterBuilder::new().comment(Some(b'#')).from_writer(Vec::new());
        for (owner, contacts) in lists {
            let Some(owner) = aor(owner) else { continue };
            for contact in contacts.iter().filter_map(aor) {
                text.write_record([&owner, &contact]).context("write CSV")?;
                result.contacts += 1;
            }
        }
        if result.contacts > 0 {
            self.import(&["contacts", "import"], &text.into_inner().context("write CSV")?)?;
        }
        Ok(result)
    }

    /// Runs `sipfront COMMAND... FILE` on `text` written to a private temporary file.
    fn import(&self, command: &[&str], text: &[u8]) -> anyhow::Result<()> {
        let file = PrivateFile::write(text)?;
        let path = file.path.to_string_lossy().into_owned();
        let out = self.sipfront(&[command, &[path.as_str()]].concat())?;
        if !out.status.success() {
            bail!("sipfront {}: {}", command.join(" "), out.stderr.trim());
        }
        Ok(())
    }

    /// Runs `sipfront --data-dir D [--config F] ARGS...`, bounded by [`COMMAND_LIMIT`].
    fn sipfront(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir").arg(&self.data_dir);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("{} {}", self.bin.display(), args.join(" "));
        let mut child = cmd.spawn().with_context(|| format!("run {what}"))?;
        // Read both pipes to their end on threads of their own: a child blocked on a full pipe
        // would never exit.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_string(&mut s);
                }
                s
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let deadline = Instant::now() + COMMAND_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().with_context(|| format!("wait for {what}"))? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what}: no end after {} s", COMMAND_LIMIT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = |t: std::thread::JoinHandle<String>| t.join().unwrap_or_default();
        Ok(Output { status, stdout: text(stdout), stderr: text(stderr) })
    }
}

struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// A file only we can read (it may hold passwords), removed when dropped.
struct PrivateFile {
    path: PathBuf,
}

impl PrivateFile {
    fn write(text: &[u8]) -> anyhow::Result<PrivateFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let path =
            std::env::temp_dir().join(format!("sipfront-load-{}-{}.csv", std::process::id(), crate::sip::token()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let file = PrivateFile { path };
        f.write_all(text).with_context(|| format!("write {}", file.path.display()))?;
        Ok(file)
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn finds_sipfront_beside_the_executable_then_on_the_path() {
        let (beside, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let exe = beside.path().join("sipfront-load");
        let path = std::env::join_paths([elsewhere.path()]).unwrap();
        assert_eq!(find_sipfront(Some(&exe), Some(&path)), None);
        std::fs::write(elsewhere.path().join("sipfront"), "").unwrap();
        assert_eq!(find_sipfront(Some(&exe), Some(&path)), Some(elsewhere.path().join("sipfront")));
        std::fs::write(beside.path().join("sipfront"), "").unwrap();
        assert_eq!(find_sipfront(Some(&exe), Some(&path)), Some(beside.path().join("sipfront")));
    }
}
