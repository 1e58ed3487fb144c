//! The stages of [`Application::build`](super::Application::build) that
//! reach outside the process: the database, the spool, the listeners and
//! Redis.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::{
    config::{RedisConfig, ServeConfig},
    recorder::{Spool, SpoolSettings},
    store::{redis_link::RedisLink, PgStore},
};

/// The pool behind the transaction pooler, and both database URLs checked
/// against their `sslmode`. Connects nothing yet: a daemon started during
/// a database outage comes up, reports not ready, and recovers by itself.
pub(super) async fn connect_store(config: &ServeConfig) -> anyhow::Result<PgStore> {
    let database = &config.database;
    let store = PgStore::new(
        database.database_url.expose_secret(),
        &config.pool_settings(),
    )?;
    for (setting, url) in [
        ("DATABASE_URL", &database.database_url),
        ("DATABASE_DIRECT_URL", &database.database_direct_url),
    ] {
        crate::store::connection::check_tls(url.expose_secret(), database.db_connect_timeout)
            .await
            .map_err(|e| anyhow::anyhow!("{setting}: {e}"))?;
    }
    Ok(store)
}

/// Opens the recorder's spool on a blocking thread: it creates, locks and
/// scans the directory, and syncs what it changes there.
pub(super) async fn open_spool(settings: SpoolSettings) -> anyhow::Result<Spool> {
    let dir = settings.dir.clone();
    let context = || {
        format!(
            "cannot open the spool in {} (SWITCHBOARD_SPOOL_DIR)",
            dir.display()
        )
    };
    tokio::task::spawn_blocking(move || Spool::open(settings))
        .await
        .with_context(context)?
        .with_context(context)
}

/// Warns when bearer tokens reach a non-loopback listener without TLS
/// because a proxy in front is said to terminate it (refused otherwise, by
/// validation).
pub(super) fn warn_if_tokens_in_clear(config: &ServeConfig) -> anyhow::Result<()> {
    if config.tls.tls_terminated_upstream && config.tokens_in_clear(&config.tokens()?) {
        tracing::warn!(
            grpc_addr = %config.grpc.grpc_addr,
            "serving bearer tokens without TLS on a non-loopback address: whatever is in \
             front must terminate TLS (SWITCHBOARD_TLS_TERMINATED_UPSTREAM=true)"
        );
    }
    Ok(())
}

/// Binds the listener for `what` (gRPC, admin HTTP).
pub(super) async fn listen(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// The one Redis connection the route cache (L2) and admission share.
pub(super) fn redis_link(config: &RedisConfig) -> anyhow::Result<RedisLink> {
    // read once, at start
    let ca = match &config.redis_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| {
            format!("cannot read SWITCHBOARD_REDIS_CA_FILE {}", path.display())
        })?),
        None => None,
    };
    RedisLink::new(
        config.redis_url.expose_secret(),
        config.redis_mode,
        ca,
        // connects, health checks and responses inside the client; every
        // use bounds its own wait far shorter
        Duration::from_millis(500),
    )
    .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))
}
