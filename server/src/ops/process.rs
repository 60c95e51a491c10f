//! The process's own metrics, under the names every Prometheus exporter uses
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), and the server's
//! build and state gauges: written into each `/metrics` answer from `/proc/self`, which costs a
//! few small reads per scrape and nothing between scrapes.

use std::fmt::Write;

/// Linux's USER_HZ, in which `/proc/<pid>/stat` counts CPU time: 100 on every mainstream
/// architecture and configuration (it is fixed at compile time for user space).
const TICKS_PER_SECOND: f64 = 100.0;

/// Descriptors the server needs besides its connections: listeners, the store's files and
/// connections, the HTTP endpoint, the runtime's own.
const FILES_BESIDES_CONNECTIONS: u64 = 256;

/// Raises the soft limit on open files to the hard limit (each TCP or TLS connection is one
/// descriptor; a stock soft limit of 1,024 would refuse the thousandth client), and warns when
/// even the hard limit cannot hold `max_connections` connections and the rest. Returns how
/// many connections the limit holds beside everything else.
pub fn raise_file_limit(max_connections: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // No limit at all is as good as any number.
    let (was, hard) = (limit.current.unwrap_or(u64::MAX), limit.maximum.unwrap_or(u64::MAX));
    let mut now = was;
    if was < hard {
        match setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }) {
            Ok(()) => now = hard,
            Err(e) => tracing::warn!(error = %e, soft = was, hard, "could not raise the open-file limit"),
        }
    }
    let holds = usize::try_from(now.saturating_sub(FILES_BESIDES_CONNECTIONS)).unwrap_or(usize::MAX);
    if holds < max_connections {
        tracing::warn!(
            limit = now,
            max_connections,
            "the open-file limit is below transport.max_connections: connections past {holds} are refused; \
             raise LimitNOFILE (systemd) or ulimit -Hn, or lower transport.max_connections"
        );
    } else if now > was {
        tracing::info!(from = was, to = now, "open-file limit raised");
    }
    holds
}

/// What the server says of itself beside the process figures.
pub struct State {
    pub ready: bool,
    pub store_up: bool,
    pub live: Live,
}

/// Figures of the server's tables, taken when scraped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Live {
    /// Messages waiting in connections' write queues: in all, and on the fullest connection.
    pub write_queue_messages: (usize, usize),
    /// The same in bytes.
    pub write_queue_bytes: (usize, usize),
    /// Server transactions kept.
    pub server_transactions: usize,
    /// Requests waiting on something (the store, another member): what overload control counts.
    pub pending_requests: usize,
}

/// Appends the process metrics, `sipfront_build_info`, `sipfront_ready` and `sipfront_store_up`
/// to `out` in the Prometheus text format.
pub fn render(out: &mut String, state: &State) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold anything.
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        metric(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (utime + stime) / TICKS_PER_SECOND,
        );
    }
    if let (Some(start), Some(boot)) = (field(22), boot_time()) {
        metric(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / TICKS_PER_SECOND,
        );
    }
    if let Some(vsize) = field(23) {
        metric(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsize);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kb) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
    {
        metric(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", kb * 1024.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric(out, "process_open_fds", "gauge", "Number of open file descriptors.", fds.count() as f64);
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<f64>().ok())
    {
        metric(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", max);
    }
    let _ = writeln!(out, "# HELP sipfront_build_info The running version (value 1).");
    let _ = writeln!(out, "# TYPE sipfront_build_info gauge");
    let _ = writeln!(out, "sipfront_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metric(out, "sipfront_ready", "gauge", "1 while serving and not draining (what /readyz says).", flag(state.ready));
    metric(out, "sipfront_store_up", "gauge", "1 while the store answers its ping.", flag(state.store_up));
    let queues = [
        ("messages", "Messages", state.live.write_queue_messages, "transport.connection_queue"),
        ("bytes", "Bytes", state.live.write_queue_bytes, "transport.connection_queue_bytes"),
    ];
    for (unit, what, (total, fullest), cap) in queues {
        let all = format!("{what} waiting in connections' write queues, all connections.");
        metric(out, &format!("sipfront_connection_write_queue_{unit}"), "gauge", &all, total as f64);
        let one = format!("{what} waiting in the fullest connection's write queue (its cap is {cap}).");
        metric(out, &format!("sipfront_connection_write_queue_max_{unit}"), "gauge", &one, fullest as f64);
    }
    metric(
        out,
        "sipfront_server_transactions",
        "gauge",
        "Server transactions kept (with the core, or completed and kept for retransmissions).",
        state.live.server_transactions as f64,
    );
    metric(
        out,
        "sipfront_pending_requests",
        "gauge",
        "Requests waiting on something (the store, another member); past server.max_pending_requests, new ones get 503.",
        state.live.pending_requests as f64,
    );
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// When the machine booted, in Unix seconds (`btime` in /proc/stat).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    }

    #[test]
    fn the_process_figures_are_those_of_this_process() {
        let mut out = String::new();
        let live = Live {
            write_queue_messages: (7, 5),
            write_queue_bytes: (700, 500),
            server_transactions: 3,
            pending_requests: 2,
        };
        render(&mut out, &State { ready: true, store_up: false, live });
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = value(&out, "process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 24.0 * 3600.0, "started {started}, now {now}");
        assert!(value(&out, "process_open_fds") >= 3.0);
        assert!(value(&out, "process_max_fds") >= value(&out, "process_open_fds"));
        assert!(value(&out, "process_resident_memory_bytes") > 1e6);
        assert!(value(&out, "process_cpu_seconds_total") >= 0.0);
        assert_eq!(value(&out, "sipfront_ready"), 1.0);
        assert_eq!(value(&out, "sipfront_store_up"), 0.0);
        assert_eq!(value(&out, "sipfront_connection_write_queue_messages"), 7.0);
        assert_eq!(value(&out, "sipfront_connection_write_queue_max_messages"), 5.0);
        assert_eq!(value(&out, "sipfront_connection_write_queue_bytes"), 700.0);
        assert_eq!(value(&out, "sipfront_connection_write_queue_max_bytes"), 500.0);
        assert_eq!(value(&out, "sipfront_server_transactions"), 3.0);
        assert_eq!(value(&out, "sipfront_pending_requests"), 2.0);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(out.contains(&format!("sipfront_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
    }
}
