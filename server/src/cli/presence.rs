//! `sipfront rules ...` and `sipfront contacts ...`: who may watch whom, and each user's
//! contact list (what a resource-list subscription shows). Changes reach running servers
//! through the store's change log within `database.poll_ms`, live subscriptions included.

use super::archive::{write_csv, Format};
use super::time::iso_time;
use super::users::{csv_records, parse_aor, with_store};
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
    /// Add the contacts of a CSV file (RFC 4180): owner,contact[,group[,display name]] per
    /// record (an `owner,...` header, blank lines and `#` comment lines are skipped), BATCH
    /// records per transaction. Fields are taken as written, spaces included.
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

/// A store error as the operator should read it: `NotFound` for the user named.
pub(super) fn explain(e: StoreError, owner: &str) -> anyhow::Error {
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
            std::fs::read(file)
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

/// The contacts of an import file, each with the line it starts on.
fn parse_contacts(text: &[u8]) -> anyhow::Result<Vec<(usize, Contact)>> {
    let mut contacts = Vec::new();
    for (n, record) in csv_records(text, "owner")? {
        let (owner, contact, group, name) = match record.iter().collect::<Vec<_>>()[..] {
            [o, c] => (o, c, "", ""),
            [o, c, g] => (o, c, g, ""),
            [o, c, g, d] => (o, c, g, d),
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

pub(super) fn print_rows<const N: usize>(
    names: &[&str; N],
    rows: &[[String; N]],
    format: Format,
) -> anyhow::Result<()> {
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
        Format::Csv => write_csv(std::io::stdout().lock(), names, rows)?,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn a_tricky_contacts_file_is_read_as_written() {
        let text = "Owner,Contact,Group,Name\n\
            # alice's list\n\
            alice@example.test, sip:Zoe@Example.TEST ,\" Work, \"\"A\"\" \",\"Zo\u{eb} \"\"Z\"\" O'Brien,\r\n Jr.\"\n\
            \n\
            alice@example.test,bob@example.test\n\
            alice@example.test,carol@example.test,,  Carol  \n\
            alice@example.test,dave\n";
        let err = format!("{:#}", parse_contacts(text.as_bytes()).unwrap_err());
        assert!(err.starts_with("line 8: contact: "), "{err}");
        let contacts = parse_contacts(text.rsplit_once("alice@example.test,dave").unwrap().0.as_bytes()).unwrap();
        let zoe = Contact {
            owner: "alice@example.test".into(),
            contact: "Zoe@example.test".into(),
            group: " Work, \"A\" ".into(),
            display_name: "Zo\u{eb} \"Z\" O'Brien,\r\n Jr.".into(),
        };
        assert_eq!(contacts[0], (3, zoe));
        assert_eq!(
            (contacts[1].0, contacts[1].1.contact.as_str(), contacts[1].1.group.as_str()),
            (6, "bob@example.test", "")
        );
        assert_eq!((contacts[2].0, contacts[2].1.display_name.as_str()), (7, "  Carol  "));
    }
}
