//! Building the responses this server sends as a UAS.

use sipfront_proto::{HeaderName, Message};

/// A response to `req` with a To tag (RFC 3261 8.2.6.2) and a Server header; the caller adds
/// what the status needs (Allow, WWW-Authenticate, Contact...). The transaction layer writes
/// Content-Length when it sends it.
pub fn response(req: &Message, code: u16, agent: &str) -> Message {
    let mut r = req.response_to(code);
    if code > 100 {
        r.set_to_tag(&new_tag());
    }
    r.push_header(HeaderName::Server, agent.to_string());
    r
}

/// A fresh tag: 10 random alphanumerics, about 59 bits (RFC 3261 19.3 asks for 32 at least).
pub fn new_tag() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(10).collect()
}

/// The status code as a metric label, without allocating per response: the 600 labels
/// "100".."699" are made once.
pub fn code_label(code: u16) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (100..700).map(|c: u16| &*Box::leak(c.to_string().into_boxed_str())).collect());
    labels.get(usize::from(code).wrapping_sub(100)).copied().unwrap_or("other")
}

/// An RFC 1123 date (`Tue, 24 Nov 2026 12:00:00 GMT`), the form of SIP's Date header (RFC
/// 3261 20.17).
pub fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(1_795_000_000)), "Wed, 18 Nov 2026 11:06:40 GMT");
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn code_labels() {
        assert_eq!(code_label(100), "100");
        assert_eq!(code_label(699), "699");
        assert_eq!(code_label(700), "other");
        assert_eq!(code_label(0), "other");
    }
}
