//! The one Redis connection a replica shares between the route cache (L2)
//! and admission, and the task that keeps it open.
//!
//! Redis is never waited for. [`RedisLink::get`] answers at once: the open
//! connection, or `None` while there is none, and the caller goes on
//! without Redis (L2 falls through to PostgreSQL, admission applies its
//! Redis-down policy). A supervisor task owns the connection's life:
//!
//! * it connects, and while there is no connection retries every
//!   [`RECONNECT_INTERVAL`], so a Redis that answers again is used again
//!   within about that long (plus one connect);
//! * a command that fails because the connection broke ([`RedisLink::failed`])
//!   drops the connection at once: from then on requests skip Redis
//!   without paying a timeout each, until the supervisor has reconnected;
//! * a connection whose socket stays open while Redis does not answer (a
//!   frozen process, a partition) is found by a health check every
//!   [`HEALTH_CHECK_INTERVAL`] and dropped after [`HEALTH_CHECK_FAILURES`]
//!   missed checks. A single slow answer never drops it: callers' own
//!   timeouts are far shorter than a check's, and a loaded Redis is slow,
//!   not gone.
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
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, RedisError};
use tokio::sync::Notify;

use crate::telemetry::outage::REDIS;

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
    client: redis::Client,
    /// The open connection and its epoch, `None` while there is none.
    current: RwLock<Option<(Epoch, MultiplexedConnection)>>,
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
    pub fn new(
        redis_url: &str,
        ca_pem: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
        let client = match ca_pem {
            // a CA means nothing to a plaintext URL
            Some(root_cert) if redis_url.starts_with("rediss://") => redis::Client::build_with_tls(
                redis_url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            _ => redis::Client::open(redis_url)?,
        };
        let link = Self {
            shared: Arc::new(Shared {
                client,
                current: RwLock::new(None),
                broken: Notify::new(),
                timeout,
            }),
        };
        tokio::spawn(supervise(Arc::downgrade(&link.shared)));
        Ok(link)
    }

    /// The connection, if one is open, and its epoch for [`Self::failed`];
    /// `None` at once otherwise.
    pub fn get(&self) -> Option<(MultiplexedConnection, Epoch)> {
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
        exchange: impl FnOnce(MultiplexedConnection) -> F,
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
    /// If the connection itself broke (closed, reset, refused), it is
    /// dropped now and reopened in the background; other errors (a script
    /// error, a wrong type) leave it.
    pub fn failed(&self, epoch: Epoch, error: &RedisError) {
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
    fn current(&self) -> std::sync::RwLockWriteGuard<'_, Option<(Epoch, MultiplexedConnection)>> {
        self.current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self, epoch: Epoch, connection: MultiplexedConnection) {
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

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        // the whole handshake, not only the TCP connect, is bounded
        match tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Whether Redis answers a `PING` on `connection` in time.
    async fn answers(&self, connection: &mut MultiplexedConnection) -> bool {
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(self.timeout, ping.query_async::<String>(connection));
        matches!(answer.await, Ok(Ok(_)))
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
            assert!(RedisLink::new("not a url", None, Duration::from_millis(50)).is_err());
        });
    }
}
