//! A DNS server for tests (issue 20): answers from a table the test gives it, over UDP and TCP
//! on one loopback port, so federation tests never read the machine's resolv.conf nor reach a
//! real DNS server. A name can be made to misbehave (never answer, SERVFAIL, truncate over
//! UDP), and every query is counted per name, so a test can see what a resolver's cache saved.
//!
//! ```ignore
//! let dns = TestDns::start(vec![
//!     TestDns::srv("b.test", 10, 0, 5061, "edge.b.test"),
//!     TestDns::a("edge.b.test", [127, 0, 0, 1]).ttl(1),
//! ])
//! .await;
//! let resolver = Resolver::new(&[dns.addr], Duration::from_millis(300))?;
//! ```

#![allow(dead_code)] // each test binary uses a different part of this module

use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// The TTL of a record that does not set one with [`Entry::ttl`].
pub const DEFAULT_TTL: u32 = 60;

/// How long NXDOMAIN and no-data answers may be cached: the SOA they carry says so (RFC 2308
/// 5). Short, so a test that expects a second query for a missing name gets one.
pub const NEGATIVE_TTL: u32 = 1;

/// One line of the server's table: a record, or how queries for a name are (mis)handled.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Lower case, without the trailing dot.
    name: String,
    ttl: u32,
    data: Data,
}

#[derive(Clone, Debug)]
enum Data {
    Record(RData),
    /// The name exists with no record of the type asked (NOERROR without answers: RFC 2308's
    /// NODATA).
    Exists,
    /// Queries are read and never answered.
    Silent,
    /// Queries are answered SERVFAIL (RFC 1035 4.1.1, RCODE 2).
    ServFail,
    /// Answers over UDP carry the TC bit and no record; over TCP they are whole (RFC 1035
    /// 4.2.1, RFC 7766 5).
    Truncated,
}

impl Entry {
    /// This record with a TTL of `secs` (RFC 1035 3.2.1) instead of [`DEFAULT_TTL`].
    pub fn ttl(mut self, secs: u32) -> Entry {
        self.ttl = secs;
        self
    }

    fn new(name: &str, data: Data) -> Entry {
        Entry { name: key(name), ttl: DEFAULT_TTL, data }
    }

    fn answer(&self, owner: &Name, asked: RecordType) -> Option<Record> {
        match &self.data {
            Data::Record(rdata) if rdata.record_type() == asked => {
                Some(Record::from_rdata(owner.clone(), self.ttl, rdata.clone()))
            }
            _ => None,
        }
    }
}

/// A name as the table and the counters know it.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name(name: &str) -> Name {
    if name == "." {
        return Name::root();
    }
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).expect("a test DNS name")
}

/// The DNS server; it stops when dropped.
pub struct TestDns {
    /// Where it listens, for UDP and TCP alike: what `federation.dns_servers` names.
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    _tasks: JoinSet<()>,
}

impl TestDns {
    /// `_sipfederationtls._tcp.<domain>` SRV `priority weight port target` (RFC 2782).
    pub fn srv(domain: &str, priority: u16, weight: u16, port: u16, target: &str) -> Entry {
        let record = RData::SRV(SRV::new(priority, weight, port, name(target)));
        Entry::new(&format!("_sipfederationtls._tcp.{domain}"), Data::Record(record))
    }

    /// The lone SRV record with target `.` by which `domain` says it offers no federation
    /// (RFC 2782).
    pub fn no_service(domain: &str) -> Entry {
        TestDns::srv(domain, 0, 0, 0, ".")
    }

    /// `name` A `addr`.
    pub fn a(name: &str, addr: impl Into<Ipv4Addr>) -> Entry {
        Entry::new(name, Data::Record(RData::A(A(addr.into()))))
    }

    /// `name` AAAA `addr`.
    pub fn aaaa(name: &str, addr: impl Into<Ipv6Addr>) -> Entry {
        Entry::new(name, Data::Record(RData::AAAA(AAAA(addr.into()))))
    }

    /// `name` exists, with no record of any type asked.
    pub fn exists(name: &str) -> Entry {
        Entry::new(name, Data::Exists)
    }

    /// Queries for `name` are never answered (a resolver times out).
    pub fn silent(name: &str) -> Entry {
        Entry::new(name, Data::Silent)
    }

    /// Queries for `name` are answered SERVFAIL.
    pub fn servfail(name: &str) -> Entry {
        Entry::new(name, Data::ServFail)
    }

    /// UDP answers for `name` are truncated, so a resolver asks again over TCP.
    pub fn truncated(name: &str) -> Entry {
        Entry::new(name, Data::Truncated)
    }

    /// Serves `table` (and what [`TestDns::add`] adds) on a loopback port: names in it are
    /// answered from it (NODATA for a type it lacks), names not in it NXDOMAIN.
    pub async fn start(table: Vec<Entry>) -> TestDns {
        // One port for UDP and TCP, as a resolver expects of a name server (RFC 7766 5). The
        // kernel picks the UDP port, which may be taken for TCP: then another.
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket on loopback");
            let addr = udp.local_addr().expect("the UDP socket's address");
            let Ok(tcp) = TcpListener::bind(addr).await else { continue };
            let zone = Arc::new(Zone { table: Mutex::new(table), queries: Mutex::default() });
            let mut tasks = JoinSet::new();
            tasks.spawn(serve_udp(udp, zone.clone()));
            tasks.spawn(serve_tcp(tcp, zone.clone()));
            return TestDns { addr, zone, _tasks: tasks };
        }
        panic!("no loopback port free for both UDP and TCP");
    }

    /// Adds `entry` to the table, answered from the next query on: for records that name
    /// servers started after this one (whose configuration needs [`TestDns::addr`]).
    pub fn add(&self, entry: Entry) {
        self.zone.table.lock().expect("the table").push(entry);
    }

    /// Queries received for `name` so far, of any type, over UDP and TCP.
    pub fn queries(&self, name: &str) -> usize {
        let queries = self.zone.queries.lock().expect("the query counters");
        queries.get(&key(name)).copied().unwrap_or(0)
    }
}

struct Zone {
    table: Mutex<Vec<Entry>>,
    queries: Mutex<HashMap<String, usize>>,
}

impl Zone {
    /// The response to the DNS message `request`, or `None` when it goes unanswered (a name
    /// set silent, or bytes that are no query).
    fn respond(&self, request: &[u8], over_udp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        let query = request.queries.first()?.clone();
        let asked = key(&query.name().to_ascii());
        if let Ok(mut queries) = self.queries.lock() {
            *queries.entry(asked.clone()).or_default() += 1;
        }
        let entries: Vec<Entry> = match self.table.lock() {
            Ok(table) => table.iter().filter(|e| e.name == asked).cloned().collect(),
            Err(_) => return None,
        };
        let has = |wanted: fn(&Data) -> bool| entries.iter().any(|e| wanted(&e.data));
        if has(|d| matches!(d, Data::Silent)) {
            return None;
        }

        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.metadata.authoritative = true;
        response.metadata.recursion_available = true;
        response.add_query(query.clone());
        // RFC 6891 6.1.1: a query with an OPT record gets one back.
        if let Some(edns) = &request.edns {
            response.set_edns(edns.clone());
        }
        if has(|d| matches!(d, Data::ServFail)) {
            response.metadata.response_code = ResponseCode::ServFail;
        } else if over_udp && has(|d| matches!(d, Data::Truncated)) {
            response.metadata.truncation = true;
        } else {
            let answers: Vec<Record> =
                entries.iter().filter_map(|e| e.answer(query.name(), query.query_type())).collect();
            if answers.is_empty() {
                if entries.is_empty() {
                    response.metadata.response_code = ResponseCode::NXDomain;
                }
                // RFC 2308 3: a negative answer carries the zone's SOA, whose TTL and MINIMUM
                // bound how long it may be cached.
                let zone = query.name().trim_to(1);
                let soa = SOA::new(name("ns.test"), name("hostmaster.test"), 1, 3600, 600, 86400, NEGATIVE_TTL);
                response.add_authority(Record::from_rdata(zone, NEGATIVE_TTL, RData::SOA(soa)));
            }
            response.add_answers(answers);
        }
        response.to_vec().ok()
    }
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buf = vec![0; 65535];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
        if let Some(response) = zone.respond(&buf[..len], true) {
            let _ = socket.send_to(&response, from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    // Connections end with the listener: dropping this set aborts them.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_tcp_connection(stream, zone.clone()));
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    // RFC 1035 4.2.2: over TCP each message is preceded by its length in two bytes.
    loop {
        let mut len = [0; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut request = vec![0; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some(response) = zone.respond(&request, false) else { continue };
        let Ok(response_len) = u16::try_from(response.len()) else { continue };
        let mut framed = response_len.to_be_bytes().to_vec();
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
