//! `sipfront domain ...` and `sipfront user ...`: accounts in the store. Passwords are read
//! from standard input and only their digest hashes (MD5 and SHA-256, so that either algorithm
//! can be offered later without a reset) are stored.

use crate::config::Config;
use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use sipfront_proto::digest::{ha1, Algorithm};
use sipfront_storage::{NewUser, Store};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum DomainCommand {
    /// Serve a domain.
    Add { domain: String },
    /// List the domains served.
    List,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (and its domain, if new).
    Add {
        aor: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    Remove {
        aor: String,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Set a new password (read from standard input).
    Passwd {
        aor: String,
        #[arg(long)]
        password_stdin: bool,
    },
    Disable {
        aor: String,
    },
    Enable {
        aor: String,
    },
    /// Let the user talk with partner domains (on), or not (off, as for a new user).
    Federation {
        aor: String,
        #[arg(value_enum)]
        state: Switch,
    },
    /// Add users from a CSV file (RFC 4180): `aor,password[,display name]` per record, an
    /// `aor,...` header, blank lines and `#` comment lines skipped, in batches of one
    /// transaction each. Fields are taken as written, spaces included; quote a field to hold
    /// a comma, a quote (doubled) or a line break.
    Import {
        file: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

/// A per-user setting's new state (`user federation AOR on|off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

pub(super) fn with_store<T>(
    config: &Config,
    data_dir: &Path,
    f: impl AsyncFnOnce(Arc<dyn Store>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let data_dir = crate::config::data_dir(data_dir)?;
        let store = sipfront_storage::open(&config.database.url, &data_dir).await.context("opening the store")?;
        f(store).await
    })
}

/// Splits `user@domain`, the domain in lower case.
pub fn parse_aor(aor: &str) -> anyhow::Result<(String, String)> {
    let aor = aor.trim().trim_start_matches("sip:");
    match aor.split_once('@') {
        Some((u, d)) if !u.is_empty() && !d.is_empty() && !d.contains('@') => {
            Ok((u.to_string(), d.to_ascii_lowercase()))
        }
        _ => bail!("{aor:?} is not an address of record (user@domain)"),
    }
}

fn new_user(aor: &str, password: &str, display_name: &str) -> anyhow::Result<NewUser> {
    let (username, domain) = parse_aor(aor)?;
    if password.is_empty() {
        bail!("{aor}: empty password");
    }
    Ok(NewUser {
        ha1_md5: ha1(Algorithm::Md5, &username, &domain, password),
        ha1_sha256: ha1(Algorithm::Sha256, &username, &domain, password),
        username,
        domain,
        display_name: display_name.to_string(),
    })
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if !from_stdin {
        bail!("give the password on standard input with --password-stdin");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

pub fn run_domain(config: &Config, data_dir: &Path, command: DomainCommand) -> anyhow::Result<()> {
    with_store(config, data_dir, async |store| match command {
        DomainCommand::Add { domain } => {
            let created = store.add_domain(&domain.to_ascii_lowercase()).await?;
            println!("{domain}: {}", if created { "added" } else { "already served" });
            Ok(())
        }
        DomainCommand::List => {
            store.domains().await?.iter().for_each(|d| println!("{d}"));
            Ok(())
        }
    })
}

pub fn run_user(config: &Config, data_dir: &Path, command: UserCommand) -> anyhow::Result<()> {
    // Read standard input before starting anything, so that a missing password fails fast.
    let password = match &command {
        UserCommand::Add { password_stdin, .. } | UserCommand::Passwd { password_stdin, .. } => {
            Some(read_password(*password_stdin)?)
        }
        _ => None,
    };
    let text = match &command {
        UserCommand::Import { file, .. } => {
            Some(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?)
        }
        _ => None,
    };
    with_store(config, data_dir, async |store| match command {
        UserCommand::Add { aor, display_name, .. } => {
            let u = new_user(&aor, password.as_deref().unwrap_or_default(), &display_name)?;
            store.add_user(&u).await?;
            println!("{}: added", u.aor());
            Ok(())
        }
        UserCommand::Remove { aor } => {
            let (u, d) = parse_aor(&aor)?;
            store.remove_user(&format!("{u}@{d}")).await?;
            println!("{u}@{d}: removed");
            Ok(())
        }
        UserCommand::List { domain } => {
            for u in store.users(domain.as_deref()).await? {
                // The federation flag last, so that scripts reading the first three fields
                // (`aor`, state, display name) read them as before.
                println!(
                    "{}\t{}\t{}\t{}",
                    u.aor,
                    if u.enabled { "enabled" } else { "disabled" },
                    u.display_name,
                    if u.federation { "federation on" } else { "federation off" }
                );
            }
            Ok(())
        }
        UserCommand::Passwd { aor, .. } => {
            let u = new_user(&aor, password.as_deref().unwrap_or_default(), "")?;
            store.set_credentials(&u.aor(), &u.ha1_md5, &u.ha1_sha256).await?;
            println!("{}: password changed", u.aor());
            Ok(())
        }
        UserCommand::Disable { aor } => set_enabled(&*store, &aor, false).await,
        UserCommand::Enable { aor } => set_enabled(&*store, &aor, true).await,
        UserCommand::Federation { aor, state } => {
            let (u, d) = parse_aor(&aor)?;
            let aor = format!("{u}@{d}");
            let on = state == Switch::On;
            store.set_user_federation(&aor, on).await.map_err(|e| super::presence::explain(e, &aor))?;
            println!("{aor}: federation {}", if on { "on" } else { "off" });
            Ok(())
        }
        UserCommand::Import { batch, .. } => import(&*store, &text.unwrap_or_default(), batch.max(1)).await,
    })
}

async fn set_enabled(store: &dyn Store, aor: &str, enabled: bool) -> anyhow::Result<()> {
    let (u, d) = parse_aor(aor)?;
    store.set_enabled(&format!("{u}@{d}"), enabled).await?;
    println!("{u}@{d}: {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

async fn import(store: &dyn Store, text: &[u8], batch: usize) -> anyhow::Result<()> {
    let (users, spaced) = parse_users(text)?;
    if let Some(n) = spaced {
        // Files once read with fields trimmed (`alice@example.test, secret`) now give passwords
        // with spaces: say so rather than let the users find out at their first login.
        eprintln!("note: the password on line {n} (and maybe others) begins or ends with a space, kept as written");
    }
    let mut added = 0;
    for chunk in users.chunks(batch) {
        added += store.add_users(chunk).await.with_context(|| format!("after {added} users"))?;
    }
    println!("imported {added} users");
    Ok(())
}

/// The users of an import file, checked before any is stored, and the first line whose
/// password begins or ends with a space.
fn parse_users(text: &[u8]) -> anyhow::Result<(Vec<NewUser>, Option<usize>)> {
    let (mut users, mut spaced) = (Vec::new(), None);
    for (n, record) in csv_records(text, "aor")? {
        let (aor, password, display) = match record.iter().collect::<Vec<_>>()[..] {
            [a, p] => (a, p, ""),
            [a, p, d] => (a, p, d),
            _ => bail!("line {n}: expected aor,password[,display name]"),
        };
        // `user add` reads a password from one line, and a client types it on one: a line
        // break here is a quote left open, which would swallow the lines after it.
        if password.contains(['\r', '\n']) {
            bail!("line {n}: a line break in the password (a quote left open?)");
        }
        if password.trim() != password {
            spaced = spaced.or(Some(n));
        }
        users.push(new_user(aor, password, display).with_context(|| format!("line {n}"))?);
    }
    Ok((users, spaced))
}

/// The records of an import file (RFC 4180 CSV: a field in double quotes may hold commas,
/// doubled quotes and line breaks), each with the line it starts on. Blank lines, lines
/// starting with `#` and a first record whose first field is `header` (any case) are skipped.
/// Fields are taken as written, surrounding spaces included (RFC 4180 2.4): a reader cannot
/// tell `"  pw"` from `  pw` once parsed, and writers (spreadsheets, `csv` libraries) quote
/// only fields holding a comma, a quote or a line break, so trimming would change passwords.
/// Addresses, which hold no spaces, are trimmed where [`parse_aor`] reads them.
pub(super) fn csv_records(text: &[u8], header: &str) -> anyhow::Result<Vec<(usize, csv::StringRecord)>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).comment(Some(b'#')).from_reader(text);
    let mut records = Vec::new();
    let mut first = true;
    // The reader's position (byte and line) is where it began reading, before the line ends
    // and comment lines it skipped: a record starts past those, on the line counted here.
    let (mut counted, mut lines) = (0, 0);
    let mut bytes = csv::ByteRecord::new();
    loop {
        let mut start = usize::try_from(reader.position().byte()).unwrap_or(usize::MAX);
        if !reader.read_byte_record(&mut bytes).context("reading CSV")? {
            return Ok(records);
        }
        loop {
            match text.get(start) {
                Some(b'\r' | b'\n') => start += 1,
                Some(b'#') => {
                    start = text[start..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| start + i + 1)
                }
                _ => break,
            }
        }
        lines += text.get(counted..start).unwrap_or_default().iter().filter(|&&b| b == b'\n').count();
        counted = counted.max(start);
        let line = lines + 1;
        let record = csv::StringRecord::from_byte_record(std::mem::take(&mut bytes))
            .map_err(|e| anyhow::anyhow!("line {line}: field {} is not UTF-8", e.utf8_error().field() + 1))?;
        // A line of spaces is blank too (the reader skips only empty lines).
        let first_field = record.get(0).unwrap_or_default();
        if record.len() == 1 && first_field.trim().is_empty() {
            continue;
        }
        let is_header = first && first_field.trim().eq_ignore_ascii_case(header);
        first = false;
        if !is_header {
            records.push((line, record));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    /// A tricky file: quotes, commas, a line break and spaces inside quotes, UTF-8, a header,
    /// a comment, blank lines, CRLF line ends.
    const TRICKY: &str = "AOR,Password,Display name\r\n\
        # staff\r\n\
        \r\n\
        zoe@example.test,\" p,w\"\"x \",\"Zo\u{eb} \"\"Z\"\" O'Brien,\r\n Jr.\"\r\n\
        \x20\x20\r\n\
        sip:bob@Example.TEST,b\u{f8}b,\r\n\
        carol@example.test,  two spaces  \n";

    #[test]
    fn a_tricky_file_is_read_as_written() {
        let records = csv_records(TRICKY.as_bytes(), "aor").unwrap();
        let fields: Vec<(usize, Vec<&str>)> = records.iter().map(|(n, r)| (*n, r.iter().collect())).collect();
        assert_eq!(
            fields,
            vec![
                (4, vec!["zoe@example.test", " p,w\"x ", "Zo\u{eb} \"Z\" O'Brien,\r\n Jr."]),
                (7, vec!["sip:bob@Example.TEST", "b\u{f8}b", ""]),
                (8, vec!["carol@example.test", "  two spaces  "]),
            ]
        );
        let (users, spaced) = parse_users(TRICKY.as_bytes()).unwrap();
        assert_eq!(spaced, Some(4));
        assert_eq!(users[0].aor(), "zoe@example.test");
        assert_eq!(users[0].display_name, "Zo\u{eb} \"Z\" O'Brien,\r\n Jr.");
        assert_eq!(users[0].ha1_md5, ha1(Algorithm::Md5, "zoe", "example.test", " p,w\"x "));
        assert_eq!(users[1].aor(), "bob@example.test");
        assert_eq!(users[1].ha1_sha256, ha1(Algorithm::Sha256, "bob", "example.test", "b\u{f8}b"));
        assert_eq!(users[2].ha1_md5, ha1(Algorithm::Md5, "carol", "example.test", "  two spaces  "));
    }

    #[test]
    fn only_a_first_record_is_a_header() {
        let records = csv_records(b"# users\naor,password\nalice@x,pw\naor,pw2\n", "aor").unwrap();
        let firsts: Vec<&str> = records.iter().map(|(_, r)| &r[0]).collect();
        assert_eq!(firsts, vec!["alice@x", "aor"]);
    }

    #[test]
    fn bad_records_name_their_line() {
        let err = |text: &[u8]| format!("{:#}", parse_users(text).unwrap_err());
        assert_eq!(err(b"a@x,pw\n\nb@x\n"), "line 3: expected aor,password[,display name]");
        assert_eq!(err(b"a@x,pw,name,more\n"), "line 1: expected aor,password[,display name]");
        assert!(err(b"a@x,pw\nnobody,pw\n").starts_with("line 2: "));
        assert_eq!(err(b"a@x,pw\nb@x,\n"), "line 2: b@x: empty password");
        assert_eq!(err(b"a@x,\"pw\nb@x,pw\n"), "line 1: a line break in the password (a quote left open?)");
        assert_eq!(err(b"a@x,pw\nb@x,p\xffw\n"), "line 2: field 2 is not UTF-8");
    }

    #[test]
    fn aors() {
        assert_eq!(parse_aor("sip:Alice@Example.TEST").unwrap(), ("Alice".into(), "example.test".into()));
        assert!(parse_aor("alice").is_err());
        assert!(parse_aor("@x").is_err());
    }
}
