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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_labels() {
        assert_eq!(code_label(100), "100");
        assert_eq!(code_label(699), "699");
        assert_eq!(code_label(700), "other");
        assert_eq!(code_label(0), "other");
    }
}
