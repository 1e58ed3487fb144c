//! The label values of the metric families in [`super::series`]: one enum
//! per label, recorded through (`&'static str` by `IntoStaticStr`) and
//! listed from (`VariantNames`), so that what is recorded and what is
//! exported at zero cannot drift apart.

use strum::{IntoStaticStr, VariantNames};

/// The RPCs, as the `rpc` label names them.
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
pub enum Rpc {
    RouteCall,
    EndCall,
    RecordUsage,
    LookupNumber,
    ExplainRoute,
}

/// Why a request was shed (`switchboard_grpc_shed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum ShedReason {
    /// At the adaptive concurrency limit: refused by the gate, before the
    /// request was read.
    Concurrency,
    /// Waited too long for its handler.
    QueueDelay,
}

/// Why a request was refused as unauthenticated.
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum Unauthenticated {
    InvalidToken,
    MissingToken,
}

/// Why a Redis command fell back (`switchboard_redis_fallbacks_total{why}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum RedisFallback {
    /// No connection (yet): not even tried.
    NotConnected,
    /// Redis answered with an error, or the connection failed.
    Error,
    /// No answer within the command timeout.
    Timeout,
    /// Filling L2 after an L3 read failed.
    Fill,
}

/// An admission decision (`switchboard_admission_decisions_total{outcome}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum AdmissionOutcome {
    Admitted,
    /// The same call asked again: its lease was already held.
    Retry,
    Refused,
    /// Over the limit, admitted in shadow mode.
    ShadowRefused,
    RedisDownAdmitted,
    RedisDownRefused,
    Unlimited,
}

/// A lease release (`switchboard_admission_releases_total{outcome}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum ReleaseOutcome {
    Released,
    NotHeld,
}

/// A write of the route cache's last-known-good copy
/// (`switchboard_route_snapshot_writes_total{outcome}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum SnapshotWrite {
    Written,
    Failed,
}

/// A change republished by a listener of the invalidation relay
/// (`switchboard_invalidation_relay_publishes_total{outcome}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum RelayPublish {
    Published,
    Failed,
}

/// A pass of lease reconciliation
/// (`switchboard_lease_reconciliations_total{outcome}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum ReconcileOutcome {
    /// This replica ran the pass.
    Done,
    /// Another replica has this interval's turn.
    NotMyTurn,
    /// Redis or PostgreSQL could not be asked: the next interval retries.
    Failed,
}

/// Drift lease reconciliation found and corrected
/// (`switchboard_lease_drift_total{kind}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum LeaseDrift {
    /// An open call had no lease: given back.
    Missing,
    /// An ended call still held one: removed.
    Ended,
}

/// A pooled PostgreSQL statement (`switchboard_store_query_*{query}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum Query {
    /// /readyz's probe.
    Ping,
    ActiveRoutes,
    /// Every number range (warm start, and after a range changes).
    Ranges,
    /// Every provisioned number (the route cache's directory).
    ProvisionedNumbers,
    ResolveNumber,
    ResolveAgent,
    ResolveOrganization,
    FindCustomer,
    CallOrg,
    /// Lease reconciliation's pages of open and lately ended calls.
    RecentCalls,
    /// The change log, read by a replica that follows an invalidation relay.
    ChangeLog,
    WriteEvents,
}

/// What a routed call does (`switchboard_routing_decisions_total{decision}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum RoutingDecision {
    NumberAgent,
    RuleAgent,
    Transfer,
    Reject,
}

/// The cache tiers that answer a lookup (`switchboard_cache_hits_total{tier}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum HitTier {
    L1,
    L2,
    L3,
}

/// The cache tiers that can miss (`switchboard_cache_misses_total{tier}`):
/// L3 is the source of truth; its "no such number" is an answer.
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum MissTier {
    L1,
    L2,
}

/// Who answered a lookup (`switchboard_cache_lookup_seconds{tier}`):
/// `source` is everything below L1, timed from L1.
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum LookupTier {
    L1,
    L2,
    L3,
    Source,
}

/// How a background refresh went
/// (`switchboard_cache_background_refreshes_total{result}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum RefreshResult {
    Kept,
    Raced,
    Failed,
    Busy,
}

/// How the invalidation listener's read of the new versions of changed
/// agents and organizations went
/// (`switchboard_invalidation_version_reads_total{outcome}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum VersionRead {
    /// Read: swapped in without a read of the cache's own.
    Read,
    /// Failed or too slow: the cache reads them itself.
    Failed,
}

/// What became of recorded events (`switchboard_recorder_events_total{outcome}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum EventOutcome {
    Written,
    Spooled,
    Replayed,
    DeadLettered,
    /// Dropped: refused together with their RPC.
    Refused,
    /// Dropped: their RPC gave up (its deadline passed) before they were
    /// written.
    Abandoned,
}

/// Why the recorder refused an RPC (`switchboard_recorder_refused_total{reason}`).
#[derive(Debug, Clone, Copy, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum RecorderRefusal {
    QueueFull,
    SpoolFull,
    SpoolFailed,
    Deadline,
    Closed,
}

/// The gRPC status codes, as the `code` label names them.
pub const GRPC_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
