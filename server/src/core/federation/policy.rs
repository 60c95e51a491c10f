//! The operator's federation policy as the store keeps it (`sipfront federation ...`): a mode
//! and a list of domains, each allowed (possibly with its edge named) or blocked. In `closed`
//! mode only allowed domains federate; in `open` mode any domain does unless blocked.

use crate::core::refusal::Refusal;
use sipfront_storage::{FederationAction, FederationMode, Store, StoreError};
use std::collections::HashMap;

pub struct Policy {
    mode: FederationMode,
    /// By domain, lower case: allowed (with the edge named, if any) or blocked.
    domains: HashMap<String, Entry>,
}

enum Entry {
    Allowed { via: Option<String> },
    Blocked,
}

impl Policy {
    /// The policy the store holds now.
    pub async fn load(store: &dyn Store) -> Result<Policy, StoreError> {
        let mode = store.federation_mode().await?;
        let domains = store
            .federation_domains()
            .await?
            .into_iter()
            .map(|d| {
                let entry = match d.action {
                    FederationAction::Allow => Entry::Allowed { via: d.via },
                    FederationAction::Block => Entry::Blocked,
                };
                (d.domain.to_ascii_lowercase(), entry)
            })
            .collect();
        Ok(Policy { mode, domains })
    }

    pub fn mode(&self) -> FederationMode {
        self.mode
    }

    /// Domains listed (allowed or blocked).
    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Whether requests from `domain` may come in.
    pub fn admits(&self, domain: &str) -> bool {
        self.outbound(domain).is_ok()
    }

    /// Whether requests may go out to `domain`, and the edge the operator named for it
    /// (`host:port`), if any; the refusal otherwise.
    pub fn outbound(&self, domain: &str) -> Result<Option<&str>, Refusal> {
        match (self.domains.get(&domain.to_ascii_lowercase()), self.mode) {
            (Some(Entry::Blocked), _) => Err(Refusal::PartnerNotAllowed),
            (Some(Entry::Allowed { via }), _) => Ok(via.as_deref()),
            (None, FederationMode::Open) => Ok(None),
            (None, FederationMode::Closed) => Err(Refusal::PartnerNotAllowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: FederationMode) -> Policy {
        let mut domains = HashMap::new();
        domains.insert("b.test".to_string(), Entry::Allowed { via: None });
        domains.insert("c.test".to_string(), Entry::Allowed { via: Some("edge.c.test:5061".into()) });
        domains.insert("spam.test".to_string(), Entry::Blocked);
        Policy { mode, domains }
    }

    #[test]
    fn closed_mode_federates_with_the_allow_list_only() {
        let p = policy(FederationMode::Closed);
        assert_eq!(p.outbound("b.test"), Ok(None));
        assert_eq!(p.outbound("C.Test"), Ok(Some("edge.c.test:5061")), "domains in any case");
        assert_eq!(p.outbound("spam.test"), Err(Refusal::PartnerNotAllowed));
        assert_eq!(p.outbound("unlisted.test"), Err(Refusal::PartnerNotAllowed));
        assert!(p.admits("b.test") && !p.admits("unlisted.test") && !p.admits("spam.test"));
    }

    #[test]
    fn open_mode_federates_with_anyone_not_blocked() {
        let p = policy(FederationMode::Open);
        assert_eq!(p.outbound("unlisted.test"), Ok(None));
        assert_eq!(p.outbound("spam.test"), Err(Refusal::PartnerNotAllowed));
        assert!(p.admits("unlisted.test") && !p.admits("SPAM.test"));
    }
}
