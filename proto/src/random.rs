//! Random tokens (tags, branches, entity tags, nonces, Call-IDs) from a cryptographically
//! secure generator: `rand`'s thread generator, ChaCha12 seeded and reseeded from the operating
//! system. A tag or branch an attacker could predict would let them answer or cancel another
//! party's transaction, or guess a dialog; being unpredictable costs a few nanoseconds more
//! than a fast generator.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

/// `n` random characters from `A-Za-z0-9` (5.95 bits each).
pub fn alphanumeric(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// Appends `n` random characters from `A-Za-z0-9` to `out`.
pub fn push_alphanumeric(out: &mut String, n: usize) {
    Alphanumeric.append_string(&mut rand::rng(), out, n);
}

/// A random 64-bit number.
pub fn u64() -> u64 {
    rand::rng().random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_alphanumeric_and_differ() {
        let a = alphanumeric(16);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, alphanumeric(16));
        let mut s = String::from("z9hG4bK");
        push_alphanumeric(&mut s, 10);
        assert_eq!(s.len(), 17);
        assert_ne!(u64(), u64());
    }
}
