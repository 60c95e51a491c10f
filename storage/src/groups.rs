//! What a distribution group stands for: its members with nested groups expanded, as a
//! MESSAGE to the group, a watch of it or a directory query will need them. Written once
//! against [`Store`], so that every caller expands alike and within the same bounds.

use crate::{Result, Store, StoreError};
use std::collections::{HashMap, HashSet, VecDeque};

/// A group expanded by [`expand_group`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The users and remote addresses the group stands for, each once, in the order first
    /// reached (depth first, each group's members by AOR).
    pub members: Vec<String>,
    /// Each loop met: a group reached again on its own path, which is not expanded again. The
    /// path from that group to the one listing it, then the group again (`a`, `b`, `a`: `a`
    /// lists `b`, which lists `a`).
    pub loops: Vec<Vec<String>>,
    /// Groups deeper than the depth limit, whose members are left out; each once.
    pub too_deep: Vec<String>,
    /// Reading stopped at the member limit with a member it would have added still to come:
    /// [`Expansion::members`] is not all of them.
    pub truncated: bool,
}

/// Expands `group`: the distinct users and remote addresses it stands for, nested groups
/// expanded depth first down to `max_depth` levels below it (0: its direct members only,
/// groups among them left out and named in [`Expansion::too_deep`]; 1: the members of its
/// member groups too, and so on), at most `max_members` of them. `NotFound` for an unknown
/// group.
///
/// Bounded whatever the data: members are read a page at a time and reading stops once
/// `max_members` are kept and one more would be added; a group already expanded at the same
/// level or above is not read again (the diamond `a` -> `b`, `c` -> `x` reads `x` once), and a
/// group met again on its own path is a loop, reported and not followed.
pub async fn expand_group(store: &dyn Store, group: &str, max_depth: u32, max_members: usize) -> Result<Expansion> {
    let top = group.to_ascii_lowercase();
    match store.group(&top).await? {
        Some(g) => expand(store, &g, max_depth, max_members).await,
        None => Err(StoreError::NotFound(top)),
    }
}

/// [`expand_group`] of a group the caller has just read (its display name, its existence):
/// the store is not asked for it again.
pub async fn expand(store: &dyn Store, group: &crate::Group, max_depth: u32, max_members: usize) -> Result<Expansion> {
    /// Members read at a time, at most.
    const PAGE: usize = 1000;

    /// A group being read: its AOR, the last member read and those read but not yet taken.
    struct Reading {
        group: String,
        after: String,
        page: VecDeque<crate::GroupMember>,
        exhausted: bool,
    }

    let top = group.aor.to_ascii_lowercase();
    let mut out = Expansion::default();
    let mut kept: HashSet<String> = HashSet::new();
    // The shallowest level each group was expanded at: met again no shallower, it has nothing
    // to add.
    let mut expanded_at: HashMap<String, u32> = HashMap::from([(top.clone(), 0)]);
    // What was reported, to report each once (vectors for the order, sets to look up).
    let (mut loops, mut too_deep, mut left_out) = (HashSet::new(), Vec::new(), HashSet::new());
    // The groups from `top` down to the one being read: `path[i]` is at level `i`.
    let mut path = vec![Reading { group: top, after: String::new(), page: VecDeque::new(), exhausted: false }];

    while let Some(reading) = path.last_mut() {
        let Some(member) = reading.page.pop_front() else {
            if reading.exhausted {
                path.pop();
                continue;
            }
            // Enough to fill the limit and see whether one more comes: a large group is read no
            // further than its members are kept.
            let want = (max_members.saturating_sub(out.members.len()).saturating_add(1)).min(PAGE);
            let limit = u32::try_from(want).unwrap_or(u32::MAX);
            let page = store.group_members_after(&reading.group, &reading.after, limit).await?;
            reading.exhausted = page.len() < want;
            if let Some(last) = page.last() {
                reading.after = last.aor.clone();
            }
            reading.page = page.into();
            continue;
        };
        // Members of the group at `path.len() - 1` are one level below it.
        let level = u32::try_from(path.len()).unwrap_or(u32::MAX);
        if !member.is_group {
            if kept.contains(&member.aor) {
                continue;
            }
            if out.members.len() >= max_members {
                out.truncated = true;
                break;
            }
            kept.insert(member.aor.clone());
            out.members.push(member.aor);
            continue;
        }
        if let Some(start) = path.iter().position(|r| r.group == member.aor) {
            let found: Vec<String> = path[start..].iter().map(|r| r.group.clone()).chain([member.aor]).collect();
            if loops.insert(found.clone()) {
                out.loops.push(found);
            }
            continue;
        }
        if level > max_depth {
            if left_out.insert(member.aor.clone()) {
                too_deep.push(member.aor);
            }
            continue;
        }
        if expanded_at.get(&member.aor).is_some_and(|&at| at <= level) {
            continue;
        }
        expanded_at.insert(member.aor.clone(), level);
        path.push(Reading { group: member.aor, after: String::new(), page: VecDeque::new(), exhausted: false });
    }
    // A group left out at one place may have been expanded at a shallower one.
    out.too_deep = too_deep.into_iter().filter(|g| !expanded_at.contains_key(g)).collect();
    Ok(out)
}
