//! PIDF (RFC 3863) as a presence server needs it: check and take apart what a presentity
//! publishes, and compose one document from all its publications. Elements other than tuples
//! and notes (RFC 4479 person and device, RPID activities, mood, place-type of RFC 4480, vendor
//! extensions) are passed through unchanged, each made valid XML on its own.

use super::xml::{self, Element, Fragment};
use crate::uri::{Host, Uri};
use std::collections::HashSet;
use std::fmt;

pub const CONTENT_TYPE: &str = "application/pidf+xml";
pub const NS: &str = "urn:ietf:params:xml:ns:pidf";

/// The `<basic>` status of a tuple (RFC 3863 4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basic {
    Open,
    Closed,
}

/// A `<tuple>` (RFC 3863 4.1.2): one way to reach the presentity, typically one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub id: String,
    pub basic: Option<Basic>,
    /// The first `<note>` of the tuple.
    pub note: Option<String>,
    pub timestamp: Option<String>,
    /// The element without its `id` (written again by `compose`, possibly changed).
    xml: Fragment,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pidf {
    pub entity: String,
    pub tuples: Vec<Tuple>,
    /// Top-level `<note>`s.
    pub notes: Vec<String>,
    /// Every other top-level element (person, device, extensions), valid XML on its own.
    others: Vec<Fragment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidfError {
    NotUtf8,
    NotXml(String),
    /// The root is not `{urn:ietf:params:xml:ns:pidf}presence`.
    NotPidf,
    /// The `entity` attribute is missing or empty (RFC 3863 4.1.1: it is required).
    NoEntity,
    /// RFC 3863 4.1.2: `id` is required.
    TupleWithoutId,
    /// RFC 3863 4.1.2: the `id` of a tuple is unique within the document.
    DuplicateTupleId(String),
}

impl fmt::Display for PidfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidfError::NotUtf8 => f.write_str("not UTF-8"),
            PidfError::NotXml(e) => write!(f, "not well-formed XML: {e}"),
            PidfError::NotPidf => f.write_str("not a PIDF presence document"),
            PidfError::NoEntity => f.write_str("no entity"),
            PidfError::TupleWithoutId => f.write_str("a tuple without an id"),
            PidfError::DuplicateTupleId(id) => write!(f, "two tuples with the id {id:?}"),
        }
    }
}

impl std::error::Error for PidfError {}

/// Parses a published PIDF document. Well-formedness is checked over the whole document, so
/// that whatever is kept can be sent on to watchers.
pub fn parse(body: &[u8]) -> Result<Pidf, PidfError> {
    let text = std::str::from_utf8(body).map_err(|_| PidfError::NotUtf8)?;
    let root = xml::parse(text).map_err(|e| PidfError::NotXml(e.0))?;
    if root.ns != NS || root.name != "presence" {
        return Err(PidfError::NotPidf);
    }
    let entity = root.attr("entity").map(str::trim).filter(|e| !e.is_empty()).ok_or(PidfError::NoEntity)?;
    let mut doc = Pidf { entity: entity.to_string(), tuples: Vec::new(), notes: Vec::new(), others: Vec::new() };
    let mut ids = HashSet::new();
    for child in &root.children {
        match (child.ns.as_str(), child.name.as_str()) {
            (NS, "tuple") => {
                let id = child.attr("id").ok_or(PidfError::TupleWithoutId)?;
                if !ids.insert(id) {
                    return Err(PidfError::DuplicateTupleId(id.to_string()));
                }
                doc.tuples.push(tuple(text, &root, child, id));
            }
            (NS, "note") => doc.notes.push(child.text.clone()),
            _ => doc.others.push(Fragment::detach(text, &root, child, NS, None)),
        }
    }
    Ok(doc)
}

fn tuple(source: &str, root: &Element, el: &Element, id: &str) -> Tuple {
    let basic = el.child(NS, "status").and_then(|s| s.child(NS, "basic")).and_then(|b| match b.text.trim() {
        "open" => Some(Basic::Open),
        "closed" => Some(Basic::Closed),
        _ => None,
    });
    Tuple {
        id: id.to_string(),
        basic,
        note: el.child(NS, "note").map(|n| n.text.clone()),
        timestamp: el.child(NS, "timestamp").map(|t| t.text.trim().to_string()),
        xml: Fragment::detach(source, root, el, NS, Some("id")),
    }
}

impl Pidf {
    /// The entity as an AOR `user@host`: without `pres:` (RFC 3859), `sip:` or `sips:`, without
    /// parameters, headers or port, the user unescaped and the host in lower case, as the
    /// server writes AORs. `None` if it is not of that form.
    pub fn entity_aor(&self) -> Option<String> {
        let (scheme, rest) = self.entity.split_once(':')?;
        if !["pres", "sip", "sips"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
            return None;
        }
        // A pres: URI is a mailbox with optional ?headers: read it by the rules of a SIP URI.
        let as_sip = format!("sip:{rest}");
        let uri = Uri::parse(as_sip.as_bytes()).ok()?;
        let user = crate::uri::unescape(uri.user()?);
        let host = match uri.host() {
            Host::Name(n) => String::from_utf8_lossy(n).to_ascii_lowercase(),
            ip => ip.to_string(),
        };
        Some(format!("{}@{host}", String::from_utf8_lossy(&user)))
    }

    /// The top-level elements other than tuples and notes (RFC 4479 person and device, vendor
    /// extensions), each as XML valid on its own.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.others.iter().map(Fragment::as_str)
    }

    fn xml_len(&self) -> usize {
        self.tuples.iter().map(|t| t.xml.as_str().len() + t.id.len() + 8).sum::<usize>()
            + self.notes.iter().map(|n| n.len() + 16).sum::<usize>()
            + self.others.iter().map(|f| f.as_str().len()).sum::<usize>()
    }
}

/// One live publication of the presentity, for [`compose`].
pub struct Source<'a> {
    pub doc: &'a Pidf,
    /// The publication's entity tag (RFC 3903), unique among the sources: it makes a tuple id
    /// unique when two publications use the same one.
    pub tag: &'a str,
    /// 0 for the most recently changed publication.
    pub newest_first_rank: usize,
}

/// One document for `entity` from all its publications (RFC 3903 leaves composition to the
/// server; this is the usual one): every tuple of every publication, the top-level notes of
/// the newest publication that has any, and every other element passed through unchanged.
///
/// Tuple ids are unique in a document (RFC 3863 4.1.2): a tuple whose id an earlier (newer)
/// publication already used gets the publication's tag as a suffix. Every copied element
/// carries the namespace declarations it needs, as it was given them by [`parse`].
pub fn compose(entity: &str, sources: &[Source<'_>]) -> String {
    let mut sorted: Vec<&Source> = sources.iter().collect();
    sorted.sort_by_key(|s| s.newest_first_rank);
    let mut out = String::with_capacity(256 + sorted.iter().map(|s| s.doc.xml_len()).sum::<usize>());
    start_document(&mut out, entity);
    let mut ids: HashSet<String> = HashSet::new();
    for s in &sorted {
        for t in &s.doc.tuples {
            let id = if ids.contains(&t.id) { unique_id(&t.id, s, &ids) } else { t.id.clone() };
            t.xml.write_with(&mut out, "id", &id);
            ids.insert(id);
        }
    }
    if let Some(s) = sorted.iter().find(|s| !s.doc.notes.is_empty()) {
        for n in &s.doc.notes {
            push_note(&mut out, n);
        }
    }
    for s in &sorted {
        for f in &s.doc.others {
            out.push_str(f.as_str());
        }
    }
    out.push_str("</presence>\n");
    out
}

/// `id` made unique with the tag of its publication, keeping to the characters of an XML
/// `ID` (an NCName: the schema of RFC 3863 types the attribute `xs:ID`).
fn unique_id(id: &str, source: &Source<'_>, taken: &HashSet<String>) -> String {
    let tag: String = source.tag.chars().filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c)).collect();
    let base = if tag.is_empty() { format!("{id}-{}", source.newest_first_rank) } else { format!("{id}-{tag}") };
    let mut candidate = base.clone();
    let mut n = 1u64;
    while taken.contains(&candidate) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

fn start_document(out: &mut String, entity: &str) {
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"");
    out.push_str(NS);
    out.push_str("\" entity=\"");
    out.push_str(&xml::escape(entity));
    out.push_str("\">");
}

fn push_note(out: &mut String, note: &str) {
    out.push_str("<note>");
    out.push_str(&xml::escape(note));
    out.push_str("</note>");
}

/// A document from registration state when nothing is published: one tuple, open or closed.
pub fn basic_document(entity: &str, open: bool, note: Option<&str>) -> String {
    let mut out = String::with_capacity(256);
    start_document(&mut out, entity);
    out.push_str("<tuple id=\"registration\"><status><basic>");
    out.push_str(if open { "open" } else { "closed" });
    out.push_str("</basic></status>");
    if let Some(n) = note {
        push_note(&mut out, n);
    }
    out.push_str("</tuple></presence>\n");
    out
}

/// The neutral document a pending watcher gets (RFC 6665: a NOTIFY of a pending subscription
/// reveals nothing of the resource's state): the presentity, and nothing about it.
pub fn empty_document(entity: &str) -> String {
    let mut out = String::with_capacity(128);
    start_document(&mut out, entity);
    out.push_str("</presence>\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
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

    fn source<'a>(doc: &'a Pidf, tag: &'a str, rank: usize) -> Source<'a> {
        Source { doc, tag, newest_first_rank: rank }
    }

    #[test]
    fn takes_apart_an_rpid_document() {
        let d = parse(RPID.as_bytes()).unwrap();
        assert_eq!(d.entity_aor().as_deref(), Some("alice@example.test"));
        assert_eq!(d.tuples.len(), 1);
        assert_eq!(d.tuples[0].basic, Some(Basic::Open));
        assert_eq!(d.tuples[0].note.as_deref(), Some("Don't Disturb Please!"));
        assert_eq!(d.tuples[0].timestamp.as_deref(), Some("2005-10-27T16:49:29Z"));
        assert_eq!(d.notes, vec!["at the office"]);
        // The person needs dm and rpid, not the default namespace (the composed root has it).
        let person = d.extensions().next().unwrap();
        assert!(person.starts_with(r#"<dm:person id="p1" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">"#), "{person}");
        // The tuple needs nothing more than the default namespace the composed root declares.
        let mut t = String::new();
        d.tuples[0].xml.write_with(&mut t, "id", "x");
        assert!(t.starts_with(r#"<tuple id="x"><status>"#), "{t}");
    }

    #[test]
    fn composes_two_publications_into_one_valid_document() {
        let a = parse(RPID.as_bytes()).unwrap();
        let b = parse(br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.test"><tuple id="bs35r9"><status><basic>closed</basic></status></tuple><note>newer</note></presence>"#).unwrap();
        let out = compose("sip:alice@example.test", &[source(&a, "t1", 1), source(&b, "t2", 0)]);
        let c = parse(out.as_bytes()).unwrap();
        assert_eq!(c.tuples.len(), 2, "one tuple per publication: {out}");
        assert_eq!(c.tuples[0].id, "bs35r9", "the newest keeps its id");
        assert_eq!(c.tuples[0].basic, Some(Basic::Closed));
        assert_eq!(c.tuples[1].id, "bs35r9-t1", "the older one is made unique: {out}");
        assert_eq!(c.notes, vec!["newer"], "the newest note wins");
        assert_eq!(c.others, a.others, "RPID passed through unchanged");
    }

    #[test]
    fn generated_ids_never_collide() {
        let a = parse(br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="x"/></presence>"#)
            .unwrap();
        let b = parse(br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="x"/><tuple id="x-t"/></presence>"#).unwrap();
        let out = compose("sip:a@b", &[source(&a, "t", 0), source(&b, "t", 1), source(&b, "t\"<>", 2)]);
        let c = parse(out.as_bytes()).expect("ids unique, so the document parses");
        let ids: Vec<&str> = c.tuples.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["x", "x-t", "x-t-t", "x-t-1", "x-t-t-1"]);
    }

    #[test]
    fn refuses_what_is_not_pidf() {
        assert!(matches!(parse(b"<presence entity='x'><tuple>"), Err(PidfError::NotXml(_))));
        assert_eq!(parse(b"<presence xmlns='urn:other' entity='sip:a@b'/>"), Err(PidfError::NotPidf));
        assert_eq!(parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>"), Err(PidfError::NoEntity));
        assert_eq!(parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity=' '/>"), Err(PidfError::NoEntity));
        assert_eq!(parse(&[0xff, 0xfe]), Err(PidfError::NotUtf8));
        assert_eq!(
            parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:a@b'><tuple/></presence>"),
            Err(PidfError::TupleWithoutId)
        );
        assert_eq!(
            parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:a@b'><tuple id='1'/><tuple id='1'/></presence>"),
            Err(PidfError::DuplicateTupleId("1".into()))
        );
    }

    #[test]
    fn entity_as_an_aor() {
        let aor = |e: &str| Pidf { entity: e.into(), tuples: vec![], notes: vec![], others: vec![] }.entity_aor();
        assert_eq!(aor("pres:alice@Example.TEST").as_deref(), Some("alice@example.test"));
        assert_eq!(aor("SIP:Alice@EXAMPLE.test;transport=tcp?subject=x").as_deref(), Some("Alice@example.test"));
        assert_eq!(aor("sips:al%69ce@example.test:5061").as_deref(), Some("alice@example.test"));
        assert_eq!(aor("sip:bob@[2001:DB8::1]").as_deref(), Some("bob@[2001:db8::1]"));
        assert_eq!(aor("pres:bob@example.test?subject=hi").as_deref(), Some("bob@example.test"));
        for bad in
            ["alice@example.test", "tel:+123", "sip:example.test", "sip:@example.test", "sip:a b@c", "sip:a@", "pres:"]
        {
            assert_eq!(aor(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_documents_parse() {
        for doc in [basic_document("sip:a@b", true, Some("<x> & y")), empty_document("sip:a@b")] {
            assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
            let d = parse(doc.as_bytes()).unwrap();
            assert_eq!(d.entity, "sip:a@b");
        }
    }
}
