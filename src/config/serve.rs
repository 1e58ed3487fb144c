//! `switchboard serve`: the daemon's settings, in groups by concern, each
//! group flattened into the one command line. A field's name is its flag
//! (`--db-pool-size`), its value name (`<DB_POOL_SIZE>`) and clap's id, so
//! fields keep the names of their flags even where the group repeats the
//! prefix (`database.db_pool_size`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, FromArgMatches};
use secrecy::SecretString;

use super::{defaults::*, duration, secret};
use crate::{
    admission::{AdmissionMode, RedisDownPolicy},
    api::{
        auth::{ShortToken, Tokens},
        overload::Refusal,
    },
    store::redis_link::RedisMode,
};

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub cache: CacheConfig,
    #[command(flatten)]
    pub grpc: GrpcConfig,
    #[command(flatten)]
    pub admin: AdminConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub tls: TlsConfig,
    /// How long shutdown waits for in-flight requests, and then again for
    /// the recorder to drain.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", value_parser = duration, default_value = DEFAULT_SHUTDOWN_GRACE)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub spool: SpoolConfig,
    #[command(flatten)]
    pub recorder: RecorderConfig,
    #[command(flatten)]
    pub admission: AdmissionConfig,
}

/// PostgreSQL: where routes are read, and the pool they are read through.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL through the transaction-mode pooler (Supavisor port
    /// 6543, or PgBouncer): routing reads.
    #[arg(long, env = "DATABASE_URL", value_parser = secret, hide_env_values = true)]
    pub database_url: SecretString,
    /// PostgreSQL URL of a direct (or session-mode) connection, never the
    /// transaction pooler: the invalidation listener's `LISTEN`.
    #[arg(long, env = "DATABASE_DIRECT_URL", value_parser = secret, hide_env_values = true)]
    pub database_direct_url: SecretString,
    /// Connections to the pooler.
    #[arg(long, env = "SWITCHBOARD_DB_POOL_SIZE", default_value_t = DEFAULT_DB_POOL_SIZE)]
    pub db_pool_size: usize,
    /// Longest wait for a free pooled connection.
    #[arg(long, env = "SWITCHBOARD_DB_POOL_WAIT", value_parser = duration, default_value = DEFAULT_DB_POOL_WAIT)]
    pub db_pool_wait: Duration,
    /// Longest wait to open a connection.
    #[arg(long, env = "SWITCHBOARD_DB_CONNECT_TIMEOUT", value_parser = duration, default_value = DEFAULT_DB_CONNECT_TIMEOUT)]
    pub db_connect_timeout: Duration,
    /// Longest wait for one query.
    #[arg(long, env = "SWITCHBOARD_DB_QUERY_TIMEOUT", value_parser = duration, default_value = DEFAULT_DB_QUERY_TIMEOUT)]
    pub db_query_timeout: Duration,
}

/// Redis: the route cache shared by all replicas (L2), and admission's
/// leases.
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Redis URL: the route cache shared by all replicas (L2) and the
    /// admission leases. For a Redis Cluster, one or more seed nodes' URLs,
    /// comma-separated.
    #[arg(long, env = "REDIS_URL", value_parser = secret, hide_env_values = true)]
    pub redis_url: SecretString,
    /// `standalone`: `REDIS_URL` is one Redis. `cluster`: a Redis Cluster,
    /// whose topology is discovered from the seed nodes and followed
    /// through failovers.
    #[arg(long, env = "SWITCHBOARD_REDIS_MODE", value_enum, default_value_t = RedisMode::Standalone)]
    pub redis_mode: RedisMode,
    /// PEM CA certificates trusted for `rediss://` instead of the system's
    /// roots (a private or managed Redis's own CA).
    #[arg(long, env = "SWITCHBOARD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Longest wait for one Redis command.
    #[arg(long, env = "SWITCHBOARD_REDIS_TIMEOUT", value_parser = duration, default_value = DEFAULT_REDIS_TIMEOUT)]
    pub redis_timeout: Duration,
    /// Lifetime of a route part in Redis. `0` turns L2 off for routes:
    /// lookups go from L1 straight to PostgreSQL (invalidations still write
    /// tombstones for replicas that share the Redis).
    #[arg(long, env = "SWITCHBOARD_REDIS_TTL", value_parser = duration, default_value = DEFAULT_REDIS_TTL)]
    pub redis_ttl: Duration,
    /// Namespace of Switchboard's Redis keys (several deployments may share
    /// one Redis).
    #[arg(long, env = "SWITCHBOARD_REDIS_KEY_PREFIX", default_value = DEFAULT_REDIS_KEY_PREFIX)]
    pub redis_key_prefix: String,
}

/// The route cache in process (L1).
#[derive(Debug, Clone, Args)]
pub struct CacheConfig {
    /// Numbers held in the route cache (L1). `0` turns L1 off: every
    /// lookup goes to L2 (for benchmarks, and for ruling L1 out).
    #[arg(long, env = "SWITCHBOARD_CACHE_CAPACITY", default_value_t = DEFAULT_CACHE_CAPACITY)]
    pub cache_capacity: u64,
    /// Safety-net lifetime of a cached route.
    #[arg(long, env = "SWITCHBOARD_CACHE_TTL", value_parser = duration, default_value = DEFAULT_CACHE_TTL)]
    pub cache_ttl: Duration,
    /// Lifetime of a cached "no such number".
    #[arg(long, env = "SWITCHBOARD_CACHE_NEGATIVE_TTL", value_parser = duration, default_value = DEFAULT_CACHE_NEGATIVE_TTL)]
    pub cache_negative_ttl: Duration,
    /// How long cached routes are trusted while the invalidation listener is down.
    #[arg(long, env = "SWITCHBOARD_CACHE_UNCONFIRMED_TTL", value_parser = duration, default_value = DEFAULT_CACHE_UNCONFIRMED_TTL)]
    pub cache_unconfirmed_ttl: Duration,
    /// Preload every active route before reporting ready, when there are at
    /// most this many (0: never).
    #[arg(long, env = "SWITCHBOARD_CACHE_WARM_LIMIT", default_value_t = DEFAULT_CACHE_WARM_LIMIT)]
    pub cache_warm_limit: usize,
    /// Oldest cached route served while the database cannot be read
    /// (stale-if-error); uncached numbers get UNAVAILABLE meanwhile.
    #[arg(long, env = "SWITCHBOARD_CACHE_MAX_STALE", value_parser = duration, default_value = DEFAULT_CACHE_MAX_STALE)]
    pub cache_max_stale: Duration,
    /// How often the cached routes are copied to the spool's volume (when
    /// they changed), for a restart while the database cannot be read. `0`
    /// neither writes nor restores a copy.
    #[arg(long, env = "SWITCHBOARD_CACHE_SNAPSHOT_INTERVAL", value_parser = duration, default_value = DEFAULT_CACHE_SNAPSHOT_INTERVAL)]
    pub cache_snapshot_interval: Duration,
    /// `0`: every replica listens for changes on its own direct connection.
    /// N: at most N replicas listen (taking turns through Redis) and relay
    /// the changes over Redis pub/sub to the rest, for fleets whose direct
    /// connections are budgeted.
    #[arg(long, env = "SWITCHBOARD_INVALIDATION_LISTENERS", default_value_t = 0)]
    pub invalidation_listeners: u32,
}

/// The gRPC listener and the bounds on what it accepts.
#[derive(Debug, Clone, Args)]
pub struct GrpcConfig {
    /// gRPC listen address.
    #[arg(long, env = "SWITCHBOARD_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// Deadline for requests without `grpc-timeout`, and cap for those with.
    #[arg(long, env = "SWITCHBOARD_REQUEST_TIMEOUT", value_parser = duration, default_value = DEFAULT_REQUEST_TIMEOUT)]
    pub request_timeout: Duration,
    /// Largest accepted gRPC message, in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Most requests answered at once: the ceiling of the adaptive
    /// concurrency limit; beyond the limit, UNAVAILABLE (`overloaded`).
    #[arg(long, env = "SWITCHBOARD_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Streams one gRPC connection may have open at once (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); at least SWITCHBOARD_MAX_IN_FLIGHT.
    #[arg(long, env = "SWITCHBOARD_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Longest a request may wait for its handler to run (the CPU is
    /// saturated) while no queue stands; beyond, UNAVAILABLE (`overloaded`)
    /// at once.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUE_DELAY", value_parser = duration, default_value = DEFAULT_MAX_QUEUE_DELAY)]
    pub max_queue_delay: Duration,
    /// Queue delay target: a wait for the handler that stays above it for
    /// a whole interval (100 ms) is a standing queue, which lowers the
    /// concurrency limit and sheds what waited longer than the target.
    #[arg(long, env = "SWITCHBOARD_QUEUE_DELAY_TARGET", value_parser = duration, default_value = DEFAULT_QUEUE_DELAY_TARGET)]
    pub queue_delay_target: Duration,
    /// How a request over the concurrency limit is refused: `status`
    /// (UNAVAILABLE, reason `overloaded`) or `reset` (HTTP/2 RST_STREAM
    /// REFUSED_STREAM, which gRPC clients may retry transparently).
    #[arg(long, env = "SWITCHBOARD_OVERLOAD_REFUSAL", value_enum, default_value_t = Refusal::Status)]
    pub overload_refusal: Refusal,
}

/// The admin HTTP listener.
#[derive(Debug, Clone, Args)]
pub struct AdminConfig {
    /// Admin HTTP listen address (`/metrics`, `/livez`, `/readyz`).
    #[arg(long, env = "SWITCHBOARD_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
}

/// Who may call the gRPC API.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// Bearer tokens the gateways authenticate with, separated by commas;
    /// several may be valid at once (rotation).
    #[arg(long, env = "SWITCHBOARD_API_TOKENS", value_parser = secret, hide_env_values = true)]
    pub api_tokens: Option<SecretString>,
    /// Serve without authentication on a non-loopback address (behind a
    /// mesh that authenticates for us, say). Without tokens and without
    /// this, only a loopback address is allowed.
    #[arg(
        long,
        env = "SWITCHBOARD_ALLOW_UNAUTHENTICATED",
        default_value_t = false
    )]
    pub allow_unauthenticated: bool,
}

/// TLS of the gRPC listener, its own or a proxy's.
#[derive(Debug, Clone, Args)]
pub struct TlsConfig {
    /// Something in front of the daemon (a proxy, a service mesh) terminates
    /// the gateways' TLS: tokens may then reach a non-loopback listener
    /// without TLS of its own (a warning is logged at start).
    #[arg(
        long,
        env = "SWITCHBOARD_TLS_TERMINATED_UPSTREAM",
        default_value_t = false
    )]
    pub tls_terminated_upstream: bool,
    /// PEM certificate chain for gRPC over TLS (with SWITCHBOARD_TLS_KEY).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of SWITCHBOARD_TLS_CERT.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them (mutual TLS).
    #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

/// The recorder's spool on disk, used while PostgreSQL is unreachable.
#[derive(Debug, Clone, Args)]
pub struct SpoolConfig {
    /// Directory of the recorder's spool (created if missing).
    #[arg(long, env = "SWITCHBOARD_SPOOL_DIR", default_value = DEFAULT_SPOOL_DIR)]
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold; beyond, EndCall and RecordUsage are
    /// refused with RESOURCE_EXHAUSTED while PostgreSQL is unreachable.
    #[arg(long, env = "SWITCHBOARD_SPOOL_MAX_BYTES", default_value_t = DEFAULT_SPOOL_MAX_BYTES)]
    pub spool_max_bytes: u64,
    /// Size of one spool file.
    #[arg(long, env = "SWITCHBOARD_SPOOL_SEGMENT_BYTES", default_value_t = DEFAULT_SPOOL_SEGMENT_BYTES)]
    pub spool_segment_bytes: u64,
}

/// The recorder: call and usage events written behind the call, in batches.
#[derive(Debug, Clone, Args)]
pub struct RecorderConfig {
    /// RPCs whose events may wait in memory; beyond, requests are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SWITCHBOARD_RECORDER_QUEUE", default_value_t = DEFAULT_RECORDER_QUEUE)]
    pub recorder_queue: usize,
    /// Most events written by one statement.
    #[arg(long, env = "SWITCHBOARD_RECORDER_BATCH_SIZE", default_value_t = DEFAULT_RECORDER_BATCH_SIZE)]
    pub recorder_batch_size: usize,
    /// Batches written to PostgreSQL at once, each on a pooled connection
    /// of its own: a durable RPC's batch need not wait for the one before
    /// it to commit.
    #[arg(long, env = "SWITCHBOARD_RECORDER_WRITERS", default_value_t = DEFAULT_RECORDER_WRITERS)]
    pub recorder_writers: usize,
    /// Longest an event no RPC waits for (a call opened) waits for its
    /// batch to fill; a durable RPC's batch goes once the queue is empty.
    #[arg(long, env = "SWITCHBOARD_RECORDER_FLUSH_INTERVAL", value_parser = duration, default_value = DEFAULT_RECORDER_FLUSH_INTERVAL)]
    pub recorder_flush_interval: Duration,
    /// Longest wait for one batch's write before it is spooled instead; a
    /// batch that durable RPCs wait for is spooled sooner, in time for
    /// their deadline.
    #[arg(long, env = "SWITCHBOARD_RECORDER_WRITE_TIMEOUT", value_parser = duration, default_value = DEFAULT_RECORDER_WRITE_TIMEOUT)]
    pub recorder_write_timeout: Duration,
    /// Pause after a failed attempt to reach PostgreSQL while spooling (a
    /// replay that succeeds goes on without a pause).
    #[arg(long, env = "SWITCHBOARD_RECORDER_RETRY_INTERVAL", value_parser = duration, default_value = DEFAULT_RECORDER_RETRY_INTERVAL)]
    pub recorder_retry_interval: Duration,
}

/// Concurrent-call limits.
#[derive(Debug, Clone, Args)]
pub struct AdmissionConfig {
    /// Concurrent-call limits: enforce them, only report what they would
    /// refuse (shadow), or take no leases at all (off).
    #[arg(long, env = "SWITCHBOARD_ADMISSION_MODE", value_enum, default_value_t = AdmissionMode::Enforce)]
    pub admission_mode: AdmissionMode,
    /// When Redis cannot be asked: admit calls unchecked (fail open) or
    /// refuse them (fail closed).
    #[arg(long, env = "SWITCHBOARD_ADMISSION_ON_REDIS_DOWN", value_enum, default_value_t = RedisDownPolicy::Admit)]
    pub admission_on_redis_down: RedisDownPolicy,
    /// Longest wait for Redis when admitting a call.
    #[arg(long, env = "SWITCHBOARD_ADMISSION_TIMEOUT", value_parser = duration, default_value = DEFAULT_ADMISSION_TIMEOUT)]
    pub admission_timeout: Duration,
    /// Concurrent calls of a starter organization without its own limit.
    #[arg(long, env = "SWITCHBOARD_LIMIT_STARTER", default_value_t = DEFAULT_LIMIT_STARTER)]
    pub limit_starter: u32,
    /// Concurrent calls of a pro organization without its own limit.
    #[arg(long, env = "SWITCHBOARD_LIMIT_PRO", default_value_t = DEFAULT_LIMIT_PRO)]
    pub limit_pro: u32,
    /// Concurrent calls of an enterprise organization without its own limit.
    #[arg(long, env = "SWITCHBOARD_LIMIT_ENTERPRISE", default_value_t = DEFAULT_LIMIT_ENTERPRISE)]
    pub limit_enterprise: u32,
    /// Longest a call holds its slot without an EndCall.
    #[arg(long, env = "SWITCHBOARD_MAX_CALL_DURATION", value_parser = duration, default_value = DEFAULT_MAX_CALL_DURATION)]
    pub max_call_duration: Duration,
    /// How often the leases in Redis are reconciled with the open calls in
    /// PostgreSQL (by one replica at a time). `0` turns it off.
    #[arg(long, env = "SWITCHBOARD_LEASE_RECONCILE_INTERVAL", value_parser = duration, default_value = DEFAULT_LEASE_RECONCILE_INTERVAL)]
    pub lease_reconcile_interval: Duration,
}

impl ServeConfig {
    /// A configuration with every default, for tests and embedding: the
    /// three URLs, which have none, parsed with nothing else, as
    /// `switchboard serve` parses its command line.
    pub fn with_defaults(database_url: &str, database_direct_url: &str, redis_url: &str) -> Self {
        Self::from_flags([
            "--database-url",
            database_url,
            "--database-direct-url",
            database_direct_url,
            "--redis-url",
            redis_url,
        ])
        .expect("the three URLs are all a configuration needs")
    }

    /// Parses `flags` (without a program or command name) as `switchboard
    /// serve` does, except that the environment is not read: what `flags`
    /// does not set takes its default.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Result<Self, clap::Error> {
        let command =
            Self::augment_args(clap::Command::new("serve")).mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(std::iter::once("serve").chain(flags))?;
        Self::from_arg_matches(&matches)
    }

    /// The gateways' tokens (none when unset).
    pub fn tokens(&self) -> Result<Tokens, ShortToken> {
        match &self.auth.api_tokens {
            Some(raw) => Tokens::parse(raw),
            None => Tokens::parse(&SecretString::from(String::new())),
        }
    }

    /// Whether gateways' bearer tokens would reach a non-loopback listener
    /// that has no TLS of its own.
    pub fn tokens_in_clear(&self, tokens: &Tokens) -> bool {
        !tokens.is_empty() && !self.grpc.grpc_addr.ip().is_loopback() && self.tls.tls_cert.is_none()
    }
}
