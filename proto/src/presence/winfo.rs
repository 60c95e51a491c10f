//! Watcher information (RFC 3857 event package `presence.winfo`, RFC 3858 document format):
//! who watches a presentity and in what state, so that its client can ask the user to approve.
//! The server writes these documents; the parser serves the tests and the load generator.

use super::xml;

pub const CONTENT_TYPE: &str = "application/watcherinfo+xml";
pub const NS: &str = "urn:ietf:params:xml:ns:watcherinfo";

/// The state of a watcher's subscription (RFC 3857 section 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherStatus {
    Pending,
    Active,
    Waiting,
    Terminated,
}

/// What made the subscription enter its state (RFC 3857 section 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherEvent {
    Subscribe,
    Approved,
    Deactivated,
    Probation,
    Rejected,
    Timeout,
    Giveup,
    Noresource,
}

impl WatcherStatus {
    /// The `status` attribute value (RFC 3858 section 4.4).
    pub fn as_str(self) -> &'static str {
        match self {
            WatcherStatus::Pending => "pending",
            WatcherStatus::Active => "active",
            WatcherStatus::Waiting => "waiting",
            WatcherStatus::Terminated => "terminated",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [Self::Pending, Self::Active, Self::Waiting, Self::Terminated].into_iter().find(|v| v.as_str() == s)
    }
}

impl WatcherEvent {
    /// The `event` attribute value (RFC 3858 section 4.4, the transitions of RFC 3857 section 5.1).
    pub fn as_str(self) -> &'static str {
        match self {
            WatcherEvent::Subscribe => "subscribe",
            WatcherEvent::Approved => "approved",
            WatcherEvent::Deactivated => "deactivated",
            WatcherEvent::Probation => "probation",
            WatcherEvent::Rejected => "rejected",
            WatcherEvent::Timeout => "timeout",
            WatcherEvent::Giveup => "giveup",
            WatcherEvent::Noresource => "noresource",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        use WatcherEvent::*;
        [Subscribe, Approved, Deactivated, Probation, Rejected, Timeout, Giveup, Noresource]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A `<watcher>` (RFC 3858 section 4.4): one subscription to the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    /// Unique for the subscription, stable across documents.
    pub id: String,
    pub uri: String,
    pub display_name: Option<String>,
    pub status: WatcherStatus,
    pub event: WatcherEvent,
    /// Seconds since the subscription was created.
    pub duration_subscribed: Option<u64>,
}

/// A `<watcher-list>`: the watchers of one resource for one event package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherList {
    pub resource: String,
    pub package: String,
    pub watchers: Vec<Watcher>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherInfo {
    /// RFC 3858 section 4.3: increases by one with every document of a subscription.
    pub version: u32,
    /// `state="full"` (every watcher) or `"partial"` (only the changes).
    pub full: bool,
    pub lists: Vec<WatcherList>,
}

/// A watcherinfo document (RFC 3858 section 4) with one watcher list: `version` counts the
/// documents sent in the subscription (section 4.3), `full` says whether the list is complete
/// or only what changed since the previous one.
pub fn document(version: u32, full: bool, resource: &str, package: &str, watchers: &[Watcher]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<watcherinfo xmlns=\"{NS}\" version=\"{version}\" state=\"{}\">\
         <watcher-list resource=\"{}\" package=\"{}\">",
        if full { "full" } else { "partial" },
        xml::escape(resource),
        xml::escape(package)
    );
    for w in watchers {
        out.push_str(&format!(
            "<watcher id=\"{}\" status=\"{}\" event=\"{}\"",
            xml::escape(&w.id),
            w.status.as_str(),
            w.event.as_str()
        ));
        if let Some(n) = &w.display_name {
            out.push_str(&format!(" display-name=\"{}\"", xml::escape(n)));
        }
        if let Some(d) = w.duration_subscribed {
            out.push_str(&format!(" duration-subscribed=\"{d}\""));
        }
        out.push_str(&format!(">{}</watcher>", xml::escape(&w.uri)));
    }
    out.push_str("</watcher-list></watcherinfo>\n");
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WinfoError {
    NotUtf8,
    NotXml(String),
    /// The root is not `{urn:ietf:params:xml:ns:watcherinfo}watcherinfo`.
    NotWatcherinfo,
    /// A required attribute (RFC 3858 section 4) is missing or has a value the schema does not allow.
    Invalid(&'static str),
}

impl std::fmt::Display for WinfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WinfoError::NotUtf8 => f.write_str("not UTF-8"),
            WinfoError::NotXml(e) => write!(f, "not well-formed XML: {e}"),
            WinfoError::NotWatcherinfo => f.write_str("not a watcherinfo document"),
            WinfoError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for WinfoError {}

/// Parses a watcherinfo document (RFC 3858 section 4).
pub fn parse(body: &[u8]) -> Result<WatcherInfo, WinfoError> {
    let text = std::str::from_utf8(body).map_err(|_| WinfoError::NotUtf8)?;
    let root = xml::parse(text).map_err(|e| WinfoError::NotXml(e.0))?;
    if root.ns != NS || root.name != "watcherinfo" {
        return Err(WinfoError::NotWatcherinfo);
    }
    let invalid = WinfoError::Invalid;
    let version = root.attr("version").and_then(|v| v.trim().parse().ok()).ok_or(invalid("version"))?;
    let full = match root.attr("state").map(str::trim) {
        Some("full") => true,
        Some("partial") => false,
        _ => return Err(invalid("state")),
    };
    let mut lists = Vec::new();
    for l in root.children_named(NS, "watcher-list") {
        let mut watchers = Vec::new();
        for w in l.children_named(NS, "watcher") {
            let status = w.attr("status").and_then(|s| WatcherStatus::from_name(s.trim()));
            let event = w.attr("event").and_then(|s| WatcherEvent::from_name(s.trim()));
            watchers.push(Watcher {
                id: w.attr("id").ok_or(invalid("watcher id"))?.to_string(),
                uri: w.text.trim().to_string(),
                display_name: w.attr("display-name").map(str::to_string),
                status: status.ok_or(invalid("watcher status"))?,
                event: event.ok_or(invalid("watcher event"))?,
                duration_subscribed: w.attr("duration-subscribed").and_then(|d| d.trim().parse().ok()),
            });
        }
        lists.push(WatcherList {
            resource: l.attr("resource").ok_or(invalid("watcher-list resource"))?.to_string(),
            package: l.attr("package").ok_or(invalid("watcher-list package"))?.to_string(),
            watchers,
        });
    }
    Ok(WatcherInfo { version, full, lists })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let w = Watcher {
            id: "7".into(),
            uri: "sip:bob@example.test".into(),
            display_name: Some("Bob & co".into()),
            status: WatcherStatus::Pending,
            event: WatcherEvent::Subscribe,
            duration_subscribed: Some(5),
        };
        let doc = document(3, true, "sip:alice@example.test", "presence", std::slice::from_ref(&w));
        let info = parse(doc.as_bytes()).unwrap();
        assert_eq!(info.version, 3);
        assert!(info.full);
        assert_eq!(info.lists[0].resource, "sip:alice@example.test");
        assert_eq!(info.lists[0].watchers, vec![w]);
    }
}
