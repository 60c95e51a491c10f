//! Presence bodies end to end: the examples of the RFCs and of real clients, hostile input
//! (every parser answers a document or an error and never panics), and composition checked
//! against an independent namespace-aware reader (quick-xml used directly): every element
//! passed through stays in its namespace, whatever prefixes its source bound.

// Tests unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use sipfront_proto::multipart;
use sipfront_proto::presence::{pidf, rlmi, winfo};

const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";

/// RFC 3863 section 3.4 (the tuple uses prefixes declared on the root only).
const RFC3863: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
    xmlns:myex="http://id.example.com/presence/"
    entity="pres:someone@example.com">
  <impp:tuple id="bs35r9">
    <impp:status>
      <impp:basic>open</impp:basic>
      <myex:location>home</myex:location>
    </impp:status>
    <impp:contact priority="0.8">im:someone@mobilecarrier.net</impp:contact>
    <impp:note xml:lang="en">Don't Disturb Please!</impp:note>
    <impp:note xml:lang="fr">Ne derangez pas, s'il vous plait</impp:note>
    <impp:timestamp>2001-10-27T16:49:29Z</impp:timestamp>
  </impp:tuple>
  <impp:tuple id="eg92n8">
    <impp:status>
      <impp:basic>open</impp:basic>
    </impp:status>
    <impp:contact priority="1.0">mailto:someone@example.com</impp:contact>
  </impp:tuple>
  <impp:note>I'll be in Tokyo next week</impp:note>
</impp:presence>
"#;

/// RFC 4480 section 4 (RPID with the RFC 4479 data model: person, device, location types).
const RFC4480: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
     xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
     xmlns:lt="urn:ietf:params:xml:ns:location-type"
     xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
     entity="pres:someone@example.com">

  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
    </status>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <rpid:relationship><rpid:self/></rpid:relationship>
    <rpid:service-class><rpid:electronic/></rpid:service-class>
    <contact priority="0.8">im:someone@mobile.example.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2005-10-27T16:49:29Z</timestamp>
  </tuple>

  <tuple id="ty4658">
    <status>
      <basic>open</basic>
    </status>
    <rpid:relationship><rpid:assistant/></rpid:relationship>
    <contact priority="1.0">mailto:secretary@example.com</contact>
  </tuple>

  <tuple id="eg92n8">
    <status>
      <basic>open</basic>
    </status>
    <dm:deviceID>urn:x-mac:0003ba4811e3</dm:deviceID>
    <rpid:class>email</rpid:class>
    <rpid:service-class><rpid:electronic/></rpid:service-class>
    <rpid:status-icon>http://example.com/mail.png</rpid:status-icon>
    <contact priority="1.0">mailto:someone@example.com</contact>
  </tuple>

  <note>I'll be in Tokyo next week</note>

  <dm:device id="pc147">
    <rpid:user-input idle-threshold="600"
      last-input="2004-10-21T13:20:00-05:00">idle</rpid:user-input>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <dm:note>PC</dm:note>
  </dm:device>

  <dm:person id="p1">
    <rpid:activities from="2005-05-30T12:00:00+05:00"
      until="2005-05-30T17:00:00+05:00">
      <rpid:note>Far away</rpid:note>
      <rpid:away/>
    </rpid:activities>
    <rpid:class>calendar</rpid:class>
    <rpid:mood>
      <rpid:angry/>
      <rpid:other>brooding</rpid:other>
    </rpid:mood>
    <rpid:place-is>
      <rpid:audio>
        <rpid:noisy/>
      </rpid:audio>
    </rpid:place-is>
    <rpid:place-type><lt:residence/></rpid:place-type>
    <rpid:privacy><rpid:unknown/></rpid:privacy>
    <rpid:sphere>bowling league</rpid:sphere>
    <rpid:status-icon>http://example.com/play.gif</rpid:status-icon>
    <rpid:time-offset>-240</rpid:time-offset>
    <dm:note>Scoring 120</dm:note>
    <dm:timestamp>2005-05-30T16:09:44+05:00</dm:timestamp>
  </dm:person>
</presence>
"#;

/// The shape Linphone publishes: its own `pidfonline` extension inside the tuple's status, the
/// default namespace declared after the others, the entity with a port.
const LINPHONE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:pidfonline="http://www.linphone.org/xsds/pidfonline.xsd" entity="sip:bob@192.0.2.7:5062" xmlns="urn:ietf:params:xml:ns:pidf">
 <tuple id="qz7a1-">
  <status>
   <basic>open</basic>
   <pidfonline:online/>
  </status>
  <contact priority="0.42">sip:bob@192.0.2.7:5062</contact>
  <timestamp>2026-11-24T10:00:00Z</timestamp>
 </tuple>
 <dm:person id="k8s2">
  <rpid:activities>
   <rpid:away/>
  </rpid:activities>
  <dm:timestamp>2026-11-24T10:00:00Z</dm:timestamp>
 </dm:person>
</presence>
"#;

fn source<'a>(doc: &'a pidf::Pidf, tag: &'a str, rank: usize) -> pidf::Source<'a> {
    pidf::Source { doc, tag, newest_first_rank: rank }
}

/// An element as (namespace, local name, attributes).
type Read = (String, String, Vec<(String, String)>);

/// Every element of `xml`, read by quick-xml's own namespace resolution; `Err` if the document
/// is not namespace-well-formed.
fn elements(xml: &str) -> Result<Vec<Read>, String> {
    let mut reader = NsReader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_resolved_event().map_err(|e| e.to_string())? {
            (ns, Event::Start(e) | Event::Empty(e)) => {
                let ns = match ns {
                    ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                    ResolveResult::Unbound => String::new(),
                    ResolveResult::Unknown(p) => return Err(format!("undeclared {}", String::from_utf8_lossy(&p))),
                };
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    if let (ResolveResult::Unknown(p), _) = reader.resolve_attribute(a.key) {
                        return Err(format!("undeclared attribute prefix {}", String::from_utf8_lossy(&p)));
                    }
                    let v = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
                    attrs.push((String::from_utf8_lossy(a.key.as_ref()).into_owned(), v));
                }
                out.push((ns, String::from_utf8_lossy(e.local_name().as_ref()).into_owned(), attrs));
            }
            (_, Event::Eof) => return Ok(out),
            _ => {}
        }
    }
}

fn find<'a>(els: &'a [Read], ns: &str, name: &str) -> Vec<&'a [(String, String)]> {
    els.iter().filter(|(n, l, _)| n == ns && l == name).map(|(_, _, a)| a.as_slice()).collect()
}

// --- PIDF ---------------------------------------------------------------------------------

#[test]
fn rfc3863_example_with_a_prefixed_root() {
    let d = pidf::parse(RFC3863.as_bytes()).expect("RFC 3863 example");
    assert_eq!(d.entity_aor().as_deref(), Some("someone@example.com"));
    let ids: Vec<&str> = d.tuples.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["bs35r9", "eg92n8"]);
    assert_eq!(d.tuples[0].basic, Some(pidf::Basic::Open));
    assert_eq!(d.tuples[0].note.as_deref(), Some("Don't Disturb Please!"));
    assert_eq!(d.tuples[0].timestamp.as_deref(), Some("2001-10-27T16:49:29Z"));
    assert_eq!(d.notes, ["I'll be in Tokyo next week"]);
    assert_eq!(d.extensions().count(), 0);

    let out = pidf::compose("sip:someone@example.com", &[source(&d, "a", 0)]);
    let els = elements(&out).expect("namespace-well-formed");
    assert_eq!(find(&els, "http://id.example.com/presence/", "location").len(), 1, "{out}");
    assert_eq!(find(&els, PIDF_NS, "contact").len(), 2);
    let again = pidf::parse(out.as_bytes()).expect("re-parses");
    assert_eq!(again.tuples, d.tuples);
    assert_eq!(again.notes, d.notes);
}

#[test]
fn rfc4480_example_passes_through_compose_and_re_parses() {
    let d = pidf::parse(RFC4480.as_bytes()).expect("RFC 4480 example");
    assert_eq!(d.tuples.len(), 3);
    assert_eq!(d.notes, ["I'll be in Tokyo next week"]);
    let ext: Vec<&str> = d.extensions().collect();
    assert_eq!(ext.len(), 2, "device and person");
    // Each element declares what it uses from the root, and nothing else.
    assert!(ext[0].starts_with(r#"<dm:device id="pc147" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">"#), "{}", ext[0]);
    assert!(ext[1].contains(r#"xmlns:lt="urn:ietf:params:xml:ns:location-type""#), "person uses lt: {}", ext[1]);
    for e in &ext {
        elements(e).expect("valid on its own");
    }

    let mine = pidf::parse(pidf::basic_document("sip:someone@example.com", false, Some("later")).as_bytes()).unwrap();
    let out = pidf::compose("sip:someone@example.com", &[source(&d, "e1", 1), source(&mine, "e2", 0)]);
    assert!(out.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    let again = pidf::parse(out.as_bytes()).expect("composed document re-parses");
    assert_eq!(again.entity, "sip:someone@example.com");
    assert_eq!(again.tuples.len(), 4);
    assert_eq!(again.tuples[0].basic, Some(pidf::Basic::Closed), "newest first");
    assert_eq!(again.notes, ["I'll be in Tokyo next week"], "the newest source with notes");
    assert_eq!(again.extensions().collect::<Vec<_>>(), ext, "passed through unchanged");

    let els = elements(&out).expect("namespace-well-formed");
    let rpid = "urn:ietf:params:xml:ns:pidf:rpid";
    for name in ["activities", "away", "mood", "angry", "place-is", "place-type", "privacy", "sphere", "user-input"] {
        assert_eq!(find(&els, rpid, name).len(), 1, "{name} in the RPID namespace");
    }
    assert_eq!(find(&els, "urn:ietf:params:xml:ns:location-type", "residence").len(), 1);
    assert!(find(&els, "urn:ietf:params:xml:ns:pidf:data-model", "person")[0].contains(&("id".into(), "p1".into())));
    let activities = find(&els, rpid, "activities")[0];
    assert!(activities.contains(&("until".into(), "2005-05-30T17:00:00+05:00".into())));
}

#[test]
fn linphone_publication_keeps_its_extension_inside_the_tuple() {
    let d = pidf::parse(LINPHONE.as_bytes()).expect("Linphone PIDF");
    assert_eq!(d.entity_aor().as_deref(), Some("bob@192.0.2.7"));
    assert_eq!(d.tuples[0].id, "qz7a1-");
    let out = pidf::compose("sip:bob@example.test", &[source(&d, "x", 0)]);
    let els = elements(&out).expect("namespace-well-formed");
    assert_eq!(find(&els, "http://www.linphone.org/xsds/pidfonline.xsd", "online").len(), 1, "{out}");
    assert_eq!(find(&els, "urn:ietf:params:xml:ns:pidf:rpid", "away").len(), 1);
    assert_eq!(pidf::parse(out.as_bytes()).expect("re-parses").tuples[0].id, "qz7a1-");
}

#[test]
fn sources_binding_one_prefix_to_different_namespaces() {
    let doc = |uri: &str, id: &str| {
        format!(
            r#"<presence xmlns="{PIDF_NS}" xmlns:x="{uri}" entity="sip:a@example.test"><tuple id="{id}"><status><basic>open</basic><x:flag/></status></tuple><x:info x:k="v"><x:deep/></x:info></presence>"#
        )
    };
    let a = pidf::parse(doc("urn:vendor:one", "t").as_bytes()).unwrap();
    let b = pidf::parse(doc("urn:vendor:two", "t").as_bytes()).unwrap();
    let out = pidf::compose("sip:a@example.test", &[source(&a, "A", 0), source(&b, "B", 1)]);
    let els = elements(&out).expect("namespace-well-formed");
    for uri in ["urn:vendor:one", "urn:vendor:two"] {
        for name in ["flag", "info", "deep"] {
            assert_eq!(find(&els, uri, name).len(), 1, "{name} in {uri}: {out}");
        }
    }
    let ids: Vec<String> = pidf::parse(out.as_bytes()).unwrap().tuples.into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["t", "t-B"]);
}

#[test]
fn an_extension_in_no_namespace_stays_in_none() {
    // The source has no default namespace, the composed document does.
    let body = br#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="sip:a@b.test"><p:tuple id="a"><p:status><p:basic>open</p:basic></p:status><bare/></p:tuple><plain><inner/></plain></p:presence>"#;
    let d = pidf::parse(body).unwrap();
    let out = pidf::compose("sip:a@b.test", &[source(&d, "a", 0)]);
    let els = elements(&out).unwrap();
    for name in ["bare", "plain", "inner"] {
        assert_eq!(find(&els, "", name).len(), 1, "{name} in no namespace: {out}");
    }
    assert_eq!(find(&els, PIDF_NS, "tuple").len(), 1);
}

#[test]
fn what_is_not_pidf_is_refused() {
    let e = |b: &[u8]| pidf::parse(b).err();
    assert!(matches!(e(b"<presence entity=\"x\"><tuple>"), Some(pidf::PidfError::NotXml(_))), "unclosed");
    let ns = format!("<presence xmlns='{PIDF_NS}' entity='sip:a@b'>");
    assert!(
        matches!(e(format!("{ns}<tuple id='a'></status></presence>").as_bytes()), Some(pidf::PidfError::NotXml(_))),
        "mismatched"
    );
    assert!(matches!(e(format!("{ns}</presence><x/>").as_bytes()), Some(pidf::PidfError::NotXml(_))), "two roots");
    assert!(matches!(e(format!("{ns}</presence>junk").as_bytes()), Some(pidf::PidfError::NotXml(_))), "trailing junk");
    assert!(
        matches!(e(format!("{ns}<x:y/></presence>").as_bytes()), Some(pidf::PidfError::NotXml(_))),
        "undeclared prefix"
    );
    assert_eq!(
        e(b"<presence xmlns='urn:ietf:params:xml:ns:cpim-pidf' entity='sip:a@b'/>"),
        Some(pidf::PidfError::NotPidf)
    );
    assert_eq!(
        e(b"<presence entity='sip:a@b'><tuple id='a'/></presence>"),
        Some(pidf::PidfError::NotPidf),
        "no namespace"
    );
    assert_eq!(e(format!("<status xmlns='{PIDF_NS}'/>").as_bytes()), Some(pidf::PidfError::NotPidf));
    assert_eq!(e(format!("<presence xmlns='{PIDF_NS}'/>").as_bytes()), Some(pidf::PidfError::NoEntity));
    assert_eq!(e(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:\xc3'/>"), Some(pidf::PidfError::NotUtf8));
    assert!(matches!(e(b""), Some(pidf::PidfError::NotXml(_))));
    // A byte order mark and an XML declaration are fine.
    assert!(pidf::parse(format!("\u{feff}<?xml version='1.0'?>{ns}</presence>").as_bytes()).is_ok());
}

#[test]
fn everything_written_is_escaped() {
    let entity = "sip:o'neil&\"co\"@example.test";
    let note = "<b>bold</b> & \"quoted\" 'single'\nline two\ttab\r";
    let doc = pidf::basic_document(entity, true, Some(note));
    let d = pidf::parse(doc.as_bytes()).unwrap();
    assert_eq!(d.entity, entity);
    assert_eq!(d.tuples[0].note.as_deref(), Some(note));

    let published = format!(
        r#"<presence xmlns="{PIDF_NS}" entity="sip:a@b"><tuple id="a&amp;b"/><note>{}</note></presence>"#,
        "x &lt; y"
    );
    let p = pidf::parse(published.as_bytes()).unwrap();
    assert_eq!(p.tuples[0].id, "a&b");
    let out = pidf::compose(entity, &[source(&p, "t", 0), source(&p, "t&<>", 1)]);
    let c = pidf::parse(out.as_bytes()).expect("escaped output re-parses");
    assert_eq!(c.entity, entity);
    assert_eq!(c.notes, ["x < y"]);
    assert_eq!(c.tuples[0].id, "a&b");
    assert_eq!(c.tuples[1].id, "a&b-t", "the tag keeps to the characters of an XML ID");

    let empty = pidf::empty_document(entity);
    let e = pidf::parse(empty.as_bytes()).unwrap();
    assert_eq!((e.entity.as_str(), e.tuples.len(), e.notes.len()), (entity, 0, 0));
}

#[test]
fn composition_order_notes_and_ids() {
    let with = |id: &str, note: Option<&str>| {
        let n = note.map(|n| format!("<note>{n}</note>")).unwrap_or_default();
        pidf::parse(
            format!(r#"<presence xmlns="{PIDF_NS}" entity="sip:a@b"><tuple id="{id}"/>{n}</presence>"#).as_bytes(),
        )
        .unwrap()
    };
    let (old, mid, new) = (with("d", Some("old")), with("d", Some("mid")), with("d", None));
    // The order of the slice does not matter, the rank does.
    let out = pidf::compose("sip:a@b", &[source(&old, "o", 2), source(&new, "n", 0), source(&mid, "m", 1)]);
    let c = pidf::parse(out.as_bytes()).unwrap();
    let ids: Vec<&str> = c.tuples.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["d", "d-m", "d-o"]);
    assert_eq!(c.notes, ["mid"], "the newest source that has notes");

    let none = pidf::compose("sip:a@b", &[]);
    assert_eq!(pidf::parse(none.as_bytes()).unwrap().tuples.len(), 0);

    // Many publications with one tuple id: unique ids, no quadratic blow-up.
    let tags: Vec<String> = (0..2000).map(|i| format!("tag{i}")).collect();
    let sources: Vec<pidf::Source> = tags.iter().enumerate().map(|(i, t)| source(&new, t, i)).collect();
    let big = pidf::parse(pidf::compose("sip:a@b", &sources).as_bytes()).expect("all ids unique");
    assert_eq!(big.tuples.len(), 2000);
}

#[test]
fn entity_aor_forms() {
    let aor = |entity: &str| {
        let doc = pidf::empty_document(entity);
        pidf::parse(doc.as_bytes()).unwrap().entity_aor()
    };
    assert_eq!(aor("pres:Alice@Example.TEST").as_deref(), Some("Alice@example.test"));
    assert_eq!(aor("sip:alice@example.test;transport=tcp").as_deref(), Some("alice@example.test"));
    assert_eq!(aor("sips:alice@example.test:5061?subject=hi").as_deref(), Some("alice@example.test"));
    assert_eq!(aor("sip:alice%2Bwork@example.test").as_deref(), Some("alice+work@example.test"));
    assert_eq!(aor("tel:+15551234"), None);
    assert_eq!(aor("sip:example.test"), None);
    assert_eq!(aor("alice@example.test"), None);
}

// --- watcherinfo --------------------------------------------------------------------------

/// RFC 3858 section 5.
const RFC3858: &str = r#"<?xml version="1.0"?>
<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo"
             version="0" state="full">
  <watcher-list resource="sip:professor@example.net" package="presence">
    <watcher status="active"
             id="8ajksjda7s"
             duration-subscribed="509"
             event="approved">sip:userA@example.net</watcher>
    <watcher status="pending"
             id="hh8juja87s997-ass7"
             display-name="Mr. Subscriber"
             event="subscribe">sip:userB@example.org</watcher>
  </watcher-list>
</watcherinfo>
"#;

#[test]
fn rfc3858_example() {
    let info = winfo::parse(RFC3858.as_bytes()).expect("RFC 3858 example");
    assert_eq!((info.version, info.full, info.lists.len()), (0, true, 1));
    let list = &info.lists[0];
    assert_eq!((list.resource.as_str(), list.package.as_str()), ("sip:professor@example.net", "presence"));
    assert_eq!(
        list.watchers[0],
        winfo::Watcher {
            id: "8ajksjda7s".into(),
            uri: "sip:userA@example.net".into(),
            display_name: None,
            status: winfo::WatcherStatus::Active,
            event: winfo::WatcherEvent::Approved,
            duration_subscribed: Some(509),
        }
    );
    assert_eq!(list.watchers[1].display_name.as_deref(), Some("Mr. Subscriber"));
    assert_eq!(list.watchers[1].status, winfo::WatcherStatus::Pending);
}

#[test]
fn watcherinfo_round_trip_of_every_status_and_event() {
    use winfo::{WatcherEvent as E, WatcherStatus as S};
    let statuses = [S::Pending, S::Active, S::Waiting, S::Terminated];
    let events =
        [E::Subscribe, E::Approved, E::Deactivated, E::Probation, E::Rejected, E::Timeout, E::Giveup, E::Noresource];
    let watchers: Vec<winfo::Watcher> = events
        .iter()
        .enumerate()
        .map(|(i, &event)| winfo::Watcher {
            id: format!("w{i}<&>"),
            uri: format!("sip:user{i}@example.test"),
            display_name: (i % 2 == 0).then(|| format!("User \"{i}\" & co")),
            status: statuses[i % statuses.len()],
            event,
            duration_subscribed: (i % 3 == 0).then_some(i as u64 * 100),
        })
        .collect();
    for full in [true, false] {
        let doc = winfo::document(7, full, "sip:alice@example.test", "presence", &watchers);
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        let info = winfo::parse(doc.as_bytes()).unwrap();
        assert_eq!((info.version, info.full), (7, full));
        assert_eq!(info.lists[0].watchers, watchers);
    }
    assert_eq!(winfo::WatcherStatus::Terminated.as_str(), "terminated");
    assert_eq!(winfo::WatcherEvent::Noresource.as_str(), "noresource");
}

#[test]
fn what_is_not_watcherinfo_is_refused() {
    let ns = "urn:ietf:params:xml:ns:watcherinfo";
    let e = |b: String| winfo::parse(b.as_bytes()).err();
    assert_eq!(e(format!("<presence xmlns='{PIDF_NS}' entity='sip:a@b'/>")), Some(winfo::WinfoError::NotWatcherinfo));
    assert!(matches!(
        e(format!("<watcherinfo xmlns='{ns}' version='1' state='full'>")),
        Some(winfo::WinfoError::NotXml(_))
    ));
    assert!(matches!(
        e(format!("<watcherinfo xmlns='{ns}' version='-1' state='full'/>")),
        Some(winfo::WinfoError::Invalid(_))
    ));
    assert!(matches!(
        e(format!("<watcherinfo xmlns='{ns}' version='1' state='some'/>")),
        Some(winfo::WinfoError::Invalid(_))
    ));
    let list = |w: &str| {
        format!("<watcherinfo xmlns='{ns}' version='1' state='full'><watcher-list resource='sip:a@b' package='presence'>{w}</watcher-list></watcherinfo>")
    };
    assert!(matches!(
        e(list("<watcher id='1' status='bored' event='subscribe'>sip:x@y</watcher>")),
        Some(winfo::WinfoError::Invalid(_))
    ));
    assert!(matches!(
        e(list("<watcher status='active' event='approved'>sip:x@y</watcher>")),
        Some(winfo::WinfoError::Invalid(_))
    ));
    assert!(winfo::parse(list("").as_bytes()).is_ok());
    assert_eq!(winfo::parse(&[0xc0, 0x80]).err(), Some(winfo::WinfoError::NotUtf8));
}

// --- RLMI ---------------------------------------------------------------------------------

/// RFC 4662 section 5.5 (the first NOTIFY of the example).
const RFC4662: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<list xmlns="urn:ietf:params:xml:ns:rlmi"
      uri="sip:adam-friends@pres.example.com" version="1"
      fullState="true">
  <name xml:lang="en">Buddy List at COM</name>
  <name xml:lang="de">Liste der Freunde an COM</name>
  <resource uri="sip:bob@example.com">
    <name>Bob Smith</name>
    <instance id="juwigmtboe" state="active"
              cid="bUZBsM@pres.example.com"/>
  </resource>
  <resource uri="sip:dave@example.com">
    <name>Dave Jones</name>
    <instance id="hqzsuxtfyq" state="active"
              cid="ZvSvkz@pres.example.com"/>
  </resource>
  <resource uri="sip:ed@example.net">
    <name>Ed at NET</name>
  </resource>
  <resource uri="sip:adam-friends@example.org">
    <name xml:lang="en">My Friends at ORG</name>
    <name xml:lang="de">Meine Freunde an ORG</name>
  </resource>
</list>
"#;

fn sample_list() -> rlmi::Rlmi {
    rlmi::Rlmi {
        uri: "sip:alice-list@example.test".into(),
        version: 4,
        full_state: true,
        resources: vec![
            rlmi::Resource {
                uri: "sip:bob@example.test".into(),
                name: Some("Bob \"B\" <Smith> & co".into()),
                instances: vec![rlmi::Instance {
                    id: "i1".into(),
                    state: rlmi::InstanceState::Active,
                    cid: Some("bob.1@example.test".into()),
                }],
            },
            rlmi::Resource {
                uri: "sip:carol@example.test".into(),
                name: None,
                instances: vec![rlmi::Instance { id: "i2".into(), state: rlmi::InstanceState::Pending, cid: None }],
            },
            rlmi::Resource {
                uri: "sip:eve@example.test".into(),
                name: None,
                instances: vec![rlmi::Instance {
                    id: "i3".into(),
                    state: rlmi::InstanceState::Terminated { reason: Some("rejected".into()) },
                    cid: None,
                }],
            },
            rlmi::Resource { uri: "sip:dan@example.test".into(), name: Some("Dan".into()), instances: vec![] },
        ],
    }
}

#[test]
fn rfc4662_example() {
    let list = rlmi::parse(RFC4662.as_bytes()).expect("RFC 4662 example");
    assert_eq!((list.uri.as_str(), list.version, list.full_state), ("sip:adam-friends@pres.example.com", 1, true));
    assert_eq!(list.resources.len(), 4);
    assert_eq!(list.resources[0].name.as_deref(), Some("Bob Smith"));
    assert_eq!(
        list.resources[1].instances,
        [rlmi::Instance {
            id: "hqzsuxtfyq".into(),
            state: rlmi::InstanceState::Active,
            cid: Some("ZvSvkz@pres.example.com".into())
        }]
    );
    assert!(list.resources[2].instances.is_empty());
    assert_eq!(list.resources[3].name.as_deref(), Some("My Friends at ORG"));
}

#[test]
fn rlmi_round_trip_and_refusals() {
    let list = sample_list();
    let doc = rlmi::document(&list);
    assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert_eq!(rlmi::parse(doc.as_bytes()).unwrap(), list);
    let partial = rlmi::Rlmi { full_state: false, resources: vec![], ..list };
    assert_eq!(rlmi::parse(rlmi::document(&partial).as_bytes()).unwrap(), partial);

    let ns = "urn:ietf:params:xml:ns:rlmi";
    let e = |b: String| rlmi::parse(b.as_bytes()).err();
    assert_eq!(
        e("<list xmlns='urn:other' uri='a' version='1' fullState='true'/>".to_string()),
        Some(rlmi::RlmiError::NotRlmi)
    );
    assert!(matches!(
        e(format!("<list xmlns='{ns}' uri='a' version='1' fullState='maybe'/>")),
        Some(rlmi::RlmiError::Invalid(_))
    ));
    assert!(matches!(
        e(format!("<list xmlns='{ns}' version='1' fullState='true'/>")),
        Some(rlmi::RlmiError::Invalid(_))
    ));
    assert!(matches!(
        e(format!("<list xmlns='{ns}' uri='a' version='1' fullState='1'><resource uri='b'><instance id='x' state='gone'/></resource></list>")),
        Some(rlmi::RlmiError::Invalid(_))
    ));
    assert!(matches!(
        e(format!("<list xmlns='{ns}' uri='a' version='1' fullState='1'><resource>")),
        Some(rlmi::RlmiError::NotXml(_))
    ));
}

#[test]
fn multipart_related_parses_back_into_the_rlmi_document_and_each_part() {
    let list = sample_list();
    let doc = rlmi::document(&list);
    let bob = pidf::basic_document("sip:bob@example.test", true, None);
    // A part that contains the first boundary candidate, with bare line breaks and dashes.
    let tricky = b"--sipfront-00000000\r\n\r\n--sipfront-00000000--\r\nend\n".to_vec();
    let parts = [
        rlmi::BodyPart { content_id: "bob.1@example.test", content_type: pidf::CONTENT_TYPE, body: bob.as_bytes() },
        rlmi::BodyPart { content_id: "odd@example.test", content_type: "application/octet-stream", body: &tricky },
        rlmi::BodyPart { content_id: "empty@example.test", content_type: "text/plain", body: b"" },
    ];
    let (content_type, body) = rlmi::multipart_related("list.4@example.test", &doc, &parts);

    let (media, params) = sipfront_proto::scan::split_params(content_type.as_bytes());
    assert_eq!(media, b"multipart/related");
    assert_eq!(params.value("type").as_deref(), Some(&b"application/rlmi+xml"[..]));
    assert_eq!(params.value("start").as_deref(), Some(&b"<list.4@example.test>"[..]));
    let boundary = params.value("boundary").expect("a boundary").into_owned();
    assert_ne!(boundary, b"sipfront-00000000", "the boundary occurs in no part");

    let got = multipart::parts(content_type.as_bytes(), &body).expect("parses as multipart");
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].header("Content-ID"), Some(&b"<list.4@example.test>"[..]));
    assert_eq!(got[0].header("Content-Type"), Some(rlmi::CONTENT_TYPE.as_bytes()));
    assert_eq!(rlmi::parse(got[0].body).expect("the root part is the RLMI document"), list);
    for (want, have) in parts.iter().zip(&got[1..]) {
        assert_eq!(have.header("Content-ID"), Some(format!("<{}>", want.content_id).as_bytes()));
        assert_eq!(have.header("Content-Type"), Some(want.content_type.as_bytes()));
        assert_eq!(have.body, want.body, "{}", want.content_id);
    }
    let cid = list.resources[0].instances[0].cid.as_deref().unwrap();
    let bob_part = got.iter().find(|p| p.header("Content-ID") == Some(format!("<{cid}>").as_bytes())).unwrap();
    assert_eq!(pidf::parse(bob_part.body).unwrap().tuples[0].basic, Some(pidf::Basic::Open));
}

#[test]
fn header_values_cannot_break_out_of_their_line() {
    let parts = [rlmi::BodyPart { content_id: "a\r\nX-Evil: 1", content_type: "text/plain\r\nX-Evil: 2", body: b"x" }];
    let (ct, body) = rlmi::multipart_related("r\"oot>", "<list/>", &parts);
    assert!(!ct.contains('\r') && ct.contains(";start=\"<root>\";"), "{ct}");
    let got = multipart::parts(ct.as_bytes(), &body).unwrap();
    assert_eq!(got[1].header("X-Evil"), None);
    assert_eq!(got[1].body, b"x");
}

// --- hostile and generated input ----------------------------------------------------------

/// Text-level pieces: references good and bad, CDATA, comments, processing instructions,
/// stray markup, arbitrary printable text.
fn xml_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("&amp;&lt;&#x41;&#65;".to_string()),
        Just("&bogus;".to_string()),
        Just("&#1;".to_string()),
        Just("&".to_string()),
        Just("<![CDATA[ <x> ]]>".to_string()),
        Just("<!-- c -->".to_string()),
        Just("<?pi x?>".to_string()),
        Just("<?xml version=\"1.0\"?>".to_string()),
        Just("<!DOCTYPE x>".to_string()),
        Just("]]>".to_string()),
        "[a-z]{0,3}".prop_map(|n| format!("</{n}>")),
        "[ -~\t\r\n\u{e9}\u{1f600}]{0,6}",
    ]
}

const ELEMENT_NAMES: [&str; 16] = [
    "tuple",
    "status",
    "basic",
    "note",
    "timestamp",
    "contact",
    "dm:person",
    "rpid:activities",
    "rpid:away",
    "p:x",
    "watcher-list",
    "watcher",
    "resource",
    "instance",
    "name",
    "q:y",
];
const ATTRIBUTES: [&str; 15] = [
    " id=\"t\"",
    " xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\"",
    " xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\"",
    " xmlns:p=\"urn:p\"",
    " xmlns=\"\"",
    " xmlns=\"urn:ietf:params:xml:ns:pidf\"",
    " p:a=\"1\"",
    " state=\"active\"",
    " status=\"pending\" event=\"subscribe\"",
    " uri=\"sip:a@b\"",
    " cid=\"c@d\"",
    " x=\"&amp;&#10;\"",
    " x=\"<\"",
    " y='q'",
    " z",
];

/// XML-ish documents: mostly balanced elements under one of the three roots, with names,
/// attributes and text drawn from what the parsers look for, and now and then a wrong end
/// tag, a second root or trailing junk.
fn xmlish() -> impl Strategy<Value = String> {
    let attrs = (proptest::collection::vec(0..ATTRIBUTES.len(), 0..3), proptest::option::weighted(0.7, 0..6u8))
        .prop_map(|(v, id)| {
            id.map(|n| format!(" id=\"t{n}\""))
                .into_iter()
                .chain(v.into_iter().map(|i| ATTRIBUTES[i].to_string()))
                .collect::<String>()
        });
    let leaf = prop_oneof![
        3 => xml_text(),
        2 => (0..ELEMENT_NAMES.len(), attrs.clone()).prop_map(|(n, a)| format!("<{}{a}/>", ELEMENT_NAMES[n])),
    ];
    let node = leaf.prop_recursive(4, 40, 4, move |inner| {
        (0..ELEMENT_NAMES.len(), attrs.clone(), proptest::collection::vec(inner, 0..4), prop::bool::weighted(0.05))
            .prop_map(|(n, a, children, wrong_end)| {
                let name = ELEMENT_NAMES[n];
                let end = if wrong_end { ELEMENT_NAMES[(n + 1) % ELEMENT_NAMES.len()] } else { name };
                format!("<{name}{a}>{}</{end}>", children.concat())
            })
    });
    let roots = [
        ("presence", " xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:a@b\""),
        ("presence", " xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"sip:a@b\""),
        ("p:presence", " xmlns:p=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:x:dm\" xmlns:rpid=\"urn:x:rpid\" entity=\"pres:a@b\""),
        ("watcherinfo", " xmlns=\"urn:ietf:params:xml:ns:watcherinfo\" version=\"1\" state=\"full\""),
        ("list", " xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"sip:l@b\" version=\"1\" fullState=\"true\""),
        ("presence", ""),
    ];
    let prolog = prop_oneof![
        3 => Just(""),
        3 => Just("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        1 => Just("\u{feff}"),
        1 => Just(" x"),
    ];
    let epilog = prop_oneof![6 => Just(""), 1 => Just("<x/>"), 1 => Just("junk"), 1 => Just("<!-- c -->\n")];
    (prolog, 0..roots.len(), proptest::collection::vec(node, 0..5), epilog).prop_map(move |(pro, r, children, epi)| {
        let (name, attrs) = roots[r];
        format!("{pro}<{name}{attrs}>{}</{name}>{epi}", children.concat())
    })
}

/// An element to pass through, with the namespace it must be read in recorded as `expect`.
#[derive(Clone, Debug)]
struct Ext {
    prefix: usize,
    name: usize,
    /// A declaration on the element itself: (prefix, URI).
    declares: Option<(usize, usize)>,
    /// An attribute named with a prefix, if that prefix is bound.
    prefixed_attr: Option<usize>,
    text: String,
    children: Vec<Ext>,
}

const PREFIXES: [&str; 5] = ["", "a", "b", "rpid", "dm"];
const URIS: [&str; 5] = [
    PIDF_NS,
    "urn:ietf:params:xml:ns:pidf:rpid",
    "urn:ietf:params:xml:ns:pidf:data-model",
    "http://www.linphone.org/xsds/pidfonline.xsd",
    "urn:example:vendor",
];
const NAMES: [&str; 4] = ["person", "activities", "online", "x"];

fn ext() -> impl Strategy<Value = Ext> {
    let leaf = (
        0..PREFIXES.len(),
        0..NAMES.len(),
        proptest::option::of((0..PREFIXES.len(), 0..URIS.len())),
        proptest::option::of(0..PREFIXES.len()),
        "[a-z <>&\"']{0,6}",
    )
        .prop_map(|(prefix, name, declares, prefixed_attr, text)| Ext {
            prefix,
            name,
            declares,
            prefixed_attr,
            text,
            children: vec![],
        });
    leaf.prop_recursive(3, 12, 3, |inner| {
        (inner.clone(), proptest::collection::vec(inner, 0..3)).prop_map(|(mut e, children)| {
            e.children = children;
            e
        })
    })
}

/// A publication: the prefix PIDF is bound to, other root declarations, tuples (each with
/// extensions inside its status), top-level notes and extensions.
#[derive(Clone, Debug)]
struct Doc {
    pidf_prefix: usize,
    root: Vec<(usize, usize)>,
    tuples: Vec<Vec<Ext>>,
    notes: Vec<String>,
    exts: Vec<Ext>,
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        0..PREFIXES.len(),
        proptest::collection::vec((0..PREFIXES.len(), 0..URIS.len()), 0..4),
        proptest::collection::vec(proptest::collection::vec(ext(), 0..2), 0..3),
        proptest::collection::vec("[a-z <>&\"'\n]{0,8}", 0..2),
        proptest::collection::vec(ext(), 0..3),
    )
        .prop_map(|(pidf_prefix, root, tuples, notes, exts)| Doc { pidf_prefix, root, tuples, notes, exts })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\n', "&#10;")
}

fn qname(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}:{name}")
    }
}

/// Writes `e` in the scope `bound` (prefix -> URI, innermost last), declaring on the element
/// any prefix it uses that nothing binds.
fn render_ext(e: &Ext, bound: &mut Vec<(String, String)>, out: &mut String) {
    let outer = bound.len();
    let mut decls = Vec::new();
    if let Some((p, u)) = e.declares {
        decls.push((PREFIXES[p].to_string(), URIS[u].to_string()));
    }
    let prefix = PREFIXES[e.prefix];
    let lookup = |bound: &[(String, String)], decls: &[(String, String)], p: &str| {
        decls.iter().chain(bound.iter().rev()).find(|(q, _)| q == p).map(|(_, u)| u.clone())
    };
    if !prefix.is_empty() && lookup(bound, &decls, prefix).is_none() {
        decls.push((prefix.to_string(), URIS[(e.name + 1) % URIS.len()].to_string()));
    }
    let expect = lookup(bound, &decls, prefix).unwrap_or_default();
    let name = qname(prefix, NAMES[e.name]);
    out.push_str(&format!("<{name} expect=\"{}\"", esc(&expect)));
    for (p, u) in &decls {
        let k = if p.is_empty() { "xmlns".to_string() } else { format!("xmlns:{p}") };
        out.push_str(&format!(" {k}=\"{}\"", esc(u)));
    }
    if let Some(p) = e.prefixed_attr.map(|p| PREFIXES[p]).filter(|p| !p.is_empty()) {
        if lookup(bound, &decls, p).is_some() {
            out.push_str(&format!(" {p}:k=\"v\""));
        }
    }
    out.push('>');
    bound.extend(decls);
    out.push_str(&esc(&e.text));
    for c in &e.children {
        render_ext(c, bound, out);
    }
    out.push_str(&format!("</{name}>"));
    bound.truncate(outer);
}

fn render(d: &Doc) -> String {
    let mut root: Vec<(String, String)> = Vec::new();
    for &(p, u) in &d.root {
        if p != d.pidf_prefix && !root.iter().any(|(q, _)| q == PREFIXES[p]) {
            root.push((PREFIXES[p].to_string(), URIS[u].to_string()));
        }
    }
    root.push((PREFIXES[d.pidf_prefix].to_string(), PIDF_NS.to_string()));
    let pp = PREFIXES[d.pidf_prefix];
    let mut out = format!("<?xml version=\"1.0\"?>\n<{}", qname(pp, "presence"));
    for (p, u) in &root {
        let k = if p.is_empty() { "xmlns".to_string() } else { format!("xmlns:{p}") };
        out.push_str(&format!(" {k}=\"{}\"", esc(u)));
    }
    out.push_str(" entity=\"sip:alice@example.test\">");
    for (i, exts) in d.tuples.iter().enumerate() {
        out.push_str(&format!(
            "<{} id=\"t{i}\"><{}><{}>open</{2}>",
            qname(pp, "tuple"),
            qname(pp, "status"),
            qname(pp, "basic")
        ));
        for e in exts {
            render_ext(e, &mut root, &mut out);
        }
        out.push_str(&format!("</{}></{}>", qname(pp, "status"), qname(pp, "tuple")));
    }
    for n in &d.notes {
        out.push_str(&format!("<{0}>{1}</{0}>", qname(pp, "note"), esc(n)));
    }
    for e in &d.exts {
        render_ext(e, &mut root, &mut out);
    }
    out.push_str(&format!("</{}>", qname(pp, "presence")));
    out
}

proptest! {
    #[test]
    fn parsers_never_panic_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = pidf::parse(&body);
        let _ = winfo::parse(&body);
        let _ = rlmi::parse(&body);
    }

    #[test]
    fn parsers_never_panic_on_xmlish_text(body in xmlish()) {
        let _ = winfo::parse(body.as_bytes());
        let _ = rlmi::parse(body.as_bytes());
        if let Ok(doc) = pidf::parse(body.as_bytes()) {
            // Whatever is accepted can be sent on: composing it (twice, so ids collide) gives
            // a document that parses, namespace-well-formed.
            let out = pidf::compose(&doc.entity, &[source(&doc, "a", 0), source(&doc, "b", 1)]);
            let again = pidf::parse(out.as_bytes());
            prop_assert!(again.is_ok(), "{body}\n{out}\n{again:?}");
            prop_assert!(elements(&out).is_ok(), "{out}");
        }
    }

    #[test]
    fn truncated_and_spliced_documents_never_panic(d in doc(), cut in any::<prop::sample::Index>(), junk in "[<>/a-z:=\"&; ]{0,8}") {
        let text = render(&d);
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let truncated = &text[..at];
        let _ = pidf::parse(truncated.as_bytes());
        let spliced = format!("{truncated}{junk}{}", &text[at..]);
        if let Ok(doc) = pidf::parse(spliced.as_bytes()) {
            let out = pidf::compose("sip:alice@example.test", &[source(&doc, "a", 0)]);
            prop_assert!(pidf::parse(out.as_bytes()).is_ok(), "{spliced}\n{out}");
        }
    }

    #[test]
    fn composition_keeps_every_element_in_its_namespace(docs in proptest::collection::vec(doc(), 1..4)) {
        let texts: Vec<String> = docs.iter().map(render).collect();
        let parsed: Vec<pidf::Pidf> = texts.iter().map(|t| pidf::parse(t.as_bytes())).collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("{e}: {texts:?}")))?;
        let tags: Vec<String> = (0..parsed.len()).map(|i| format!("etag{i}")).collect();
        let sources: Vec<pidf::Source> = parsed.iter().zip(&tags).enumerate().map(|(i, (d, t))| source(d, t, i)).collect();
        let out = pidf::compose("sip:alice@example.test", &sources);

        let again = pidf::parse(out.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
        prop_assert_eq!(again.tuples.len(), parsed.iter().map(|d| d.tuples.len()).sum::<usize>());
        let mut ids: Vec<&str> = again.tuples.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), again.tuples.len(), "unique tuple ids");
        let newest_notes = parsed.iter().find(|d| !d.notes.is_empty()).map(|d| d.notes.clone()).unwrap_or_default();
        prop_assert_eq!(&again.notes, &newest_notes);
        prop_assert_eq!(again.extensions().count(), parsed.iter().map(|d| d.extensions().count()).sum::<usize>());

        let els = elements(&out).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
        let mut checked = 0;
        for (ns, name, attrs) in &els {
            if let Some((_, expect)) = attrs.iter().find(|(k, _)| k == "expect") {
                prop_assert_eq!(ns, expect, "<{}> moved namespace in\n{}\nfrom\n{:?}", name, out, texts);
                checked += 1;
            }
        }
        let generated: usize = texts.iter().map(|t| t.matches(" expect=").count()).sum();
        prop_assert_eq!(checked, generated);
        for d in &parsed {
            for e in d.extensions() {
                prop_assert!(elements(e).is_ok(), "valid on its own: {}", e);
            }
        }
    }

    #[test]
    fn generated_documents_round_trip(note in "\\PC{0,40}", user in "[a-z]{1,8}", open in any::<bool>()) {
        let entity = format!("sip:{user}@example.test");
        let published = pidf::basic_document(&entity, open, Some(&note));
        let doc = pidf::parse(published.as_bytes()).expect("our own document parses");
        let composed = pidf::compose(&entity, &[source(&doc, "t", 0)]);
        let again = pidf::parse(composed.as_bytes()).expect("the composed document parses");
        prop_assert_eq!(again.tuples[0].note.as_deref(), Some(note.as_str()));
        prop_assert_eq!(again.tuples[0].basic, Some(if open { pidf::Basic::Open } else { pidf::Basic::Closed }));
        prop_assert_eq!(again.entity_aor(), Some(format!("{user}@example.test")));
    }

    #[test]
    fn multipart_related_round_trips_any_parts(bodies in proptest::collection::vec(proptest::collection::vec(prop_oneof![
        Just(b"--sipfront-00000000".to_vec()), Just(b"--sipfront-00000001--".to_vec()), Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()), Just(b"--".to_vec()), proptest::collection::vec(any::<u8>(), 0..8),
    ], 0..8), 0..4)) {
        let bodies: Vec<Vec<u8>> = bodies.into_iter().map(|b| b.concat()).collect();
        let cids: Vec<String> = (0..bodies.len()).map(|i| format!("p{i}@example.test")).collect();
        let parts: Vec<rlmi::BodyPart> = bodies.iter().zip(&cids)
            .map(|(b, c)| rlmi::BodyPart { content_id: c, content_type: "application/octet-stream", body: b })
            .collect();
        let doc = rlmi::document(&sample_list());
        let (ct, body) = rlmi::multipart_related("root@example.test", &doc, &parts);
        let got = multipart::parts(ct.as_bytes(), &body).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(got.len(), parts.len() + 1);
        prop_assert_eq!(got[0].body, doc.as_bytes());
        for (p, g) in parts.iter().zip(&got[1..]) {
            prop_assert_eq!(g.body, p.body);
        }
    }
}
