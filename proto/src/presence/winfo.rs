//! Watcher information (RFC 3857 event package `presence.winfo`, RFC 3858 document format):
//! who watches a presentity and in what state, so that its client can ask the user to approve.

use super::xml;

pub const CONTENT_TYPE: &str = "application/watcherinfo+xml";
pub const NS: &str = "urn:ietf:params:xml:ns:watcherinfo";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherStatus {
    Pending,
    Active,
    Waiting,
    Terminated,
}

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

const STATUSES: [(WatcherStatus, &str); 4] = [
    (WatcherStatus::Pending, "pending"),
    (WatcherStatus::Active, "active"),
    (WatcherStatus::Waiting, "waiting"),
    (WatcherStatus::Terminated, "terminated"),
];

const EVENTS: [(WatcherEvent, &str); 8] = [
    (WatcherEvent::Subscribe, "subscribe"),
    (WatcherEvent::Approved, "approved"),
    (WatcherEvent::Deactivated, "deactivated"),
    (WatcherEvent::Probation, "probation"),
    (WatcherEvent::Rejected, "rejected"),
    (WatcherEvent::Timeout, "timeout"),
    (WatcherEvent::Giveup, "giveup"),
    (WatcherEvent::Noresource, "noresource"),
];

fn name_of<T: PartialEq + Copy>(table: &[(T, &'static str)], v: T) -> &'static str {
    table.iter().find(|(t, _)| *t == v).map_or("", |(_, n)| *n)
}

fn value_of<T: Copy>(table: &[(T, &'static str)], s: &str) -> Option<T> {
    table.iter().find(|(_, n)| *n == s).map(|(t, _)| *t)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    pub id: String,
    pub uri: String,
    pub display_name: Option<String>,
    pub status: WatcherStatus,
    pub event: WatcherEvent,
    pub duration_subscribed: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherList {
    pub resource: String,
    pub package: String,
    pub watchers: Vec<Watcher>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherInfo {
    pub version: u32,
    pub full: bool,
    pub lists: Vec<WatcherList>,
}

/// A watcherinfo document with one watcher list.
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
            name_of(&STATUSES, w.status),
            name_of(&EVENTS, w.event)
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
pub struct WinfoError(pub String);

impl std::fmt::Display for WinfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn parse(body: &[u8]) -> Result<WatcherInfo, WinfoError> {
    let bad = |s: &str| WinfoError(s.to_string());
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let root = xml::parse(text).map_err(|e| WinfoError(e.0))?;
    if root.ns != NS || root.name != "watcherinfo" {
        return Err(bad("not a watcherinfo document"));
    }
    let version = root.attr("version").and_then(|v| v.parse().ok()).ok_or_else(|| bad("no version"))?;
    let full = match root.attr("state") {
        Some("full") => true,
        Some("partial") => false,
        _ => return Err(bad("no state")),
    };
    let mut lists = Vec::new();
    for l in root.children_named(NS, "watcher-list") {
        let mut watchers = Vec::new();
        for w in l.children_named(NS, "watcher") {
            watchers.push(Watcher {
                id: w.attr("id").ok_or_else(|| bad("watcher without id"))?.to_string(),
                uri: w.text.trim().to_string(),
                display_name: w.attr("display-name").map(str::to_string),
                status: w.attr("status").and_then(|s| value_of(&STATUSES, s)).ok_or_else(|| bad("watcher status"))?,
                event: w.attr("event").and_then(|s| value_of(&EVENTS, s)).ok_or_else(|| bad("watcher event"))?,
                duration_subscribed: w.attr("duration-subscribed").and_then(|d| d.parse().ok()),
            });
        }
        lists.push(WatcherList {
            resource: l.attr("resource").unwrap_or_default().to_string(),
            package: l.attr("package").unwrap_or_default().to_string(),
            watchers,
        });
    }
    Ok(WatcherInfo { version, full, lists })
}

#[cfg(test)]
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
