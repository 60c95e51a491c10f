//! PIDF (RFC 3863) as a presence server needs it: check and take apart what a presentity
//! publishes, and compose one document from all its publications. Elements other than tuples
//! and notes (RPID activities, mood, place-type of RFC 4480; RFC 4479 person and device;
//! vendor extensions) are passed through unchanged.

use super::xml::{self, Element};
use std::fmt;

pub const CONTENT_TYPE: &str = "application/pidf+xml";
pub const NS: &str = "urn:ietf:params:xml:ns:pidf";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basic {
    Open,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub id: String,
    pub basic: Option<Basic>,
    pub note: Option<String>,
    pub timestamp: Option<String>,
    /// The element, valid XML on its own.
    xml: String,
}

/// Another top-level element (person, device, an extension), valid XML on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fragment {
    xml: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pidf {
    pub entity: String,
    pub tuples: Vec<Tuple>,
    /// Top-level `<note>`s.
    pub notes: Vec<String>,
    others: Vec<Fragment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidfError {
    NotUtf8,
    NotXml(String),
    /// The root is not `{urn:ietf:params:xml:ns:pidf}presence`.
    NotPidf,
    NoEntity,
    /// A tuple without an id, or two with the same.
    BadTuple(String),
}

impl fmt::Display for PidfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidfError::NotUtf8 => f.write_str("not UTF-8"),
            PidfError::NotXml(e) => write!(f, "not well-formed XML: {e}"),
            PidfError::NotPidf => f.write_str("not a PIDF presence document"),
            PidfError::NoEntity => f.write_str("no entity"),
            PidfError::BadTuple(e) => write!(f, "bad tuple: {e}"),
        }
    }
}

pub fn parse(body: &[u8]) -> Result<Pidf, PidfError> {
    let text = std::str::from_utf8(body).map_err(|_| PidfError::NotUtf8)?;
    let root = xml::parse(text).map_err(|e| PidfError::NotXml(e.0))?;
    if root.ns != NS || root.name != "presence" {
        return Err(PidfError::NotPidf);
    }
    let entity = root.attr("entity").filter(|e| !e.trim().is_empty()).ok_or(PidfError::NoEntity)?.trim().to_string();
    let inherited: Vec<(String, String)> = root.namespace_declarations().cloned().collect();
    let mut doc = Pidf { entity, tuples: Vec::new(), notes: Vec::new(), others: Vec::new() };
    for child in &root.children {
        match (child.ns.as_str(), child.name.as_str()) {
            (NS, "tuple") => {
                let id = child.attr("id").ok_or_else(|| PidfError::BadTuple("no id".into()))?.to_string();
                if doc.tuples.iter().any(|t| t.id == id) {
                    return Err(PidfError::BadTuple(format!("id {id} twice")));
                }
                doc.tuples.push(tuple(text, child, id, &inherited));
            }
            (NS, "note") => doc.notes.push(child.text.clone()),
            _ => doc.others.push(Fragment { xml: xml::standalone(text, child, &inherited) }),
        }
    }
    Ok(doc)
}

fn tuple(source: &str, el: &Element, id: String, inherited: &[(String, String)]) -> Tuple {
    let basic = el.child(NS, "status").and_then(|s| s.child(NS, "basic")).and_then(|b| match b.text.trim() {
        "open" => Some(Basic::Open),
        "closed" => Some(Basic::Closed),
        _ => None,
    });
    Tuple {
        id,
        basic,
        note: el.child(NS, "note").map(|n| n.text.clone()),
        timestamp: el.child(NS, "timestamp").map(|t| t.text.trim().to_string()),
        xml: xml::standalone(source, el, inherited),
    }
}

impl Pidf {
    /// The entity as `user@host`: without `pres:`/`sip:`/`sips:`, parameters or headers, the
    /// host in lower case; `None` if it is not of that form.
    pub fn entity_aor(&self) -> Option<String> {
        let e = self.entity.as_str();
        let rest = ["pres:", "sips:", "sip:"]
            .iter()
            .find_map(|p| e.get(..p.len()).filter(|s| s.eq_ignore_ascii_case(p)).map(|_| &e[p.len()..]))?;
        let rest = rest.split([';', '?', '>']).next()?;
        let (user, host) = rest.rsplit_once('@')?;
        if user.is_empty() || host.is_empty() {
            return None;
        }
        let host = host.split(':').next().unwrap_or(host);
        Some(format!("{user}@{}", host.to_ascii_lowercase()))
    }
}

/// One live publication of the presentity, for [`compose`].
pub struct Source<'a> {
    pub doc: &'a Pidf,
    /// The publication's entity tag: makes a tuple id unique when two publications share it.
    pub tag: &'a str,
    /// 0 for the most recently changed publication.
    pub newest_first_rank: usize,
}

/// One document for `entity` from all its publications: every tuple (one per publishing
/// endpoint), the top-level notes of the newest publication that has any, and every other
/// element passed through.
pub fn compose(entity: &str, sources: &[Source<'_>]) -> String {
    let mut sorted: Vec<&Source> = sources.iter().collect();
    sorted.sort_by_key(|s| s.newest_first_rank);
    let mut out = header(entity);
    let mut ids: Vec<String> = Vec::new();
    for s in &sorted {
        for t in &s.doc.tuples {
            if ids.contains(&t.id) {
                let unique = format!("{}-{}", t.id, s.tag);
                out.push_str(&renamed(&t.xml, &t.id, &unique));
                ids.push(unique);
            } else {
                out.push_str(&t.xml);
                ids.push(t.id.clone());
            }
        }
    }
    if let Some(s) = sorted.iter().find(|s| !s.doc.notes.is_empty()) {
        for n in &s.doc.notes {
            out.push_str(&format!("<note>{}</note>", xml::escape(n)));
        }
    }
    for s in &sorted {
        for f in &s.doc.others {
            out.push_str(&f.xml);
        }
    }
    out.push_str("</presence>\n");
    out
}

/// A tuple's XML with its id attribute (in the start tag) changed.
fn renamed(tuple_xml: &str, old: &str, new: &str) -> String {
    let tag_end = tuple_xml.find('>').unwrap_or(tuple_xml.len());
    let (tag, rest) = tuple_xml.split_at(tag_end);
    let escaped = xml::escape(old);
    for q in ['"', '\''] {
        let pattern = format!("id={q}{escaped}{q}");
        if let Some(at) = tag.find(&pattern) {
            return format!("{}id=\"{}\"{}{rest}", &tag[..at], xml::escape(new), &tag[at + pattern.len()..]);
        }
    }
    tuple_xml.to_string()
}

fn header(entity: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"{NS}\" entity=\"{}\">", xml::escape(entity))
}

/// A document from registration state (nothing published): one tuple, open or closed.
pub fn basic_document(entity: &str, open: bool, note: Option<&str>) -> String {
    let mut out = header(entity);
    out.push_str(&format!(
        "<tuple id=\"registration\"><status><basic>{}</basic></status>",
        if open { "open" } else { "closed" }
    ));
    if let Some(n) = note {
        out.push_str(&format!("<note>{}</note>", xml::escape(n)));
    }
    out.push_str("</tuple></presence>\n");
    out
}

/// The neutral document a pending watcher gets: the presentity, and nothing about it.
pub fn empty_document(entity: &str) -> String {
    let mut out = header(entity);
    out.push_str("</presence>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPID: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:alice@Example.TEST">
  <tuple id="bs35r9"><status><basic>open</basic></status><contact>sip:alice@192.0.2.1</contact>
    <note xml:lang="en">Don't Disturb Please!</note><timestamp>2005-10-27T16:49:29Z</timestamp></tuple>
  <note>at the office</note>
  <dm:person id="p1"><rpid:activities><rpid:meeting/></rpid:activities><rpid:mood><rpid:happy/></rpid:mood>
    <rpid:place-type><rpid:office/></rpid:place-type></dm:person>
</presence>"#;

    #[test]
    fn takes_apart_an_rpid_document() {
        let d = parse(RPID.as_bytes()).unwrap();
        assert_eq!(d.entity_aor().as_deref(), Some("alice@example.test"));
        assert_eq!(d.tuples.len(), 1);
        assert_eq!(d.tuples[0].basic, Some(Basic::Open));
        assert_eq!(d.tuples[0].note.as_deref(), Some("Don't Disturb Please!"));
        assert_eq!(d.notes, vec!["at the office"]);
        assert_eq!(d.others.len(), 1);
    }

    #[test]
    fn composes_two_publications_into_one_valid_document() {
        let a = parse(RPID.as_bytes()).unwrap();
        let b = parse(br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test"><tuple id="bs35r9"><status><basic>closed</basic></status></tuple><note>newer</note></presence>"#).unwrap();
        let out = compose(
            "sip:alice@example.test",
            &[Source { doc: &a, tag: "t1", newest_first_rank: 1 }, Source { doc: &b, tag: "t2", newest_first_rank: 0 }],
        );
        let c = parse(out.as_bytes()).unwrap();
        assert_eq!(c.tuples.len(), 2, "one tuple per publication: {out}");
        assert_ne!(c.tuples[0].id, c.tuples[1].id, "ids made unique: {out}");
        assert_eq!(c.notes, vec!["newer"], "the newest note wins");
        assert_eq!(c.others.len(), 1, "RPID passed through");
        assert!(out.contains("rpid:meeting"));
    }

    #[test]
    fn refuses_what_is_not_pidf() {
        assert!(matches!(parse(b"<presence entity='x'><tuple>"), Err(PidfError::NotXml(_))));
        assert_eq!(parse(b"<presence xmlns='urn:other' entity='sip:a@b'/>"), Err(PidfError::NotPidf));
        assert_eq!(parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>"), Err(PidfError::NoEntity));
        assert_eq!(parse(&[0xff, 0xfe]), Err(PidfError::NotUtf8));
    }

    #[test]
    fn generated_documents_parse() {
        for doc in [basic_document("sip:a@b", true, Some("<x> & y")), empty_document("sip:a@b")] {
            let d = parse(doc.as_bytes()).unwrap();
            assert_eq!(d.entity, "sip:a@b");
        }
    }
}
