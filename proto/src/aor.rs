//! Addresses of record (RFC 3261 10): `user@domain`, what a user is known by. The user part is
//! kept as sent (unescaped), the domain in lower case; two AORs are the same when they match
//! ignoring ASCII case, as the registrar compares a REGISTER's To with the user who
//! authenticated. Built only from a SIP URI with a user part and a domain name, or from text of
//! that shape, so an `Aor` always has both parts.

use crate::uri::{unescape, Host, Uri};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

#[derive(Clone)]
pub struct Aor {
    /// `user@domain`, the domain in lower case.
    text: Arc<str>,
    /// Where the `@` before the domain is.
    at: usize,
}

impl Aor {
    /// The AOR of a SIP or SIPS URI (a From, To or Request-URI): `None` for another scheme, a
    /// URI without a user part, or a host that is an IP address.
    pub fn from_uri(uri: &Uri<'_>) -> Option<Aor> {
        if !uri.is_sip() {
            return None;
        }
        let user = unescape(uri.user()?);
        let Host::Name(domain) = uri.host() else { return None };
        Aor::from_parts(&String::from_utf8_lossy(&user), &String::from_utf8_lossy(domain))
    }

    /// `user@domain`, optionally with a `sip:` or `sips:` scheme; the domain is the part after
    /// the last `@`. `None` when either part is empty.
    pub fn parse(text: &str) -> Option<Aor> {
        let text = text.strip_prefix("sip:").or_else(|| text.strip_prefix("sips:")).unwrap_or(text);
        let (user, domain) = text.rsplit_once('@')?;
        Aor::from_parts(user, domain)
    }

    fn from_parts(user: &str, domain: &str) -> Option<Aor> {
        if user.is_empty() || domain.is_empty() {
            return None;
        }
        Some(Aor { text: Arc::from(format!("{user}@{}", domain.to_ascii_lowercase())), at: user.len() })
    }

    pub fn user(&self) -> &str {
        &self.text[..self.at]
    }

    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The domain of AOR text as the store and dynamic state keep it (`user@domain`): what
    /// follows the last `@`, empty when there is none.
    pub fn domain_of(text: &str) -> &str {
        text.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// The text, shared (the form maps of dynamic state are keyed by).
    pub fn to_arc(&self) -> Arc<str> {
        self.text.clone()
    }
}

impl PartialEq for Aor {
    fn eq(&self, other: &Aor) -> bool {
        self.text.eq_ignore_ascii_case(&other.text)
    }
}

impl Eq for Aor {}

/// Against text as the store or a header gives it: the same comparison.
impl PartialEq<str> for Aor {
    fn eq(&self, other: &str) -> bool {
        self.text.eq_ignore_ascii_case(other)
    }
}

impl PartialEq<&str> for Aor {
    fn eq(&self, other: &&str) -> bool {
        self.text.eq_ignore_ascii_case(other)
    }
}

impl PartialEq<String> for Aor {
    fn eq(&self, other: &String) -> bool {
        self.text.eq_ignore_ascii_case(other)
    }
}

/// Consistent with equality: ASCII case folded.
impl Hash for Aor {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.text.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl AsRef<str> for Aor {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Option<Aor> {
        Aor::from_uri(&Uri::parse(s.as_bytes()).ok()?)
    }

    #[test]
    fn from_uris() {
        let a = uri("sip:Alice@Example.TEST;transport=tcp").expect("an AOR");
        assert_eq!((a.user(), a.domain(), a.as_str()), ("Alice", "example.test", "Alice@example.test"));
        assert_eq!(uri("sips:a%40b@x.test").map(|a| a.user().to_string()), Some("a@b".into()));
        assert_eq!(uri("sip:example.test"), None, "no user part");
        assert_eq!(uri("sip:alice@127.0.0.1"), None, "an address is no domain");
        assert_eq!(uri("tel:+15551234"), None);
    }

    #[test]
    fn from_text() {
        let a = Aor::parse("sip:bob@Example.test").expect("an AOR");
        assert_eq!((a.user(), a.domain()), ("bob", "example.test"));
        assert_eq!(Aor::parse("a@b@x.test").map(|a| a.domain().to_string()), Some("x.test".into()));
        assert_eq!(Aor::parse("bob"), None);
        assert_eq!(Aor::parse("@x.test"), None);
        assert_eq!(Aor::parse("bob@"), None);
    }

    #[test]
    fn compared_ignoring_ascii_case() {
        let (a, b) = (Aor::parse("Alice@example.test"), Aor::parse("alice@EXAMPLE.test"));
        assert_eq!(a, b);
        let hash = |a: &Option<Aor>| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            a.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        assert!(a.is_some_and(|a| a == "ALICE@example.test"));
    }
}
