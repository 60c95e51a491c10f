//! `sipfront domain ...` and `sipfront user ...`: accounts in the store. Passwords are read
//! from standard input and only their digest hashes (MD5 and SHA-256, so that either algorithm
//! can be offered later without a reset) are stored.

use crate::config::Config;
use anyhow::{bail, Context};
use clap::Subcommand;
use sipfront_proto::digest::{ha1, Algorithm};
use sipfront_storage::{NewUser, Store};
use std::io::{BufRead, Read};
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
    /// Add users from a CSV file: `aor,password[,display name]` per line, in batches of one
    /// transaction each.
    Import {
        file: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
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
            let mut t = String::new();
            std::fs::File::open(file)
                .and_then(|mut f| f.read_to_string(&mut t))
                .with_context(|| format!("reading {}", file.display()))?;
            Some(t)
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
                println!("{}\t{}\t{}", u.aor, if u.enabled { "enabled" } else { "disabled" }, u.display_name);
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
        UserCommand::Import { batch, .. } => import(&*store, text.as_deref().unwrap_or_default(), batch.max(1)).await,
    })
}

async fn set_enabled(store: &dyn Store, aor: &str, enabled: bool) -> anyhow::Result<()> {
    let (u, d) = parse_aor(aor)?;
    store.set_enabled(&format!("{u}@{d}"), enabled).await?;
    println!("{u}@{d}: {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

async fn import(store: &dyn Store, text: &str, batch: usize) -> anyhow::Result<()> {
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 0 && line.to_ascii_lowercase().starts_with("aor,")) {
            continue;
        }
        let fields = csv_fields(line);
        let (aor, password, display) = match fields.as_slice() {
            [a, p] => (a, p, ""),
            [a, p, d] => (a, p, d.as_str()),
            _ => bail!("line {}: expected aor,password[,display name]", n + 1),
        };
        users.push(new_user(aor, password, display).with_context(|| format!("line {}", n + 1))?);
    }
    let mut added = 0;
    for chunk in users.chunks(batch) {
        added += store.add_users(chunk).await.with_context(|| format!("after {added} users"))?;
    }
    println!("imported {added} users");
    Ok(())
}

/// One CSV line: fields separated by commas, optionally in double quotes (`""` is a quote).
pub(super) fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields.into_iter().map(|f| f.trim().to_string()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a@x,pw"), vec!["a@x", "pw"]);
        assert_eq!(csv_fields(r#"a@x,"p,w","Doe, ""J""""#), vec!["a@x", "p,w", r#"Doe, "J""#]);
    }

    #[test]
    fn aors() {
        assert_eq!(parse_aor("sip:Alice@Example.TEST").unwrap(), ("Alice".into(), "example.test".into()));
        assert!(parse_aor("alice").is_err());
        assert!(parse_aor("@x").is_err());
    }
}
