//! The report: every figure of a run with the configuration and the machine it ran on, as a
//! table for the operator and as JSON for comparing runs.

use crate::config::Config;
use crate::schedule::Phase;
use crate::stats::{Counters, Stats, TxStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// When the run began, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the measured phase began and ended (ms since the Unix epoch): the span to read
    /// the server's CPU over. The set-up comes before it, the settle and teardown after.
    pub measured_from_unix_ms: Option<u64>,
    pub measured_until_unix_ms: Option<u64>,
    pub config: Config,
    pub machine: Machine,
    /// Stopped (Ctrl-C) before the end: the figures are partial.
    pub interrupted: bool,
    /// The measured phase, from its first scheduled transaction to the end of its last.
    pub elapsed_s: f64,
    pub planned: u64,
    pub started: u64,
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Started but neither answered nor timed out when the run stopped.
    pub unfinished: u64,
    /// Transactions started per second while sending.
    pub offered_rate: f64,
    /// Successful transactions per second, from the first scheduled one to the last success.
    pub achieved_rate: f64,
    pub timeouts: u64,
    pub retransmissions: u64,
    pub requests_sent: u64,
    pub unexpected_responses: u64,
    pub malformed: u64,
    pub unmatched_responses: u64,
    pub transport_errors: u64,
    pub deliveries: u64,
    pub duplicate_deliveries: u64,
    /// NOTIFYs the clients received for their subscriptions and answered 200, in all and
    /// during the measured phase (after the set-up's), and those per second of the measured
    /// phase (until its last NOTIFY, if that came after its last transaction).
    pub notifies: u64,
    pub measured_notifies: u64,
    pub notify_rate: f64,
    /// Presentity states those measured NOTIFYs carried (a list NOTIFY carries each changed
    /// member), and per second over the same span as `notify_rate`.
    pub measured_states: u64,
    pub state_rate: f64,
    /// All NOTIFYs received by Subscription-State: `active`, `pending`, `terminated`, `other`.
    pub notify_states: BTreeMap<String, u64>,
    /// NOTIFYs for no subscription the clients hold, answered 481.
    pub unmatched_notifies: u64,
    pub other_requests_received: u64,
    /// CRLFCRLF keep-alives sent on connections, and CRLF pongs received (model).
    pub keepalives: u64,
    pub pongs: u64,
    /// Requests tried again after a 503's Retry-After (`--retry-after`).
    #[serde(default)]
    pub retries_after_503: u64,
    /// Ramp mode: every step and the highest rate that passed. The figures above then cover
    /// every step together.
    pub ramp: Option<crate::ramp::RampReport>,
    /// By transaction type: the whole exchange (`register`, `message`), its steps
    /// (`register.initial`, `register.auth`...), set-up (`setup.register`).
    pub transactions: BTreeMap<String, TxReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxReport {
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    pub timeouts: u64,
    /// Final status codes, by code.
    pub statuses: BTreeMap<String, u64>,
    pub latency_ms: Latency,
}

/// Milliseconds; over the transactions that got a final response.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub os: String,
}

impl Machine {
    pub fn this() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease"),
            os,
        }
    }
}

impl TxReport {
    fn from(t: &TxStats) -> TxReport {
        let h = &t.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: ms(h.min()),
                mean: h.mean() / 1000.0,
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                p99_9: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
            }
        };
        TxReport {
            count: t.ok + t.failed,
            ok: t.ok,
            failed: t.failed,
            timeouts: t.timeouts,
            statuses: t.statuses.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            latency_ms: latency,
        }
    }
}

impl Report {
    pub fn new(config: &Config, stats: &Stats, phase: &Phase, started_unix_ms: u64) -> Report {
        let c = &stats.counters;
        let transactions: BTreeMap<String, TxReport> =
            stats.with_types(|types| types.iter().map(|(k, t)| (k.to_string(), TxReport::from(t))).collect());
        let started = Counters::get(&stats.started);
        let finished = Counters::get(&stats.finished);
        let succeeded = Counters::get(&stats.succeeded);
        let rate = |n: u64, span: f64| if span > 0.0 { n as f64 / span } else { 0.0 };
        // A phase of n transactions spans (n-1)/rate between first and last start; one more
        // interval makes the offered rate of an on-time run exactly the target.
        let send_span = phase.sending.as_secs_f64() + 1.0 / config.rate;
        let success_span = stats.success_span().as_secs_f64().max(1.0 / config.rate);
        // NOTIFYs may come after the last transaction of the phase: until the last of them.
        let notify_span = phase.elapsed.max(stats.notify_span()).as_secs_f64();
        let window = stats.window_unix_ms();
        Report {
            tool: "sipfront-load".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_unix_ms,
            measured_from_unix_ms: window.0,
            measured_until_unix_ms: window.1,
            config: config.clone(),
            machine: Machine::this(),
            interrupted: phase.interrupted,
            elapsed_s: phase.elapsed.as_secs_f64(),
            planned: config.planned(),
            started,
            finished,
            succeeded,
            failed: finished - succeeded.min(finished),
            unfinished: started.saturating_sub(finished),
            offered_rate: rate(started, send_span),
            achieved_rate: rate(succeeded, success_span),
            timeouts: transactions
                .iter()
                .filter(|(k, _)| !k.contains('.') || k.starts_with("setup."))
                .map(|(_, t)| t.timeouts)
                .sum(),
            retransmissions: Counters::get(&c.retransmissions),
            requests_sent: Counters::get(&c.sent),
            unexpected_responses: Counters::get(&c.unexpected),
            malformed: Counters::get(&c.malformed),
            unmatched_responses: Counters::get(&c.unmatched),
            transport_errors: Counters::get(&c.transport_errors),
            deliveries: Counters::get(&c.deliveries),
            duplicate_deliveries: Counters::get(&c.duplicate_deliveries),
            notifies: Counters::get(&c.notifies),
            measured_notifies: Counters::get(&c.measured_notifies),
            notify_rate: rate(Counters::get(&c.measured_notifies), notify_span),
            measured_states: Counters::get(&c.measured_states),
            state_rate: rate(Counters::get(&c.measured_states), notify_span),
            notify_states: [
                ("active", &c.notifies_active),
                ("pending", &c.notifies_pending),
                ("terminated", &c.notifies_terminated),
                ("other", &c.notifies_other),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Counters::get(v)))
            .collect(),
            unmatched_notifies: Counters::get(&c.unmatched_notifies),
            other_requests_received: Counters::get(&c.other_requests),
            keepalives: Counters::get(&c.keepalives),
            pongs: Counters::get(&c.pongs),
            retries_after_503: Counters::get(&c.retries_after_503),
            ramp: None,
            transactions,
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let target = match &c.ramp {
            Some(r) => format!("ramp {}:{}:{}/s, {} s a step", r.start, r.step, r.max, r.step_secs),
            // Rounded: a model's rate is a sum of fractions.
            None => format!("target {}/s", (c.rate * 10.0).round() / 10.0),
        };
        let _ = writeln!(
            s,
            "sipfront-load {} -> {} over {}: {} users, {target}, {} planned{}",
            c.scenario.name(),
            c.target,
            c.transport.param(),
            c.users,
            self.planned,
            if self.interrupted { "  [INTERRUPTED: partial figures]" } else { "" }
        );
        let _ = writeln!(
            s,
            "elapsed {:.2} s  offered {:.1}/s  achieved {:.1}/s  ok {}  failed {}  unfinished {}",
            self.elapsed_s, self.offered_rate, self.achieved_rate, self.succeeded, self.failed, self.unfinished
        );
        let _ = writeln!(
            s,
            "{:<18} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  statuses",
            "transaction", "count", "ok", "fail", "t/o", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (name, t) in &self.transactions {
            let l = &t.latency_ms;
            let statuses: Vec<String> = t.statuses.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            let _ = writeln!(
                s,
                "{name:<18} {:>8} {:>8} {:>6} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
                t.count,
                t.ok,
                t.failed,
                t.timeouts,
                l.p50,
                l.p90,
                l.p99,
                l.p99_9,
                l.max,
                statuses.join(" ")
            );
        }
        let _ = writeln!(
            s,
            "sent {}  retransmissions {}  timeouts {}  unexpected {}  malformed {}  unmatched {}  transport errors {}",
            self.requests_sent,
            self.retransmissions,
            self.timeouts,
            self.unexpected_responses,
            self.malformed,
            self.unmatched_responses,
            self.transport_errors
        );
        if self.deliveries + self.duplicate_deliveries + self.other_requests_received > 0 {
            let _ = writeln!(
                s,
                "received: {} MESSAGE delivered, {} duplicates, {} other requests",
                self.deliveries, self.duplicate_deliveries, self.other_requests_received
            );
        }
        if self.notifies + self.unmatched_notifies > 0 {
            let states: Vec<String> = self.notify_states.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                s,
                "NOTIFY received: {} ({} while measuring, {:.1}/s, carrying {} presentity states, {:.1}/s; {}), {} for no subscription (481)",
                self.notifies,
                self.measured_notifies,
                self.notify_rate,
                self.measured_states,
                self.state_rate,
                states.join(", "),
                self.unmatched_notifies
            );
        }
        if self.keepalives + self.pongs > 0 {
            let _ = writeln!(s, "keep-alives: {} sent, {} answered", self.keepalives, self.pongs);
        }
        if self.retries_after_503 > 0 {
            let _ = writeln!(s, "tried again after a 503's Retry-After: {}", self.retries_after_503);
        }
        if let Some(ramp) = &self.ramp {
            let _ = writeln!(
                s,
                "{:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9}  verdict",
                "step /s", "offered", "achieved", "ok", "fail %", "p50 ms", "p99 ms", "NOTIFY/s"
            );
            for step in &ramp.steps {
                let _ = writeln!(
                    s,
                    "{:>9.1} {:>9.1} {:>9.1} {:>8} {:>7.2} {:>9.2} {:>9.2} {:>9.1}  {}",
                    step.rate,
                    step.offered_rate,
                    step.achieved_rate,
                    step.succeeded,
                    step.failure_pct,
                    step.p50_ms,
                    step.p99_ms,
                    step.notify_rate,
                    step.verdict
                );
            }
            let (bound, pct) = c.ramp.as_ref().map_or((0.0, 0.0), |r| (r.max_p99_ms, r.max_failure_pct));
            let _ = match ramp.highest_passing_rate {
                Some(rate) => writeln!(s, "highest passing rate: {rate}/s (failures under {pct}%, p99 <= {bound} ms)"),
                None => writeln!(s, "highest passing rate: none, the first step failed"),
            };
        }
        s
    }
}
