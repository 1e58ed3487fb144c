//! The one Redis connection a replica shares between the route cache (L2)
//! and admission, and the task that keeps it open.
//!
//! Redis is a standalone server or a Redis Cluster ([`RedisMode`]). For a
//! cluster, `REDIS_URL` names one or more seed nodes (comma-separated; a
//! managed Redis's configuration endpoint is one), and the redis crate's
//! cluster client discovers the rest, routes each command to the master of
//! its key's slot, follows `MOVED`/`ASK` redirects and refreshes the topology
//! when a node fails or a replica is promoted. Every script the daemon runs
//! declares its keys, all in one hash slot, so it runs the same on both.
//!
//! Redis is never waited for. [`RedisLink::get`] answers at once: the open
//! connection, or `None` while there is none, and the caller goes on
//! without Redis (L2 falls through to PostgreSQL, admission applies its
//! Redis-down policy). A supervisor task owns the connection's life:
//!
//! * it connects, and while there is no connection retries every
//!   [`RECONNECT_INTERVAL`], so a Redis that answers again is used again
//!   within about that long (plus one connect);
//! * a command that fails because a standalone connection broke
//!   ([`RedisLink::failed`]) drops the connection at once: from then on
//!   requests skip Redis without paying a timeout each, until the supervisor
//!   has reconnected. A cluster connection is never dropped for one node's
//!   failure: the cluster client reconnects to that node, or to the replica
//!   promoted in its place, on its own, while the other masters' slots keep
//!   answering;
//! * a connection whose socket stays open while Redis does not answer (a
//!   frozen process, a partition) is found by a health check every
//!   [`HEALTH_CHECK_INTERVAL`] and dropped after [`HEALTH_CHECK_FAILURES`]
//!   missed checks (for a cluster: checks no master answered). A single
//!   slow answer never drops it: callers' own timeouts are far shorter than
//!   a check's, and a loaded Redis is slow, not gone.
//!
//! Why not the client's `ConnectionManager`: every command waits on its
//! reconnection, and its back-off (a one-second floor that grows to a
//! minute, with jitter) left a Redis that came back unused for about two
//! minutes. Here requests never wait for a reconnect, and the retry pace
//! is fixed and short, which a single connection per replica can afford.

use std::{
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use futures::FutureExt;
use redis::{
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value,
};
use tokio::sync::Notify;

use crate::telemetry::outage::REDIS;

/// Which Redis `REDIS_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    /// One server (with or without replicas behind a failover address).
    Standalone,
    /// A Redis Cluster: `REDIS_URL` lists one or more seed nodes,
    /// comma-separated.
    Cluster,
}

/// How many times the cluster client retries a command a node did not
/// answer (after refreshing the topology), and its waits between tries:
/// short, because the caller's own timeout is a few milliseconds and a
/// failover takes about a second (the cluster's node timeout plus an
/// election).
const CLUSTER_RETRIES: u32 = 2;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 100;

/// An open connection to a standalone Redis or to a Redis Cluster; cheap to
/// clone, and used through the redis crate's command traits like either.
#[derive(Clone)]
pub enum Connection {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// What the supervisor connects with.
enum Client {
    Standalone(redis::Client),
    Cluster(ClusterClient),
}

/// Why one Redis exchange gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("not connected")]
    NotConnected,
    #[error(transparent)]
    Failed(RedisError),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Renews the lease `KEYS[1]` by `ARGV[2]` ms if it still holds the token
/// `ARGV[1]` (1), else leaves it (0): how a replica keeps a turn or a slot
/// it took with `SET NX PX` without extending another replica's.
pub const RENEW_IF_HELD: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Pause between attempts to connect while there is no connection.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(250);
/// How often an open connection is checked with a `PING`.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive unanswered checks after which the connection is dropped.
pub const HEALTH_CHECK_FAILURES: u32 = 2;

/// A handle on the shared connection; cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    shared: Arc<Shared>,
}

/// Which connection a command ran on: a failure on one the link has
/// already replaced says nothing about the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

struct Shared {
    client: Client,
    /// One client per node to subscribe on: the Redis, or each seed node of
    /// a cluster (a message published on any node of a cluster reaches
    /// subscribers on every node).
    subscribers: Vec<redis::Client>,
    /// The open connection and its epoch, `None` while there is none.
    current: RwLock<Option<(Epoch, Connection)>>,
    /// Raised by [`RedisLink::failed`]: the supervisor reconnects.
    broken: Notify,
    /// Bounds a connect and each response inside the client, and each
    /// health check.
    timeout: Duration,
}

impl RedisLink {
    /// Starts the supervisor, which connects in the background: nobody
    /// waits for Redis, the daemon starts without it. Must be called
    /// within a Tokio runtime. A `rediss://` URL connects over TLS, trusting
    /// the system's roots, or only `ca_pem` (PEM certificates) when given.
    /// `redis_url` is one URL, or for a cluster one or more seed nodes'
    /// URLs, comma-separated.
    pub fn new(
        redis_url: &str,
        mode: RedisMode,
        ca_pem: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, RedisError> {
        let urls: Vec<&str> = redis_url.split(',').map(str::trim).collect();
        let tls = urls.iter().any(|url| url.starts_with("rediss://"));
        // a CA means nothing to a plaintext URL
        let certificates = ca_pem
            .filter(|_| tls)
            .map(|root_cert| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            });
        let open = |url: &str| match &certificates {
            Some(certificates) => redis::Client::build_with_tls(url, certificates.clone()),
            None => redis::Client::open(url),
        };
        let subscribers = urls
            .iter()
            .map(|url| open(url))
            .collect::<Result<Vec<_>, _>>()?;
        let client = match (mode, urls.as_slice()) {
            (RedisMode::Standalone, [url]) => Client::Standalone(open(url)?),
            (RedisMode::Standalone, _) => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "several URLs name a Redis Cluster's seed nodes",
                    "set SWITCHBOARD_REDIS_MODE=cluster, or give one URL".to_owned(),
                )))
            }
            (RedisMode::Cluster, urls) => {
                let mut builder = ClusterClientBuilder::new(urls.to_vec())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                    .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                Client::Cluster(builder.build()?)
            }
        };
        let link = Self {
            shared: Arc::new(Shared {
                client,
                subscribers,
                current: RwLock::new(None),
                broken: Notify::new(),
                timeout,
            }),
        };
        tokio::spawn(supervise(Arc::downgrade(&link.shared)));
        Ok(link)
    }

    /// A connection of its own for `SUBSCRIBE`, to the Redis or to one of a
    /// cluster's seed nodes (`attempt` picks which, round the list), opened
    /// within the link's timeout.
    pub async fn subscriber(&self, attempt: usize) -> Result<redis::aio::PubSub, String> {
        let subscribers = &self.shared.subscribers;
        let client = &subscribers[attempt % subscribers.len()];
        match tokio::time::timeout(self.shared.timeout, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.shared.timeout)),
        }
    }

    /// Whether a connection is open now. Background work checks it first,
    /// so that its own attempts while there is none are not reported as
    /// Redis failing (the supervisor reports the outage).
    pub fn is_connected(&self) -> bool {
        self.get().is_some()
    }

    /// The connection, if one is open, and its epoch for [`Self::failed`];
    /// `None` at once otherwise.
    pub fn get(&self) -> Option<(Connection, Epoch)> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|(epoch, connection)| (connection.clone(), *epoch))
    }

    /// Runs one exchange on the current connection within `timeout`, and
    /// tells the Redis outage reporter how it went. A failure that broke
    /// the connection drops it ([`RedisLink::failed`]).
    pub async fn run<T, F>(
        &self,
        timeout: Duration,
        exchange: impl FnOnce(Connection) -> F,
    ) -> Result<T, CommandError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match self.get() {
            None => Err(CommandError::NotConnected),
            Some((connection, epoch)) => {
                match tokio::time::timeout(timeout, exchange(connection)).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(error)) => {
                        self.failed(epoch, &error);
                        Err(CommandError::Failed(error))
                    }
                    Err(_) => Err(CommandError::TimedOut(timeout)),
                }
            }
        };
        match &result {
            Ok(_) => REDIS.succeeded(),
            Err(error) => REDIS.failed(error),
        }
        result
    }

    /// Tells the link that a command on the connection of `epoch` failed.
    /// If a standalone connection itself broke (closed, reset, refused), it
    /// is dropped now and reopened in the background; other errors (a
    /// script error, a wrong type) leave it, and so does any error on a
    /// cluster connection, which reconnects to a failed node by itself.
    pub fn failed(&self, epoch: Epoch, error: &RedisError) {
        if matches!(self.shared.client, Client::Cluster(_)) {
            return;
        }
        let broken = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error();
        if broken && self.shared.take_if(epoch) {
            tracing::warn!(%error, "lost the connection to Redis; serving without it until it answers again");
            self.shared.broken.notify_one();
        }
    }
}

impl Shared {
    fn current(&self) -> std::sync::RwLockWriteGuard<'_, Option<(Epoch, Connection)>> {
        self.current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self, epoch: Epoch, connection: Connection) {
        *self.current() = Some((epoch, connection));
        metrics::gauge!("switchboard_redis_connected").set(1.0);
    }

    /// Drops the connection of `epoch`, if it is the current one. Returns
    /// whether it did.
    fn take_if(&self, epoch: Epoch) -> bool {
        let mut current = self.current();
        if current.as_ref().is_some_and(|(open, _)| *open == epoch) {
            *current = None;
            metrics::gauge!("switchboard_redis_connected").set(0.0);
            true
        } else {
            false
        }
    }

    async fn connect(&self) -> Result<Connection, String> {
        let connect = async {
            match &self.client {
                Client::Standalone(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(self.timeout)
                        .set_response_timeout(self.timeout);
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Connection::Standalone)
                }
                // the timeouts are the client's, set when it was built
                Client::Cluster(client) => {
                    client.get_async_connection().await.map(Connection::Cluster)
                }
            }
        };
        // the whole handshake (for a cluster, the topology too), not only
        // the TCP connect, is bounded
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Whether Redis answers a `PING` on `connection` in time: for a
    /// cluster, whether any master does (one that failed is the cluster
    /// client's to replace, not a reason to drop every node's connection).
    async fn answers(&self, connection: &mut Connection) -> bool {
        let ping = redis::cmd("PING");
        let answer = match connection {
            Connection::Standalone(c) => {
                tokio::time::timeout(self.timeout, ping.query_async::<String>(c))
                    .await
                    .is_ok_and(|answer| answer.is_ok())
            }
            Connection::Cluster(c) => {
                let everywhere = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::OneSucceeded),
                ));
                tokio::time::timeout(self.timeout, c.route_command(&ping, everywhere))
                    .await
                    .is_ok_and(|answer| answer.is_ok())
            }
        };
        answer
    }
}

/// Keeps the link's connection open for as long as any handle on it
/// exists.
async fn supervise(link: Weak<Shared>) {
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut epoch = Epoch(0);
    metrics::gauge!("switchboard_redis_connected").set(0.0);
    loop {
        let Some(shared) = link.upgrade() else {
            return;
        };
        let mut connection = match shared.connect().await {
            Ok(connection) => connection,
            Err(error) => {
                // logged as the outage's start and summaries, not per attempt
                REDIS.failed(&error);
                down_since.get_or_insert_with(tokio::time::Instant::now);
                drop(shared);
                tokio::time::sleep(RECONNECT_INTERVAL).await;
                continue;
            }
        };
        match down_since.take() {
            Some(since) => {
                tracing::info!(down_for = ?since.elapsed(), "connected to Redis again")
            }
            None => tracing::info!("connected to Redis"),
        }
        epoch = Epoch(epoch.0 + 1);
        // a failure reported before this connection existed is not about it
        let _ = shared.broken.notified().now_or_never();
        shared.open(epoch, connection.clone());
        drop(shared);

        let mut missed = 0;
        while missed < HEALTH_CHECK_FAILURES {
            let Some(shared) = link.upgrade() else {
                return;
            };
            tokio::select! {
                () = shared.broken.notified() => break,
                () = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {
                    if shared.answers(&mut connection).await {
                        missed = 0;
                    } else {
                        missed += 1;
                    }
                }
            }
        }
        let Some(shared) = link.upgrade() else {
            return;
        };
        if shared.take_if(epoch) {
            tracing::warn!("Redis stopped answering; serving without it until it answers again");
        }
        down_since = Some(tokio::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_url_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let timeout = Duration::from_millis(50);
            for mode in [RedisMode::Standalone, RedisMode::Cluster] {
                assert!(RedisLink::new("not a url", mode, None, timeout).is_err());
            }
            // several seed nodes are a cluster's
            let seeds = "redis://127.0.0.1:1/,redis://127.0.0.1:2/";
            let error = RedisLink::new(seeds, RedisMode::Standalone, None, timeout)
                .err()
                .expect("refused");
            assert!(
                error.to_string().contains("SWITCHBOARD_REDIS_MODE=cluster"),
                "{error}"
            );
            assert!(RedisLink::new(seeds, RedisMode::Cluster, None, timeout).is_ok());
        });
    }
}
