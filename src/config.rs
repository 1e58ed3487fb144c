//! The one typed configuration: command-line flags, each with an environment
//! variable, validated before anything starts. Defaults are the `DEFAULT_*`
//! constants next to each setting.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::{
    admission::{AdmissionMode, RedisDownPolicy},
    api::auth::Tokens,
    domain::EndReason,
    telemetry::LogFormat,
};

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
/// Requests one replica answers at once; more are refused at once with
/// UNAVAILABLE (`overloaded`). A cache hit takes microseconds, so this only
/// binds when requests wait on PostgreSQL or Redis.
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
/// Longest wait for Redis when admitting a call; then the Redis-down
/// policy decides.
pub const DEFAULT_ADMISSION_TIMEOUT: &str = "25ms";

/// Exit status for invalid configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_BAD_CONFIG: i32 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Call-routing daemon for voice-AI platforms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: gRPC routing API and admin HTTP listener.
    Serve(Box<ServeConfig>),
    /// Apply pending database migrations (direct connection), then exit.
    Migrate(MigrateArgs),
    /// Load a data set into the database (direct connection), then exit.
    Seed(SeedArgs),
    /// Call a running daemon's API and print the answer as JSON.
    Client(ClientArgs),
}

#[derive(Debug, Args)]
pub struct LogConfig {
    /// Log format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax (`info`, `switchboard=debug,warn`).
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info", global = true)]
    pub log_filter: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// PostgreSQL URL through the transaction-mode pooler (Supavisor port
    /// 6543, or PgBouncer): routing reads.
    #[arg(long, env = "DATABASE_URL", value_parser = secret, hide_env_values = true)]
    pub database_url: SecretString,
    /// PostgreSQL URL of a direct (or session-mode) connection, never the
    /// transaction pooler: the invalidation listener's `LISTEN`.
    #[arg(long, env = "DATABASE_DIRECT_URL", value_parser = secret, hide_env_values = true)]
    pub database_direct_url: SecretString,
    /// Redis URL: the route cache shared by all replicas (L2).
    #[arg(long, env = "REDIS_URL", value_parser = secret, hide_env_values = true)]
    pub redis_url: SecretString,
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
    /// gRPC listen address.
    #[arg(long, env = "SWITCHBOARD_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// Admin HTTP listen address (`/metrics`, `/livez`, `/readyz`).
    #[arg(long, env = "SWITCHBOARD_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
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
    /// Deadline for requests without `grpc-timeout`, and cap for those with.
    #[arg(long, env = "SWITCHBOARD_REQUEST_TIMEOUT", value_parser = duration, default_value = DEFAULT_REQUEST_TIMEOUT)]
    pub request_timeout: Duration,
    /// Largest accepted gRPC message, in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
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
    /// Requests answered at once; beyond, UNAVAILABLE (`overloaded`).
    #[arg(long, env = "SWITCHBOARD_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Streams one gRPC connection may have open at once (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); at least SWITCHBOARD_MAX_IN_FLIGHT.
    #[arg(long, env = "SWITCHBOARD_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Longest a request may wait for its handler to run (the CPU is
    /// saturated); beyond, UNAVAILABLE (`overloaded`) at once.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUE_DELAY", value_parser = duration, default_value = DEFAULT_MAX_QUEUE_DELAY)]
    pub max_queue_delay: Duration,
    /// How long shutdown waits for in-flight requests, and then again for
    /// the recorder to drain.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", value_parser = duration, default_value = DEFAULT_SHUTDOWN_GRACE)]
    pub shutdown_grace: Duration,

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
    /// RPCs whose events may wait in memory; beyond, requests are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SWITCHBOARD_RECORDER_QUEUE", default_value_t = DEFAULT_RECORDER_QUEUE)]
    pub recorder_queue: usize,
    /// Most events written by one statement.
    #[arg(long, env = "SWITCHBOARD_RECORDER_BATCH_SIZE", default_value_t = DEFAULT_RECORDER_BATCH_SIZE)]
    pub recorder_batch_size: usize,
    /// Longest an event waits for its batch to fill.
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
}

impl ServeConfig {
    /// The gateways' tokens (none when unset).
    pub fn tokens(&self) -> Result<Tokens, String> {
        match &self.api_tokens {
            Some(raw) => Tokens::parse(raw),
            None => Tokens::parse(&SecretString::from(String::new())),
        }
    }

    /// A configuration with every default, for tests and embedding.
    pub fn with_defaults(
        database_url: SecretString,
        database_direct_url: SecretString,
        redis_url: SecretString,
    ) -> Self {
        Self {
            database_url,
            database_direct_url,
            redis_url,
            redis_timeout: duration(DEFAULT_REDIS_TIMEOUT).expect("valid default"),
            redis_ttl: duration(DEFAULT_REDIS_TTL).expect("valid default"),
            redis_key_prefix: DEFAULT_REDIS_KEY_PREFIX.to_string(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_ttl: duration(DEFAULT_CACHE_TTL).expect("valid default"),
            cache_negative_ttl: duration(DEFAULT_CACHE_NEGATIVE_TTL).expect("valid default"),
            cache_unconfirmed_ttl: duration(DEFAULT_CACHE_UNCONFIRMED_TTL).expect("valid default"),
            cache_max_stale: duration(DEFAULT_CACHE_MAX_STALE).expect("valid default"),
            cache_warm_limit: DEFAULT_CACHE_WARM_LIMIT,
            grpc_addr: DEFAULT_GRPC_ADDR.parse().expect("valid default"),
            admin_addr: DEFAULT_ADMIN_ADDR.parse().expect("valid default"),
            db_pool_size: DEFAULT_DB_POOL_SIZE,
            db_pool_wait: duration(DEFAULT_DB_POOL_WAIT).expect("valid default"),
            db_connect_timeout: duration(DEFAULT_DB_CONNECT_TIMEOUT).expect("valid default"),
            db_query_timeout: duration(DEFAULT_DB_QUERY_TIMEOUT).expect("valid default"),
            request_timeout: duration(DEFAULT_REQUEST_TIMEOUT).expect("valid default"),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_queue_delay: duration(DEFAULT_MAX_QUEUE_DELAY).expect("valid default"),
            api_tokens: None,
            allow_unauthenticated: false,
            tls_terminated_upstream: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            redis_ca_file: None,
            shutdown_grace: duration(DEFAULT_SHUTDOWN_GRACE).expect("valid default"),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_segment_bytes: DEFAULT_SPOOL_SEGMENT_BYTES,
            recorder_queue: DEFAULT_RECORDER_QUEUE,
            recorder_batch_size: DEFAULT_RECORDER_BATCH_SIZE,
            recorder_flush_interval: duration(DEFAULT_RECORDER_FLUSH_INTERVAL)
                .expect("valid default"),
            recorder_write_timeout: duration(DEFAULT_RECORDER_WRITE_TIMEOUT)
                .expect("valid default"),
            recorder_retry_interval: duration(DEFAULT_RECORDER_RETRY_INTERVAL)
                .expect("valid default"),
            admission_mode: AdmissionMode::Enforce,
            admission_on_redis_down: RedisDownPolicy::Admit,
            admission_timeout: duration(DEFAULT_ADMISSION_TIMEOUT).expect("valid default"),
            limit_starter: DEFAULT_LIMIT_STARTER,
            limit_pro: DEFAULT_LIMIT_PRO,
            limit_enterprise: DEFAULT_LIMIT_ENTERPRISE,
            max_call_duration: duration(DEFAULT_MAX_CALL_DURATION).expect("valid default"),
        }
    }

    /// Checks what the types alone cannot.
    /// Whether gateways' bearer tokens would reach a non-loopback listener
    /// that has no TLS of its own.
    pub fn tokens_in_clear(&self, tokens: &Tokens) -> bool {
        !tokens.is_empty() && !self.grpc_addr.ip().is_loopback() && self.tls_cert.is_none()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.db_pool_size == 0 {
            return Err("SWITCHBOARD_DB_POOL_SIZE must be at least 1".into());
        }
        for (name, value) in [
            ("SWITCHBOARD_DB_POOL_WAIT", self.db_pool_wait),
            ("SWITCHBOARD_DB_CONNECT_TIMEOUT", self.db_connect_timeout),
            ("SWITCHBOARD_DB_QUERY_TIMEOUT", self.db_query_timeout),
            ("SWITCHBOARD_REQUEST_TIMEOUT", self.request_timeout),
            ("SWITCHBOARD_MAX_QUEUE_DELAY", self.max_queue_delay),
            ("SWITCHBOARD_CACHE_TTL", self.cache_ttl),
            ("SWITCHBOARD_REDIS_TIMEOUT", self.redis_timeout),
            ("SWITCHBOARD_CACHE_NEGATIVE_TTL", self.cache_negative_ttl),
            (
                "SWITCHBOARD_CACHE_UNCONFIRMED_TTL",
                self.cache_unconfirmed_ttl,
            ),
            (
                "SWITCHBOARD_RECORDER_FLUSH_INTERVAL",
                self.recorder_flush_interval,
            ),
            (
                "SWITCHBOARD_RECORDER_WRITE_TIMEOUT",
                self.recorder_write_timeout,
            ),
            (
                "SWITCHBOARD_RECORDER_RETRY_INTERVAL",
                self.recorder_retry_interval,
            ),
            ("SWITCHBOARD_ADMISSION_TIMEOUT", self.admission_timeout),
            ("SWITCHBOARD_MAX_CALL_DURATION", self.max_call_duration),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err("SWITCHBOARD_MAX_MESSAGE_BYTES must be at least 1024".into());
        }
        for (name, value) in [
            ("SWITCHBOARD_MAX_IN_FLIGHT", self.max_in_flight),
            ("SWITCHBOARD_RECORDER_QUEUE", self.recorder_queue),
            ("SWITCHBOARD_RECORDER_BATCH_SIZE", self.recorder_batch_size),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.spool_segment_bytes < 4096 || self.spool_max_bytes < self.spool_segment_bytes {
            return Err(
                "SWITCHBOARD_SPOOL_SEGMENT_BYTES must be at least 4096 and at most SWITCHBOARD_SPOOL_MAX_BYTES"
                    .into(),
            );
        }
        let tokens = self.tokens()?;
        if tokens.is_empty() && !self.grpc_addr.ip().is_loopback() && !self.allow_unauthenticated {
            return Err(format!(
                "SWITCHBOARD_API_TOKENS is not set, and SWITCHBOARD_GRPC_ADDR ({}) is not a \
                 loopback address: set tokens for the gateways, or \
                 SWITCHBOARD_ALLOW_UNAUTHENTICATED=true if something in front authenticates them",
                self.grpc_addr
            ));
        }
        if (self.max_concurrent_streams as usize) < self.max_in_flight {
            return Err(format!(
                "SWITCHBOARD_MAX_CONCURRENT_STREAMS ({}) must be at least SWITCHBOARD_MAX_IN_FLIGHT ({}): \
                 requests past the bound wait in the client instead of being refused at once",
                self.max_concurrent_streams, self.max_in_flight
            ));
        }
        if self.tokens_in_clear(&tokens) && !self.tls_terminated_upstream {
            return Err(format!(
                "SWITCHBOARD_API_TOKENS would cross the network in clear: SWITCHBOARD_GRPC_ADDR \
                 ({}) is not a loopback address and the listener has no TLS. Set \
                 SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY, or \
                 SWITCHBOARD_TLS_TERMINATED_UPSTREAM=true if a proxy in front terminates TLS",
                self.grpc_addr
            ));
        }
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err("SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY go together".into())
            }
            (None, None, Some(_)) => {
                return Err(
                    "SWITCHBOARD_TLS_CLIENT_CA needs SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY"
                        .into(),
                )
            }
            _ => {}
        }
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            return Err("SWITCHBOARD_GRPC_ADDR and SWITCHBOARD_ADMIN_ADDR must differ".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct DirectDatabase {
    /// PostgreSQL URL of a direct (or session-mode) connection: migrations,
    /// seeding, LISTEN. Never the transaction pooler.
    #[arg(long, env = "DATABASE_DIRECT_URL", value_parser = secret, hide_env_values = true)]
    pub database_direct_url: SecretString,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DirectDatabase,
    /// Password the daemon's role (`switchboard_daemon`) logs in with. When
    /// unset, the role is created without LOGIN, or left as it is.
    #[arg(long, env = "SWITCHBOARD_DAEMON_PASSWORD", value_parser = secret, hide_env_values = true)]
    pub daemon_password: Option<SecretString>,
    /// Adopting a single-tenant database: slug of the organization that
    /// receives its rows.
    #[arg(long, env = "SWITCHBOARD_ADOPT_ORG_SLUG", default_value = "default")]
    pub adopt_org_slug: String,
    /// Adopting: that organization's name.
    #[arg(
        long,
        env = "SWITCHBOARD_ADOPT_ORG_NAME",
        default_value = "Default organization"
    )]
    pub adopt_org_name: String,
    /// Adopting: email of an existing user who becomes the owner of every
    /// organization that would otherwise have none.
    #[arg(long, env = "SWITCHBOARD_ADOPT_OWNER_EMAIL")]
    pub adopt_owner_email: Option<String>,
    /// Adopting: country calling code for numbers stored without one.
    #[arg(long, env = "SWITCHBOARD_ADOPT_CALLING_CODE", default_value = "1")]
    pub adopt_calling_code: String,
    /// Adopting: finish even if an organization is left without an owner
    /// (recorded in switchboard.adoption_issues) instead of refusing.
    #[arg(long, env = "SWITCHBOARD_ADOPT_ALLOW_OWNERLESS")]
    pub adopt_allow_ownerless: bool,
    /// Report what the run would do to this database, then roll it all
    /// back: nothing is changed.
    #[arg(long)]
    pub dry_run: bool,
}

impl MigrateArgs {
    pub fn options(&self) -> crate::store::migrate::MigrateOptions {
        crate::store::migrate::MigrateOptions {
            adopt: crate::store::migrate::Adoption {
                org_slug: Some(self.adopt_org_slug.clone()),
                org_name: Some(self.adopt_org_name.clone()),
                owner_email: self.adopt_owner_email.clone(),
                calling_code: Some(self.adopt_calling_code.clone()),
                allow_ownerless: self.adopt_allow_ownerless,
            },
            daemon_password: self.daemon_password.clone(),
            dry_run: self.dry_run,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DirectDatabase,
    /// Load the demo data set (the only data set there is).
    #[arg(long, required = true)]
    pub demo: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Address of the daemon's gRPC listener.
    #[arg(
        long,
        env = "SWITCHBOARD_CLIENT_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Bearer token, when the daemon requires one.
    #[arg(long, env = "SWITCHBOARD_CLIENT_TOKEN", value_parser = secret, hide_env_values = true)]
    pub token: Option<SecretString>,
    /// PEM CA certificate to trust, for a daemon serving TLS (`https://` address).
    #[arg(long, env = "SWITCHBOARD_CLIENT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a daemon requiring mutual TLS (with --key).
    #[arg(long, env = "SWITCHBOARD_CLIENT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "SWITCHBOARD_CLIENT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub call: ClientCall,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClientCall {
    /// RouteCall: route a new inbound call.
    RouteCall {
        /// The dialled number.
        #[arg(long)]
        called: String,
        /// The caller's number.
        #[arg(long, default_value = "")]
        caller: String,
        /// The gateway's id for the call (default: a fresh UUID).
        #[arg(long)]
        gateway_call_id: Option<String>,
        /// ISO 3166-1 alpha-2 region for national-format numbers.
        #[arg(long, default_value = "")]
        region: String,
    },
    /// LookupNumber: the route for a number, without side effects.
    Lookup {
        number: String,
        #[arg(long, default_value = "")]
        region: String,
    },
    /// ExplainRoute: how a number is read, which tier knows its route, what
    /// is switched off and what admission would decide. No side effects.
    Explain {
        number: String,
        /// ISO 3166-1 alpha-2 region for national-format numbers.
        #[arg(long, default_value = "")]
        region: String,
        /// A caller number, to see whether it is a known customer.
        #[arg(long, default_value = "")]
        caller: String,
    },
    /// EndCall: the call is over (releases its slot, records the outcome).
    EndCall {
        /// The call_id RouteCall returned.
        call_id: String,
        /// Why it ended.
        #[arg(long, value_enum, default_value_t = EndReason::CallerHangup)]
        reason: EndReason,
    },
    /// RecordUsage: meter a call.
    RecordUsage {
        /// The call_id RouteCall returned.
        call_id: String,
        /// `metric=quantity`, repeatable (`--item call_seconds=42`).
        #[arg(long = "item", required = true, value_parser = usage_item)]
        items: Vec<(String, f64)>,
        /// The report's idempotency key (default: a fresh UUID).
        #[arg(long)]
        key: Option<String>,
    },
}

fn usage_item(value: &str) -> Result<(String, f64), String> {
    let (metric, quantity) = value
        .split_once('=')
        .ok_or("expected metric=quantity, e.g. call_seconds=42")?;
    let quantity = quantity
        .parse()
        .map_err(|e| format!("quantity {quantity:?}: {e}"))?;
    Ok((metric.to_string(), quantity))
}

/// The environment variable behind the argument a parse error is about, so
/// an operator who configures through the environment sees the name they
/// set (clap's own message names only the flag).
pub fn env_var_for(error: &clap::Error) -> Option<String> {
    use clap::{error::ContextKind, error::ContextValue, CommandFactory};
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--db-query-timeout <DB_QUERY_TIMEOUT>" → "db-query-timeout"
    let long = arg.trim_start_matches('-').split([' ', '=']).next()?;
    let command = Cli::command();
    let env = std::iter::once(&command)
        .chain(command.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    env
}

fn secret(value: &str) -> Result<SecretString, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(value.to_owned()))
}

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (examples: 250ms, 2s, 1m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn defaults() -> ServeConfig {
        ServeConfig::with_defaults(
            SecretString::from("postgres://x@h/db"),
            SecretString::from("postgres://x@h/db"),
            SecretString::from("redis://h/"),
        )
    }

    #[test]
    fn defaults_are_valid() {
        defaults().validate().unwrap();
    }

    #[test]
    fn bad_values_are_rejected_with_the_variable_name() {
        let mut config = defaults();
        config.db_pool_size = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("SWITCHBOARD_DB_POOL_SIZE"));
        let mut config = defaults();
        config.db_query_timeout = Duration::ZERO;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("SWITCHBOARD_DB_QUERY_TIMEOUT"));
        assert!(duration("soon").is_err());
        assert!(secret(" ").is_err());
    }

    #[test]
    fn parse_errors_name_the_environment_variable() {
        let error = Cli::try_parse_from([
            "switchboard",
            "serve",
            "--database-url",
            "postgres://h/db",
            "--db-query-timeout",
            "soon",
        ])
        .unwrap_err();
        assert_eq!(
            env_var_for(&error).as_deref(),
            Some("SWITCHBOARD_DB_QUERY_TIMEOUT")
        );
    }
}
