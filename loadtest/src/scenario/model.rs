//! `model`: the OCS 2007 R2 user model (DESIGN.md, "Numbers we size for"), every user doing
//! all of it at once, time-compressible. Each user registers and subscribes to the presence of
//! its `--watch` contacts (users i+1..i+K, wrapping round; or once to its resource list), then
//! for `--duration` seconds of the run, with every interval of the model divided by
//! `--time-scale`:
//! - re-registers every 15 minutes (`reregister`, same Call-ID, next CSeq, RFC 3261 10.2.4);
//! - sends a CRLFCRLF keep-alive on its connection every 5 minutes (RFC 5626 3.5.1; TCP and
//!   TLS only, UDP would need STUN);
//! - refreshes each subscription at half its expiry (`resubscribe`, in its dialog);
//! - publishes a presence change 4 times an hour (`publish`);
//! - opens 2 IM sessions an hour with a random contact, each a burst of 10 MESSAGEs of
//!   `--message-bytes`, one after the other (`message`);
//! - fetches a random contact's presence 60 times a day (SUBSCRIBE with Expires 0, answered by
//!   one NOTIFY, RFC 6665 4.4.3; `fetch`).
//!
//! Each activity is its own open loop: the users take turns in a shuffled order, so each user
//! does it once per interval and the server sees the population's rate spread evenly.

use super::presence::{self, Change, Dialog, Publications, Target};
use super::{message, register, Kinds};
use crate::config::{Bound, Config, TransportKind};
use crate::schedule::{open_loop, Phase};
use crate::stats::Counters;
use crate::users::Users;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub const REREGISTER: Kinds = Kinds { whole: "reregister", steps: Some(("reregister.initial", "reregister.auth")) };
pub const RESUBSCRIBE: Kinds = Kinds { whole: "resubscribe", steps: None };
pub const FETCH: Kinds = Kinds { whole: "fetch", steps: Some(("fetch.initial", "fetch.auth")) };

/// The user model: how often each user does each thing, in model time, and how much faster
/// than real time the run goes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Model seconds per second of the run: 60 runs an hour of the model in a minute.
    pub time_scale: f64,
    pub reregister_secs: f64,
    pub keepalive_secs: f64,
    pub publishes_per_hour: f64,
    pub im_sessions_per_hour: f64,
    /// MESSAGEs in one IM session.
    pub im_messages: u32,
    pub fetches_per_day: f64,
}

impl Default for Model {
    /// The OCS 2007 R2 planning figures.
    fn default() -> Model {
        Model {
            time_scale: 1.0,
            reregister_secs: 900.0,
            keepalive_secs: 300.0,
            publishes_per_hour: 4.0,
            im_sessions_per_hour: 2.0,
            im_messages: 10,
            fetches_per_day: 60.0,
        }
    }
}

/// What the users of the model do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Reregister,
    KeepAlive,
    Resubscribe,
    Publish,
    ImSession,
    Fetch,
}

impl Activity {
    pub const ALL: [Activity; 6] = [
        Activity::Reregister,
        Activity::KeepAlive,
        Activity::Resubscribe,
        Activity::Publish,
        Activity::ImSession,
        Activity::Fetch,
    ];

    /// How many do it: users, or subscriptions for refreshes; keep-alives only on connections.
    fn population(self, c: &Config) -> usize {
        let n = c.accounts.len();
        match self {
            Activity::KeepAlive if c.transport == TransportKind::Udp => 0,
            Activity::Resubscribe if !c.resource_lists => n * c.watch,
            _ => n,
        }
    }

    /// Every how many model seconds each of the population does it.
    fn every_secs(self, c: &Config) -> f64 {
        let m = &c.model;
        match self {
            Activity::Reregister => m.reregister_secs,
            Activity::KeepAlive => m.keepalive_secs,
            Activity::Resubscribe => f64::from(c.expires) / 2.0,
            Activity::Publish => 3600.0 / m.publishes_per_hour,
            Activity::ImSession => 3600.0 / m.im_sessions_per_hour,
            Activity::Fetch => 86_400.0 / m.fetches_per_day,
        }
    }

    /// Client transactions each time (keep-alives are none).
    fn transactions(self, c: &Config) -> u64 {
        match self {
            Activity::KeepAlive => 0,
            Activity::ImSession => u64::from(c.model.im_messages),
            _ => 1,
        }
    }

    /// Times per second of the run, over the whole population.
    pub fn rate(self, c: &Config) -> f64 {
        let every = self.every_secs(c);
        if every.is_finite() && every > 0.0 {
            self.population(c) as f64 * c.model.time_scale / every
        } else {
            0.0
        }
    }

    /// Times in a run of `secs` seconds.
    pub fn count(self, c: &Config, secs: f64) -> u64 {
        (self.rate(c) * secs).floor() as u64
    }
}

impl Model {
    /// Client transactions a run of `secs` seconds schedules.
    pub fn planned(c: &Config, secs: f64) -> u64 {
        Activity::ALL.iter().map(|a| a.count(c, secs) * a.transactions(c)).sum()
    }

    /// Client transactions per second of the run.
    pub fn rate(c: &Config) -> f64 {
        Activity::ALL.iter().map(|a| a.rate(c) * a.transactions(c) as f64).sum()
    }
}

/// What the activities share once the set-up is done.
#[derive(Clone)]
pub struct Prepared {
    publications: Arc<Publications>,
    /// (watcher, its subscription)
    pub dialogs: Vec<(usize, Arc<Dialog>)>,
    body: Arc<str>,
}

/// The `k`-th contact of user `u` among `n` users: users u+1..u+K.
fn kth_contact(u: usize, k: usize, n: usize) -> usize {
    (u + 1 + k) % n
}

/// A random contact of user `u`.
fn contact(c: &Config, u: usize) -> usize {
    kth_contact(u, fastrand::usize(..c.watch.max(1)), c.accounts.len())
}

/// Every user's contact list, by user index: (user, its contacts).
pub fn contact_lists(c: &Config) -> Vec<(usize, Vec<usize>)> {
    let n = c.accounts.len();
    (0..n).map(|u| (u, (0..c.watch).map(|k| kth_contact(u, k, n)).collect())).collect()
}

/// Every user registers, then subscribes to its contacts or its list (`subscribe`).
pub async fn prepare(users: &Arc<Users>, stop: &mut watch::Receiver<bool>) -> Result<Prepared, Phase> {
    let c = users.config();
    let n = users.len();
    register::register_all(users, stop).await?;
    let per_user = if c.resource_lists { 1 } else { c.watch };
    let dialogs = Arc::new(Mutex::new(Vec::new()));
    let (expires, lists) = (c.expires, c.resource_lists);
    let subscribing = open_loop(c.setup_rate, (n * per_user) as u64, stop, |s, due| {
        let (users, dialogs) = (users.clone(), dialogs.clone());
        let (u, k) = (s as usize / per_user, s as usize % per_user);
        let target = if lists { Target::List } else { Target::Presentity(kth_contact(u, k, n)) };
        async move {
            if let Some(d) = presence::subscribe(&users, u, target, expires, due, presence::SUBSCRIBE).await {
                dialogs.lock().unwrap_or_else(|e| e.into_inner()).push((u, Arc::new(d)));
            }
        }
    })
    .await;
    if subscribing.interrupted {
        return Err(Phase { started: 0, ..subscribing });
    }
    presence::settle(&users.stats().counters, Duration::from_millis(500)).await;
    let dialogs = std::mem::take(&mut *dialogs.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Prepared { publications: Arc::new(Publications::new(n)), dialogs, body: message::body(c.message_bytes).into() })
}

/// Every activity at once, each for the run's duration.
pub async fn measure(users: &Arc<Users>, prepared: &Prepared, stop: &mut watch::Receiver<bool>) -> Phase {
    let c = users.config();
    let secs = match c.bound {
        Bound::Seconds(s) => s,
        // `Config::check` refuses a model bounded by count.
        Bound::Count(_) => 0.0,
    };
    users.stats().begin();
    let mut loops = tokio::task::JoinSet::new();
    for activity in Activity::ALL {
        let count = activity.count(c, secs);
        if count == 0 {
            continue;
        }
        let (users, prepared, stop) = (users.clone(), prepared.clone(), stop.clone());
        loops.spawn(async move { run(activity, users, prepared, count, stop).await });
    }
    let mut total = Phase { elapsed: Duration::ZERO, started: 0, sending: Duration::ZERO, interrupted: false };
    while let Some(done) = loops.join_next().await {
        let Ok(phase) = done else { continue };
        total.elapsed = total.elapsed.max(phase.elapsed);
        total.sending = total.sending.max(phase.sending);
        total.interrupted |= phase.interrupted;
    }
    total.started = Counters::get(&users.stats().started);
    if !total.interrupted {
        presence::settle(&users.stats().counters, Duration::from_millis(1000)).await;
    }
    total
}

/// One activity's open loop: `count` times at its rate, the population taking turns in a
/// shuffled order.
async fn run(
    activity: Activity,
    users: Arc<Users>,
    prepared: Prepared,
    count: u64,
    mut stop: watch::Receiver<bool>,
) -> Phase {
    let c = users.config();
    let population = match activity {
        Activity::Resubscribe => prepared.dialogs.len(),
        _ => users.len(),
    };
    if population == 0 {
        return Phase { elapsed: Duration::ZERO, started: 0, sending: Duration::ZERO, interrupted: false };
    }
    let mut order: Vec<usize> = (0..population).collect();
    fastrand::shuffle(&mut order);
    let order: Arc<[usize]> = order.into();
    let prepared = Arc::new(prepared);
    open_loop(activity.rate(c), count, &mut stop, |i, due| {
        let (users, prepared) = (users.clone(), prepared.clone());
        let who = order[i as usize % order.len()];
        async move {
            let stats = users.stats();
            let c = users.config();
            let one = |ok: bool, since: Instant| stats.finish(ok, since.elapsed());
            match activity {
                Activity::KeepAlive => {
                    if let Some(e) = users.endpoint(who).await {
                        e.keepalive().await;
                    }
                }
                Activity::ImSession => {
                    // A conversation: each MESSAGE after the answer to the one before.
                    let to = contact(c, who);
                    for m in 0..c.model.im_messages {
                        let sent = if m == 0 { due } else { Instant::now() };
                        Counters::add(&stats.started);
                        let ok = message::send(&users, who, to, sent, &prepared.body, message::MEASURED).await;
                        one(ok, sent);
                    }
                }
                _ => {
                    Counters::add(&stats.started);
                    let ok = match activity {
                        Activity::Reregister => register::register(&users, who, due, REREGISTER).await,
                        Activity::Resubscribe => {
                            let (watcher, dialog) = &prepared.dialogs[who];
                            presence::resubscribe(&users, *watcher, dialog, c.expires, due, RESUBSCRIBE).await
                        }
                        Activity::Publish => {
                            presence::publish(
                                &users,
                                &prepared.publications,
                                who,
                                Change::Modify,
                                due,
                                presence::MEASURED,
                            )
                            .await
                        }
                        _ => {
                            let target = Target::Presentity(contact(c, who));
                            presence::subscribe(&users, who, target, 0, due, FETCH).await.is_some()
                        }
                    };
                    one(ok, due);
                }
            }
        }
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;
    use crate::config::Scenario;

    #[test]
    fn rates_follow_the_user_model_and_the_time_scale() {
        let mut c = Config::new(Scenario::Model, "127.0.0.1:5060".parse().unwrap());
        c.set_pattern_users(3600, 0, "pw{n}");
        c.watch = 2;
        c.transport = TransportKind::Tcp;
        // 3600 users: per second, 4 registrations (every 900 s), 12 keep-alives (300 s),
        // 4 refreshes of 7200 subscriptions of 3600 s, 4 PUBLISHes, 2 IM sessions of 10
        // MESSAGEs, 2.5 fetches.
        let rates: Vec<f64> = Activity::ALL.iter().map(|a| a.rate(&c)).collect();
        assert_eq!(rates, vec![4.0, 12.0, 4.0, 4.0, 2.0, 2.5]);
        assert_eq!(Model::rate(&c), 4.0 + 4.0 + 4.0 + 20.0 + 2.5);
        assert_eq!(Model::planned(&c, 10.0), 40 + 40 + 40 + 200 + 25);
        c.model.time_scale = 60.0;
        assert_eq!(Activity::Publish.rate(&c), 240.0);
        c.transport = TransportKind::Udp;
        assert_eq!(Activity::KeepAlive.rate(&c), 0.0, "no keep-alives over UDP");
        c.model.publishes_per_hour = 0.0;
        assert_eq!(Activity::Publish.count(&c, 10.0), 0);
    }
}
