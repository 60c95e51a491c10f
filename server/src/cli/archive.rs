//! `sipfront archive search`: the conversations of a user, modelled on the OCS archiving
//! report: every message between two users (both directions) or between one user and anyone,
//! in a time range, as a table, CSV or JSON.

use super::time::{iso_time, parse_iso_time};
use crate::config::Config;
use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Messages to and from a user.
    Search {
        /// The user (AOR, user@domain).
        #[arg(long)]
        user: String,
        /// The other party (AOR), or `any`.
        #[arg(long, default_value = "any")]
        peer: String,
        /// From this time on (UTC, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (UTC).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// At most this many messages.
        #[arg(long, default_value_t = 10_000)]
        limit: u32,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn run(config: &Config, data_dir: &Path, command: ArchiveCommand) -> anyhow::Result<()> {
    let ArchiveCommand::Search { user, peer, since, until, format, limit } = command;
    let time = |s: &Option<String>, default: i64| -> anyhow::Result<i64> {
        match s {
            None => Ok(default),
            Some(s) => {
                parse_iso_time(s).with_context(|| format!("{s:?} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"))
            }
        }
    };
    let (since, until) = (time(&since, 0)?, time(&until, i64::MAX)?);
    if since >= until {
        bail!("--since must be before --until");
    }
    let aor = |s: &str| -> anyhow::Result<String> {
        let (u, d) = super::users::parse_aor(s)?;
        Ok(format!("{u}@{d}"))
    };
    let user = aor(&user)?;
    let peer = if peer.eq_ignore_ascii_case("any") { None } else { Some(aor(&peer)?) };
    let entries = super::users::with_store(config, data_dir, async |store| {
        Ok(store.search_archive(&user, peer.as_deref(), since, until, limit).await?)
    })?;
    let text = |e: &sipfront_storage::ArchiveEntry| String::from_utf8_lossy(&e.body).into_owned();
    match format {
        Format::Table => {
            println!("{:<19}  {:<28}  {:<28}  TEXT", "TIME (UTC)", "FROM", "TO");
            for e in &entries {
                let t = text(e).replace(['\r', '\n'], " ");
                println!("{:<19}  {:<28}  {:<28}  {t}", iso_time(e.at), e.sender, e.recipient);
            }
            println!("({} messages)", entries.len());
        }
        Format::Csv => {
            let names = ["time", "from", "to", "call_id", "content_type", "first_in_session", "text"];
            let rows = entries.iter().map(|e| {
                [
                    iso_time(e.at),
                    e.sender.clone(),
                    e.recipient.clone(),
                    e.call_id.clone(),
                    e.content_type.clone(),
                    e.first_in_session.to_string(),
                    text(e),
                ]
            });
            write_csv(std::io::stdout().lock(), &names, rows)?;
        }
        Format::Json => {
            let rows: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "time": iso_time(e.at),
                        "unix_time": e.at,
                        "from": e.sender,
                        "to": e.recipient,
                        "call_id": e.call_id,
                        "content_type": e.content_type,
                        "first_in_session": e.first_in_session,
                        "text": text(e),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows).context("writing JSON")?);
        }
    }
    Ok(())
}

/// `names` and then `rows` as RFC 4180 CSV: the `csv` crate quotes a field holding a comma, a
/// quote (doubled), a line break or a `#` (which would start a comment line for the imports),
/// as `user import` and `contacts import` read them.
pub(super) fn write_csv<R: IntoIterator<Item = impl AsRef<[u8]>>>(
    out: impl std::io::Write,
    names: &[&str],
    rows: impl IntoIterator<Item = R>,
) -> anyhow::Result<()> {
    let mut out = csv::WriterBuilder::new().comment(Some(b'#')).from_writer(out);
    out.write_record(names).context("writing CSV")?;
    for row in rows {
        out.write_record(row).context("writing CSV")?;
    }
    out.flush().context("writing CSV")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_as_it_was() {
        let rows = [
            ["Zo\u{eb} \"Z\" O'Brien,\n Jr.", " p,w\"x ", "#3", ""],
            ["#not a comment", "", " ", "x"],
            ["  spaces  ", "a\r\nb", "caf\u{e9}", "plain"],
        ];
        let mut out = Vec::new();
        write_csv(&mut out, &["a", "b", "c", "d"], rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("a,b,c,d\n\"Zo\u{eb} \"\"Z\"\" O'Brien,\n Jr.\",\" p,w\"\"x \","), "{text}");
        let read = super::super::users::csv_records(text.as_bytes(), "a").unwrap();
        let read: Vec<Vec<&str>> = read.iter().map(|(_, r)| r.iter().collect()).collect();
        assert_eq!(read, rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
    }
}
