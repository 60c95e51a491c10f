//! What an operator sees and controls: metrics, health and readiness over HTTP, graceful drain.

pub mod http;
pub mod metrics;
pub mod process;
pub mod shutdown;
pub mod systemd;
