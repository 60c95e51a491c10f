//! Presence bodies: PIDF documents (RFC 3863, with RFC 4479/4480 elements passed through),
//! watcher information (RFC 3858) and resource-list meta-information with its
//! multipart/related body (RFC 4662).
//!
//! Every parser here takes bytes from the network: it answers a document or an error, never
//! panics, and refuses what is not well-formed XML as a whole, so that what it keeps can be
//! sent on to other clients. Everything written is escaped and starts with an XML declaration.

pub mod pidf;
pub mod rlmi;
pub mod winfo;
mod xml;
