//! Presence bodies against arbitrary input: every parser answers (a document or an error) and
//! never panics; what the composer writes always parses back.

use proptest::prelude::*;
use sipfront_proto::presence::{pidf, rlmi, winfo};

proptest! {
    #[test]
    fn parsers_never_panic_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = pidf::parse(&body);
        let _ = winfo::parse(&body);
        let _ = rlmi::parse(&body);
    }

    #[test]
    fn parsers_never_panic_on_xmlish_text(body in "(<[a-z:]{0,6}( [a-z:]{1,6}=\"[^\"<]{0,6}\")?/?>|</[a-z:]{0,6}>|[a-z &;<>]{0,4}){0,24}") {
        let _ = pidf::parse(body.as_bytes());
        let _ = winfo::parse(body.as_bytes());
        let _ = rlmi::parse(body.as_bytes());
    }

    #[test]
    fn composed_documents_parse_back(note in "\\PC{0,40}", entity_user in "[a-z]{1,8}") {
        let entity = format!("sip:{entity_user}@example.test");
        let published = pidf::basic_document(&entity, true, Some(&note));
        let doc = pidf::parse(published.as_bytes()).expect("our own document parses");
        let composed = pidf::compose(&entity, &[pidf::Source { doc: &doc, tag: "t", newest_first_rank: 0 }]);
        let again = pidf::parse(composed.as_bytes()).expect("the composed document parses");
        prop_assert_eq!(again.tuples[0].note.as_deref(), Some(note.as_str()));
        prop_assert_eq!(again.entity_aor(), Some(format!("{entity_user}@example.test")));
    }
}

#[test]
fn pidf_with_a_namespace_prefixed_root_is_accepted() {
    let body = br#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="pres:bob@example.test"><p:tuple id="a"><p:status><p:basic>closed</p:basic></p:status></p:tuple></p:presence>"#;
    let d = pidf::parse(body).expect("prefixed PIDF");
    assert_eq!(d.tuples[0].basic, Some(pidf::Basic::Closed));
    let out = pidf::compose("sip:bob@example.test", &[pidf::Source { doc: &d, tag: "x", newest_first_rank: 0 }]);
    let again = pidf::parse(out.as_bytes()).expect("re-parses");
    assert_eq!(again.tuples[0].basic, Some(pidf::Basic::Closed));
}
