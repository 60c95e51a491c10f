//! Finding a partner domain's federation edges in DNS (issue 20, item 1).
//!
//! An edge is named by the SRV records of `_sipfederationtls._tcp.<domain>` (RFC 2782), the
//! name OCS and Lync publish for federation: RFC 3263 4.2 with the transport already chosen
//! (TLS over TCP, so there is no NAPTR step). The targets are tried in the order RFC 2782
//! gives: lowest priority first, and within a priority by weighted random selection; each
//! target's A and AAAA records give the addresses to connect to.
//!
//! Unlike RFC 3263 4.2's last step, a domain without that SRV record is *not* tried on its
//! own A or AAAA records: a domain that publishes no `_sipfederationtls._tcp` record has not
//! opted into federation (OCS does not fall back either), and its web server's address is no
//! SIP edge. No SRV record, a lone `.` target and NXDOMAIN are all [`DnsError::NoService`].
//!
//! An operator's explicit partner entry (domain -> host:port) wins over DNS; the caller looks
//! it up before asking here.

use anyhow::Context as _;
use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::task::JoinSet;

/// The owner name's prefix of a domain's federation SRV records.
const SERVICE: &str = "_sipfederationtls._tcp";

/// Answers kept at most (SRV, A and AAAA answers each count one), each for its TTL: enough for
/// every partner of a large organisation, and a bound on what partners' DNS can make us hold.
const CACHE_SIZE: u64 = 1024;

/// `federation.dns_timeout_ms` promises a query "is retried once, then the lookup fails";
/// hickory's `attempts` counts the retries after the first query, not the queries (unlike
/// resolv.conf's `attempts`, which counts queries).
const RETRIES: usize = 1;

/// SIP over TLS's port where none is given (RFC 3261 19.1.2).
const SIPS_PORT: u16 = 5061;

/// A partner's federation edge: one SRV target and the addresses it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The SRV target, without its trailing dot: the name to connect to (and to give as SNI).
    pub host: String,
    pub port: u16,
    /// The target's IPv4 addresses, then its IPv6 addresses, all with the SRV port; never empty.
    pub addrs: Vec<SocketAddr>,
}

/// Why a domain's edges could not be found. The caller answers `NoService` as a permanent
/// failure (404: the domain does not federate), a timeout 504 and a failure 502.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// The domain does not federate: no `_sipfederationtls._tcp` SRV record (NXDOMAIN or no
    /// data), only a `.` target, or no target with an address.
    NoService,
    /// No DNS server answered in time, after the retry.
    Timeout,
    /// A DNS server answered with an error (SERVFAIL, REFUSED, ...), or could not be reached.
    Failed(String),
}

impl DnsError {
    /// The metric label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            DnsError::NoService => "no_service",
            DnsError::Timeout => "timeout",
            DnsError::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NoService => write!(f, "the domain publishes no {SERVICE} service"),
            DnsError::Timeout => f.write_str("DNS lookup timed out"),
            DnsError::Failed(why) => write!(f, "DNS lookup failed: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// How hickory's errors map onto ours. Its `NoRecordsFound` covers both NXDOMAIN and a NOERROR
/// answer without records of the type asked (RFC 2308's NODATA); SERVFAIL arrives as a
/// response-code error after the retry, never as "no records".
fn classify(error: NetError) -> DnsError {
    if error.is_no_records_found() {
        return DnsError::NoService;
    }
    match error {
        NetError::Timeout => DnsError::Timeout,
        NetError::Dns(hickory_resolver::net::DnsError::ResponseCode(code)) => {
            DnsError::Failed(format!("the DNS server answered {code} (RCODE {})", u16::from(code)))
        }
        other => DnsError::Failed(other.to_string()),
    }
}

/// A stub resolver for partners' federation SRV records and their targets' addresses, with a
/// cache bounded in size whose entries live for their records' TTL.
#[derive(Clone, Debug)]
pub struct Resolver {
    dns: TokioResolver,
}

impl Resolver {
    /// Asks `servers` (UDP, and TCP for truncated answers) or, when there are none, the
    /// system's resolver configuration (`/etc/resolv.conf` and `/etc/hosts`). Given servers
    /// are the whole configuration: no hosts file, no search domains, so tests and operators
    /// get exactly the answers of the servers they named. A query unanswered within `timeout`
    /// is sent once more.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> anyhow::Result<Resolver> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio().context("reading the system's DNS resolver configuration")?
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    // RFC 7766 5: a truncated UDP answer is asked again over TCP, same server.
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
            let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        let options = builder.options_mut();
        options.timeout = timeout;
        options.attempts = RETRIES;
        options.cache_size = CACHE_SIZE;
        // Both families, IPv4 first: an edge reachable only over one of them still works.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let dns = builder.build().context("building the DNS resolver")?;
        Ok(Resolver { dns })
    }

    /// The edges of `domain` in the order to try them (RFC 2782: priority, then weight), each
    /// with its addresses. A target that resolves to no address is left out; if none is left,
    /// the first failure among the targets (timeout, error) is returned, or `NoService` when
    /// they simply have no addresses (the partner's DNS names no reachable edge).
    pub async fn edges(&self, domain: &str) -> Result<Vec<Edge>, DnsError> {
        // A domain that is no DNS name (it came from a Request-URI) can have no SRV record.
        let name = service_name(domain).ok_or(DnsError::NoService)?;
        let answer = self.dns.srv_lookup(name).await.map_err(classify)?;
        let records = answer.answers().iter().filter_map(|record| match &record.data {
            // RFC 2782: 'A Target of "." means that the service is decidedly not available at
            // this domain.' Skipped wherever it is, so a lone "." leaves nothing to try.
            RData::SRV(srv) if !srv.target.is_root() => {
                Some(Srv { priority: srv.priority, weight: srv.weight, port: srv.port, target: srv.target.clone() })
            }
            _ => None,
        });
        let ordered = order_by_priority_and_weight(records.collect(), |most| {
            // `most`, a sum of 16-bit weights, is tiny beside 2^64: the modulo bias is nil.
            sipfront_proto::random::u64() % (most + 1)
        });
        if ordered.is_empty() {
            return Err(DnsError::NoService);
        }

        // The targets' addresses are asked for all at once: the slowest target, not the sum of
        // them, bounds the lookup. Dropping the JoinSet (the caller gave up) stops them all.
        let mut lookups = JoinSet::new();
        for (index, srv) in ordered.iter().enumerate() {
            let dns = self.dns.clone();
            let target = srv.target.clone();
            lookups.spawn(async move {
                let ips = dns.lookup_ip(target).await.map(|ips| ips.iter().collect::<Vec<IpAddr>>());
                (index, ips.map_err(classify))
            });
        }
        let mut addresses: Vec<Result<Vec<IpAddr>, DnsError>> = vec![Ok(Vec::new()); ordered.len()];
        while let Some(joined) = lookups.join_next().await {
            let Ok((index, ips)) = joined else {
                return Err(DnsError::Failed("a target's address lookup ended without an answer".into()));
            };
            if let Some(slot) = addresses.get_mut(index) {
                *slot = ips;
            }
        }

        let mut edges = Vec::with_capacity(ordered.len());
        let mut failure = None;
        for (srv, ips) in ordered.into_iter().zip(addresses) {
            let host = srv.target.to_ascii().trim_end_matches('.').to_owned();
            match ips {
                Ok(ips) if !ips.is_empty() => {
                    let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, srv.port)).collect();
                    edges.push(Edge { host, port: srv.port, addrs });
                }
                Ok(_) | Err(DnsError::NoService) => {}
                Err(error) => {
                    tracing::debug!(%domain, target = %host, %error, "federation edge's addresses not found");
                    failure.get_or_insert(error);
                }
            }
        }
        if edges.is_empty() {
            return Err(failure.unwrap_or(DnsError::NoService));
        }
        Ok(edges)
    }

    /// The addresses of an operator's explicit edge for a partner, `host:port` (`port`
    /// defaults to 5061, SIP over TLS: RFC 3261 19.1.2), for the caller to try in order. An IP
    /// address is taken as it is; a host name is resolved like an SRV target, to its IPv4 then
    /// its IPv6 addresses. No SRV lookup: the operator named the edge.
    pub async fn addresses_of(&self, hostport: &str) -> Result<Vec<SocketAddr>, DnsError> {
        if let Ok(addr) = hostport.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        if let Ok(ip) = hostport.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, SIPS_PORT)]);
        }
        let (host, port) = match hostport.rsplit_once(':') {
            // A colon inside brackets is an IPv6 address's, not the port's.
            Some((host, port)) if !port.ends_with(']') => {
                let port = port.parse().map_err(|_| DnsError::Failed(format!("{hostport}: no port number")))?;
                (host, port)
            }
            _ => (hostport, SIPS_PORT),
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return Err(DnsError::Failed(format!("{hostport}: no host")));
        }
        let name =
            Name::from_utf8(format!("{host}.")).map_err(|_| DnsError::Failed(format!("{hostport}: no host name")))?;
        let ips = self.dns.lookup_ip(name).await.map_err(classify)?;
        let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(DnsError::NoService);
        }
        Ok(addrs)
    }
}

/// `_sipfederationtls._tcp.<domain>.`, absolute (the trailing dot), so no search domain and no
/// `ndots` rule ever turns it into another name. `None` for what is no domain name.
fn service_name(domain: &str) -> Option<Name> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return None;
    }
    // from_utf8: an internationalised domain is asked for by its A-labels (RFC 5890).
    Name::from_utf8(format!("{SERVICE}.{domain}.")).ok()
}

/// One SRV record's data (RFC 2782), as the ordering needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Srv {
    priority: u16,
    weight: u16,
    port: u16,
    target: Name,
}

/// RFC 2782's order of SRV records: ascending priority, and within one priority the weighted
/// random selection of the RFC's "Usage rules". `random(most)` returns a uniform number in
/// `0..=most`.
fn order_by_priority_and_weight(mut records: Vec<Srv>, mut random: impl FnMut(u64) -> u64) -> Vec<Srv> {
    // "A client MUST attempt to contact the target host with the lowest-numbered priority it
    // can reach"; the sort is stable, so equal records keep the order DNS gave them.
    records.sort_by_key(|srv| srv.priority);
    let mut ordered = Vec::with_capacity(records.len());
    for same_priority in records.chunk_by(|a, b| a.priority == b.priority) {
        // "arrange all SRV RRs (that have not been ordered yet) in any order, except that all
        // those with weight 0 are placed at the beginning of the list": a weight 0 record is
        // then chosen only when the random number is 0, a small chance beside weighted ones.
        let mut unordered = same_priority.to_vec();
        unordered.sort_by_key(|srv| srv.weight != 0);
        while !unordered.is_empty() {
            // "Compute the sum of the weights of those RRs ... choose a uniform random number
            // between 0 and the sum computed (inclusive), and select the RR whose running sum
            // value is the first in the selected order which is greater than or equal to the
            // random number selected."
            let sum: u64 = unordered.iter().map(|srv| u64::from(srv.weight)).sum();
            let chosen = random(sum);
            let mut running = 0;
            let index = unordered
                .iter()
                .position(|srv| {
                    running += u64::from(srv.weight);
                    running >= chosen
                })
                .unwrap_or(unordered.len() - 1);
            // "Remove this SRV RR from the set of the unordered SRV RRs and apply the described
            // algorithm to the unordered SRV RRs to select the next target host."
            ordered.push(unordered.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv { priority, weight, port: 5061, target: Name::from_ascii(target).expect("a test name") }
    }

    fn targets(records: &[Srv]) -> Vec<String> {
        records.iter().map(|srv| srv.target.to_ascii()).collect()
    }

    #[test]
    fn lower_priority_comes_first_whatever_the_weights() {
        let records =
            vec![srv(20, 100, "c.test."), srv(10, 1, "a.test."), srv(30, 0, "d.test."), srv(10, 0, "b.test.")];
        for pick in [0, 1, 100, 1000] {
            let ordered = order_by_priority_and_weight(records.clone(), |most| pick.min(most));
            let priorities: Vec<u16> = ordered.iter().map(|srv| srv.priority).collect();
            assert_eq!(priorities, [10, 10, 20, 30], "random {pick}");
            assert_eq!(targets(&ordered[2..]), ["c.test.", "d.test."]);
        }
    }

    #[test]
    fn the_running_sum_picks_the_record_as_rfc_2782_says() {
        // Weight 0 first, then the others as given: running sums a=0, b=10, c=30.
        let records = vec![srv(10, 10, "b.test."), srv(10, 20, "c.test."), srv(10, 0, "a.test.")];
        let first = |pick: u64| {
            let ordered = order_by_priority_and_weight(records.clone(), |_| pick);
            ordered[0].target.to_ascii()
        };
        assert_eq!(first(0), "a.test.");
        assert_eq!(first(1), "b.test.");
        assert_eq!(first(10), "b.test.");
        assert_eq!(first(11), "c.test.");
        assert_eq!(first(30), "c.test.");
    }

    #[test]
    fn weighted_selection_follows_the_weights() {
        let records =
            vec![srv(10, 60, "a.test."), srv(10, 30, "b.test."), srv(10, 10, "c.test."), srv(10, 0, "z.test.")];
        // A fixed xorshift sequence (Marsaglia 2003), so the test sees the same draws each run.
        let mut state: u64 = 2782;
        let mut next = |most: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % (most + 1)
        };
        let draws: u32 = 20_000;
        let mut first = std::collections::HashMap::<String, u32>::new();
        for _ in 0..draws {
            let ordered = order_by_priority_and_weight(records.clone(), &mut next);
            assert_eq!(ordered.len(), 4, "every record is ordered");
            *first.entry(ordered[0].target.to_ascii()).or_default() += 1;
        }
        let share = |target: &str| f64::from(first.get(target).copied().unwrap_or(0)) / f64::from(draws);
        // Expected first-choice shares: weight / (sum + 1), the +1 being the draw of 0 that
        // picks the weight 0 record.
        for (target, expected) in [("a.test.", 60.0 / 101.0), ("b.test.", 30.0 / 101.0), ("c.test.", 10.0 / 101.0)] {
            assert!((share(target) - expected).abs() < 0.02, "{target}: {} against {expected}", share(target));
        }
        let zero = share("z.test.");
        assert!(zero > 0.0 && zero < 0.03, "a weight 0 record gets a small chance: {zero}");
    }

    #[test]
    fn weight_zero_records_are_all_returned() {
        let records = vec![srv(10, 0, "a.test."), srv(10, 0, "b.test."), srv(20, 0, "c.test.")];
        let ordered = order_by_priority_and_weight(records, |most| most);
        assert_eq!(targets(&ordered), ["a.test.", "b.test.", "c.test."]);
    }

    #[test]
    fn a_random_source_out_of_range_still_orders_everything() {
        let records = vec![srv(10, 5, "a.test."), srv(10, 5, "b.test.")];
        let ordered = order_by_priority_and_weight(records, |_| u64::MAX);
        assert_eq!(targets(&ordered), ["b.test.", "a.test."]);
    }

    #[test]
    fn the_service_name_is_absolute() {
        let name = service_name("b.test").expect("a name");
        assert!(name.is_fqdn());
        assert_eq!(name.to_ascii(), "_sipfederationtls._tcp.b.test.");
        assert_eq!(service_name("b.test.").map(|n| n.to_ascii()).as_deref(), Some("_sipfederationtls._tcp.b.test."));
        assert_eq!(service_name(""), None);
        assert_eq!(service_name("."), None);
        assert_eq!(service_name("a b.test"), None);
    }

    #[test]
    fn errors_have_labels_and_say_what_failed() {
        assert_eq!(DnsError::NoService.label(), "no_service");
        assert_eq!(DnsError::Timeout.label(), "timeout");
        assert_eq!(DnsError::Failed("x".into()).label(), "failed");
        assert_eq!(DnsError::Failed("SERVFAIL".into()).to_string(), "DNS lookup failed: SERVFAIL");
        assert_eq!(classify(NetError::Timeout), DnsError::Timeout);
    }
}
