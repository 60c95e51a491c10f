//! `sipfront rules ...` and `sipfront contacts ...`: who may watch whom, and each user's
//! contact list (what a resource-list subscription shows). Changes reach running servers
//! through the store's change log within `database.poll_ms`, live subscriptions included.

use super::archive::{csv_field, Format};
use super::time::iso_time;
use super::users::{csv_fields, parse_aor, with_store};
use crate::config::Config;
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use sipfront_storage::{Contact, RuleAction, Store, StoreError};
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Let WATCHER (user@domain, or *@domain for a whole domain) see OWNER's presence.
    Allow { owner: String, watcher: String },
    /// Refuse WATCHER's subscriptions to OWNER (403; a live one ends at once).
    Block { owner: String, watcher: String },
    /// Let WATCHER subscribe, and show OWNER offline to it.
    PoliteBlock { owner: String, watcher: String },
    /// Remove OWNER's rule for WATCHER (the default policy applies again).
    Remove { owner: String, watcher: String },
    /// OWNER's rules.
    List {
        owner: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Add CONTACT to OWNER's list (in GROUP), or rename it there.
    Add {
        owner: String,
        contact: String,
        #[arg(long, default_value = "")]
        group: String,
        /// The display name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove CONTACT from OWNER's list: from GROUP, or from every group.
    Remove {
        owner: String,
        contact: String,
        #[arg(long)]
        group: Option<String>,
    },
    /// OWNER's contact list.
    List {
        owner: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Add the contacts of a CSV file: owner,contact[,group[,display name]] per line (an
    /// `owner,...` header and `#` comments are skipped), BATCH lines per transaction.
    Import {
        file: std::path::PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

fn aor(s: &str) -> anyhow::Result<String> {
    let (u, d) = parse_aor(s)?;
    Ok(format!("{u}@{d}"))
}

/// A rule's watcher: `user@domain` or `*@domain` (`sip:` prefix allowed).
fn parse_watcher(s: &str) -> anyhow::Result<String> {
    aor(s).map_err(|_| anyhow!("{s:?} is not a watcher: user@domain, or *@domain for a whole domain"))
}

fn explain(e: StoreError, owner: &str) -> anyhow::Error {
    match e {
        StoreError::NotFound(_) => anyhow!("{owner}: no such user"),
        other => anyhow::Error::new(other),
    }
}

/// Fails with "no such user" unless `owner` is one: reads and removals of an unknown owner's
/// entries find nothing, which would otherwise look like an empty list.
async fn existing(store: &dyn Store, owner: &str) -> anyhow::Result<()> {
    if store.user(owner).await?.is_none() {
        bail!("{owner}: no such user");
    }
    Ok(())
}

pub fn run_rules(config: &Config, data_dir: &Path, command: RulesCommand) -> anyhow::Result<()> {
    with_store(config, data_dir, async |store| {
        let set = async |owner: &str, watcher: &str, action: RuleAction| -> anyhow::Result<()> {
            let (owner, watcher) = (aor(owner)?, parse_watcher(watcher)?);
            store.set_rule(&owner, &watcher, action).await.map_err(|e| explain(e, &owner))?;
            println!("{owner}: {} {watcher}", action.as_str());
            Ok(())
        };
        match command {
            RulesCommand::Allow { owner, watcher } => set(&owner, &watcher, RuleAction::Allow).await,
            RulesCommand::Block { owner, watcher } => set(&owner, &watcher, RuleAction::Block).await,
            RulesCommand::PoliteBlock { owner, watcher } => set(&owner, &watcher, RuleAction::PoliteBlock).await,
            RulesCommand::Remove { owner, watcher } => {
                let (owner, watcher) = (aor(&owner)?, parse_watcher(&watcher)?);
                if !store.remove_rule(&owner, &watcher).await? {
                    existing(&*store, &owner).await?;
                    bail!("{owner} has no rule for {watcher}");
                }
                println!("{owner}: rule for {watcher} removed");
                Ok(())
            }
            RulesCommand::List { owner, format } => {
                let owner = aor(&owner)?;
                existing(&*store, &owner).await?;
                let rows: Vec<[String; 3]> = store
                    .rules(&owner)
                    .await?
                    .into_iter()
                    .map(|r| [r.watcher, r.action.as_str().into(), iso_time(r.updated_at)])
                    .collect();
                print_rows(&["watcher", "action", "updated"], &rows, format)
            }
        }
    })
}

pub fn run_contacts(config: &Config, data_dir: &Path, command: ContactsCommand) -> anyhow::Result<()> {
    // Read and check the whole file before touching the store.
    let import = match &command {
        ContactsCommand::Import { file, .. } => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))
                .and_then(|text| parse_contacts(&text))?,
        ),
        _ => None,
    };
    with_store(config, data_dir, async |store| match command {
        ContactsCommand::Add { owner, contact, group, name } => {
            let owner = aor(&owner)?;
            let c = Contact { owner: owner.clone(), contact: aor(&contact)?, display_name: name, group };
            store.add_contact(&c).await.map_err(|e| explain(e, &owner))?;
            println!("{owner}: {} added", c.contact);
            Ok(())
        }
        ContactsCommand::Remove { owner, contact, group } => {
            let (owner, contact) = (aor(&owner)?, aor(&contact)?);
            let n = store.remove_contact(&owner, &contact, group.as_deref()).await?;
            if n == 0 {
                existing(&*store, &owner).await?;
                match group {
                    Some(g) => bail!("{contact} is not in {owner}'s group {g:?}"),
                    None => bail!("{contact} is not on {owner}'s list"),
                }
            }
            println!("{owner}: {contact} removed ({n} {})", if n == 1 { "entry" } else { "entries" });
            Ok(())
        }
        ContactsCommand::List { owner, format } => {
            let owner = aor(&owner)?;
            existing(&*store, &owner).await?;
            let rows: Vec<[String; 3]> =
                store.contacts(&owner).await?.into_iter().map(|c| [c.group, c.contact, c.display_name]).collect();
            print_rows(&["group", "contact", "name"], &rows, format)
        }
        ContactsCommand::Import { batch, .. } => {
            let mut added = 0;
            for chunk in import.unwrap_or_default().chunks(batch.max(1)) {
                let lines = format!("{}-{}", chunk.first().map_or(0, |c| c.0), chunk.last().map_or(0, |c| c.0));
                let contacts: Vec<Contact> = chunk.iter().map(|(_, c)| c.clone()).collect();
                added += store.add_contacts(&contacts).await.map_err(|e| {
                    let owner = if let StoreError::NotFound(o) = &e { o.clone() } else { String::new() };
                    explain(e, &owner)
                        .context(format!("lines {lines}: none imported, {added} contacts before them were"))
                })?;
            }
            println!("imported {added} contacts");
            Ok(())
        }
    })
}

/// The contacts of an import file, each with its line number.
fn parse_contacts(text: &str) -> anyhow::Result<Vec<(usize, Contact)>> {
    let mut contacts = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') || (n == 1 && line.to_ascii_lowercase().starts_with("owner,")) {
            continue;
        }
        let fields = csv_fields(line);
        let (owner, contact, group, name) = match fields.as_slice() {
            [o, c] => (o, c, "", ""),
            [o, c, g] => (o, c, g.as_str(), ""),
            [o, c, g, d] => (o, c, g.as_str(), d.as_str()),
            _ => bail!("line {n}: expected owner,contact[,group[,display name]]"),
        };
        let contact = Contact {
            owner: aor(owner).with_context(|| format!("line {n}: owner"))?,
            contact: aor(contact).with_context(|| format!("line {n}: contact"))?,
            display_name: name.into(),
            group: group.into(),
        };
        contacts.push((n, contact));
    }
    Ok(contacts)
}

fn print_rows<const N: usize>(names: &[&str; N], rows: &[[String; N]], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let widths: Vec<usize> =
                (0..N).map(|i| rows.iter().map(|r| r[i].len()).chain([names[i].len()]).max().unwrap_or(0)).collect();
            let line = |cells: Vec<&str>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            println!("{}", line(names.to_vec()));
            for r in rows {
                println!("{}", line(r.iter().map(String::as_str).collect()));
            }
            println!("({} {})", rows.len(), if rows.len() == 1 { "entry" } else { "entries" });
        }
        Format::Csv => {
            println!("{}", names.join(","));
            for r in rows {
                println!("{}", r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
            }
        }
        Format::Json => {
            let objects: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::Value::Object(
                        names.iter().zip(r).map(|(n, v)| (n.to_string(), v.clone().into())).collect(),
                    )
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&objects).context("writing JSON")?);
        }
    }
    Ok(())
}
