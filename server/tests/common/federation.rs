//! Organisations for federation tests (issue 20): a certificate authority each, a sipfront
//! server for each domain with a certificate of its authority, and the phones of its users.

#![allow(dead_code)] // each test binary uses a different part of this module
#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

use super::dns::TestDns;
use super::*;
use sipfront_storage::{FederationAction, FederationDomain, Store};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority of one organisation.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} root CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for a federation edge naming `names`, for TLS servers and clients alike,
    /// written to `dir` as `cert.pem` and `key.pem`; `expired` makes one whose time is over.
    pub fn issue(&self, names: &[&str], dir: &Path, expired: bool) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// One organisation: its domain, its server and the store the operator manages it through.
pub struct Org {
    pub domain: &'static str,
    pub server: TestServer,
    pub store: Arc<dyn Store>,
}

pub const PASSWORD: &str = "secret";

impl Org {
    /// A server for `domain` whose certificate `ca` issued (naming the domain and its edge
    /// host), trusting `partners`' authorities, asking `dns` for SRV records, with `users`
    /// enabled for federation.
    pub async fn start(domain: &'static str, ca: &Ca, partners: &[&Ca], dns: SocketAddr, users: &[&str]) -> Org {
        Org::start_with(domain, ca, partners, dns, users, |_| {}).await
    }

    /// [`Org::start`], its configuration changed by `adjust`.
    pub async fn start_with(
        domain: &'static str,
        ca: &Ca,
        partners: &[&Ca],
        dns: SocketAddr,
        users: &[&str],
        adjust: impl FnOnce(&mut sipfront::config::Config),
    ) -> Org {
        let dir = tempfile::tempdir().unwrap();
        let edge = format!("sip.{domain}");
        let (cert, key) = ca.issue(&[domain, &edge, "localhost", "127.0.0.1"], &dir.path().join("edge"), false);
        let roots = dir.path().join("partners.pem");
        std::fs::write(&roots, partners.iter().map(|c| c.pem()).collect::<String>()).unwrap();
        let mut config = test_config();
        config.database.poll_ms = 100;
        config.tls.cert = cert.display().to_string();
        config.tls.key = key.display().to_string();
        config.federation.enabled = true;
        config.federation.trust_roots = roots.display().to_string();
        config.federation.dns_servers = vec![dns];
        config.federation.dns_timeout_ms = 300;
        config.federation.connect_timeout_ms = 2000;
        // Every edge here is on loopback.
        config.federation.private_edges = true;
        adjust(&mut config);
        // The configured store: SQLite in the directory, or a pool's shared PostgreSQL, which
        // the pool's first member fills (its users are there already for the others).
        let store = sipfront_storage::open(&config.database.url, dir.path()).await.unwrap();
        store.add_domain(domain).await.unwrap();
        for user in users {
            match store.add_user(&user_of(user, domain)).await {
                Ok(()) | Err(sipfront_storage::StoreError::Conflict(_)) => {}
                Err(e) => panic!("adding {user}@{domain}: {e}"),
            }
            store.set_user_federation(&format!("{user}@{domain}"), true).await.unwrap();
        }
        let server = sipfront::start(&config, dir.path()).await.expect("server starts");
        Org { domain, server: TestServer { server, config, dir }, store }
    }

    /// Where partners find this organisation's edge: its SRV record and the edge's address.
    pub fn dns_records(&self) -> Vec<super::dns::Entry> {
        let edge = format!("sip.{}", self.domain);
        vec![
            TestDns::srv(self.domain, 10, 10, self.server.tls_addr().port(), &edge),
            TestDns::a(&edge, Ipv4Addr::LOCALHOST),
        ]
    }

    /// Federates with `partner` (an allow-list entry), and waits until the server follows.
    pub async fn allow(&self, partner: &str) {
        let entry = FederationDomain { domain: partner.into(), action: FederationAction::Allow, via: None };
        self.store.set_federation_domain(&entry).await.unwrap();
        self.settle().await;
    }

    /// The server has read the store's change log past what was just written.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    /// A phone of `user` registered here over TCP.
    pub async fn online(&self, user: &str) -> Phone {
        let mut phone = Phone::tcp(&self.server).await;
        let req = in_domain(Request::register(&phone, user).set("Expires", "300"), self.domain);
        let r = with_credentials(&mut phone, &req, user, PASSWORD).await;
        assert_eq!(r.status(), Some(200), "{user}@{} registers", self.domain);
        phone
    }
}

pub fn user_of(user: &str, domain: &str) -> sipfront_storage::NewUser {
    use sipfront_proto::digest::{ha1, Algorithm};
    sipfront_storage::NewUser {
        username: user.into(),
        domain: domain.into(),
        display_name: String::new(),
        ha1_md5: ha1(Algorithm::Md5, user, domain, PASSWORD),
        ha1_sha256: ha1(Algorithm::Sha256, user, domain, PASSWORD),
    }
}

/// `req` (built for [`DOMAIN`]) for `domain` instead.
pub fn in_domain(mut req: Request, domain: &str) -> Request {
    req.start_line = req.start_line.replace(DOMAIN, domain);
    for v in req.headers.iter_mut().filter_map(|(_, v)| v.as_mut()) {
        *v = v.replace(DOMAIN, domain);
    }
    req.body = req.body.replace(DOMAIN, domain);
    req
}

/// `req` (built for users of [`DOMAIN`]) with each `(user, domain)`'s address in its domain:
/// a request between organisations.
pub fn across(mut req: Request, users: &[(&str, &str)]) -> Request {
    let moved = |text: &str| {
        users.iter().fold(text.to_string(), |t, (user, domain)| {
            t.replace(&format!("{user}@{DOMAIN}"), &format!("{user}@{domain}"))
        })
    };
    req.start_line = moved(&req.start_line);
    for v in req.headers.iter_mut().filter_map(|(_, v)| v.as_mut()) {
        *v = moved(v);
    }
    req.body = moved(&req.body);
    req
}

/// A MESSAGE from `from` (`user@domain`) to `to`, sent by `phone`.
pub fn message(phone: &Phone, from: &str, to: &str, text: &str) -> Request {
    let mut r = Request::new("MESSAGE", phone.transport(), phone.local_addr())
        .set("From", &format!("<sip:{from}>;tag={}", token(8)))
        .set("To", &format!("<sip:{to}>"))
        .set("Content-Type", "text/plain");
    r.start_line = format!("MESSAGE sip:{to} SIP/2.0");
    r.body = text.into();
    r
}

/// `phone` sends a MESSAGE from `from` to `to`: the final response. Registered over its
/// connection, it is not challenged, unless its account changed since: then it answers.
pub async fn send(phone: &mut Phone, from: &str, to: &str) -> sipfront_proto::Message {
    let req = message(phone, from, to, "hi");
    let r = phone.request(&req).await;
    if r.status() != Some(407) {
        return r;
    }
    let user = from.split('@').next().unwrap();
    let answered = req.new_branch().with_cseq(2);
    with_credentials(phone, &answered, user, PASSWORD).await
}
