//! What a run measures. Latencies go into one HDR histogram per transaction type, in
//! microseconds from the transaction's *intended* start (so a server that stalls shows its stall
//! in every transaction scheduled behind it, not only in the one that was waiting). Counters
//! for what went wrong on the wire are plain atomics, shared by every client.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The longest latency a histogram records exactly; anything longer is clamped to it.
const MAX_MICROS: u64 = 120_000_000;

/// One transaction type (`register`, `register.challenge`...).
pub struct TxStats {
    pub latency: Histogram<u64>,
    /// Final status codes received, by code.
    pub statuses: BTreeMap<u16, u64>,
    pub ok: u64,
    pub failed: u64,
    pub timeouts: u64,
}

impl TxStats {
    fn new() -> TxStats {
        TxStats { latency: new_histogram(), statuses: BTreeMap::new(), ok: 0, failed: 0, timeouts: 0 }
    }
}

/// 3 significant digits from 1 us to 120 s: a few tens of kB.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant, valid bounds")
}

/// How one exchange or step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A final response with this status; `ok` when the scenario counts it as success.
    Status {
        code: u16,
        ok: bool,
    },
    Timeout,
    /// No answer could be had: the connection failed, or the answer made no sense.
    Error,
}

/// Counts of wire-level events, whatever transaction they belong to.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub retransmissions: AtomicU64,
    /// Datagrams or stream frames that did not parse as SIP.
    pub malformed: AtomicU64,
    /// Responses for no transaction we have open (late answers after a timeout, strays).
    pub unmatched: AtomicU64,
    /// Final responses the scenario did not expect at that step (a 401 after credentials...).
    pub unexpected: AtomicU64,
    pub transport_errors: AtomicU64,
    /// MESSAGE requests our receivers got and answered 200.
    pub deliveries: AtomicU64,
    /// Of those, retransmissions of a MESSAGE already delivered.
    pub duplicate_deliveries: AtomicU64,
    /// NOTIFY requests our clients got for their subscriptions and answered 200 (presence).
    pub notifies: AtomicU64,
    /// Of those, the ones that came while measuring (not the set-up's or the teardown's).
    pub measured_notifies: AtomicU64,
    /// Presentity states those NOTIFYs carried while measuring: one per PIDF body, one per
    /// resource of a list's RLMI document (a list NOTIFY coalesces its members' changes).
    pub measured_states: AtomicU64,
    /// The same NOTIFYs by their Subscription-State (RFC 6665 8.2.3).
    pub notifies_active: AtomicU64,
    pub notifies_pending: AtomicU64,
    pub notifies_terminated: AtomicU64,
    /// ... with a missing or unknown state.
    pub notifies_other: AtomicU64,
    /// NOTIFYs for no subscription our clients hold, answered 481.
    pub unmatched_notifies: AtomicU64,
    /// CRLFCRLF keep-alives sent on connections, and the CRLF pongs that came back.
    pub keepalives: AtomicU64,
    pub pongs: AtomicU64,
    /// Other requests our clients got (answered 200 too: OPTIONS...).
    pub other_requests: AtomicU64,
    /// Requests tried again after a 503's Retry-After (with `--retry-after`).
    pub retries_after_503: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Everything measured so far. Recording takes a short lock; the live view and the report
/// read it under the same lock.
#[derive(Default)]
pub struct Stats {
    pub counters: Counters,
    types: Mutex<BTreeMap<&'static str, TxStats>>,
    /// Exchanges of the measured scenario (not its set-up) that were started / have ended.
    pub started: AtomicU64,
    pub finished: AtomicU64,
    pub succeeded: AtomicU64,
    /// When the measured phase began, and the last success after it (in us): the span the
    /// achieved rate is computed over.
    origin: std::sync::OnceLock<std::time::Instant>,
    last_success_us: AtomicU64,
    /// The last NOTIFY after the measured phase began (in us since it began).
    last_notify_us: AtomicU64,
    /// Between [`Stats::begin`] and [`Stats::end`].
    measuring: std::sync::atomic::AtomicBool,
    /// The same span in wall-clock time (ms since the Unix epoch), for matching a run with
    /// what was sampled outside it (the server's CPU).
    window_unix_ms: Mutex<(Option<u64>, Option<u64>)>,
    /// Latencies of the measured exchanges (whatever their type and outcome) since the last
    /// [`Stats::take_step_latency`]: what a ramp step is judged by.
    step_latency: Mutex<Option<Histogram<u64>>>,
}

impl Stats {
    pub fn record(&self, kind: &'static str, latency: Duration, outcome: Outcome) {
        let mut types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        let t = types.entry(kind).or_insert_with(TxStats::new);
        match outcome {
            Outcome::Status { code, ok } => {
                *t.statuses.entry(code).or_default() += 1;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS);
                // Cannot fail: the value is clamped into the histogram's bounds.
                let _ = t.latency.record(micros);
                if ok {
                    t.ok += 1;
                } else {
                    t.failed += 1;
                }
            }
            Outcome::Timeout => {
                t.timeouts += 1;
                t.failed += 1;
            }
            Outcome::Error => t.failed += 1,
        }
    }

    /// Reads every transaction type's figures.
    pub fn with_types<R>(&self, f: impl FnOnce(&BTreeMap<&'static str, TxStats>) -> R) -> R {
        f(&self.types.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The measured phase begins now (or has begun already: a ramp's later steps).
    pub fn begin(&self) -> std::time::Instant {
        self.measuring.store(true, Ordering::Relaxed);
        self.window_unix_ms.lock().unwrap_or_else(|e| e.into_inner()).0.get_or_insert_with(unix_ms);
        *self.origin.get_or_init(std::time::Instant::now)
    }

    /// The measured phase is over: what comes now is teardown.
    pub fn end(&self) {
        self.measuring.store(false, Ordering::Relaxed);
        self.window_unix_ms.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(unix_ms());
    }

    /// When the measured phase began and ended, in ms since the Unix epoch.
    pub fn window_unix_ms(&self) -> (Option<u64>, Option<u64>) {
        *self.window_unix_ms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One exchange of the measured scenario has ended, `latency` after it was due.
    pub fn finish(&self, ok: bool, latency: Duration) {
        {
            let mut h = self.step_latency.lock().unwrap_or_else(|e| e.into_inner());
            let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS);
            // Cannot fail: the value is clamped into the histogram's bounds.
            let _ = h.get_or_insert_with(new_histogram).record(micros);
        }
        Counters::add(&self.finished);
        if ok {
            Counters::add(&self.succeeded);
            if let Some(origin) = self.origin.get() {
                let us = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.last_success_us.fetch_max(us, Ordering::Relaxed);
            }
        }
    }

    /// A NOTIFY for one of our subscriptions came, its Subscription-State `state`.
    /// A NOTIFY for one of our subscriptions, carrying `states` presentity states.
    pub fn notified(&self, state: &[u8], states: u64) {
        let c = &self.counters;
        Counters::add(&c.notifies);
        Counters::add(match state {
            b"active" => &c.notifies_active,
            b"pending" => &c.notifies_pending,
            b"terminated" => &c.notifies_terminated,
            _ => &c.notifies_other,
        });
        if self.measuring.load(Ordering::Relaxed) {
            Counters::add(&c.measured_notifies);
            c.measured_states.fetch_add(states, Ordering::Relaxed);
            if let Some(origin) = self.origin.get() {
                let us = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.last_notify_us.fetch_max(us, Ordering::Relaxed);
            }
        }
    }

    /// From the start of the measured phase to the last NOTIFY while measuring.
    pub fn notify_span(&self) -> Duration {
        Duration::from_micros(Counters::get(&self.last_notify_us))
    }

    /// From the start of the measured phase to its last success.
    pub fn success_span(&self) -> Duration {
        Duration::from_micros(Counters::get(&self.last_success_us))
    }

    /// How long ago the measured phase began (zero before it has).
    pub fn since_begin(&self) -> Duration {
        self.origin.get().map_or(Duration::ZERO, |o| o.elapsed())
    }

    /// The measured exchanges' latencies since the last call, and a fresh start.
    pub fn take_step_latency(&self) -> Histogram<u64> {
        self.step_latency.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_else(new_histogram)
    }

    /// Failed exchanges of the measured scenario so far.
    pub fn failures(&self) -> u64 {
        Counters::get(&self.finished).saturating_sub(Counters::get(&self.succeeded))
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
