//! Presence bodies: PIDF documents (RFC 3863, with RFC 4479/4480 elements passed through),
//! watcher information (RFC 3858) and resource-list meta-information (RFC 4662).

pub mod pidf;
pub mod rlmi;
pub mod winfo;
mod xml;

pub use xml::XmlError;
