//! Ramp mode: the highest rate a server sustains. After the scenario's set-up, steps of
//! `step_secs` seconds each run at `start`, `start + step`, ... up to `max` transactions per
//! second; each step must end with under `max_failure_pct` percent of its transactions failed
//! and their p99 latency (from the scheduled start, so a backlog counts) at most `max_p99_ms`.
//! The ramp stops at the first step that fails; the highest passing rate is the answer.
//!
//! Every step waits for its last transaction to end (or time out) before the next begins, so a
//! step is judged only by its own transactions.

use crate::scenario::Prepared;
use crate::schedule::Phase;
use crate::stats::Counters;
use crate::users::Users;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ramp {
    /// Rates of the first step, the increase per step and the last step, per second.
    pub start: f64,
    pub step: f64,
    pub max: f64,
    pub step_secs: f64,
    /// A step passes with fewer failed transactions than this percentage (or none) ...
    pub max_failure_pct: f64,
    /// ... and a p99 latency of at most this.
    pub max_p99_ms: f64,
}

impl Ramp {
    /// `START:STEP:MAX`, e.g. `500:250:5000`; the other fields have their CLI defaults.
    pub fn parse(s: &str) -> anyhow::Result<Ramp> {
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        let [start, step, max] = parts[..] else { bail!("--ramp wants START:STEP:MAX, got {s:?}") };
        let number = |v: &str| v.parse::<f64>().with_context(|| format!("--ramp {s:?}: {v:?} is not a number"));
        Ok(Ramp {
            start: number(start)?,
            step: number(step)?,
            max: number(max)?,
            step_secs: 10.0,
            max_failure_pct: 1.0,
            max_p99_ms: 200.0,
        })
    }

    pub fn check(&self) -> anyhow::Result<()> {
        let positive = |r: f64| r > 0.0 && r.is_finite();
        if !positive(self.start) || !positive(self.step) || !positive(self.max) || self.max < self.start {
            bail!("--ramp START:STEP:MAX needs 0 < START <= MAX and STEP > 0");
        }
        if !positive(self.step_secs) || self.max_p99_ms <= 0.0 || !(0.0..=100.0).contains(&self.max_failure_pct) {
            bail!("--step-duration and --max-p99-ms must be positive, --max-failure-pct 0 to 100");
        }
        if self.rates().any(|r| (r * self.step_secs).round() < 1.0) {
            bail!("a ramp step of {} s at {}/s would send nothing", self.step_secs, self.start);
        }
        Ok(())
    }

    /// The rate of every step, in order.
    pub fn rates(&self) -> impl Iterator<Item = f64> + '_ {
        // Computed from the start each time, so that no rounding error piles up.
        (0..).map(|k| self.start + k as f64 * self.step).take_while(|&r| r <= self.max * (1.0 + 1e-9))
    }

    /// Transactions of a step at `rate`.
    pub fn count(&self, rate: f64) -> u64 {
        (rate * self.step_secs).round() as u64
    }
}

/// One step, as the report shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub rate: f64,
    pub planned: u64,
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub failure_pct: f64,
    pub offered_rate: f64,
    pub achieved_rate: f64,
    /// Latency of the step's measured transactions, whatever their outcome, in ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// NOTIFYs received during the step (presence), and per second of it.
    pub notifies: u64,
    pub notify_rate: f64,
    pub elapsed_s: f64,
    pub passed: bool,
    /// Why it failed (`failures 3.2% >= 1%`, `p99 412 ms > 200 ms`, `interrupted`), or `ok`.
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RampReport {
    pub steps: Vec<Step>,
    /// The rate of the last step that passed; `None` when the first one failed.
    pub highest_passing_rate: Option<f64>,
}

/// Runs the steps of `ramp` after `prepared`'s set-up. The phase returned spans every step.
pub async fn run(
    ramp: &Ramp,
    prepared: &Prepared,
    users: &Arc<Users>,
    stop: &mut watch::Receiver<bool>,
) -> (Phase, RampReport) {
    let stats = users.stats();
    let mut report = RampReport { steps: Vec::new(), highest_passing_rate: None };
    let mut total = Phase { elapsed: Duration::ZERO, started: 0, sending: Duration::ZERO, interrupted: false };
    let t0 = std::time::Instant::now();
    for rate in ramp.rates() {
        let before = (
            Counters::get(&stats.started),
            Counters::get(&stats.finished),
            Counters::get(&stats.succeeded),
            Counters::get(&stats.counters.notifies),
        );
        let _ = stats.take_step_latency();
        // Zero for the first step, whose measured phase begins inside `measure`.
        let began = stats.since_begin();
        let count = ramp.count(rate);
        let phase = prepared.measure(users, rate, count, stop).await;
        let latency = stats.take_step_latency();
        let started = Counters::get(&stats.started) - before.0;
        let finished = Counters::get(&stats.finished) - before.1;
        let succeeded = Counters::get(&stats.succeeded) - before.2;
        let notifies = Counters::get(&stats.counters.notifies) - before.3;
        let failed = finished.saturating_sub(succeeded);
        let success_span = stats.success_span().saturating_sub(began).as_secs_f64().max(1.0 / rate);
        let ms = |q: f64| if latency.is_empty() { 0.0 } else { latency.value_at_quantile(q) as f64 / 1000.0 };
        let failure_pct = if finished == 0 { 100.0 } else { failed as f64 * 100.0 / finished as f64 };
        let p99 = ms(0.99);
        let verdict = if phase.interrupted {
            "interrupted".to_string()
        } else if failed > 0 && failure_pct >= ramp.max_failure_pct {
            format!("failures {failure_pct:.2}% >= {}%", ramp.max_failure_pct)
        } else if p99 > ramp.max_p99_ms {
            format!("p99 {p99:.1} ms > {} ms", ramp.max_p99_ms)
        } else {
            "ok".to_string()
        };
        let passed = verdict == "ok";
        report.steps.push(Step {
            rate,
            planned: count,
            started,
            succeeded,
            failed,
            failure_pct,
            offered_rate: started as f64 / (phase.sending.as_secs_f64() + 1.0 / rate),
            achieved_rate: if succeeded == 0 { 0.0 } else { succeeded as f64 / success_span },
            p50_ms: ms(0.5),
            p99_ms: p99,
            max_ms: if latency.is_empty() { 0.0 } else { latency.max() as f64 / 1000.0 },
            notifies,
            // Until the step's last NOTIFY, which may trail its last transaction (RFC 6446).
            notify_rate: notifies as f64
                / phase.elapsed.max(stats.notify_span().saturating_sub(began)).as_secs_f64().max(1e-3),
            elapsed_s: phase.elapsed.as_secs_f64(),
            passed,
            verdict,
        });
        total.started += phase.started;
        total.sending += phase.sending + Duration::from_secs_f64(1.0 / rate);
        total.interrupted = phase.interrupted;
        if !passed {
            break;
        }
        report.highest_passing_rate = Some(rate);
    }
    total.elapsed = t0.elapsed();
    (total, report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn parses_and_lists_the_steps() {
        let r = Ramp::parse("100:50:300").unwrap();
        assert_eq!(r.rates().collect::<Vec<_>>(), vec![100.0, 150.0, 200.0, 250.0, 300.0]);
        r.check().unwrap();
        let r = Ramp::parse("0.1:0.1:0.3").unwrap();
        assert_eq!(r.rates().count(), 3, "no step lost to rounding");
        assert!(Ramp::parse("100:50").is_err());
        assert!(Ramp::parse("a:1:2").is_err());
        assert!(Ramp::parse("300:50:100").unwrap().check().is_err());
        assert!(Ramp::parse("100:0:300").unwrap().check().is_err());
        let r = Ramp { step_secs: 1.0, ..Ramp::parse("0.1:1:2").unwrap() };
        assert!(r.check().is_err(), "a step that sends nothing");
    }
}
