//! Metric names (all prefixed `sipfront_`) and the Prometheus recorder. Names and labels are
//! part of the operator interface: dashboards and alert rules in `ops/` use them.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const REQUESTS: &str = "sipfront_requests_total";
pub const RESPONSES: &str = "sipfront_responses_total";
pub const PARSE_ERRORS: &str = "sipfront_parse_errors_total";
pub const CONNECTIONS_OPEN: &str = "sipfront_connections_open";
pub const CONNECTIONS_REFUSED: &str = "sipfront_connections_refused_total";
pub const CONNECTIONS_CLOSED: &str = "sipfront_connections_closed_total";
pub const SERVER_TRANSACTIONS_MAX: &str = "sipfront_server_transactions_max";
pub const OVER_CAPACITY: &str = "sipfront_over_capacity_total";
pub const OVERLOADED: &str = "sipfront_overloaded";
pub const OVERLOAD_REFUSED: &str = "sipfront_overload_refused_total";
pub const FLOOD_BANS: &str = "sipfront_flood_bans_total";
pub const FLOOD_DROPPED: &str = "sipfront_flood_dropped_total";
pub const FLOOD_BANNED: &str = "sipfront_flood_banned_sources";
pub const CONNECTIONS_MAX: &str = "sipfront_connections_max";
pub const TLS_HANDSHAKE_FAILURES: &str = "sipfront_tls_handshake_failures_total";
pub const FEDERATION_REQUESTS: &str = "sipfront_federation_requests_total";
pub const FEDERATION_DNS_FAILURES: &str = "sipfront_federation_dns_failures_total";
pub const FEDERATION_CONNECT_FAILURES: &str = "sipfront_federation_connect_failures_total";
pub const TRANSACTION_DURATION: &str = "sipfront_transaction_duration_seconds";
pub const RELAY_DURATION: &str = "sipfront_relay_duration_seconds";
pub const RETRANSMISSIONS_ABSORBED: &str = "sipfront_retransmissions_absorbed_total";
pub const CLIENT_TIMEOUTS: &str = "sipfront_client_transaction_timeouts_total";
pub const SEND_FAILURES: &str = "sipfront_send_failures_total";
pub const STRAY_RESPONSES: &str = "sipfront_stray_responses_total";
pub const KEEPALIVES: &str = "sipfront_keepalives_total";
pub const AUTH_FAILURES: &str = "sipfront_auth_failures_total";
pub const AUTH_LOCKOUTS_ACTIVE: &str = "sipfront_auth_lockouts_active";
pub const REGISTRATIONS: &str = "sipfront_registrations_total";
pub const BINDINGS: &str = "sipfront_bindings";
pub const STORE_ERRORS: &str = "sipfront_store_errors_total";
pub const STORE_SECONDS: &str = "sipfront_store_operation_seconds";
pub const STORE_FAILURES: &str = "sipfront_store_failures_total";
pub const CHANGE_LAG: &str = "sipfront_store_change_lag_seconds";
pub const MESSAGES: &str = "sipfront_messages_total";
pub const MESSAGE_FORKS: &str = "sipfront_message_forks";
pub const GROUP_MESSAGES: &str = "sipfront_group_messages_total";
pub const GROUP_DELIVERIES: &str = "sipfront_group_deliveries_total";
pub const OFFLINE_MESSAGES: &str = "sipfront_offline_messages_total";
pub const OFFLINE_STORED: &str = "sipfront_offline_messages_stored";
pub const OFFLINE_NEAR_QUOTA: &str = "sipfront_offline_recipients_near_quota";
pub const OFFLINE_QUOTA: &str = "sipfront_offline_quota_messages";
pub const ARCHIVE_ENTRIES: &str = "sipfront_archive_entries_total";
pub const ARCHIVE_QUEUE: &str = "sipfront_archive_queue_depth";
pub const ARCHIVE_WRITE: &str = "sipfront_archive_write_seconds";
pub const PROXIED_INVITES: &str = "sipfront_proxied_invites_total";
pub const SUBSCRIPTIONS: &str = "sipfront_subscriptions";
pub const PUBLICATIONS: &str = "sipfront_publications";
pub const PUBLISHES: &str = "sipfront_publish_total";
pub const NOTIFIES: &str = "sipfront_notify_total";
pub const NOTIFY_FANOUT: &str = "sipfront_notify_fanout";
pub const NOTIFIES_COALESCED: &str = "sipfront_notify_coalesced_total";
pub const TLS_CERT_EXPIRY: &str = "sipfront_tls_certificate_expiry_timestamp_seconds";
pub const POOL_MEMBERS: &str = "sipfront_pool_members";
pub const POOL_USERS_HOMED: &str = "sipfront_pool_users_homed";
pub const POOL_RELAYED: &str = "sipfront_pool_relayed_total";
pub const POOL_HOPS_REFUSED: &str = "sipfront_pool_hops_refused_total";
pub const DIRECTORY_REQUESTS: &str = "sipfront_directory_requests_total";

/// Runs a store operation and records how long it took (`sipfront_store_operation_seconds{op}`)
/// and, if it failed, how (`sipfront_store_failures_total{op,kind}`).
pub async fn store_op<T>(
    op: &'static str,
    f: impl std::future::Future<Output = Result<T, sipfront_storage::StoreError>>,
) -> Result<T, sipfront_storage::StoreError> {
    let started = std::time::Instant::now();
    let result = f.await;
    metrics::histogram!(STORE_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!(STORE_FAILURES, "op" => op, "kind" => e.label()).increment(1);
    }
    result
}

/// A status code as a metric label, without allocating per response: the 600 labels
/// "100".."699" are made once; anything else is "other", so a peer cannot grow the label set.
pub fn code_label(code: u16) -> &'static str {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (100..700).map(|c: u16| &*Box::leak(c.to_string().into_boxed_str())).collect());
    labels.get(usize::from(code).wrapping_sub(100)).copied().unwrap_or("other")
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (several servers in one
/// process, as in tests, share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(TRANSACTION_DURATION.to_string()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(RELAY_DURATION.to_string()),
                        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(STORE_SECONDS.to_string()),
                        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed already; metrics then go there.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Series a dashboard or an alert reads exist from the start (at 0), not only from
            // the first event: an absent series is indistinguishable from a broken scrape.
            for event in ["stored", "delivered", "expired", "refused_full"] {
                metrics::counter!(OFFLINE_MESSAGES, "event" => event).increment(0);
            }
            for result in ["written", "dropped", "refused"] {
                metrics::counter!(ARCHIVE_ENTRIES, "result" => result).increment(0);
            }
            for gauge in [
                AUTH_LOCKOUTS_ACTIVE,
                ARCHIVE_QUEUE,
                BINDINGS,
                PUBLICATIONS,
                CHANGE_LAG,
                OFFLINE_STORED,
                OFFLINE_NEAR_QUOTA,
            ] {
                metrics::gauge!(gauge).increment(0.0);
            }
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "SIP requests received, by method and transport (retransmissions excluded)");
    describe_counter!(RESPONSES, "SIP responses sent by this server, by status code");
    describe_counter!(PARSE_ERRORS, "Messages refused as malformed, by kind and transport");
    describe_gauge!(CONNECTIONS_OPEN, "Open TCP and TLS connections, by transport");
    describe_gauge!(CONNECTIONS_MAX, "The cap on open TCP and TLS connections (transport.max_connections)");
    describe_counter!(CONNECTIONS_REFUSED, "Connections refused at accept, by reason");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections this server closed on its own, by reason (unauthenticated: no authentication in time)"
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that failed or timed out, by reason (certificate: a client certificate not trusted)"
    );
    describe_counter!(
        FEDERATION_REQUESTS,
        "Requests to (direction out) and from (in) partner domains, by result: the final status, or why refused"
    );
    describe_counter!(FEDERATION_DNS_FAILURES, "Partner edge lookups that found no edge, by reason");
    describe_counter!(FEDERATION_CONNECT_FAILURES, "Connections to partner edges that failed, by reason");
    describe_histogram!(TRANSACTION_DURATION, Unit::Seconds, "Time from a request to its final response, by method");
    describe_histogram!(
        RELAY_DURATION,
        Unit::Seconds,
        "Time from a client's request this member relayed to another (the user's home) to the final response relayed back: what the client waited, by method"
    );
    describe_gauge!(
        SERVER_TRANSACTIONS_MAX,
        "The cap on server transactions kept (transaction.max_server_transactions)"
    );
    describe_counter!(
        OVER_CAPACITY,
        "Requests answered 503 because a bounded table was full, by table (server_transactions, ...)"
    );
    describe_gauge!(OVERLOADED, "1 while new requests are refused for overload");
    describe_counter!(OVERLOAD_REFUSED, "Requests refused 503 for overload, by method");
    describe_counter!(FLOOD_BANS, "Sources banned for sending past flood.max_requests");
    describe_counter!(FLOOD_DROPPED, "Messages dropped (or connections closed) because their source is banned");
    describe_gauge!(FLOOD_BANNED, "Sources banned now");
    describe_counter!(RETRANSMISSIONS_ABSORBED, "Request retransmissions answered from the transaction layer");
    describe_counter!(CLIENT_TIMEOUTS, "Client transactions that timed out (408), by method");
    describe_counter!(SEND_FAILURES, "Messages that could not be sent, by transport and reason");
    describe_counter!(STRAY_RESPONSES, "Responses matching no client transaction");
    describe_counter!(KEEPALIVES, "CRLF keep-alives received on streams, by kind");
    describe_counter!(AUTH_FAILURES, "Failed or incomplete digest authentications, by reason");
    describe_gauge!(AUTH_LOCKOUTS_ACTIVE, "(user, address) pairs and addresses locked out now");
    describe_counter!(REGISTRATIONS, "REGISTER outcomes, by result");
    describe_gauge!(BINDINGS, "Registered contacts held in memory");
    describe_counter!(STORE_ERRORS, "Requests answered 503 because the store was unavailable");
    describe_histogram!(STORE_SECONDS, Unit::Seconds, "Time the store took for an operation, by operation");
    describe_counter!(
        STORE_FAILURES,
        "Store operations that failed, by operation and kind (unavailable, timeout, ...)"
    );
    describe_gauge!(
        CHANGE_LAG,
        Unit::Seconds,
        "How long ago the store's change log was last read to its end (user, rule and contact changes made on other members reach this one within about that)"
    );
    describe_counter!(MESSAGES, "MESSAGE requests for our users, by the final status the sender got");
    describe_histogram!(MESSAGE_FORKS, "Bindings a MESSAGE was forked to");
    describe_counter!(GROUP_MESSAGES, "MESSAGEs to a distribution group, by the answer the sender got");
    describe_counter!(
        GROUP_DELIVERIES,
        "Copies of group MESSAGEs for each member, by the final status of that member's delivery"
    );
    describe_counter!(OFFLINE_MESSAGES, "Messages for absent users: stored, delivered, expired, refused_full");
    describe_gauge!(OFFLINE_STORED, "Messages kept for absent users in the store (all members share it)");
    describe_gauge!(
        OFFLINE_NEAR_QUOTA,
        "Recipients holding 80% or more of their offline quota (messages to them get 480 once it is full)"
    );
    describe_gauge!(OFFLINE_QUOTA, "Messages kept per recipient at most (messaging.offline_max_per_user)");
    describe_counter!(ARCHIVE_ENTRIES, "IM archive entries: written, dropped (queue full), refused (critical mode)");
    describe_gauge!(ARCHIVE_QUEUE, "IM archive entries waiting for the writer");
    describe_histogram!(ARCHIVE_WRITE, Unit::Seconds, "Time to write one batch of archive entries");
    describe_counter!(PROXIED_INVITES, "INVITEs proxied to our users, by the final status the caller got");
    describe_gauge!(SUBSCRIPTIONS, "Active subscriptions, by event package");
    describe_gauge!(PUBLICATIONS, "Live presence publications");
    describe_counter!(
        PUBLISHES,
        "PUBLISH requests, by result (created, refreshed, modified, removed, or the error code)"
    );
    describe_counter!(NOTIFIES, "NOTIFYs sent, by the watcher's answer (2xx, 481, timeout...)");
    describe_histogram!(NOTIFY_FANOUT, "Watchers notified of one presence change");
    describe_gauge!(TLS_CERT_EXPIRY, "When the TLS certificate in use expires (its notAfter), in Unix seconds");
    describe_counter!(DIRECTORY_REQUESTS, "Directory search requests over HTTPS, by result (ok, or why refused)");
    describe_counter!(NOTIFIES_COALESCED, "Presence changes folded into a later NOTIFY by the throttle (RFC 6446)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_labels() {
        assert_eq!(code_label(100), "100");
        assert_eq!(code_label(699), "699");
        assert_eq!(code_label(700), "other");
        assert_eq!(code_label(0), "other");
    }
}
