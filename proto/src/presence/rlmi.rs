//! Resource lists (RFC 4662): one subscription to a list URI is answered with NOTIFYs whose
//! body is multipart/related: an RLMI document naming every resource and the state of its
//! instance, then the body of each active instance (here a PIDF document) by Content-ID.

use super::xml;

pub const CONTENT_TYPE: &str = "application/rlmi+xml";
pub const NS: &str = "urn:ietf:params:xml:ns:rlmi";

/// The state of one instance of a resource's subscription (RFC 4662 section 5.2, the values of
/// the Subscription-State header of RFC 6665).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Active,
    Pending,
    /// `reason` as in Subscription-State (`rejected`, `noresource`, `timeout`...).
    Terminated {
        reason: Option<String>,
    },
}

/// A back-end subscription to the resource (RFC 4662 section 5.2, `<instance>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// The Content-ID of its body part (without `<>`), for an active instance.
    pub cid: Option<String>,
}

/// A member of the list (RFC 4662 section 5.2, `<resource>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub uri: String,
    /// The first `<name>`: how the list owner calls the resource.
    pub name: Option<String>,
    pub instances: Vec<Instance>,
}

/// An RLMI document: the `<list>` (RFC 4662 section 5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rlmi {
    pub uri: String,
    /// Increases by one with every NOTIFY of the subscription.
    pub version: u32,
    /// Full state (every resource) or partial (only what changed).
    pub full_state: bool,
    pub resources: Vec<Resource>,
}

/// The RLMI document of `list` (RFC 4662 section 5.2).
pub fn document(list: &Rlmi) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<list xmlns=\"{NS}\" uri=\"{}\" version=\"{}\" fullState=\"{}\">",
        xml::escape(&list.uri),
        list.version,
        list.full_state
    );
    for r in &list.resources {
        out.push_str(&format!("<resource uri=\"{}\">", xml::escape(&r.uri)));
        if let Some(n) = &r.name {
            out.push_str(&format!("<name>{}</name>", xml::escape(n)));
        }
        for i in &r.instances {
            let (state, reason) = match &i.state {
                InstanceState::Active => ("active", None),
                InstanceState::Pending => ("pending", None),
                InstanceState::Terminated { reason } => ("terminated", reason.as_deref()),
            };
            out.push_str(&format!("<instance id=\"{}\" state=\"{state}\"", xml::escape(&i.id)));
            if let Some(r) = reason {
                out.push_str(&format!(" reason=\"{}\"", xml::escape(r)));
            }
            if let Some(c) = &i.cid {
                out.push_str(&format!(" cid=\"{}\"", xml::escape(c)));
            }
            out.push_str("/>");
        }
        out.push_str("</resource>");
    }
    out.push_str("</list>\n");
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RlmiError {
    NotUtf8,
    NotXml(String),
    /// The root is not `{urn:ietf:params:xml:ns:rlmi}list`.
    NotRlmi,
    /// A required attribute (RFC 4662 section 5) is missing or has a value the schema does not allow.
    Invalid(&'static str),
}

impl std::fmt::Display for RlmiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RlmiError::NotUtf8 => f.write_str("not UTF-8"),
            RlmiError::NotXml(e) => write!(f, "not well-formed XML: {e}"),
            RlmiError::NotRlmi => f.write_str("not an RLMI list"),
            RlmiError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for RlmiError {}

/// Parses an RLMI document (RFC 4662 section 5).
pub fn parse(body: &[u8]) -> Result<Rlmi, RlmiError> {
    let text = std::str::from_utf8(body).map_err(|_| RlmiError::NotUtf8)?;
    let root = xml::parse(text).map_err(|e| RlmiError::NotXml(e.0))?;
    if root.ns != NS || root.name != "list" {
        return Err(RlmiError::NotRlmi);
    }
    let invalid = RlmiError::Invalid;
    let mut resources = Vec::new();
    for r in root.children_named(NS, "resource") {
        let mut instances = Vec::new();
        for i in r.children_named(NS, "instance") {
            let state = match i.attr("state").map(str::trim) {
                Some("active") => InstanceState::Active,
                Some("pending") => InstanceState::Pending,
                Some("terminated") => InstanceState::Terminated { reason: i.attr("reason").map(str::to_string) },
                _ => return Err(invalid("instance state")),
            };
            instances.push(Instance {
                id: i.attr("id").ok_or(invalid("instance id"))?.to_string(),
                state,
                cid: i.attr("cid").map(str::to_string),
            });
        }
        resources.push(Resource {
            uri: r.attr("uri").ok_or(invalid("resource uri"))?.to_string(),
            name: r.child(NS, "name").map(|n| n.text.clone()),
            instances,
        });
    }
    Ok(Rlmi {
        uri: root.attr("uri").ok_or(invalid("list uri"))?.to_string(),
        version: root.attr("version").and_then(|v| v.trim().parse().ok()).ok_or(invalid("list version"))?,
        // xs:boolean
        full_state: match root.attr("fullState").map(str::trim) {
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            _ => return Err(invalid("list fullState")),
        },
        resources,
    })
}

/// One body part of a resource-list NOTIFY.
pub struct BodyPart<'a> {
    /// Without the `<>`.
    pub content_id: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// The multipart/related body (RFC 2387; RFC 4662 section 5) of a resource-list NOTIFY: the
/// RLMI document first (Content-ID `rlmi_cid`), then the parts. Returns the Content-Type
/// header value and the body. The boundary occurs in no part, so no part can end early.
pub fn multipart_related(rlmi_cid: &str, rlmi: &str, parts: &[BodyPart<'_>]) -> (String, Vec<u8>) {
    let boundary = boundary(rlmi.as_bytes(), parts);
    let size =
        rlmi.len() + parts.iter().map(|p| p.body.len() + p.content_id.len() + p.content_type.len()).sum::<usize>();
    let mut body = Vec::with_capacity(size + (parts.len() + 1) * (boundary.len() + 80) + 64);
    let mut part = |cid: &str, content_type: &str, content: &[u8]| {
        for line in [
            format!("--{boundary}\r\n"),
            "Content-Transfer-Encoding: binary\r\n".to_string(),
            format!("Content-ID: <{}>\r\n", content_id(cid)),
            format!("Content-Type: {}\r\n\r\n", header_value(content_type)),
        ] {
            body.extend_from_slice(line.as_bytes());
        }
        body.extend_from_slice(content);
        // RFC 2046 5.1.1: the line break before a delimiter belongs to the delimiter.
        body.extend_from_slice(b"\r\n");
    };
    part(rlmi_cid, CONTENT_TYPE, rlmi.as_bytes());
    for p in parts {
        part(p.content_id, p.content_type, p.body);
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!(
        "multipart/related;type=\"{CONTENT_TYPE}\";start=\"<{}>\";boundary=\"{boundary}\"",
        content_id(rlmi_cid)
    );
    (content_type, body)
}

/// The first of `sipfront-00000000`, `sipfront-00000001`... found in no part (RFC 2046 5.1.1:
/// the boundary must not appear inside the encapsulated parts). Each part rules out at most
/// as many candidates as it has bytes, so the search ends.
fn boundary(rlmi: &[u8], parts: &[BodyPart<'_>]) -> String {
    let mut n: u64 = 0;
    loop {
        let candidate = format!("sipfront-{n:08x}");
        let found = |body: &[u8]| memchr::memmem::find(body, candidate.as_bytes()).is_some();
        if !found(rlmi) && !parts.iter().any(|p| found(p.body)) {
            return candidate;
        }
        n += 1;
    }
}

/// A header value without the control characters that would end the header line early.
fn header_value(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// A Content-ID (RFC 2392: an addr-spec inside `<>`), without what would end it or the quoted
/// `start` parameter early.
fn content_id(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && !matches!(c, '<' | '>' | '"' | '\\')).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    #[test]
    fn a_list_notify_body_parses_back() {
        let list = Rlmi {
            uri: "sip:alice+contacts@example.test".into(),
            version: 2,
            full_state: false,
            resources: vec![
                Resource {
                    uri: "sip:bob@example.test".into(),
                    name: Some("Bob".into()),
                    instances: vec![Instance {
                        id: "r0".into(),
                        state: InstanceState::Active,
                        cid: Some("b@x".into()),
                    }],
                },
                Resource {
                    uri: "sip:eve@example.test".into(),
                    name: None,
                    instances: vec![Instance {
                        id: "r1".into(),
                        state: InstanceState::Terminated { reason: Some("rejected".into()) },
                        cid: None,
                    }],
                },
            ],
        };
        let doc = document(&list);
        assert_eq!(parse(doc.as_bytes()).unwrap(), list);
        let pidf = b"<presence/>";
        let (ct, body) = multipart_related(
            "list@x",
            &doc,
            &[BodyPart { content_id: "b@x", content_type: "application/pidf+xml", body: pidf }],
        );
        let parts = crate::multipart::parts(ct.as_bytes(), &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("Content-ID"), Some(&b"<list@x>"[..]));
        assert_eq!(parse(parts[0].body).unwrap(), list);
        assert_eq!(parts[1].body, pidf);
        assert_eq!(parts[1].header("Content-Type"), Some(&b"application/pidf+xml"[..]));
    }
}
