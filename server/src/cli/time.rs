//! The times the command line shows and reads: `YYYY-MM-DD HH:MM:SS` in UTC, as operators
//! read times in reports, and the ISO 8601 subset `--since`/`--until` take. The `time` crate
//! does the calendar, so an impossible date (`2026-02-31`) is refused, not rolled over.

use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// `YYYY-MM-DD HH:MM:SS` (UTC) for Unix seconds; the plain number for a time outside years
/// 0000-9999, which no report should hold but a damaged store might.
pub fn iso_time(secs: i64) -> String {
    let shown = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(shown).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Unix seconds of `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]` (a space for the `T` too, and an
/// optional trailing `Z`), read as UTC; `None` for anything else, impossible dates included.
pub fn parse_iso_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (s, None),
    };
    let date = Date::parse(date, format_description!("[year]-[month]-[day]")).ok()?;
    let time = match time {
        None => Time::MIDNIGHT,
        Some(t) if t.len() > 5 => Time::parse(t, format_description!("[hour]:[minute]:[second]")).ok()?,
        Some(t) => Time::parse(t, format_description!("[hour]:[minute]")).ok()?,
    };
    Some(PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_round_trip() {
        assert_eq!(iso_time(0), "1970-01-01 00:00:00");
        assert_eq!(iso_time(1_795_000_000), "2026-11-18 11:06:40");
        assert_eq!(iso_time(-1), "1969-12-31 23:59:59");
        assert_eq!(iso_time(i64::MAX), i64::MAX.to_string());
        assert_eq!(parse_iso_time("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(parse_iso_time("2026-11-18 11:06:40"), Some(1_795_000_000));
        assert_eq!(parse_iso_time(" 2026-11-18T11:06 "), Some(1_795_000_000 - 40));
        assert_eq!(parse_iso_time("2026-11-18Z"), Some(1_794_960_000));
        assert_eq!(parse_iso_time("1970-01-01"), Some(0));
        assert_eq!(parse_iso_time("2000-02-29"), Some(951_782_400));
        assert_eq!(parse_iso_time(&iso_time(1_795_000_000)), Some(1_795_000_000));
    }

    #[test]
    fn impossible_dates_and_times_are_refused() {
        for bad in [
            "2026-02-31",
            "2026-02-29",
            "2100-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-01-01T24:00",
            "2026-01-01T23:60",
            "2026-01-01T23:59:60",
            "2026-01-01T",
            "2026-01-01T12",
            "2026-01-01T12:00:00:00",
            "2026-1-1",
            "2026-01",
            "",
            "yesterday",
        ] {
            assert_eq!(parse_iso_time(bad), None, "{bad:?}");
        }
    }
}
