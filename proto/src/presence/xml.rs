//! A small, bounded XML tree for presence bodies: every element with its namespace, local
//! name, attributes, text and its span in the source (so that an element can be passed on
//! unchanged). Well-formedness is checked over the whole document: one root, every tag
//! closed, nothing but whitespace, comments and processing instructions around the root.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::fmt;

/// Elements nested deeper than this are refused (a hostile body must not exhaust the stack).
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Element {
    /// The namespace URI, empty when unbound.
    pub ns: String,
    pub name: String,
    /// Attributes by qualified name (`xmlns` declarations included), values unescaped.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// The text directly inside, unescaped and concatenated.
    pub text: String,
    /// Byte range of the whole element in the source.
    pub span: (usize, usize),
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

    /// The `xmlns` and `xmlns:p` declarations on this element.
    pub fn namespace_declarations(&self) -> impl Iterator<Item = &(String, String)> {
        self.attrs.iter().filter(|(k, _)| k == "xmlns" || k.starts_with("xmlns:"))
    }
}

/// Parses `text` into its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let err = |e: &dyn fmt::Display, at: u64| XmlError(format!("{e} at byte {at}"));
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(n), e)) => (String::from_utf8_lossy(n.as_ref()).into_owned(), e),
            Ok((ResolveResult::Unbound, e)) => (String::new(), e),
            Ok((ResolveResult::Unknown(p), _)) => {
                return Err(XmlError(format!("undeclared namespace prefix {}", String::from_utf8_lossy(&p))));
            }
            Err(e) => return Err(err(&e, before as u64)),
        };
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(XmlError("content after the root element".into()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError("elements nested too deeply".into()));
                }
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| err(&e, before as u64))?;
                    let value = a.unescape_value().map_err(|e| err(&e, before as u64))?.into_owned();
                    attrs.push((String::from_utf8_lossy(a.key.as_ref()).into_owned(), value));
                }
                let el = Element {
                    ns,
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                    span: (before, after),
                };
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let Some(mut el) = stack.pop() else { return Err(XmlError("an end tag with no start".into())) };
                el.span.1 = after;
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| err(&e, before as u64))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(XmlError("text outside the root element".into())),
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(el) => el.text.push_str(&String::from_utf8_lossy(&c)),
                None => return Err(XmlError("CDATA outside the root element".into())),
            },
            Event::DocType(_) => return Err(XmlError("a DOCTYPE is not accepted".into())),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError(format!("<{}> is not closed", stack.last().map_or("", |e| e.name.as_str()))));
    }
    root.ok_or_else(|| XmlError("no root element".into()))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// `s` escaped for an attribute value or text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The source text of `el`, made valid on its own: the namespace declarations `inherited`
/// (those of the source document's root) that it does not declare itself are added to its
/// start tag.
pub fn standalone(source: &str, el: &Element, inherited: &[(String, String)]) -> String {
    let (s, e) = el.span;
    let text = &source[s..e];
    let missing: Vec<&(String, String)> =
        inherited.iter().filter(|(k, _)| !el.attrs.iter().any(|(mine, _)| mine == k)).collect();
    if missing.is_empty() {
        return text.to_string();
    }
    // After `<name`: the first whitespace, `/` or `>` ends the name.
    let name_end = text[1..].find(|c: char| c.is_whitespace() || c == '/' || c == '>').map_or(text.len(), |i| i + 1);
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(&text[..name_end]);
    for (k, v) in missing {
        out.push_str(&format!(" {k}=\"{}\"", escape(v)));
    }
    out.push_str(&text[name_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formedness_over_the_whole_document() {
        assert!(parse("<a xmlns='urn:x'><b>t</b></a>").is_ok());
        assert!(parse("<a><b></a>").is_err(), "mismatched");
        assert!(parse("<a><b>").is_err(), "unclosed");
        assert!(parse("<a/><b/>").is_err(), "two roots");
        assert!(parse("<a/>junk").is_err(), "trailing text");
        assert!(parse("").is_err(), "empty");
        assert!(parse("<p:a/>").is_err(), "undeclared prefix");
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err(), "too deep");
    }

    #[test]
    fn an_element_taken_out_keeps_its_namespaces() {
        let src = r#"<r xmlns="urn:r" xmlns:p="urn:p"><p:x a="1"><p:y/></p:x></r>"#;
        let root = parse(src).unwrap();
        let decls: Vec<(String, String)> = root.namespace_declarations().cloned().collect();
        let out = standalone(src, &root.children[0], &decls);
        let again = parse(&out).unwrap();
        assert_eq!((again.ns.as_str(), again.name.as_str()), ("urn:p", "x"));
        assert_eq!(again.children[0].ns, "urn:p");
    }
}
