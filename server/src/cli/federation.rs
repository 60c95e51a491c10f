//! `sipfront federation ...`: the operator's federation policy (issue 20), which partner
//! organisations' domains users may talk with: partner domains allowed (their edge found by
//! DNS SRV, or named with `--via`) or blocked, and the mode that decides for every other
//! domain. Which users federate is `sipfront user federation`. Changes reach running servers
//! through the store's change log within `database.poll_ms`.

use super::users::with_store;
use crate::config::Config;
use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use sipfront_storage::{FederationAction, FederationDomain, FederationMode};
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum FederationCommand {
    /// Federate with DOMAIN, in either mode (an entry for DOMAIN is replaced).
    Allow {
        domain: String,
        /// The partner's edge, instead of the one DNS SRV finds for DOMAIN.
        #[arg(long, value_name = "HOST:PORT")]
        via: Option<String>,
    },
    /// Never federate with DOMAIN, in either mode (an entry for DOMAIN is replaced).
    Block { domain: String },
    /// Remove DOMAIN's entry: the mode decides for it again.
    Remove { domain: String },
    /// The mode, then every domain with its action and edge (`-`: found by DNS SRV).
    List,
    /// Print the mode, or set it.
    Mode { mode: Option<Mode> },
}

/// [`FederationMode`] as the command line spells it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// Only allowed domains.
    Closed,
    /// Any domain whose edge DNS SRV finds, except blocked ones.
    Open,
}

impl From<Mode> for FederationMode {
    fn from(m: Mode) -> FederationMode {
        match m {
            Mode::Closed => FederationMode::Closed,
            Mode::Open => FederationMode::Open,
        }
    }
}

pub fn run(config: &Config, data_dir: &Path, command: FederationCommand) -> anyhow::Result<()> {
    let entry = |domain, action, via| FederationDomain { domain, action, via };
    match command {
        FederationCommand::Allow { domain, via } => set(config, data_dir, entry(domain, FederationAction::Allow, via)),
        FederationCommand::Block { domain } => set(config, data_dir, entry(domain, FederationAction::Block, None)),
        FederationCommand::Remove { domain } => with_store(config, data_dir, async |store| {
            let domain = domain.to_ascii_lowercase();
            if !store.remove_federation_domain(&domain).await? {
                bail!("{domain} is not in the federation policy");
            }
            println!("{domain}: removed");
            Ok(())
        }),
        FederationCommand::List => with_store(config, data_dir, async |store| {
            let mode = store.federation_mode().await?;
            let domains = store.federation_domains().await?;
            println!("mode: {}", mode.as_str());
            for d in domains {
                println!("{}\t{}\t{}", d.domain, d.action.as_str(), d.via.as_deref().unwrap_or("-"));
            }
            Ok(())
        }),
        FederationCommand::Mode { mode: None } => with_store(config, data_dir, async |store| {
            println!("{}", store.federation_mode().await?.as_str());
            Ok(())
        }),
        FederationCommand::Mode { mode: Some(mode) } => with_store(config, data_dir, async |store| {
            let mode = FederationMode::from(mode);
            store.set_federation_mode(mode).await?;
            println!("federation mode: {}", mode.as_str());
            Ok(())
        }),
    }
}

/// Sets a domain's entry; a bad domain or edge is refused before the store is opened.
fn set(config: &Config, data_dir: &Path, entry: FederationDomain) -> anyhow::Result<()> {
    let entry = entry.checked()?;
    with_store(config, data_dir, async |store| {
        // Our own users' domain is never a partner's: an entry for it could only be a typo.
        if store.has_domain(&entry.domain).await? {
            bail!("{} is served here, not a partner's domain", entry.domain);
        }
        store.set_federation_domain(&entry).await?;
        match &entry.via {
            Some(via) => println!("{}: {} via {via}", entry.domain, entry.action.as_str()),
            None => println!("{}: {}", entry.domain, entry.action.as_str()),
        }
        Ok(())
    })
}
