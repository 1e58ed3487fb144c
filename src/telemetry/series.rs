//! Every metric family the daemon exports, with its help text and the label
//! values it can take: the one list from which `/metrics` is described and
//! every known series is exported at zero from startup.
//!
//! Why at zero: a series that first appears at 1 hides that increment from
//! `rate()`/`increase()`, so the first Redis outage or the first shed
//! request after a deploy would never fire its alert, and the dashboard
//! would show "No data" instead of 0 (Prometheus' instrumentation
//! guidelines, "Avoid missing metrics"; issue 16).
//!
//! Invariants:
//! * every family recorded anywhere is in [`FAMILIES`], and every label
//!   value it is recorded with is in its label's list: the label values
//!   are enums (in `labels`, re-exported here), which the API, admission
//!   and the store record through (`&'static str` by `IntoStaticStr`); where a value is still written
//!   as a literal (the cache tiers' `tier`, the refreshes' `result`, the
//!   recorder's `outcome` and `reason`), tests/it/prometheus.rs keeps the
//!   two in step: it fails on any series rendered that this list does not
//!   name;
//! * registering a series never changes its value: a gauge already set
//!   keeps its value.

use metrics::Label;
use strum::VariantNames;

pub use super::labels::*;

/// A status code as the `code` label names it (one of [`GRPC_CODES`]).
pub fn grpc_code(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// `# HELP`: Prometheus' linter (`promtool check metrics`) requires one.
    pub help: &'static str,
    /// Each label with every value it can take; the family's series are
    /// their cross product.
    pub labels: &'static [(&'static str, &'static [&'static str])],
}

const fn family(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [(&'static str, &'static [&'static str])],
) -> Family {
    Family {
        name,
        kind,
        help,
        labels,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Every family the daemon exports.
pub const FAMILIES: &[Family] = &[
    family(
        "switchboard_grpc_requests_total",
        Counter,
        "gRPC requests answered, by RPC and status code.",
        &[("rpc", Rpc::VARIANTS), ("code", GRPC_CODES)],
    ),
    family(
        "switchboard_grpc_request_seconds",
        Histogram,
        "Time to answer a gRPC request, by RPC.",
        &[("rpc", Rpc::VARIANTS)],
    ),
    family(
        "switchboard_grpc_in_flight",
        Gauge,
        "gRPC requests admitted and not yet answered.",
        &[],
    ),
    family(
        "switchboard_grpc_concurrency_limit",
        Gauge,
        "The adaptive concurrency limit: requests admitted at once (at most SWITCHBOARD_MAX_IN_FLIGHT; it falls while a queue stands).",
        &[],
    ),
    family(
        "switchboard_grpc_queue_delay_seconds",
        Histogram,
        "Time a gRPC request waited between reaching the host (the kernel's receive stamp) and its handler running: in the socket and in the runtime's queue.",
        &[],
    ),
    family(
        "switchboard_grpc_queue_standing",
        Gauge,
        "1 while a standing queue is seen (the shortest wait for a handler stayed above SWITCHBOARD_QUEUE_DELAY_TARGET for an interval).",
        &[],
    ),
    family(
        "switchboard_grpc_early_refusal_share",
        Gauge,
        "The share of streams refused as their connection accepts them, before a task is spawned, while the streams that start wait longer than SWITCHBOARD_QUEUE_DELAY_TARGET (0 to 0.95).",
        &[],
    ),
    family(
        "switchboard_grpc_shed_total",
        Counter,
        "gRPC requests refused at once as overloaded, by reason: concurrency (over the adaptive limit, refused before being read) or queue_delay (waited too long for its handler).",
        &[("rpc", Rpc::VARIANTS), ("reason", ShedReason::VARIANTS)],
    ),
    family(
        "switchboard_grpc_unauthenticated_total",
        Counter,
        "gRPC requests refused for a missing or unknown token, by reason.",
        &[("reason", Unauthenticated::VARIANTS)],
    ),
    family(
        "switchboard_cache_hits_total",
        Counter,
        "Route lookups answered by a cache tier (l1 in process, l2 Redis, l3 PostgreSQL).",
        &[("tier", HitTier::VARIANTS)],
    ),
    family(
        "switchboard_cache_misses_total",
        Counter,
        "Route lookups a cache tier could not answer.",
        &[("tier", MissTier::VARIANTS)],
    ),
    family(
        "switchboard_cache_lookup_seconds",
        Histogram,
        "Time of a route lookup, by the tier that answered it.",
        &[("tier", LookupTier::VARIANTS)],
    ),
    family(
        "switchboard_cache_stale_served_total",
        Counter,
        "Stale cached routes served because routing data could not be read.",
        &[],
    ),
    family(
        "switchboard_cache_background_refreshes_total",
        Counter,
        "Routes and callers past their TTL reread behind an answer from L1, by result (kept, raced, failed, busy).",
        &[("result", RefreshResult::VARIANTS)],
    ),
    family(
        "switchboard_cache_swap_seconds",
        Histogram,
        "Time from a change to an agent or organization reaching the replica to its new version answering in its old one's place.",
        &[],
    ),
    family(
        "switchboard_cache_directory_answers_total",
        Counter,
        "Lookups of numbers nobody provisioned answered from the directory, without a lookup in Redis or PostgreSQL.",
        &[],
    ),
    family(
        "switchboard_cache_directory_numbers",
        Gauge,
        "Numbers in the route cache's directory of provisioned numbers, by which a number nobody provisioned is answered from memory; 0 while it is not complete (not loaded yet, or changes may have been missed).",
        &[],
    ),
    family(
        "switchboard_cache_flushes_total",
        Counter,
        "Whole-cache flushes after changes may have been missed.",
        &[],
    ),
    family(
        "switchboard_caller_cache_hits_total",
        Counter,
        "Caller lookups (is the caller a customer of the organization?) answered by a cache tier (l1 in process, l2 Redis, l3 PostgreSQL).",
        &[("tier", HitTier::VARIANTS)],
    ),
    family(
        "switchboard_caller_cache_misses_total",
        Counter,
        "Caller lookups a cache tier could not answer.",
        &[("tier", MissTier::VARIANTS)],
    ),
    family(
        "switchboard_caller_cache_lookup_seconds",
        Histogram,
        "Time of a caller lookup, by the tier that answered it.",
        &[("tier", HitTier::VARIANTS)],
    ),
    family(
        "switchboard_caller_cache_stale_served_total",
        Counter,
        "Stale cached callers served because customers could not be read.",
        &[],
    ),
    family(
        "switchboard_invalidation_listener_connected",
        Gauge,
        "1 while the invalidation listener is connected.",
        &[],
    ),
    family(
        "switchboard_invalidations_received_total",
        Counter,
        "Change notifications received (routes and customers).",
        &[],
    ),
    family(
        "switchboard_invalidations_applied_total",
        Counter,
        "Route changes applied to the cache.",
        &[],
    ),
    family(
        "switchboard_invalidations_replayed_total",
        Counter,
        "Route changes replayed from routing_changes after a reconnect.",
        &[],
    ),
    family(
        "switchboard_invalidation_version_reads_total",
        Counter,
        "Reads, on the listener's session, of the new versions of changed agents and organizations the cache holds, by outcome (read: swapped in without a read of the cache's own; failed: the cache reads them itself).",
        &[("outcome", VersionRead::VARIANTS)],
    ),
    family(
        "switchboard_invalidation_lag_seconds",
        Histogram,
        "Time from a route change's log entry (just before its commit) to its eviction from L1 here.",
        &[],
    ),
    family(
        "switchboard_store_query_seconds",
        Histogram,
        "Time of a PostgreSQL statement through the pooler, by query.",
        &[("query", Query::VARIANTS)],
    ),
    family(
        "switchboard_store_query_errors_total",
        Counter,
        "PostgreSQL statements that failed or timed out, by query.",
        &[("query", Query::VARIANTS)],
    ),
    family(
        "switchboard_store_rows_skipped_total",
        Counter,
        "Rows a statement read but could not use (a legacy value this version cannot read), by query; each is logged.",
        &[("query", Query::VARIANTS)],
    ),
    family(
        "switchboard_store_connections_discarded_total",
        Counter,
        "Pooled connections closed because their statement was abandoned.",
        &[],
    ),
    family(
        "switchboard_db_pool_connections",
        Gauge,
        "Connections in the pool.",
        &[],
    ),
    family(
        "switchboard_db_pool_available",
        Gauge,
        "Idle connections in the pool.",
        &[],
    ),
    family(
        "switchboard_db_pool_waiting",
        Gauge,
        "Requests waiting for a pooled connection.",
        &[],
    ),
    family(
        "switchboard_db_pool_timeouts_total",
        Counter,
        "Requests that got no pooled connection within the wait limit.",
        &[],
    ),
    family(
        "switchboard_routing_decisions_total",
        Counter,
        "Calls routed, by what they do: number_agent (no rule matched), rule_agent (a rule's agent or split), transfer, reject.",
        &[("decision", RoutingDecision::VARIANTS)],
    ),
    family(
        "switchboard_policy_unknown_time_zones_total",
        Counter,
        "Schedules loaded whose time zone this daemon does not know (their rules never match).",
        &[],
    ),
    family(
        "switchboard_cache_number_ranges",
        Gauge,
        "Number ranges held (every range, loaded whole).",
        &[],
    ),
    family(
        "switchboard_routing_customer_lookup_failures_total",
        Counter,
        "Caller lookups that failed; the call was routed without them.",
        &[],
    ),
    family(
        "switchboard_redis_connected",
        Gauge,
        "1 once the Redis connection is established.",
        &[],
    ),
    family(
        "switchboard_redis_fallbacks_total",
        Counter,
        "Redis commands that did not answer, by why (not_connected, error, timeout, fill).",
        &[("why", RedisFallback::VARIANTS)],
    ),
    family(
        "switchboard_redis_invalidation_failures_total",
        Counter,
        "Route changes whose Redis tombstone could not be written.",
        &[],
    ),
    family(
        "switchboard_admission_decisions_total",
        Counter,
        "Concurrent-call admission decisions, by outcome.",
        &[("outcome", AdmissionOutcome::VARIANTS)],
    ),
    family(
        "switchboard_admission_seconds",
        Histogram,
        "Time of an admission decision.",
        &[],
    ),
    family(
        "switchboard_invalidation_relay_listening",
        Gauge,
        "1 while this replica holds a listener slot of the invalidation relay and listens.",
        &[],
    ),
    family(
        "switchboard_invalidation_relay_publishes_total",
        Counter,
        "Changes this replica republished over Redis for the invalidation relay, by outcome.",
        &[("outcome", RelayPublish::VARIANTS)],
    ),
    family(
        "switchboard_route_snapshot_writes_total",
        Counter,
        "Writes of the route cache's last-known-good copy to the spool's volume, by outcome.",
        &[("outcome", SnapshotWrite::VARIANTS)],
    ),
    family(
        "switchboard_route_snapshot_bytes",
        Gauge,
        "Size of the last last-known-good copy written.",
        &[],
    ),
    family(
        "switchboard_route_snapshot_restored_numbers",
        Gauge,
        "Numbers restored at start from the last-known-good copy (0: none).",
        &[],
    ),
    family(
        "switchboard_route_snapshot_unusable_total",
        Counter,
        "Last-known-good copies found torn, corrupt or of another version at start, and set aside.",
        &[],
    ),
    family(
        "switchboard_lease_reconciliations_total",
        Counter,
        "Lease reconciliation passes, by outcome (done, not_my_turn: another replica's, failed).",
        &[("outcome", ReconcileOutcome::VARIANTS)],
    ),
    family(
        "switchboard_lease_reconcile_pass_seconds",
        Gauge,
        "How long this replica's last lease reconciliation pass took.",
        &[],
    ),
    family(
        "switchboard_lease_reconcile_calls_read",
        Gauge,
        "Call records this replica's last lease reconciliation pass read.",
        &[],
    ),
    family(
        "switchboard_lease_drift_total",
        Counter,
        "Leases that differed from the call records, corrected: missing (an open call had none) or ended (an ended call still held one).",
        &[("kind", LeaseDrift::VARIANTS)],
    ),
    family(
        "switchboard_admission_releases_total",
        Counter,
        "Call slots released, by outcome.",
        &[("outcome", ReleaseOutcome::VARIANTS)],
    ),
    family(
        "switchboard_admission_release_failures_total",
        Counter,
        "Call slots that could not be released.",
        &[],
    ),
    family(
        "switchboard_recorder_queue_depth",
        Gauge,
        "Events waiting in memory for the batcher.",
        &[],
    ),
    family(
        "switchboard_recorder_batch_size",
        Histogram,
        "Events per write.",
        &[],
    ),
    family(
        "switchboard_recorder_batch_seconds",
        Histogram,
        "Time of one batch write.",
        &[],
    ),
    family(
        "switchboard_recorder_events_total",
        Counter,
        "Recorder events, by outcome (written, spooled, replayed, dead_lettered; dropped: refused with their RPC, abandoned by an RPC that gave up).",
        &[("outcome", EventOutcome::VARIANTS)],
    ),
    family(
        "switchboard_recorder_refused_total",
        Counter,
        "RPCs the recorder refused, by reason (queue_full, spool_full, spool_failed, deadline, closed).",
        &[("reason", RecorderRefusal::VARIANTS)],
    ),
    family(
        "switchboard_recorder_spooling",
        Gauge,
        "1 while events go to the spool because PostgreSQL is unreachable.",
        &[],
    ),
    family(
        "switchboard_recorder_spool_bytes",
        Gauge,
        "Bytes in the spool.",
        &[],
    ),
    family(
        "switchboard_recorder_spool_corrupt_total",
        Counter,
        "Torn or corrupt spool records skipped.",
        &[],
    ),
];

impl Family {
    /// Every series of the family: the cross product of its label values.
    pub fn series(&self) -> Vec<Vec<Label>> {
        self.labels
            .iter()
            .fold(vec![Vec::new()], |partial, (label, values)| {
                partial
                    .iter()
                    .flat_map(|labels| {
                        values.iter().map(move |value| {
                            let mut labels = labels.clone();
                            labels.push(Label::new(*label, *value));
                            labels
                        })
                    })
                    .collect()
            })
    }
}

/// Describes every family and registers every series of it with the
/// installed recorder: counters and histograms at zero, gauges at their
/// value (zero until set).
pub(super) fn describe_and_register() {
    for family in FAMILIES {
        let name = family.name;
        match family.kind {
            Counter => metrics::describe_counter!(name, family.help),
            Gauge => metrics::describe_gauge!(name, family.help),
            Histogram => metrics::describe_histogram!(name, family.help),
        }
        for labels in family.series() {
            match family.kind {
                Counter => drop(metrics::counter!(name, labels)),
                Gauge => drop(metrics::gauge!(name, labels)),
                Histogram => drop(metrics::histogram!(name, labels)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_the_cross_product_of_its_labels() {
        let shed = FAMILIES
            .iter()
            .find(|f| f.name == "switchboard_grpc_shed_total")
            .unwrap();
        let series = shed.series();
        assert_eq!(
            series.len(),
            Rpc::VARIANTS.len() * ShedReason::VARIANTS.len()
        );
        assert!(series.contains(&vec![
            Label::new("rpc", "RouteCall"),
            Label::new("reason", "concurrency")
        ]));
        let unlabelled = FAMILIES
            .iter()
            .find(|f| f.name == "switchboard_cache_flushes_total")
            .unwrap();
        assert_eq!(unlabelled.series(), vec![Vec::<Label>::new()]);
    }

    #[test]
    fn every_grpc_code_is_listed() {
        // tonic numbers the codes as gRPC does: 0 (OK) to 16
        let named: Vec<_> = (0..=16)
            .map(|n| grpc_code(tonic::Code::from_i32(n)))
            .collect();
        assert_eq!(named, GRPC_CODES);
    }

    #[test]
    fn families_are_named_as_the_style_says_and_once() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        for family in FAMILIES {
            assert!(family.name.starts_with("switchboard_"), "{}", family.name);
            if family.kind == Counter {
                assert!(family.name.ends_with("_total"), "{}", family.name);
            }
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }

    #[test]
    fn label_values_are_in_snake_case_as_alerts_match_them() {
        assert_eq!(<&str>::from(RedisFallback::NotConnected), "not_connected");
        assert_eq!(
            <&str>::from(AdmissionOutcome::RedisDownAdmitted),
            "redis_down_admitted"
        );
        assert_eq!(<&str>::from(HitTier::L1), "l1");
        assert_eq!(<&str>::from(Rpc::RouteCall), "RouteCall");
    }
}
