//! `sipfront pool status`: the pool's members as the shared store knows them, each with its
//! state as the other members judge it (live, leaving, or dead once silent for longer than
//! `pool.member_timeout_ms`), how long since its last heartbeat, and what it holds.

use super::archive::Format;
use super::presence::print_rows;
use super::time::iso_time;
use super::users::with_store;
use crate::config::Config;
use crate::core::pool::MemberState;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Every member: address, state (live, leaving, dead), seconds since its heartbeat, users
    /// homed and client connections held, and when it started.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub fn run(config: &Config, data_dir: &Path, command: PoolCommand) -> anyhow::Result<()> {
    let PoolCommand::Status { format } = command;
    with_store(config, data_dir, async |store| {
        let rows: Vec<[String; 7]> = store
            .members()
            .await?
            .into_iter()
            .map(|seen| {
                let state = MemberState::of(&seen, config.pool.member_timeout_ms).label().to_string();
                let m = seen.member;
                let age = format!("{:.1}", seen.silent_ms.max(0) as f64 / 1000.0);
                [
                    m.id,
                    m.address,
                    state,
                    age,
                    m.users_homed.to_string(),
                    m.connections.to_string(),
                    iso_time(m.started_at),
                ]
            })
            .collect();
        let names = ["member", "address", "state", "heartbeat_age_s", "users_homed", "connections", "started"];
        print_rows(&names, &rows, format)
    })
}
