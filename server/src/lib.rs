//! sipfront: registrar, presence server and stateful proxy for an instant-messaging and
//! presence pool. This crate holds the server's behaviour: transport (sockets and flows),
//! transaction (RFC 3261 17), core (what requests mean), ops (metrics, health, drain) and the
//! operator CLI. It never parses SIP itself (`sipfront-proto` does).

pub mod cli;
pub mod config;
pub mod core;
pub mod ops;
pub mod server;
pub mod state;
pub mod transaction;
pub mod transport;

pub use server::{start, RunningServer};
