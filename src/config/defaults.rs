//! Every default, stated once: the `#[arg]` attributes of the settings
//! name these constants, and a configuration with defaults is parsed
//! ([`ServeConfig::with_defaults`](super::ServeConfig::with_defaults)), so
//! nothing restates them.

/// gRPC listener. Loopback by default: exposing the daemon is a decision.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Admin HTTP listener (`/metrics`, `/livez`, `/readyz`).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9464";
/// Connections one replica keeps to the transaction pooler. The pooler
/// multiplexes them onto few server connections; more than the pooler's
/// pool size per replica only moves the queue.
pub const DEFAULT_DB_POOL_SIZE: usize = 16;
/// Longest wait for a free pooled connection before answering UNAVAILABLE.
pub const DEFAULT_DB_POOL_WAIT: &str = "100ms";
/// Longest wait to open a connection to the pooler.
pub const DEFAULT_DB_CONNECT_TIMEOUT: &str = "1s";
/// Longest wait for one routing query. A resolution is a single-row index
/// lookup that takes well under a millisecond; 250 ms means the database or
/// the pooler is in trouble.
pub const DEFAULT_DB_QUERY_TIMEOUT: &str = "250ms";
/// Deadline for a request that carries no `grpc-timeout`, and the cap for
/// those that do.
pub const DEFAULT_REQUEST_TIMEOUT: &str = "1s";
/// Largest accepted gRPC message. Routing requests are a few hundred bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most requests one replica answers at once: the ceiling of the adaptive
/// concurrency limit, which starts there and falls while a queue stands.
/// A cache hit takes microseconds, so the ceiling binds only when
/// requests wait on PostgreSQL or Redis.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Streams one HTTP/2 connection may have open: four times what may be in
/// flight, so that requests beyond the in-flight limit still reach the
/// server and are refused at once (`overloaded`) rather than wait in the
/// client, while one connection's stream state stays bounded.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 4096;
/// Resets h2 makes for a peer's protocol errors before it closes the
/// connection (`ENHANCE_YOUR_CALM`): h2's own default, which tonic turns
/// off unless it is set.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Longest a request may wait for its handler before it is refused as
/// overloaded: the platform's whole budget for a lookup, so a burst is
/// served and only a standing queue is shed.
pub const DEFAULT_MAX_QUEUE_DELAY: &str = "50ms";
/// CoDel's target: a queue whose shortest wait stays above it for an
/// interval is standing. An L1 hit takes tens of microseconds, so 5 ms of
/// queue is hundreds of requests ahead.
pub const DEFAULT_QUEUE_DELAY_TARGET: &str = "5ms";
/// CoDel's interval: how long a queue must stand before the limit falls,
/// and how often it moves.
pub const QUEUE_DELAY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long shutdown waits for in-flight requests.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "10s";

/// Numbers held in the route cache (L1). A million numbers take a few
/// hundred megabytes at most.
pub const DEFAULT_CACHE_CAPACITY: u64 = 1_000_000;
/// Safety-net lifetime of a cached route; changes arrive by invalidation
/// within milliseconds, the TTL only bounds the damage of a missed one.
pub const DEFAULT_CACHE_TTL: &str = "5m";
/// Lifetime of a cached "no such number".
pub const DEFAULT_CACHE_NEGATIVE_TTL: &str = "5s";
/// How long a cached route is trusted while the invalidation listener is
/// disconnected.
pub const DEFAULT_CACHE_UNCONFIRMED_TTL: &str = "2s";

/// Warm start preloads every active route when there are at most this many.
pub const DEFAULT_CACHE_WARM_LIMIT: usize = 100_000;
/// Oldest cached route served while the database cannot be read.
pub const DEFAULT_CACHE_MAX_STALE: &str = "30m";
/// The last-known-good copy of the routes: a replica restarted during a
/// database outage serves what it held up to this long before.
pub const DEFAULT_CACHE_SNAPSHOT_INTERVAL: &str = "1m";
/// Longest wait for one Redis command before falling through to PostgreSQL.
/// A healthy Redis answers in well under a millisecond.
pub const DEFAULT_REDIS_TIMEOUT: &str = "5ms";
/// Namespace of Switchboard's Redis keys.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "switchboard";
/// Lifetime of a route part in Redis (L2).
pub const DEFAULT_REDIS_TTL: &str = "5m";

/// Where call and usage events wait on disk while PostgreSQL is
/// unreachable. Must survive a restart (a volume, not a tmpfs).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/switchboard/spool";
/// Most disk the spool may use: at ~150 bytes per event, a gigabyte holds
/// hours of a busy platform's calls.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Size of one spool file; replayed files are deleted whole.
pub const DEFAULT_SPOOL_SEGMENT_BYTES: u64 = 64 << 20;
/// RPCs whose events may wait in memory for the batcher.
pub const DEFAULT_RECORDER_QUEUE: usize = 65_536;
/// Most events in one write.
pub const DEFAULT_RECORDER_BATCH_SIZE: usize = 500;
/// Batches written at once, each on its own pooled connection: one, as
/// measured best where PostgreSQL's cores are the bottleneck (see
/// docs/durability.md).
pub const DEFAULT_RECORDER_WRITERS: usize = 1;
/// Longest an event waits for its batch to fill.
pub const DEFAULT_RECORDER_FLUSH_INTERVAL: &str = "5ms";
/// Longest wait for one batch's write before the batch goes to the spool
/// (shorter when an RPC waiting for it would otherwise miss its deadline).
pub const DEFAULT_RECORDER_WRITE_TIMEOUT: &str = "2s";
/// Pause after a failed attempt to reach PostgreSQL while spooling.
pub const DEFAULT_RECORDER_RETRY_INTERVAL: &str = "1s";

/// Concurrent-call limits by plan tier, unless an organization has its own.
pub const DEFAULT_LIMIT_STARTER: u32 = 5;
pub const DEFAULT_LIMIT_PRO: u32 = 50;
pub const DEFAULT_LIMIT_ENTERPRISE: u32 = 500;
/// A call's slot is held at most this long without an `EndCall`.
pub const DEFAULT_MAX_CALL_DURATION: &str = "4h";
/// Lease reconciliation's pace: the bound on how long leases Redis lost
/// (or kept after their calls ended) go uncorrected.
pub const DEFAULT_LEASE_RECONCILE_INTERVAL: &str = "10s";
/// Longest wait for Redis when admitting a call; then the Redis-down
/// policy decides.
pub const DEFAULT_ADMISSION_TIMEOUT: &str = "25ms";
