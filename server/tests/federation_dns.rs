//! Finding partners' federation edges in DNS (issue 20): `_sipfederationtls._tcp` SRV records
//! ordered by RFC 2782, their targets' A and AAAA records, the answers that mean "this domain
//! does not federate" told apart from a DNS server that fails or stays silent, and answers
//! cached for their TTL, all against a DNS server on loopback.

mod common;

use common::dns::TestDns;
use sipfront::core::federation::dns::{DnsError, Edge, Resolver};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Per query; a query is sent twice before the lookup gives up.
const TIMEOUT: Duration = Duration::from_millis(300);

fn resolver(dns: &TestDns) -> Resolver {
    Resolver::new(&[dns.addr], TIMEOUT).expect("a resolver for the test DNS server")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a test address")
}

#[tokio::test(flavor = "multi_thread")]
async fn edges_come_lowest_priority_first() {
    let dns = TestDns::start(vec![
        TestDns::srv("b.test", 20, 0, 5062, "backup.b.test"),
        TestDns::srv("b.test", 10, 0, 5061, "edge.b.test"),
        TestDns::a("edge.b.test", [127, 0, 0, 2]),
        TestDns::a("backup.b.test", [127, 0, 0, 3]),
    ])
    .await;

    let edges = resolver(&dns).edges("b.test").await.expect("b.test's edges");
    assert_eq!(
        edges,
        [
            Edge { host: "edge.b.test".into(), port: 5061, addrs: vec![addr("127.0.0.2:5061")] },
            Edge { host: "backup.b.test".into(), port: 5062, addrs: vec![addr("127.0.0.3:5062")] },
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_with_a_and_aaaa_records_gives_both_addresses() {
    let dns = TestDns::start(vec![
        TestDns::srv("b.test", 10, 0, 5061, "edge.b.test"),
        TestDns::a("edge.b.test", [127, 0, 0, 2]),
        TestDns::aaaa("edge.b.test", Ipv6Addr::LOCALHOST),
    ])
    .await;

    let edges = resolver(&dns).edges("B.test.").await.expect("b.test's edges");
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].addrs, [addr("127.0.0.2:5061"), addr("[::1]:5061")], "IPv4 first, then IPv6");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_without_addresses_is_left_out() {
    let dns = TestDns::start(vec![
        TestDns::srv("b.test", 10, 0, 5061, "gone.b.test"),
        TestDns::srv("b.test", 20, 0, 5061, "edge.b.test"),
        TestDns::a("edge.b.test", [127, 0, 0, 2]),
        TestDns::srv("c.test", 10, 0, 5061, "gone.c.test"),
    ])
    .await;
    let resolver = resolver(&dns);

    let edges = resolver.edges("b.test").await.expect("b.test's edges");
    let hosts: Vec<&str> = edges.iter().map(|e| e.host.as_str()).collect();
    assert_eq!(hosts, ["edge.b.test"]);
    assert_eq!(resolver.edges("c.test").await, Err(DnsError::NoService), "no target with an address");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_srv_record_means_no_service_even_with_a_records() {
    // RFC 3263 4.2 would fall back to c.test's own address; federation does not.
    let dns = TestDns::start(vec![
        TestDns::a("c.test", [127, 0, 0, 2]),
        TestDns::exists("_sipfederationtls._tcp.d.test"),
        TestDns::a("d.test", [127, 0, 0, 3]),
    ])
    .await;
    let resolver = resolver(&dns);

    assert_eq!(resolver.edges("c.test").await, Err(DnsError::NoService), "NXDOMAIN for the SRV name");
    assert_eq!(resolver.edges("d.test").await, Err(DnsError::NoService), "NOERROR without an SRV record");
    assert_eq!(dns.queries("c.test"), 0, "never asked for the domain's own address");
    assert_eq!(dns.queries("d.test"), 0, "never asked for the domain's own address");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dot_target_means_no_service() {
    let dns = TestDns::start(vec![TestDns::no_service("e.test"), TestDns::a("e.test", [127, 0, 0, 2])]).await;

    let result = resolver(&dns).edges("e.test").await;
    assert_eq!(result, Err(DnsError::NoService));
    assert_eq!(dns.queries("e.test"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_domain_means_no_service() {
    let dns = TestDns::start(vec![]).await;
    let resolver = resolver(&dns);

    let result = resolver.edges("nowhere.test").await;
    assert_eq!(result, Err(DnsError::NoService));
    assert_eq!(result.expect_err("no service").label(), "no_service");
    assert_eq!(dns.queries("_sipfederationtls._tcp.nowhere.test"), 1, "asked once, as an absolute name");
    assert_eq!(resolver.edges("not a domain").await, Err(DnsError::NoService), "no DNS name, no service");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_is_a_timeout() {
    let dns = TestDns::start(vec![
        TestDns::silent("_sipfederationtls._tcp.slow.test"),
        TestDns::srv("b.test", 10, 0, 5061, "edge.b.test"),
        TestDns::silent("edge.b.test"),
    ])
    .await;
    let resolver = resolver(&dns);

    let started = Instant::now();
    let result = resolver.edges("slow.test").await;
    assert_eq!(result, Err(DnsError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout: {:?}", started.elapsed());
    assert_eq!(dns.queries("_sipfederationtls._tcp.slow.test"), 2, "the query is retried once");

    let started = Instant::now();
    let result = resolver.edges("b.test").await;
    assert_eq!(result, Err(DnsError::Timeout), "the only target's addresses timed out");
    assert_eq!(result.expect_err("a timeout").label(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn servfail_is_a_failure_not_no_service() {
    let dns = TestDns::start(vec![TestDns::servfail("_sipfederationtls._tcp.broken.test")]).await;

    let error = resolver(&dns).edges("broken.test").await.expect_err("SERVFAIL");
    assert!(matches!(error, DnsError::Failed(_)), "{error:?}");
    assert_eq!(error.label(), "failed");
    assert!(error.to_string().contains("Server Failure"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let dns = TestDns::start(vec![
        TestDns::truncated("_sipfederationtls._tcp.b.test"),
        TestDns::srv("b.test", 10, 0, 5061, "edge.b.test"),
        TestDns::a("edge.b.test", [127, 0, 0, 2]),
    ])
    .await;

    let edges = resolver(&dns).edges("b.test").await.expect("b.test's edges over TCP");
    assert_eq!(edges[0].addrs, [addr("127.0.0.2:5061")]);
    assert_eq!(dns.queries("_sipfederationtls._tcp.b.test"), 2, "once over UDP, once over TCP");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached_for_their_ttl() {
    let dns = TestDns::start(vec![
        TestDns::srv("b.test", 10, 0, 5061, "edge.b.test").ttl(1),
        TestDns::a("edge.b.test", [127, 0, 0, 2]).ttl(1),
        TestDns::aaaa("edge.b.test", Ipv6Addr::LOCALHOST).ttl(1),
    ])
    .await;
    let resolver = resolver(&dns);
    let srv = "_sipfederationtls._tcp.b.test";

    let first = resolver.edges("b.test").await.expect("b.test's edges");
    assert_eq!((dns.queries(srv), dns.queries("edge.b.test")), (1, 2), "SRV, then A and AAAA");

    let again = resolver.edges("b.test").await.expect("b.test's edges from the cache");
    assert_eq!(again, first);
    assert_eq!((dns.queries(srv), dns.queries("edge.b.test")), (1, 2), "within the TTL: not asked again");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = resolver.edges("b.test").await.expect("b.test's edges once more");
    assert_eq!(later, first);
    assert_eq!((dns.queries(srv), dns.queries("edge.b.test")), (2, 4), "past the TTL: asked again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_domain_is_cached_for_the_soa_negative_ttl() {
    let dns = TestDns::start(vec![]).await;
    let resolver = resolver(&dns);
    let srv = "_sipfederationtls._tcp.nowhere.test";

    assert_eq!(resolver.edges("nowhere.test").await, Err(DnsError::NoService));
    assert_eq!(resolver.edges("nowhere.test").await, Err(DnsError::NoService));
    assert_eq!(dns.queries(srv), 1, "RFC 2308: NXDOMAIN is cached too");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(resolver.edges("nowhere.test").await, Err(DnsError::NoService));
    assert_eq!(dns.queries(srv), 2, "past the SOA's negative TTL: asked again");
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_are_asked_in_turn_when_one_is_silent() {
    // Silent for every name asked: a server that answered NXDOMAIN would be believed.
    let silent =
        TestDns::start(vec![TestDns::silent("_sipfederationtls._tcp.b.test"), TestDns::silent("edge.b.test")]).await;
    let answering = TestDns::start(vec![
        TestDns::srv("b.test", 10, 0, 5061, "edge.b.test"),
        TestDns::a("edge.b.test", [127, 0, 0, 2]),
    ])
    .await;
    let resolver = Resolver::new(&[silent.addr, answering.addr], TIMEOUT).expect("a resolver for both servers");

    let edges = resolver.edges("b.test").await.expect("b.test's edges from the second server");
    assert_eq!(edges[0].host, "edge.b.test");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_edge_is_resolved_without_srv() {
    let dns = TestDns::start(vec![
        TestDns::a("edge.partner.test", [127, 0, 0, 2]),
        TestDns::aaaa("edge.partner.test", Ipv6Addr::LOCALHOST),
    ])
    .await;
    let resolver = resolver(&dns);

    let addrs = resolver.addresses_of("edge.partner.test:5071").await.expect("the edge's addresses");
    assert_eq!(addrs, [addr("127.0.0.2:5071"), addr("[::1]:5071")]);
    let addrs = resolver.addresses_of("edge.partner.test").await.expect("the edge's addresses");
    assert_eq!(addrs[0], addr("127.0.0.2:5061"), "SIP over TLS's port by default");
    assert_eq!(dns.queries("_sipfederationtls._tcp.partner.test"), 0, "the operator named the edge");

    assert_eq!(resolver.addresses_of("192.0.2.7:5062").await, Ok(vec![addr("192.0.2.7:5062")]));
    assert_eq!(resolver.addresses_of("[2001:db8::7]").await, Ok(vec![addr("[2001:db8::7]:5061")]));
    assert_eq!(resolver.addresses_of("2001:db8::7").await, Ok(vec![addr("[2001:db8::7]:5061")]));
    assert_eq!(resolver.addresses_of("gone.partner.test:5061").await, Err(DnsError::NoService));
    assert!(matches!(resolver.addresses_of("edge.partner.test:sips").await, Err(DnsError::Failed(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn records_added_after_the_start_are_answered() {
    let dns = TestDns::start(vec![]).await;
    dns.add(TestDns::srv("b.test", 10, 0, 5061, "edge.b.test"));
    dns.add(TestDns::a("edge.b.test", [127, 0, 0, 2]));

    let edges = resolver(&dns).edges("b.test").await.expect("b.test's edges");
    assert_eq!(edges[0].addrs, [addr("127.0.0.2:5061")]);
}
