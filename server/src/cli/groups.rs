//! `sipfront group ...`: distribution groups (issue 21), addresses of our domains that stand
//! for their members: users, other groups (nested) and remote addresses. What a group expands
//! to is the store's [`sipfront_storage::expand_group`]; changes reach running servers through the store's
//! change log within `database.poll_ms`.

use super::users::{csv_records, parse_aor, with_store};
use crate::config::Config;
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use sipfront_storage::{expand, Store, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many levels of nested groups `group show` follows unless told otherwise.
const DEFAULT_MAX_DEPTH: u32 = 10;
/// How many members `group show` counts at most unless told otherwise: past it, it says so.
const DEFAULT_MAX_MEMBERS: usize = 100_000;
/// Direct members read from the store at a time by `group show`.
const PAGE: u32 = 1000;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Add a group (and its domain, if new): GROUP is user@domain, no user's address.
    Add {
        group: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Remove a group with its members; groups that list it lose it.
    Remove { group: String },
    /// Every group (of one domain): AOR, display name and how many direct members.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// A group: its display name, its direct members (groups marked), then how many members
    /// it expands to with nested groups followed, and any loop or group left too deep.
    Show {
        group: String,
        /// Levels of nested groups followed (0: direct members only).
        #[arg(long, default_value_t = DEFAULT_MAX_DEPTH)]
        max_depth: u32,
        /// Members counted at most.
        #[arg(long, default_value_t = DEFAULT_MAX_MEMBERS)]
        max_members: usize,
    },
    /// A group's direct members.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Add the memberships of a CSV file (RFC 4180): group,member per record (a `group,...`
    /// header, blank lines and `#` comment lines skipped), BATCH records per transaction.
    /// Memberships already there are counted and left as they are.
    Import {
        file: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Add MEMBER (a user, another group or a remote user@domain) to GROUP.
    Add { group: String, member: String },
    /// Remove MEMBER from GROUP.
    Remove { group: String, member: String },
}

/// An address as groups keep it: `user@domain` (`sip:` allowed), all in lower case.
fn address(s: &str) -> anyhow::Result<String> {
    let (u, d) = parse_aor(s)?;
    Ok(format!("{u}@{d}").to_ascii_lowercase())
}

/// A store error as the operator should read it: `NotFound` for the group named.
fn explain(e: StoreError, group: &str) -> anyhow::Error {
    match e {
        StoreError::NotFound(_) => anyhow!("{group}: no such group"),
        other => anyhow::Error::new(other),
    }
}

pub fn run(config: &Config, data_dir: &Path, command: GroupCommand) -> anyhow::Result<()> {
    // Read and check the whole file before touching the store.
    let file = match &command {
        GroupCommand::Import { file, .. } => Some(
            std::fs::read(file)
                .with_context(|| format!("reading {}", file.display()))
                .and_then(|text| parse_memberships(&text))?,
        ),
        _ => None,
    };
    with_store(config, data_dir, async |store| match command {
        GroupCommand::Add { group, display_name } => {
            let group = address(&group)?;
            // `alice+contacts@...` is Alice's contact list as a SUBSCRIBE names it: a group of
            // that name could never be reached.
            let suffix = config.presence.list_suffix.to_ascii_lowercase();
            if !suffix.is_empty() && group.split('@').next().is_some_and(|user| user.ends_with(&suffix)) {
                bail!("{group}: a user part ending in {suffix:?} names a contact list (presence.list_suffix)");
            }
            match store.add_group(&group, &display_name).await {
                Ok(()) => {
                    println!("{group}: added");
                    Ok(())
                }
                Err(StoreError::Conflict(_)) if store.user(&group).await?.is_some() => {
                    bail!("{group} is a user's address")
                }
                Err(StoreError::Conflict(_)) => bail!("{group}: a group already"),
                Err(e) => Err(e.into()),
            }
        }
        GroupCommand::Remove { group } => {
            let group = address(&group)?;
            store.remove_group(&group).await.map_err(|e| explain(e, &group))?;
            println!("{group}: removed");
            Ok(())
        }
        GroupCommand::List { domain } => {
            for g in store.groups(domain.as_deref()).await? {
                println!("{}\t{}\t{}", g.aor, g.display_name, g.direct_members);
            }
            Ok(())
        }
        GroupCommand::Show { group, max_depth, max_members } => {
            show(&*store, &address(&group)?, max_depth, max_members).await
        }
        GroupCommand::Member { command: MemberCommand::Add { group, member } } => {
            let (group, member) = (address(&group)?, address(&member)?);
            if !store.add_group_member(&group, &member).await.map_err(|e| explain(e, &group))? {
                bail!("{member} is a member of {group} already");
            }
            println!("{group}: {member} added");
            Ok(())
        }
        GroupCommand::Member { command: MemberCommand::Remove { group, member } } => {
            let (group, member) = (address(&group)?, address(&member)?);
            if !store.remove_group_member(&group, &member).await.map_err(|e| explain(e, &group))? {
                bail!("{member} is not a member of {group}");
            }
            println!("{group}: {member} removed");
            Ok(())
        }
        GroupCommand::Import { batch, .. } => import(&*store, file.unwrap_or_default(), batch.max(1)).await,
    })
}

/// `group show`: the group, its direct members a page at a time (a group of 50,000 prints
/// without being held whole), then what it expands to.
async fn show(store: &dyn Store, group: &str, max_depth: u32, max_members: usize) -> anyhow::Result<()> {
    let Some(g) = store.group(group).await? else {
        bail!("{group}: no such group");
    };
    println!("group: {}", g.aor);
    println!("display name: {}", g.display_name);
    println!("direct members: {}", g.direct_members);
    let mut after = String::new();
    loop {
        let page = store.group_members_after(group, &after, PAGE).await?;
        for m in &page {
            println!("  {}{}", m.aor, if m.is_group { " (group)" } else { "" });
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = last.aor.clone(),
            _ => break,
        }
    }
    let e = expand(store, &g, max_depth, max_members).await.map_err(|e| explain(e, group))?;
    let n = e.members.len();
    let members = if n == 1 { "member" } else { "members" };
    if e.truncated {
        println!("expanded: more than {n} {members} (--max-members)");
    } else {
        println!("expanded: {n} {members}");
    }
    for path in &e.loops {
        println!("loop: {}", path.join(" -> "));
    }
    for g in &e.too_deep {
        println!("too deep: {g} (deeper than --max-depth {max_depth}, not expanded)");
    }
    Ok(())
}

/// Adds the memberships of an import file, BATCH per transaction, once every group it names
/// is known: an unknown group (a typo, or one to add first) stops it before anything is
/// written. Should a group go meanwhile, its batch is refused whole and the import stops,
/// naming the lines and how many memberships went in before them.
async fn import(store: &dyn Store, memberships: Vec<(usize, (String, String))>, batch: usize) -> anyhow::Result<()> {
    let mut first_line: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, (group, _)) in &memberships {
        first_line.entry(group.as_str()).or_insert(*n);
    }
    for (group, n) in first_line {
        if store.group(group).await?.is_none() {
            bail!("line {n}: {group}: no such group (nothing imported)");
        }
    }
    let (mut added, mut read) = (0, 0);
    for chunk in memberships.chunks(batch) {
        let lines = format!("{}-{}", chunk.first().map_or(0, |c| c.0), chunk.last().map_or(0, |c| c.0));
        let pairs: Vec<(String, String)> = chunk.iter().map(|(_, p)| p.clone()).collect();
        added += store.add_group_members(&pairs).await.map_err(|e| {
            let group = if let StoreError::NotFound(g) = &e { g.clone() } else { String::new() };
            explain(e, &group).context(format!("lines {lines}: none imported, {added} memberships before them were"))
        })?;
        read += chunk.len();
    }
    println!("imported {added} memberships ({} there already)", read - added);
    Ok(())
}

/// The memberships of an import file, each with the line it starts on; a bad address or a
/// group listed in itself is named by its line.
fn parse_memberships(text: &[u8]) -> anyhow::Result<Vec<(usize, (String, String))>> {
    let mut memberships = Vec::new();
    for (n, record) in csv_records(text, "group")? {
        let [group, member] = record.iter().collect::<Vec<_>>()[..] else {
            bail!("line {n}: expected group,member");
        };
        let group = address(group).with_context(|| format!("line {n}: group"))?;
        let member = address(member).with_context(|| format!("line {n}: member"))?;
        if group == member {
            bail!("line {n}: {group} cannot be a member of itself");
        }
        memberships.push((n, (group, member)));
    }
    Ok(memberships)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn a_memberships_file_is_read_in_lower_case_by_line() {
        let text = "Group,Member\n\
            # sales\n\
            Sales@Example.TEST, sip:Alice@example.test \n\
            \n\
            sales@example.test,\"zoe@partner.example\"\n";
        let read = parse_memberships(text.as_bytes()).unwrap();
        let pair = |g: &str, m: &str| (g.to_string(), m.to_string());
        assert_eq!(
            read,
            vec![
                (3, pair("sales@example.test", "alice@example.test")),
                (5, pair("sales@example.test", "zoe@partner.example"))
            ]
        );
        let err = |text: &str| format!("{:#}", parse_memberships(text.as_bytes()).unwrap_err());
        assert_eq!(err("a@x,b@x\nc@x\n"), "line 2: expected group,member");
        assert_eq!(err("a@x,b@x,c@x\n"), "line 1: expected group,member");
        assert!(err("a@x,b@x\na@x,bob\n").starts_with("line 2: member: "));
        assert!(err("sales,b@x\n").starts_with("line 1: group: "));
        assert_eq!(err("a@x,b@x\nA@x,sip:a@X\n"), "line 2: a@x cannot be a member of itself");
    }
}
