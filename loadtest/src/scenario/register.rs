//! `register`: every transaction is one registration of one user, REGISTER -> 401 ->
//! REGISTER with credentials -> 200 (SIPp's `reg_auth.xml`). Users are taken in turn, so with
//! more transactions than users the later ones are refreshes (same Call-ID, higher CSeq).

use super::{exchange, measured, Kinds};
use crate::schedule::{open_loop, Phase};
use crate::sip::{self, Exchange};
use crate::users::Users;
use sipfront_proto::{HeaderName, Method};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// The figures of the measured registrations.
pub const MEASURED: Kinds = Kinds { whole: "register", steps: Some(("register.initial", "register.auth")) };
/// The registrations of the other scenarios' set-up.
pub const SETUP: Kinds = Kinds { whole: "setup.register", steps: None };

/// Registers every user at the set-up rate (`setup.register`); `Err` if interrupted.
pub async fn register_all(users: &Arc<Users>, stop: &mut watch::Receiver<bool>) -> Result<(), Phase> {
    let setup = open_loop(users.config().setup_rate, users.len() as u64, stop, |i, due| {
        let users = users.clone();
        async move {
            register(&users, i as usize, due, SETUP).await;
        }
    })
    .await;
    if setup.interrupted {
        return Err(Phase { started: 0, ..setup });
    }
    Ok(())
}

pub async fn measure(users: &Arc<Users>, rate: f64, count: u64, stop: &mut watch::Receiver<bool>) -> Phase {
    measured(users, rate, count, stop, |i, due| {
        let users = users.clone();
        async move { register(&users, i as usize, due, MEASURED).await }
    })
    .await
}

/// Registers user `i` (with its socket's or connection's address as Contact).
pub async fn register(users: &Users, i: usize, due: Instant, kinds: Kinds) -> bool {
    let stats = users.stats();
    let Some(endpoint) = users.endpoint(i).await else {
        stats.record(kinds.whole, due.elapsed(), crate::stats::Outcome::Error);
        return false;
    };
    let c = users.config();
    let user = users.get(i);
    let uri = format!("sip:{}", c.domain);
    let contact = format!("<sip:{}@{};transport={}>", user.account.user, endpoint.local(), c.transport.param());
    let make = |creds: Option<&super::Credentials>| {
        let branch = sip::branch();
        let x = Exchange {
            from: &user.account.user,
            to: &user.account.user,
            domain: &c.domain,
            from_tag: &user.from_tag,
            call_id: &user.call_id,
        };
        let mut m = sip::request(Method::Register, &uri, &x, user.next_cseq(), endpoint.local(), c.transport, &branch);
        m.push_header(HeaderName::Contact, contact.clone());
        m.push_header(HeaderName::Expires, c.expires.to_string());
        if let Some((name, value)) = creds {
            m.push_header(*name, value.clone());
        }
        m.push_header(HeaderName::ContentLength, "0");
        (m, branch)
    };
    exchange(stats, &endpoint, &user.account, "REGISTER", &uri, due, kinds, make).await
}
