//! A small, bounded XML tree for presence bodies, and the escaping and detaching of elements
//! that composing documents needs.
//!
//! Parsing checks well-formedness over the whole document (XML 1.0 section 2.1: one root, every
//! tag closed and matched, nothing but whitespace, comments and processing instructions around
//! the root) and namespace well-formedness (Namespaces in XML 1.0 section 5: every prefix of an
//! element or attribute declared). A document that passes can be cut into pieces and the pieces
//! sent on without a receiving parser choking on them. A DOCTYPE is refused, so no entity other
//! than the five predefined ones can appear, and nesting is bounded.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::borrow::Cow;
use std::fmt;

/// Elements nested deeper than this are refused: a hostile body must not exhaust the stack
/// (the tree is built without recursion, but dropped and walked with it).
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// The namespace URI, empty when unbound.
    pub ns: String,
    /// The prefix as written, empty when none.
    pub prefix: String,
    pub name: String,
    /// Attributes by qualified name (`xmlns` declarations included), values unescaped and
    /// normalized (XML 1.0 section 3.3.3).
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// The text directly inside, unescaped and concatenated.
    pub text: String,
    /// Byte offsets in the source: the end of the start tag, and the end of the element (the
    /// same for `<empty/>`).
    head_end: usize,
    end: usize,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Children in namespace `ns` named `name`.
    pub fn children_named<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.ns == ns && c.name == name)
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.ns == ns && c.name == name)
    }

    /// The namespace declarations on this element, as (prefix, URI); the default namespace
    /// has the empty prefix.
    pub fn declarations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().filter_map(|(k, v)| match k.as_str() {
            "xmlns" => Some(("", v.as_str())),
            k => k.strip_prefix("xmlns:").map(|p| (p, v.as_str())),
        })
    }
}

/// Parses `text` into its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    // quick-xml skips a byte order mark without counting it in its positions; skip it here so
    // that the spans are offsets into `text`.
    let bom = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    if let Some(c) = text.chars().find(|&c| !is_xml_char(c)) {
        return Err(XmlError(format!("character U+{:04X} is not allowed in XML", u32::from(c))));
    }
    let mut reader = NsReader::from_str(&text[bom..]);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let before = bom + reader.buffer_position() as usize;
        let at = |e: &dyn fmt::Display| XmlError(format!("{e} at byte {before}"));
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(n), e)) => (String::from_utf8_lossy(n.as_ref()).into_owned(), e),
            Ok((ResolveResult::Unbound, e)) => (String::new(), e),
            Ok((ResolveResult::Unknown(p), _)) => {
                return Err(at(&format!("undeclared namespace prefix {}", String::from_utf8_lossy(&p))));
            }
            Err(e) => return Err(at(&e)),
        };
        let after = bom + reader.buffer_position() as usize;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(at(&"content after the root element"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(at(&"elements nested too deeply"));
                }
                let qname = std::str::from_utf8(e.name().into_inner()).map_err(|e| at(&e))?;
                if !is_qname(qname) {
                    return Err(at(&format!("{qname:?} is not an element name")));
                }
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| at(&e))?;
                    let key = std::str::from_utf8(a.key.into_inner()).map_err(|e| at(&e))?;
                    if !is_qname(key) {
                        return Err(at(&format!("{key:?} is not an attribute name")));
                    }
                    if let (ResolveResult::Unknown(p), _) = reader.resolve_attribute(a.key) {
                        return Err(at(&format!("undeclared namespace prefix {}", String::from_utf8_lossy(&p))));
                    }
                    let raw = std::str::from_utf8(&a.value).map_err(|e| at(&e))?;
                    if raw.contains('<') {
                        return Err(at(&"'<' in an attribute value"));
                    }
                    let value = unescape(&normalize_attribute(raw)).map_err(|e| at(&e))?;
                    check_declaration(key, &value).map_err(|e| at(&e))?;
                    attrs.push((key.to_string(), value));
                }
                let el = Element {
                    ns,
                    prefix: e
                        .name()
                        .prefix()
                        .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
                        .unwrap_or_default(),
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                    head_end: after,
                    end: after,
                };
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let Some(mut el) = stack.pop() else { return Err(at(&"an end tag with no start tag")) };
                el.end = after;
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let raw = std::str::from_utf8(&t).map_err(|e| at(&e))?;
                // XML 1.0 section 2.4: `]]>` does not appear in character data.
                if raw.contains("]]>") {
                    return Err(at(&"']]>' in text"));
                }
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&unescape(&normalize_line_ends(raw)).map_err(|e| at(&e))?),
                    // XML 1.0 section 2.8: only white space (S) around the root.
                    None if raw.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) => {}
                    None => return Err(at(&"text outside the root element")),
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(el) => el.text.push_str(&normalize_line_ends(&String::from_utf8_lossy(&c))),
                None => return Err(at(&"CDATA outside the root element")),
            },
            // XML 1.0 section 2.8: the declaration, if any, is the very first thing.
            Event::Decl(_) if before == bom => {}
            Event::Decl(_) => return Err(at(&"an XML declaration that is not at the start")),
            Event::DocType(_) => return Err(at(&"a DOCTYPE is not accepted")),
            // XML 1.0 section 2.5: no `--` inside a comment, and no `-` just before its end.
            Event::Comment(c) if c.windows(2).any(|w| w == b"--") || c.ends_with(b"-") => {
                return Err(at(&"'--' in a comment"));
            }
            Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError(format!("<{}> is not closed", open.name)));
    }
    root.ok_or_else(|| XmlError("no root element".into()))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Namespaces in XML 1.0 section 4: a `QName` is an `NCName`, or two joined by one colon.
fn is_qname(s: &str) -> bool {
    let mut parts = s.split(':');
    let ncname = |p: &str| {
        let mut chars = p.chars();
        chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), b, None) if ncname(a) && b.is_none_or(ncname))
}

/// XML 1.0 section 2.3, production NameStartChar, without the colon.
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}'
        | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 section 2.3, production NameChar, without the colon.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Namespaces in XML 1.0 section 3: a prefix cannot be undeclared (`xmlns:p=""`), `xmlns`
/// cannot be declared, and `xml` only to its own namespace.
fn check_declaration(key: &str, value: &str) -> Result<(), &'static str> {
    const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
    match key.strip_prefix("xmlns:") {
        Some("xmlns") => Err("the prefix xmlns cannot be declared"),
        Some("xml") if value != XML_NS => Err("the prefix xml is bound to its own namespace"),
        Some(_) if value.is_empty() => Err("a prefix cannot be undeclared"),
        _ => Ok(()),
    }
}

/// XML 1.0 section 2.2, production Char.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Resolves the predefined entities and character references; a reference to a character that
/// XML does not allow is an error (XML 1.0 section 4.1, "Well-formedness constraint: Legal
/// Character").
fn unescape(raw: &str) -> Result<String, XmlError> {
    let s = quick_xml::escape::unescape(raw).map_err(|e| XmlError(e.to_string()))?;
    match s.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(XmlError(format!("a reference to U+{:04X}, which XML does not allow", u32::from(c)))),
        None => Ok(s.into_owned()),
    }
}

/// XML 1.0 section 2.11: CR LF and a lone CR are read as LF.
fn normalize_line_ends(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\r') {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(raw.replace("\r\n", "\n").replace('\r', "\n"))
}

/// XML 1.0 section 3.3.3: in an attribute value, each white-space character as written (not a
/// character reference) is read as a space.
fn normalize_attribute(raw: &str) -> Cow<'_, str> {
    let lines = normalize_line_ends(raw);
    if !lines.contains(['\t', '\n']) {
        return lines;
    }
    Cow::Owned(lines.replace(['\t', '\n'], " "))
}

/// `s` escaped for an attribute value or text. Tab, CR and LF are written as character
/// references so that they survive normalization; a character XML cannot carry at all becomes
/// U+FFFD.
pub fn escape(s: &str) -> Cow<'_, str> {
    let plain = |c: char| is_xml_char(c) && !matches!(c, '&' | '<' | '>' | '"' | '\'' | '\t' | '\r' | '\n');
    if s.chars().all(plain) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An element taken out of its document and made valid XML on its own: its start tag carries
/// the namespace declarations it relied on from the root of its source document, so that it
/// keeps its meaning wherever it is pasted, whatever prefixes the new document binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    xml: String,
    /// Where the start tag's attributes end: more attributes can be written there.
    open_end: usize,
}

impl Fragment {
    /// `el`, a child of `root` in `source`, without its attribute `omit` (to be written again
    /// by [`Fragment::write_with`]). `context_default` is the default namespace of the
    /// documents the fragment goes into: when `el` relies on the same one it is not repeated.
    pub fn detach(source: &str, root: &Element, el: &Element, context_default: &str, omit: Option<&str>) -> Fragment {
        let mut needed: Vec<(&str, &str)> = Vec::new();
        relied_on(root, el, &mut Vec::new(), &mut needed);
        needed.retain(|&(prefix, uri)| !(prefix.is_empty() && uri == context_default));

        let inner = source.get(el.head_end..el.end).unwrap_or_default();
        let mut xml = String::with_capacity(inner.len() + 128);
        xml.push('<');
        if !el.prefix.is_empty() {
            xml.push_str(&el.prefix);
            xml.push(':');
        }
        xml.push_str(&el.name);
        for (k, v) in el.attrs.iter().filter(|(k, _)| Some(k.as_str()) != omit) {
            push_attribute(&mut xml, k, v);
        }
        for (prefix, uri) in needed {
            match prefix {
                "" => push_attribute(&mut xml, "xmlns", uri),
                p => push_attribute(&mut xml, &format!("xmlns:{p}"), uri),
            }
        }
        let open_end = xml.len();
        if el.head_end == el.end {
            xml.push_str("/>");
        } else {
            // The rest of the start tag's `>`, the content and the end tag, as written.
            xml.push('>');
            xml.push_str(inner);
        }
        Fragment { xml, open_end }
    }

    pub fn as_str(&self) -> &str {
        &self.xml
    }

    /// Appends the element to `out` with one more attribute (the one left out by `detach`).
    pub fn write_with(&self, out: &mut String, name: &str, value: &str) {
        out.push_str(&self.xml[..self.open_end]);
        push_attribute(out, name, value);
        out.push_str(&self.xml[self.open_end..]);
    }
}

fn push_attribute(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    out.push_str(&escape(value));
    out.push('"');
}

/// Collects into `needed` the declarations of `root` that `el` and its descendants rely on:
/// the prefixes of their names and of their attributes' names, and the default namespace for
/// unprefixed names (the empty namespace when the root declares none: an unprefixed element
/// of a document without a default namespace is in no namespace, and must stay so). A prefix
/// in an attribute value (`xsi:type="rpid:x"`) counts too: some schemas use such QNames, and
/// an unneeded declaration is harmless. `scope` holds the prefixes declared on the way down
/// inside the fragment itself.
fn relied_on<'a>(root: &'a Element, el: &'a Element, scope: &mut Vec<&'a str>, needed: &mut Vec<(&'a str, &'a str)>) {
    let outer = scope.len();
    scope.extend(el.declarations().map(|(p, _)| p));
    let mut need = |prefix: &'a str, scope: &[&str], missing_default: Option<&'a str>| {
        if scope.contains(&prefix) || needed.iter().any(|(p, _)| *p == prefix) {
            return;
        }
        match root.declarations().find(|(p, _)| *p == prefix) {
            Some(d) => needed.push(d),
            None => {
                if let Some(uri) = missing_default {
                    needed.push((prefix, uri));
                }
            }
        }
    };
    need(&el.prefix, scope, el.prefix.is_empty().then_some(""));
    for (k, v) in &el.attrs {
        if let Some((p, _)) = k.split_once(':') {
            if p != "xmlns" && p != "xml" {
                need(p, scope, None);
            }
        }
        if let Some((p, local)) = v.split_once(':') {
            let ncname = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "-._".contains(c));
            if ncname(p) && ncname(local) {
                need(p, scope, None);
            }
        }
    }
    for child in &el.children {
        relied_on(root, child, scope, needed);
    }
    scope.truncate(outer);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    #[test]
    fn well_formedness_over_the_whole_document() {
        assert!(parse("<a xmlns='urn:x'><b>t</b></a>").is_ok());
        assert!(parse("<?xml version='1.0'?>\n<a/>\n<!-- c -->\n").is_ok());
        assert!(parse("<a><b></a>").is_err(), "mismatched");
        assert!(parse("<a><b>").is_err(), "unclosed");
        assert!(parse("<a><b").is_err(), "truncated tag");
        assert!(parse("<a/><b/>").is_err(), "two roots");
        assert!(parse("<a/>junk").is_err(), "trailing text");
        assert!(parse("junk<a/>").is_err(), "leading text");
        assert!(parse("<a/></a>").is_err(), "end tag with no start");
        assert!(parse("").is_err(), "empty");
        assert!(parse("<p:a/>").is_err(), "undeclared element prefix");
        assert!(parse("<a p:x='1'/>").is_err(), "undeclared attribute prefix");
        assert!(parse("<a x='1' x='2'/>").is_err(), "duplicate attribute");
        assert!(parse("<a x='<'/>").is_err(), "< in an attribute");
        assert!(parse("<a>&nbsp;</a>").is_err(), "undefined entity");
        assert!(parse("<a>&#1;</a>").is_err(), "reference to a control character");
        assert!(parse("<a>\u{1}</a>").is_err(), "control character");
        assert!(parse("<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>").is_err(), "DOCTYPE");
        assert!(parse("<a/><?xml version='1.0'?>").is_err(), "late XML declaration");
        assert!(parse("<1a/>").is_err(), "name starting with a digit");
        assert!(parse("<a:b:c xmlns:a='urn:a'/>").is_err(), "two colons");
        assert!(parse("<a $='1'/>").is_err(), "attribute name");
        assert!(parse("<a>]]></a>").is_err(), "]]> in text");
        assert!(parse("<a><!-- a -- b --></a>").is_err(), "-- in a comment");
        assert!(parse("<a xmlns:p=''/>").is_err(), "undeclaring a prefix");
        assert!(parse("<a xmlns:xml='urn:x'/>").is_err(), "rebinding xml");
        assert!(parse("<é.b-c_1 xml:lang='fr' xmlns=''/>").is_ok(), "names beyond ASCII, xml:lang, xmlns=''");
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err(), "too deep");
    }

    #[test]
    fn text_and_attributes_are_read_as_xml_defines() {
        let root = parse("<a x='1&#10;2\n3&amp;'>l1\r\nl2 &lt;&#x41;<![CDATA[<b>]]></a>").unwrap();
        assert_eq!(root.attr("x"), Some("1\n2 3&"));
        assert_eq!(root.text, "l1\nl2 <A<b>");
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_spans_stay_right() {
        let src = "\u{feff}<r xmlns:p='urn:p'><p:x>é</p:x></r>";
        let root = parse(src).unwrap();
        let f = Fragment::detach(src, &root, &root.children[0], "", None);
        assert_eq!(f.as_str(), "<p:x xmlns:p=\"urn:p\">é</p:x>");
    }

    #[test]
    fn a_detached_element_keeps_its_namespaces_and_only_those() {
        let src = r#"<r xmlns="urn:r" xmlns:p="urn:p" xmlns:q="urn:q" xmlns:unused="urn:u"><p:x a="1"><y q:b="2"/></p:x></r>"#;
        let root = parse(src).unwrap();
        let out = Fragment::detach(src, &root, &root.children[0], "", None);
        assert_eq!(out.as_str(), r#"<p:x a="1" xmlns:p="urn:p" xmlns="urn:r" xmlns:q="urn:q"><y q:b="2"/></p:x>"#);
        let again = parse(out.as_str()).unwrap();
        assert_eq!((again.ns.as_str(), again.name.as_str()), ("urn:p", "x"));
        assert_eq!(again.children[0].ns, "urn:r");
    }

    #[test]
    fn an_element_in_no_namespace_stays_in_none() {
        let src = r#"<p:r xmlns:p="urn:p"><x><y/></x></p:r>"#;
        let root = parse(src).unwrap();
        let out = Fragment::detach(src, &root, &root.children[0], "urn:ctx", None);
        assert_eq!(out.as_str(), r#"<x xmlns=""><y/></x>"#);
        let inside = format!("<c xmlns='urn:ctx'>{}</c>", out.as_str());
        assert_eq!(parse(&inside).unwrap().children[0].children[0].ns, "");
    }

    #[test]
    fn declarations_made_inside_the_fragment_are_not_repeated() {
        let src = r#"<r xmlns:p="urn:p"><p:x xmlns:p="urn:other"><p:y/></p:x></r>"#;
        let root = parse(src).unwrap();
        let out = Fragment::detach(src, &root, &root.children[0], "", None);
        assert_eq!(out.as_str(), r#"<p:x xmlns:p="urn:other"><p:y/></p:x>"#);
    }

    #[test]
    fn an_attribute_can_be_replaced() {
        let src = r#"<r xmlns="urn:r"><t id='a&amp;b' k="v">x</t></r>"#;
        let root = parse(src).unwrap();
        let f = Fragment::detach(src, &root, &root.children[0], "urn:r", Some("id"));
        let mut out = String::new();
        f.write_with(&mut out, "id", "n\"1");
        assert_eq!(out, r#"<t k="v" id="n&quot;1">x</t>"#);
    }

    #[test]
    fn escaping() {
        assert!(matches!(escape("plain text"), Cow::Borrowed(_)));
        assert_eq!(escape("<a & 'b'>\"\r\n\t\u{0}"), "&lt;a &amp; &apos;b&apos;&gt;&quot;&#13;&#10;&#9;\u{FFFD}");
    }
}
