//! Resource lists (RFC 4662): one subscription to a list URI is answered with NOTIFYs whose
//! body is multipart/related: an RLMI document naming every resource and the state of its
//! instance, then the body of each active instance (here a PIDF document) by Content-ID.

use super::xml;

pub const CONTENT_TYPE: &str = "application/rlmi+xml";
pub const NS: &str = "urn:ietf:params:xml:ns:rlmi";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Active,
    Pending,
    Terminated { reason: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// The Content-ID of its body part (without `<>`), for an active instance.
    pub cid: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub uri: String,
    pub name: Option<String>,
    pub instances: Vec<Instance>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rlmi {
    pub uri: String,
    pub version: u32,
    /// Full state (every resource) or partial (only what changed).
    pub full_state: bool,
    pub resources: Vec<Resource>,
}

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
pub struct RlmiError(pub String);

impl std::fmt::Display for RlmiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn parse(body: &[u8]) -> Result<Rlmi, RlmiError> {
    let bad = |s: &str| RlmiError(s.to_string());
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let root = xml::parse(text).map_err(|e| RlmiError(e.0))?;
    if root.ns != NS || root.name != "list" {
        return Err(bad("not an RLMI list"));
    }
    let mut resources = Vec::new();
    for r in root.children_named(NS, "resource") {
        let mut instances = Vec::new();
        for i in r.children_named(NS, "instance") {
            let state = match i.attr("state") {
                Some("active") => InstanceState::Active,
                Some("pending") => InstanceState::Pending,
                Some("terminated") => InstanceState::Terminated { reason: i.attr("reason").map(str::to_string) },
                _ => return Err(bad("instance state")),
            };
            instances.push(Instance {
                id: i.attr("id").ok_or_else(|| bad("instance without id"))?.to_string(),
                state,
                cid: i.attr("cid").map(str::to_string),
            });
        }
        resources.push(Resource {
            uri: r.attr("uri").ok_or_else(|| bad("resource without uri"))?.to_string(),
            name: r.child(NS, "name").map(|n| n.text.clone()),
            instances,
        });
    }
    Ok(Rlmi {
        uri: root.attr("uri").ok_or_else(|| bad("no uri"))?.to_string(),
        version: root.attr("version").and_then(|v| v.parse().ok()).ok_or_else(|| bad("no version"))?,
        full_state: match root.attr("fullState") {
            Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            _ => return Err(bad("no fullState")),
        },
        resources,
    })
}

/// One body part of a resource-list NOTIFY.
pub struct BodyPart<'a> {
    pub content_id: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// The multipart/related body (RFC 2387) of a resource-list NOTIFY: the RLMI document first
/// (Content-ID `rlmi_cid`), then the parts. Returns the Content-Type header value and the
/// body; the boundary occurs in no part.
pub fn multipart_related(rlmi_cid: &str, rlmi: &str, parts: &[BodyPart<'_>]) -> (String, Vec<u8>) {
    let mut n = 0u32;
    let boundary = loop {
        let b = format!("sipfront-{n:08x}-boundary");
        let inside = |body: &[u8]| body.windows(b.len()).any(|w| w == b.as_bytes());
        if !inside(rlmi.as_bytes()) && !parts.iter().any(|p| inside(p.body)) {
            break b;
        }
        n += 1;
    };
    let mut body = Vec::with_capacity(rlmi.len() + parts.iter().map(|p| p.body.len() + 128).sum::<usize>() + 128);
    let mut part = |cid: &str, ct: &str, content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    part(rlmi_cid, CONTENT_TYPE, rlmi.as_bytes());
    for p in parts {
        part(p.content_id, p.content_type, p.body);
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related;type=\"{CONTENT_TYPE}\";start=\"<{rlmi_cid}>\";boundary=\"{boundary}\"");
    (content_type, body)
}

#[cfg(test)]
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
