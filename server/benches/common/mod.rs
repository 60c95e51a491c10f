//! What the benches that start a server in their own process share.

#![allow(dead_code)] // each bench uses a part of it

/// A parameter of a Digest challenge (`realm`, `nonce`...), quoted or not.
pub fn param(challenge: &str, name: &str) -> Option<String> {
    let at = challenge.find(&format!(" {name}=")).or_else(|| challenge.find(&format!(",{name}=")))?;
    let v = &challenge[at + name.len() + 2..];
    match v.strip_prefix('"') {
        Some(q) => q.split('"').next().map(str::to_string),
        None => v.split([',', ' ']).next().map(str::to_string),
    }
}
