//! sipfront-load: an open-loop SIP load generator for the OCS user model, aimed at any
//! standards-compliant SIP server (sipfront, Kamailio) on loopback.
//!
//! What it is for: measuring a server honestly. Requests are scheduled at the target rate
//! whether or not earlier ones were answered ([`schedule`]), latencies go into HDR histograms
//! from each request's scheduled time ([`stats`]), and everything that can go wrong on the wire
//! (timeouts, retransmissions, unexpected or malformed answers) is counted, not fatal.
//!
//! It speaks SIP only through `sipfront-proto` and never depends on the server crate: it must
//! measure other servers exactly as it measures ours.

pub mod config;
pub mod provision;
pub mod ramp;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod sip;
pub mod stats;
pub mod tls;
pub mod transport;
pub mod users;

pub use config::{Bound, Config, Scenario, TransportKind};
pub use report::Report;

use stats::{Counters, Stats};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs `config` to its end, or until `stop` turns true (then the report holds what was
/// measured so far and says it was interrupted). `progress` draws a live line on stdout.
pub async fn run(mut config: Config, mut stop: watch::Receiver<bool>, progress: bool) -> anyhow::Result<Report> {
    config.check()?;
    if config.scenario == Scenario::Model {
        // The target rate of a model run is what its users' habits add up to.
        config.rate = scenario::model::Model::rate(&config);
    }
    let started_unix_ms = stats::unix_ms();
    let config = Arc::new(config);
    let stats = Arc::new(Stats::default());
    let users = Arc::new(users::Users::new(config.clone(), stats.clone()).await?);
    let bar = progress.then(|| live(config.planned(), stats.clone()));
    let (phase, ramp) = match scenario::prepare(&users, &mut stop).await {
        Err(interrupted) => (interrupted, None),
        Ok(prepared) => {
            let (phase, ramp) = match &config.ramp {
                None => (prepared.measure(&users, config.rate, config.planned(), &mut stop).await, None),
                Some(r) => {
                    let (phase, steps) = ramp::run(r, &prepared, &users, &mut stop).await;
                    (phase, Some(steps))
                }
            };
            stats.end();
            if !phase.interrupted {
                prepared.teardown(&users, &mut stop).await;
            }
            (phase, ramp)
        }
    };
    if let Some((bar, task)) = bar {
        task.abort();
        bar.finish_and_clear();
    }
    let mut report = Report::new(&config, &stats, &phase, started_unix_ms);
    if let Some(ramp) = ramp {
        // Over every step together: `ramp::run` has added each step's last interval to the
        // sending span already.
        report.offered_rate =
            if phase.sending.is_zero() { 0.0 } else { phase.started as f64 / phase.sending.as_secs_f64() };
        report.ramp = Some(ramp);
    }
    Ok(report)
}

/// The live progress line: transactions ended out of planned, the rate over the last second,
/// failures, timeouts and retransmissions so far.
fn live(planned: u64, stats: Arc<Stats>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::with_draw_target(Some(planned), indicatif::ProgressDrawTarget::stdout());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("a constant, valid template")
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut window = std::collections::VecDeque::from([(tokio::time::Instant::now(), 0u64)]);
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            let ok = Counters::get(&stats.succeeded);
            window.push_back((now, ok));
            while window.len() > 5 {
                window.pop_front();
            }
            let (t, n) = window.front().copied().unwrap_or((now, ok));
            let rate = (ok - n) as f64 / (now - t).as_secs_f64().max(0.001);
            let c = &stats.counters;
            b.set_position(Counters::get(&stats.finished));
            b.set_message(format!(
                "{rate:.0} ok/s  failed {}  timeouts+errors {}  retrans {}  unexpected {}",
                stats.failures(),
                Counters::get(&c.transport_errors),
                Counters::get(&c.retransmissions),
                Counters::get(&c.unexpected)
            ));
        }
    });
    (bar, task)
}
