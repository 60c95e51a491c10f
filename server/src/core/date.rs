//! The SIP Date header (RFC 3261 20.17: the RFC 1123 form, always GMT) for a point in time.
//! The formatter (`httpdate`) cannot express a time before 1970 or after 9999; a time is
//! clamped into that range first, so that neither a clock set wrong, a configured duration
//! nor a damaged stored time can make formatting fail.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31 23:59:59 UTC, the last second the form can write.
const LAST: Duration = Duration::from_secs(253_402_300_799);

/// `Tue, 24 Nov 2026 12:00:00 GMT`.
pub fn sip_date(t: SystemTime) -> String {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).min(LAST);
    httpdate::fmt_http_date(UNIX_EPOCH + since_epoch)
}

/// The Date for Unix seconds as the store keeps them.
pub fn sip_date_of_unix(secs: i64) -> String {
    sip_date(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0).min(LAST.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_and_out_of_range() {
        assert_eq!(sip_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(sip_date_of_unix(1_795_000_000), "Wed, 18 Nov 2026 11:06:40 GMT");
        assert_eq!(sip_date_of_unix(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(sip_date_of_unix(-5), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(sip_date_of_unix(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(sip_date(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)), "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
