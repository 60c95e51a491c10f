//! Digest authentication (RFC 3261 22, RFC 7616, RFC 8760). Nonces are HMAC-signed timestamps
//! that name the process which issued them. What makes a response single-use is state: the
//! highest nonce-count seen per nonce, kept until the nonce expires, in the process that issued
//! it. So only that process accepts its nonces: another one holding the key (another member of
//! the pool, or this member after a restart) knows the nonce is genuine but not which counts
//! were used, and answers it as stale (a fresh challenge the client answers without asking its
//! user, RFC 7616 3.3).
//!
//! Until the password is proven, every answer is the same whoever the user is: an unknown user
//! is checked against a dummy HA1, a disabled one is answered as a wrong password, and an
//! expired nonce is answered stale before the response is looked at. So neither the answers nor
//! the work behind them tell which users exist, which are disabled, or which password is right.

use super::directory::Directory;
use super::lockout::Lockout;
use super::refusal::Refusal;
use crate::config;
use crate::ops::metrics as m;
use crate::state::expiry::ExpiryQueue;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sipfront_proto::digest::{self, Algorithm};
use sipfront_proto::{Aor, DigestParams, HeaderName, Host, Message, Uri};
use sipfront_storage::User;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest digest parameter value we look at; real ones are well under 200 bytes.
const MAX_PARAM: usize = 1024;

/// The outcome of checking a request's credentials.
pub enum Verdict {
    Authenticated(Arc<User>),
    /// Answer 401/407 with a fresh challenge (`stale`: the nonce is not good here any more,
    /// RFC 7616 3.3; said before the response is checked).
    Challenge {
        stale: bool,
    },
    /// Refused without a challenge: 400 malformed, 403 locked out.
    Reject(Refusal),
    /// The store is needed and unavailable: 503.
    Unavailable,
}

/// What a nonce is to this process.
#[derive(Debug, PartialEq, Eq)]
enum NonceState {
    /// Issued here, within its lifetime.
    Fresh,
    /// Issued here, and past its lifetime.
    Expired,
    /// Genuine, but issued by another process holding the key (another member, or this one
    /// before a restart), which holds its nonce-counts.
    Foreign,
    /// Not made with our key.
    Forged,
}

pub struct Auth {
    algorithms: Vec<Algorithm>,
    /// HMAC state with the key already absorbed; cloned for each nonce.
    keyed: Hmac<Sha256>,
    lifetime: Duration,
    /// This process's incarnation, named in each nonce it issues: only it accepts them.
    incarnation: String,
    /// nonce -> highest nc accepted.
    seen: DashMap<Box<str>, u32>,
    seen_expiry: ExpiryQueue<Box<str>>,
    pub lockout: Lockout,
}

impl Auth {
    pub fn new(c: &config::Auth) -> Auth {
        let algorithms = c.algorithms.iter().filter_map(|a| Algorithm::parse(a.as_bytes())).collect();
        let key = if c.secret.is_empty() { super::secure_random(32) } else { c.secret.as_bytes().to_vec() };
        let lifetime = Duration::from_secs(c.nonce_lifetime_secs);
        // HMAC takes keys of any length, so this cannot fail.
        let keyed = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
        Auth {
            algorithms,
            keyed,
            lifetime,
            incarnation: digest::hex(&super::secure_random(8)),
            seen: DashMap::new(),
            seen_expiry: ExpiryQueue::new(lifetime),
            lockout: Lockout::new(c),
        }
    }

    pub async fn run(&self) {
        tokio::join!(
            self.seen_expiry.run(|n| {
                self.seen.remove(&n);
            }),
            self.lockout.run()
        );
    }

    fn mac(&self, text: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(text.as_bytes());
        digest::hex(&mac.finalize().into_bytes()[..12])
    }

    /// `TIME.INCARNATION.RANDOM.MAC`: when it was issued, so that its age can be checked, which
    /// process issued it, so that only that one accepts it, and a MAC so that nobody without
    /// the key can make one.
    pub fn new_nonce(&self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let body = format!("{now:x}.{}.{:016x}", self.incarnation, sipfront_proto::random::u64());
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    fn nonce_state(&self, nonce: &str) -> NonceState {
        let Some((body, mac)) = nonce.rsplit_once('.') else { return NonceState::Forged };
        if !digest::constant_time_eq(self.mac(body).as_bytes(), mac.as_bytes()) {
            return NonceState::Forged;
        }
        let mut parts = body.split('.');
        let Some(issued) = parts.next().and_then(|t| u64::from_str_radix(t, 16).ok()) else {
            return NonceState::Forged;
        };
        if parts.next() != Some(self.incarnation.as_str()) {
            return NonceState::Foreign;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now.saturating_sub(issued) > self.lifetime.as_secs() {
            return NonceState::Expired;
        }
        NonceState::Fresh
    }

    /// The HA1 a user we do not have is checked against, so that an unknown name costs what a
    /// known one does. Derived from the key and the AOR: the same for the same name (a name
    /// tried twice costs the same twice), and unknowable without the key.
    fn dummy_ha1(&self, aor: &str, base: Algorithm) -> String {
        let mut mac = self.keyed.clone();
        mac.update(b"sipfront dummy HA1\0");
        mac.update(base.name().as_bytes());
        mac.update(b"\0");
        mac.update(aor.to_ascii_lowercase().as_bytes());
        let bytes = mac.finalize().into_bytes();
        // As long as a stored HA1 of that algorithm: 16 bytes for MD5, 32 for SHA-256.
        let len = if base == Algorithm::Md5 { 16 } else { 32 };
        digest::hex(&bytes[..len])
    }

    /// A 401 (REGISTER: WWW-Authenticate) or 407 (Proxy-Authenticate) response with one
    /// challenge per configured algorithm, in order, all with the same nonce.
    pub fn challenge(&self, req: &Message, code: u16, realm: &str, stale: bool, agent: &str) -> Message {
        let mut r = sipfront_proto::reply::response(req, code, agent);
        let header = if code == 401 { HeaderName::WwwAuthenticate } else { HeaderName::ProxyAuthenticate };
        for value in self.challenges(realm, stale) {
            r.push_header(header, value);
        }
        r
    }

    /// The values of a challenge's headers: one per configured algorithm, in order, all with
    /// the same fresh nonce (SIP's 401/407 above, and HTTP's WWW-Authenticate alike).
    pub fn challenges(&self, realm: &str, stale: bool) -> Vec<String> {
        let nonce = self.new_nonce();
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|a| {
                format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={}{stale}", a.name())
            })
            .collect()
    }

    /// Checks the credentials `req` carries in `header` for `realm`.
    pub async fn verify(
        &self,
        req: &Message,
        header: HeaderName,
        realm: &str,
        ip: IpAddr,
        directory: &Directory,
    ) -> Verdict {
        let method = req.method().map(|m| m.as_str()).unwrap_or_default();
        let designated = |uri: &[u8]| req.request_uri().is_some_and(|r| designates(uri, r, realm));
        self.verify_values(req.header_all(header), method, &designated, realm, ip, directory).await
    }

    /// Checks the credentials of an HTTP request (the directory's HTTPS endpoint): the values
    /// of its Authorization headers, for `method` and its request-target, which the `uri`
    /// parameter must repeat byte for byte (RFC 7616 3.4.6, as every HTTP client sends it).
    /// The same HA1s, nonces, nonce-counts and lockouts as SIP: a failure here counts toward
    /// the user's lockout there, and the other way round.
    pub async fn verify_http<'a>(
        &self,
        authorization: impl Iterator<Item = &'a [u8]> + Send,
        method: &str,
        target: &[u8],
        realm: &str,
        ip: IpAddr,
        directory: &Directory,
    ) -> Verdict {
        self.verify_values(authorization, method, &|uri: &[u8]| uri == target, realm, ip, directory).await
    }

    /// The credentials for `realm` among `values` (header values), checked.
    async fn verify_values<'a>(
        &self,
        values: impl Iterator<Item = &'a [u8]> + Send,
        method: &str,
        designated: &(dyn Fn(&[u8]) -> bool + Sync),
        realm: &str,
        ip: IpAddr,
        directory: &Directory,
    ) -> Verdict {
        let mut ours = None;
        for value in values {
            let Ok(c) = DigestParams::parse(value) else { return self.reject(Refusal::MalformedCredentials) };
            if c.is_digest() && c.get("realm").is_some_and(|r| r.eq_ignore_ascii_case(realm.as_bytes())) {
                ours = Some(c);
                break;
            }
        }
        let Some(c) = ours else { return self.challenge_for("no_credentials") };
        match self.check(&c, method, designated, realm, ip, directory).await {
            Ok(user) => Verdict::Authenticated(user),
            Err(v) => v,
        }
    }

    /// Checks credentials for a request of `method` whose resource `designated` tells a `uri`
    /// parameter from another.
    async fn check(
        &self,
        c: &DigestParams<'_>,
        method: &str,
        designated: &(dyn Fn(&[u8]) -> bool + Sync),
        realm: &str,
        ip: IpAddr,
        directory: &Directory,
    ) -> Result<Arc<User>, Verdict> {
        // One pass over the parameters (looking each up by name would split the header anew).
        let (mut username, mut nonce, mut uri, mut response) = (None, None, None, None);
        let (mut algorithm, mut qop, mut nc, mut cnonce) = (None, None, None, None);
        for (name, value) in c.iter() {
            if value.len() > MAX_PARAM {
                return Err(self.reject(Refusal::OversizedParameter));
            }
            let slot = match name.to_ascii_lowercase().as_slice() {
                b"username" => &mut username,
                b"nonce" => &mut nonce,
                b"uri" => &mut uri,
                b"response" => &mut response,
                b"algorithm" => &mut algorithm,
                b"qop" => &mut qop,
                b"nc" => &mut nc,
                b"cnonce" => &mut cnonce,
                _ => continue,
            };
            *slot = Some(value);
        }
        let required = |v: Option<std::borrow::Cow<'_, [u8]>>| -> Result<String, Verdict> {
            let v = v.ok_or_else(|| self.reject(Refusal::MissingParameter))?;
            String::from_utf8(v.into_owned()).map_err(|_| self.reject(Refusal::MalformedCredentials))
        };
        let username = required(username)?;
        let nonce = required(nonce)?;
        let uri = required(uri)?;
        let response = required(response)?;
        // RFC 7616 3.4.6: the `uri` must designate the resource of the Request-Line, or
        // credentials made for one request would serve for another (400 if not).
        if !designated(uri.as_bytes()) {
            return Err(self.reject(Refusal::UriMismatch));
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(&a) {
                Some(a) if self.algorithms.contains(&a) => a,
                _ => return Err(self.challenge_for("unknown_algorithm")),
            },
        };
        // We always challenge with qop="auth" (RFC 7616 3.3), whose nonce-count makes each
        // response single-use (3.4). A response without it (RFC 2069) would be good again for
        // as long as its nonce is, and no client we know of sends one: challenged again.
        let (nc, cnonce, count) = match &qop {
            Some(q) if q.eq_ignore_ascii_case(b"auth") => {
                let (nc, cnonce) = (required(nc)?, required(cnonce)?);
                let Ok(count) = u32::from_str_radix(&nc, 16) else {
                    return Err(self.reject(Refusal::MalformedCredentials));
                };
                (nc, cnonce, count)
            }
            Some(_) => return Err(self.challenge_for("unsupported_qop")),
            None => return Err(self.challenge_for("no_qop")),
        };
        // Some clients send the whole AOR as the username.
        let aor = if username.contains('@') { username.clone() } else { format!("{username}@{realm}") };
        if !Aor::domain_of(&aor).eq_ignore_ascii_case(realm) {
            return Err(self.challenge_for("wrong_realm"));
        }
        if self.lockout.is_locked(&aor, ip) {
            return Err(self.reject(Refusal::LockedOut));
        }
        match self.nonce_state(&nonce) {
            NonceState::Fresh => {}
            NonceState::Forged => return Err(self.challenge_for("bad_nonce")),
            // Stale whatever the response (RFC 7616 3.3: the nonce is no longer good). Said only
            // after a right response, as RFC 2617 3.2.1 had it, stale=true would prove the
            // password to whoever holds an old nonce. Not a failure either: the client answers
            // it without asking its user.
            NonceState::Expired => return Err(self.stale_for("stale_nonce")),
            // Genuine, but its nonce-counts are another process's: a replay could not be told,
            // so the client is asked to answer one of ours, the same way.
            NonceState::Foreign => return Err(self.stale_for("foreign_nonce")),
        }
        let user = match directory.user(&aor).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable for credentials");
                return Err(Verdict::Unavailable);
            }
        };
        // The same work whether the user exists or not: an unknown one is checked against a
        // dummy HA1 (made for every request, so that not even making it tells them apart).
        let dummy = self.dummy_ha1(&aor, algorithm.base());
        let ha1 = match (&user, algorithm.base()) {
            (None, _) => &dummy,
            (Some(u), Algorithm::Md5) => &u.ha1_md5,
            (Some(u), _) => &u.ha1_sha256,
        };
        let expected = digest::response(
            ha1,
            &digest::Challenge {
                algorithm,
                nonce: nonce.as_bytes(),
                method,
                uri: uri.as_bytes(),
                qop: qop.as_ref().map(|q| (&q[..], nc.as_bytes(), cnonce.as_bytes())),
                cnonce: cnonce.as_bytes(),
            },
        );
        let proven = digest::constant_time_eq(expected.as_bytes(), response.as_bytes());
        let user = match user {
            Some(u) if u.enabled && proven => u,
            other => {
                // One answer for all three, a fresh challenge, and a failure toward the lockout
                // for each: a disabled account answered 403 after the right password only
                // would tell that password (finding 7). The metric alone tells them apart.
                let reason = match other {
                    None => "unknown_user",
                    Some(u) if !u.enabled => "disabled",
                    Some(_) => "bad_response",
                };
                self.lockout.failure(&aor, ip);
                return Err(self.challenge_for(reason));
            }
        };
        // RFC 7616 3.4: each request with the same nonce carries a higher nonce-count. The
        // counts are kept here only, which is why only this process accepts its nonces.
        let replay = match self.seen.entry(nonce.clone().into_boxed_str()) {
            dashmap::mapref::entry::Entry::Occupied(mut e) => {
                let replayed = *e.get() >= count;
                if !replayed {
                    *e.get_mut() = count;
                }
                replayed
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(count);
                self.seen_expiry.push(nonce.into_boxed_str());
                false
            }
        };
        if replay {
            return Err(self.challenge_for("replay"));
        }
        self.lockout.success(&aor, ip);
        Ok(user)
    }

    fn challenge_for(&self, reason: &'static str) -> Verdict {
        metrics::counter!(m::AUTH_FAILURES, "reason" => reason).increment(1);
        Verdict::Challenge { stale: false }
    }

    fn stale_for(&self, reason: &'static str) -> Verdict {
        metrics::counter!(m::AUTH_FAILURES, "reason" => reason).increment(1);
        Verdict::Challenge { stale: true }
    }

    fn reject(&self, refusal: Refusal) -> Verdict {
        metrics::counter!(m::AUTH_FAILURES, "reason" => refusal.label()).increment(1);
        Verdict::Reject(refusal)
    }
}

/// Whether the `uri` of credentials designates the resource of `request_uri` (RFC 7616 3.4.6)
/// for `realm`, one of our domains. Most clients copy the Request-URI byte for byte. Beyond
/// that, the same user at the same host is the same resource however written: a port or
/// parameters say how to reach it, which a proxy on the way may rewrite (why the `uri` is
/// there at all, RFC 7616 3.4.6), and a host compares case-insensitively (RFC 3261 19.1.4).
/// And a `uri` with no user that names this server (our domain, or an address) designates the
/// service the credentials are for: SIPp names the address it sends to, whatever the request.
/// Such credentials can be moved to another request of the same method by someone who can
/// also keep the original from reaching us (they are single-use): a weakness of that client,
/// which refusing it would not fix for anyone else.
fn designates(uri: &[u8], request_uri: &[u8], realm: &str) -> bool {
    if uri == request_uri {
        return true;
    }
    let (Ok(u), Ok(r)) = (Uri::parse(uri), Uri::parse(request_uri)) else { return false };
    if !u.is_sip() || !r.is_sip() {
        // Other schemes (tel:, urn:) only as written.
        return false;
    }
    let same_host = match (u.host(), r.host()) {
        (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    };
    let unescaped = |user: Option<&[u8]>| user.map(|u| sipfront_proto::unescape(u).into_owned());
    if unescaped(u.user()) == unescaped(r.user()) && same_host {
        return true;
    }
    u.user().is_none()
        && match u.host() {
            Host::Name(n) => n.eq_ignore_ascii_case(realm.as_bytes()),
            Host::V4(_) | Host::V6(_) => true,
        }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn auth(secret: &str) -> Auth {
        Auth::new(&config::Auth { secret: secret.into(), ..Default::default() })
    }

    #[test]
    fn a_nonce_is_good_only_at_the_process_that_issued_it() {
        // Two members of a pool (or one member before and after a restart): one key.
        let (a, b) = (auth("shared"), auth("shared"));
        let nonce = a.new_nonce();
        assert_eq!(a.nonce_state(&nonce), NonceState::Fresh);
        assert_eq!(b.nonce_state(&nonce), NonceState::Foreign, "genuine, but A holds its counts");
        assert_eq!(auth("another key").nonce_state(&nonce), NonceState::Forged);
        // A nonce of the format before incarnations (`TIME.RANDOM.MAC`): genuine, not ours.
        let old = format!("{:x}.0123456789abcdef", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(a.nonce_state(&format!("{old}.{}", a.mac(&old))), NonceState::Foreign);
    }

    #[test]
    fn a_nonce_expires_and_cannot_be_altered() {
        let a = auth("k");
        let issued = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - a.lifetime.as_secs() - 1;
        let body = format!("{issued:x}.{}.0123456789abcdef", a.incarnation);
        assert_eq!(a.nonce_state(&format!("{body}.{}", a.mac(&body))), NonceState::Expired);
        // Made younger without the key: no longer ours.
        let nonce = a.new_nonce();
        let (time, rest) = nonce.split_once('.').unwrap();
        let younger = format!("{:x}.{rest}", u64::from_str_radix(time, 16).unwrap() + 1);
        assert_eq!(a.nonce_state(&younger), NonceState::Forged);
        for junk in ["", ".", "x.y.z", "..", "0.0.0.0"] {
            assert_eq!(a.nonce_state(junk), NonceState::Forged, "{junk:?}");
        }
    }

    #[test]
    fn a_uri_designates_the_request_uris_resource_only() {
        let realm = "example.test";
        let yes = [
            ("sip:bob@example.test", "sip:bob@example.test"),
            // How to reach it, and the case of its host, are not what it is.
            ("sip:bob@Example.TEST", "sip:bob@example.test:5060;transport=tcp"),
            ("sip:pbx.e36:5061;transport=tls", "sip:pbx.e36:5061;transport=TLS"),
            ("sip:b%6fb@example.test", "sip:bob@example.test"),
            // This server, by the address SIPp sent to or by our domain.
            ("sip:127.0.0.1:5060", "sip:bob@example.test"),
            ("sip:[::1]:5060", "sip:example.test"),
            ("sip:example.test", "sip:bob@example.test"),
            ("tel:+15551234", "tel:+15551234"),
        ];
        for (uri, request_uri) in yes {
            assert!(designates(uri.as_bytes(), request_uri.as_bytes(), realm), "{uri} for {request_uri}");
        }
        let no = [
            ("sip:carol@example.test", "sip:bob@example.test"),
            ("sip:BOB@example.test", "sip:bob@example.test"),
            ("sip:bob@elsewhere.test", "sip:bob@example.test"),
            ("sip:bob@127.0.0.1", "sip:bob@example.test"),
            ("sip:elsewhere.test", "sip:example.test"),
            ("sip:bob@example.test", "sip:example.test"),
            ("tel:+15551234", "tel:+15559999"),
            ("tel:+15551234", "sip:+15551234@example.test"),
            ("not a uri", "sip:example.test"),
            ("", "sip:example.test"),
        ];
        for (uri, request_uri) in no {
            assert!(!designates(uri.as_bytes(), request_uri.as_bytes(), realm), "{uri} for {request_uri}");
        }
    }

    #[test]
    fn an_unknown_users_dummy_ha1_is_stable_per_name_and_shaped_like_a_real_one() {
        let a = auth("k");
        let alice = a.dummy_ha1("alice@example.test", Algorithm::Md5);
        assert_eq!(alice, a.dummy_ha1("Alice@Example.test", Algorithm::Md5), "the same name, the same work");
        assert_ne!(alice, a.dummy_ha1("bob@example.test", Algorithm::Md5));
        assert_ne!(alice, auth("other").dummy_ha1("alice@example.test", Algorithm::Md5), "depends on the key");
        let real = digest::ha1(Algorithm::Md5, "alice", "example.test", "pw");
        assert_eq!(alice.len(), real.len());
        let real = digest::ha1(Algorithm::Sha256, "alice", "example.test", "pw");
        assert_eq!(a.dummy_ha1("alice@example.test", Algorithm::Sha256).len(), real.len());
    }
}
