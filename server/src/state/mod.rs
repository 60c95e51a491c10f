//! Dynamic state, in memory: bindings, nonces, lockouts, and the expiry that removes each
//! exactly when it ends (a task that sleeps until the next deadline, never a periodic scan).

pub mod bindings;
pub mod expiry;
pub mod publications;
pub mod subscriptions;
