//! TLS configuration: the operator's certificate, or a self-signed one made at first start in
//! the data directory (its SHA-256 fingerprint is logged so clients can pin it); and for
//! federation, the partners' trust roots, asked of inbound connections and of the partner
//! edges we connect to.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// The server's TLS configuration. With `partners` (federation's trust roots), a client is
/// asked for a certificate: a partner's edge presents one chaining to those roots (one that
/// does not is refused in the handshake), and a user's client, which has none, goes on as
/// before.
pub fn server_config(
    cert: &str,
    key: &str,
    data_dir: &Path,
    partners: Option<Arc<RootCertStore>>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = identity(cert, key, data_dir)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let builder = match partners {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            // No authority names in the certificate request: who we federate with is nobody's
            // business, and a user's phone has no certificate to choose by them anyway.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .allow_unauthenticated()
                .clear_root_hint_subjects()
                .build()
                .context("federation.trust_roots")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).context("certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// The TLS configuration of connections we open to partners' edges: their certificates must
/// chain to `roots`, and we present our own certificate, as they ask of us.
pub fn client_config(
    cert: &str,
    key: &str,
    data_dir: &Path,
    roots: Arc<RootCertStore>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let (chain, key) = identity(cert, key, data_dir)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// The certificate authorities in a PEM file (at least one).
pub fn trust_roots(path: &str) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading trust roots {path}"))? {
        let cert = cert.with_context(|| format!("parsing trust roots {path}"))?;
        roots.add(cert).with_context(|| format!("a certificate of {path} is no usable authority"))?;
    }
    if roots.is_empty() {
        anyhow::bail!("no certificate in trust roots {path}");
    }
    Ok(Arc::new(roots))
}

/// A client configuration that trusts the authorities of a PEM file and presents no
/// certificate: what a client of this server needs to reach it (the directory's HTTPS, SIP
/// over TLS) when it trusts its self-signed certificate; for the tests, benches and tools.
pub fn client_trusting(path: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(trust_roots(path)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key this server presents: the operator's, or a self-signed one
/// made in the data directory at first start.
fn identity(
    cert: &str,
    key: &str,
    data_dir: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert_path, key_path) = if cert.is_empty() {
        let dir = data_dir.join("tls");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !c.exists() || !k.exists() {
            self_signed(&dir, &c, &k)?;
        }
        (c, k)
    } else {
        (cert.into(), key.into())
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert_path.display()))?;
    let first = chain.first().with_context(|| format!("no certificate in {}", cert_path.display()))?;
    tracing::info!(cert = %cert_path.display(), sha256 = %fingerprint(first), "TLS certificate");
    match not_after(first.as_ref()) {
        Some(t) => metrics::gauge!(crate::ops::metrics::TLS_CERT_EXPIRY).set(t as f64),
        None => tracing::warn!(cert = %cert_path.display(), "cannot read the certificate's expiry"),
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| format!("reading key {}", key_path.display()))?;
    Ok((chain, key))
}

fn self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    let cert = rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
    std::fs::write(cert_path, cert.cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(key_path, cert.key_pair.serialize_pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "created a self-signed TLS certificate");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data).with_context(|| format!("writing {}", path.display()))
}

/// When a DER certificate expires (its `notAfter`), in Unix seconds: Certificate ::= SEQUENCE {
/// tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity
/// SEQUENCE { notBefore, notAfter }, ... }, ... } (RFC 5280 4.1).
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (cert, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    let (_, rest) = der_element(tbs, 0x02)?; // serialNumber
    let (_, rest) = der_element(rest, 0x30)?; // signature
    let (_, rest) = der_element(rest, 0x30)?; // issuer
    let (validity, _) = der_element(rest, 0x30)?;
    let after_before = match validity.first()? {
        0x17 => der_element(validity, 0x17)?.1,
        0x18 => der_element(validity, 0x18)?.1,
        _ => return None,
    };
    let (kind, (time, _)) = match after_before.first()? {
        0x17 => (0x17, der_element(after_before, 0x17)?),
        0x18 => (0x18, der_element(after_before, 0x18)?),
        _ => return None,
    };
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    // UTCTime: YYMMDDHHMMSS, years 50..99 being 19xx (RFC 5280 4.1.2.5.1); GeneralizedTime:
    // YYYYMMDDHHMMSS.
    let (year, rest) = if kind == 0x17 {
        let yy: i32 = text.get(..2)?.parse().ok()?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
    } else {
        (text.get(..4)?.parse().ok()?, text.get(4..)?)
    };
    let num = |r: std::ops::Range<usize>| rest.get(r).and_then(|v| v.parse::<u8>().ok());
    let month = time::Month::try_from(num(0..2)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, num(2..4)?).ok()?;
    let clock = time::Time::from_hms(num(4..6)?, num(6..8)?, num(8..10)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp())
}

/// The SIP domain identities a certificate presents (RFC 5922 7.1): the hosts of its `sip:`
/// URI subject alternative names without a user part, or, when it has none, its DNS names.
/// Wildcard names identify nobody (7.2). Read once, when the handshake has verified the chain.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identities(Box<[Box<str>]>);

impl Identities {
    /// The identities of a DER certificate; none if it cannot be read.
    pub fn of(der: &[u8]) -> Identities {
        let names = subject_alt_names(der).unwrap_or_default();
        let sip: Vec<Box<str>> = names
            .iter()
            .filter(|(tag, _)| *tag == SAN_URI)
            .filter_map(|(_, uri)| std::str::from_utf8(uri).ok())
            .filter_map(|uri| {
                let (scheme, rest) = uri.split_once(':')?;
                let host = rest.split([';', '?']).next()?;
                (scheme.eq_ignore_ascii_case("sip") && !host.contains('@')).then(|| domain_of(host))
            })
            .collect();
        if !sip.is_empty() {
            return Identities(sip.into());
        }
        let dns = names
            .iter()
            .filter(|(tag, _)| *tag == SAN_DNS)
            .filter_map(|(_, name)| std::str::from_utf8(name).ok())
            .filter(|name| !name.contains('*'))
            .map(domain_of)
            .collect::<Vec<_>>();
        Identities(dns.into())
    }

    /// Whether `domain` is one of them: compared as DNS names (ASCII case-insensitively); an
    /// absolute name (a trailing dot) is none of them, as it would escape the policy's spelling.
    pub fn names(&self, domain: &str) -> bool {
        !domain.ends_with('.') && self.0.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// A URI's or DNS name's domain as an identity: lower case, no port, no trailing dot.
fn domain_of(host: &str) -> Box<str> {
    let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    host.trim_end_matches('.').to_ascii_lowercase().into()
}

/// GeneralName tags (RFC 5280 4.2.1.6): `[2] dNSName` and `[6] uniformResourceIdentifier`.
const SAN_DNS: u8 = 0x82;
const SAN_URI: u8 = 0x86;

/// The subject alternative names of a DER certificate (tag, value): Certificate ::= SEQUENCE
/// { tbsCertificate SEQUENCE { ..., [3] EXPLICIT Extensions }, ... }, the extension whose
/// extnID is 2.5.29.17 holding GeneralNames in its OCTET STRING (RFC 5280 4.1, 4.2.1.6).
fn subject_alt_names(der: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    let (cert, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(cert, 0x30)?;
    while !tbs.is_empty() {
        let (tag, content, rest) = any_element(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (mut extensions, _) = der_element(content, 0x30)?;
        while !extensions.is_empty() {
            let (extension, rest) = der_element(extensions, 0x30)?;
            extensions = rest;
            let (oid, mut value) = der_element(extension, 0x06)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            if value.first() == Some(&0x01) {
                value = der_element(value, 0x01)?.1; // critical
            }
            let (octets, _) = der_element(value, 0x04)?;
            let (mut names, _) = der_element(octets, 0x30)?;
            let mut out = Vec::new();
            while !names.is_empty() {
                let (tag, name, rest) = any_element(names)?;
                names = rest;
                out.push((tag, name));
            }
            return Some(out);
        }
    }
    Some(Vec::new())
}

/// The DER element at the start of `b`, whatever its tag: tag, contents, what follows.
fn any_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let (content, rest) = der_element(b, tag)?;
    Some((tag, content, rest))
}

/// The contents of the DER element with `tag` at the start of `b`, and what follows it.
fn der_element(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b.get(2..2 + n)?.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((b.get(header..end)?, b.get(end..)?))
}

/// `AB:CD:...` SHA-256 of the certificate, as browsers and `openssl x509 -fingerprint` print it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn cert_with(names: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn dns(n: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(n.try_into().unwrap())
    }

    fn uri(u: &str) -> rcgen::SanType {
        rcgen::SanType::URI(u.try_into().unwrap())
    }

    #[test]
    fn a_certificate_identifies_its_domains_exactly() {
        let ids = Identities::of(&cert_with(vec![dns("b.test"), dns("SIP.b.test")]));
        assert!(ids.names("b.test") && ids.names("sip.b.test") && ids.names("B.Test"), "DNS names in any case");
        assert!(!ids.names("b.test."), "no absolute names");
        assert!(!ids.names("c.test") && !ids.names("x.b.test"));
        let wild = Identities::of(&cert_with(vec![dns("*.b.test"), dns("c.test")]));
        assert!(!wild.names("x.b.test") && wild.names("c.test"), "no wildcards (RFC 5922 7.2)");
    }

    #[test]
    fn sip_uris_come_before_dns_names() {
        // RFC 5922 7.1: the DNS names count only when no sip: URI is there.
        let ids = Identities::of(&cert_with(vec![uri("sip:b.test"), dns("edge.b.test"), uri("sip:bob@c.test")]));
        assert!(ids.names("b.test"), "its sip: URI");
        assert!(!ids.names("edge.b.test"), "DNS names are not read beside a sip: URI");
        assert!(!ids.names("c.test"), "a URI with a user part is a user's, not a domain's");
        assert_eq!(Identities::of(b"not a certificate"), Identities::default());
    }

    #[test]
    fn the_expiry_of_a_made_certificate_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.clone().self_signed(&key).unwrap();
        let expected = time::macros::datetime!(2031-07-09 00:00 UTC).unix_timestamp();
        assert_eq!(not_after(cert.der()), Some(expected));
        // GeneralizedTime, from 2050 on.
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(time::macros::datetime!(2051-01-02 00:00 UTC).unix_timestamp()));
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&cert.der()[..40]), None);
    }
}
