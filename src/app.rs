//! The application: built from a [`ServeConfig`], bound to its listeners,
//! then run until a shutdown signal. `main` and the integration tests drive
//! the same code; tests bind port 0 and stop it with their own signal.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{server::TcpIncoming, Certificate, Identity, Server, ServerTlsConfig},
};

use crate::{
    admin::{self, AdminState},
    admission::Admission,
    api::{stamp_arrival, CallRouterService},
    config::{ServeConfig, TlsConfig, MAX_LOCAL_ERROR_RESET_STREAMS},
    invalidation,
    proto::{self, call_router_server::CallRouterServer},
    recorder::{Recorder, Spool},
    routing::{RouteCache, Router},
    store::{redis::RedisTier, redis_link::RedisLink, PgStore},
    telemetry,
};

/// What the router resolves through: L1 (in process) → L2 (Redis) → L3
/// (PostgreSQL).
pub(crate) type AppResolver = Arc<RouteCache<RedisTier<PgStore>>>;
type RouterService = CallRouterServer<CallRouterService<AppResolver>>;

/// A built, bound, not yet running Switchboard.
pub struct Application {
    config: ServeConfig,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    store: PgStore,
    spool: Spool,
    /// gRPC over TLS, when configured.
    tls: Option<ServerTlsConfig>,
}

impl Application {
    /// Validates the configuration, builds the database pool, opens the
    /// recorder's spool and binds both listeners. Does not wait for the
    /// database: a daemon started during a database outage comes up,
    /// reports not ready, and recovers by itself.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        // before anything counts: opening the spool already may
        telemetry::metrics_handle();
        let store = PgStore::new(
            config.database.database_url.expose_secret(),
            &config.pool_settings(),
        )
        .map_err(anyhow::Error::msg)?;
        for (setting, url) in [
            ("DATABASE_URL", &config.database.database_url),
            ("DATABASE_DIRECT_URL", &config.database.database_direct_url),
        ] {
            crate::store::connection::check_tls(
                url.expose_secret(),
                config.database.db_connect_timeout,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{setting}: {e}"))?;
        }
        let spool = Spool::open(config.spool_settings()).with_context(|| {
            format!(
                "cannot open the spool in {} (SWITCHBOARD_SPOOL_DIR)",
                config.spool.spool_dir.display()
            )
        })?;
        let tls = tls_config(&config.tls)?;
        if config.tls.tls_terminated_upstream
            && config.tokens_in_clear(&config.tokens().map_err(anyhow::Error::msg)?)
        {
            tracing::warn!(
                grpc_addr = %config.grpc.grpc_addr,
                "serving bearer tokens without TLS on a non-loopback address: whatever is in \
                 front must terminate TLS (SWITCHBOARD_TLS_TERMINATED_UPSTREAM=true)"
            );
        }
        let grpc_listener = TcpListener::bind(config.grpc.grpc_addr)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", config.grpc.grpc_addr))?;
        let admin_listener = TcpListener::bind(config.admin.admin_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for admin HTTP on {}",
                    config.admin.admin_addr
                )
            })?;
        Ok(Self {
            config,
            grpc_listener,
            admin_listener,
            store,
            spool,
            tls,
        })
    }

    /// The bound gRPC address (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops in order: health says
    /// NOT_SERVING, listeners stop accepting, in-flight requests finish,
    /// the recorder drains (each bounded by the shutdown grace). Returns an
    /// error if a server or the recorder stops by itself.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Application {
            config,
            grpc_listener,
            admin_listener,
            store,
            spool,
            tls,
        } = self;
        let grpc_addr = grpc_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        let redis_ca = match &config.redis.redis_ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("cannot read SWITCHBOARD_REDIS_CA_FILE {}", path.display())
            })?),
            None => None,
        };
        let redis = RedisLink::new(
            config.redis.redis_url.expose_secret(),
            redis_ca,
            // connects, health checks and responses inside the client; every
            // use bounds its own wait far shorter
            Duration::from_millis(500),
        )
        .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))?;
        let l2 = RedisTier::with_connection(redis.clone(), store.clone(), config.redis_settings());
        let cache = RouteCache::new(l2, config.cache_settings());
        let admission = Admission::new(redis, config.admission_settings());
        // stopped only after the gRPC server has answered its last request
        let (recorder_stop_tx, recorder_stop_rx) = watch::channel(false);
        let (recorder, mut batcher) = Recorder::start(
            store.clone(),
            config.recorder_settings(),
            spool,
            recorder_stop_rx,
            config.shutdown_grace,
        );
        let router = Arc::new(Router::new(
            cache.clone(),
            store.clone(),
            admission,
            recorder,
        ));
        // everything but health is behind the gateways' tokens
        let authenticate = config.tokens().map_err(anyhow::Error::msg)?.interceptor();
        let service = InterceptedService::new(
            CallRouterServer::new(CallRouterService::new(router, config.limits()))
                .max_decoding_message_size(config.grpc.max_message_bytes)
                .max_encoding_message_size(config.grpc.max_message_bytes),
            authenticate.clone(),
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<RouterService>().await;
        let reflection_v1 = InterceptedService::new(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()?,
            authenticate.clone(),
        );
        let reflection_v1alpha = InterceptedService::new(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1alpha()?,
            authenticate,
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut grpc: JoinHandle<anyhow::Result<()>> = tokio::spawn({
            let stopped = stopped(stop_rx.clone());
            let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
            let tls = tls.clone();
            let max_in_flight = config.grpc.max_in_flight;
            let max_concurrent_streams = config.grpc.max_concurrent_streams;
            async move {
                let mut server = Server::builder()
                    // bounded per connection (see the default's docs)
                    .max_concurrent_streams(max_concurrent_streams)
                    // Rapid reset (CVE-2023-44487): h2 closes a connection
                    // (GOAWAY) once this many streams the client reset are
                    // waiting to be taken. h2's 20 would also close a
                    // gateway's connection that cancels requests past their
                    // deadline during an overload, losing every call on it;
                    // as many as may be in flight still bounds the work a
                    // resetting client can cause.
                    .http2_max_pending_accept_reset_streams(Some(max_in_flight))
                    // resets forced by a peer's protocol errors: h2's bound
                    .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS));
                if let Some(tls) = tls {
                    server = server
                        .tls_config(tls)
                        .context("invalid TLS configuration")?;
                }
                server
                    .layer(tower::util::MapRequestLayer::new(
                        stamp_arrival::<tonic::body::Body>,
                    ))
                    .add_service(health_service)
                    .add_service(reflection_v1)
                    .add_service(reflection_v1alpha)
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .context("gRPC server failed")
            }
        });
        let mut listener = invalidation::spawn(
            config
                .database
                .database_direct_url
                .expose_secret()
                .to_string(),
            cache.clone(),
            stop_rx.clone(),
        )
        .context("cannot start the invalidation listener's thread")?;
        let warm = Arc::new(WarmStart::default());
        tokio::spawn(warm_start(
            store.clone(),
            cache.clone(),
            config.cache.cache_warm_limit,
            warm.clone(),
        ));
        let mut admin: JoinHandle<anyhow::Result<()>> = tokio::spawn({
            let state = AdminState {
                metrics: telemetry::metrics_handle(),
                store,
                listening: Arc::new(move || cache.is_confirmed()),
                warmed: Arc::new(move || warm.is_finished()),
            };
            let stopped = stopped(stop_rx);
            async move {
                admin::serve(admin_listener, state, stopped)
                    .await
                    .context("admin HTTP server failed")
            }
        });
        tracing::info!(%grpc_addr, %admin_addr, "switchboard serving");

        tokio::select! {
            () = shutdown => {}
            result = &mut grpc => return Err(unexpected_stop("gRPC server", result)),
            result = &mut admin => return Err(unexpected_stop("admin server", result)),
            result = &mut listener => {
                return Err(unexpected_stop("invalidation listener", result.map(Ok)));
            }
            result = &mut batcher => return Err(unexpected_stop("recorder", result.map(Ok))),
        }

        tracing::info!("shutting down: health NOT_SERVING, draining in-flight requests");
        health.set_not_serving::<RouterService>().await;
        let _ = stop_tx.send(true);
        let grace = config.shutdown_grace;
        match tokio::time::timeout(grace, &mut grpc).await {
            Ok(result) => result.context("gRPC server task panicked")??,
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "shutdown grace expired with gRPC requests in flight"
                );
                grpc.abort();
            }
        }
        tracing::info!("draining the recorder");
        let _ = recorder_stop_tx.send(true);
        // the batcher bounds its own drain by the grace; this only guards
        // against it hanging
        match tokio::time::timeout(grace + Duration::from_secs(1), &mut batcher).await {
            Ok(result) => result.context("recorder task panicked")?,
            Err(_) => {
                tracing::error!(?grace, "recorder did not finish draining");
                batcher.abort();
            }
        }
        match tokio::time::timeout(grace, &mut admin).await {
            Ok(result) => result.context("admin server task panicked")??,
            Err(_) => admin.abort(),
        }
        // on a thread of its own, it cannot be aborted: it stops at `stop`
        match tokio::time::timeout(grace, &mut listener).await {
            Ok(result) => result
                .map_err(anyhow::Error::msg)
                .context("invalidation listener failed")?,
            Err(_) => tracing::warn!(
                ?grace,
                "the invalidation listener did not stop within the grace"
            ),
        }
        tracing::info!("switchboard stopped");
        Ok(())
    }
}

/// The server's TLS settings from the certificate, key and client CA
/// files, read now so that a missing or unreadable file stops the start.
fn tls_config(config: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, setting: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {} ({setting})", path.display()))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(cert, "SWITCHBOARD_TLS_CERT")?,
        read(key, "SWITCHBOARD_TLS_KEY")?,
    ));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(
            ca,
            "SWITCHBOARD_TLS_CLIENT_CA",
        )?));
    }
    // the server only builds its acceptor when it starts: try it now
    Server::builder()
        .tls_config(tls.clone())
        .context("SWITCHBOARD_TLS_CERT / SWITCHBOARD_TLS_KEY / SWITCHBOARD_TLS_CLIENT_CA are not a usable certificate, key and CA")?;
    Ok(Some(tls))
}

/// Warm start's progress, reported by `/readyz`.
#[derive(Debug, Default)]
pub struct WarmStart {
    finished: std::sync::atomic::AtomicBool,
}

impl WarmStart {
    pub fn is_finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Preloads every active route into L1 when there are at most `limit`.
/// Waits for the invalidation listener first, so no change can fall between
/// the preload and the feed that keeps it fresh. Finishes (and lets the
/// daemon report ready) whatever happens: a failed preload means a cold
/// start, not an unready daemon.
async fn warm_start(store: PgStore, cache: AppResolver, limit: usize, warm: Arc<WarmStart>) {
    if limit > 0 {
        while !cache.is_confirmed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match store.active_routes(limit).await {
            Ok(Some(routes)) => {
                let loaded = cache.preload(routes).await;
                tracing::info!(routes = loaded, "warm start: routes preloaded");
            }
            Ok(None) => tracing::info!(
                limit,
                "warm start skipped: more active numbers than the limit"
            ),
            Err(error) => tracing::warn!(%error, "warm start failed; starting cold"),
        }
    }
    warm.finished
        .store(true, std::sync::atomic::Ordering::Release);
}

/// Resolves once the stop flag is raised (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn unexpected_stop(
    what: &str,
    result: Result<anyhow::Result<()>, impl std::fmt::Display>,
) -> anyhow::Error {
    let error = match result {
        Ok(Ok(())) => anyhow::anyhow!("{what} stopped without being asked to"),
        Ok(Err(error)) => error.context(format!("{what} stopped")),
        Err(died) => anyhow::anyhow!("{what} task died: {died}"),
    };
    tracing::error!(
        error = format!("{error:#}"),
        "a server stopped unexpectedly"
    );
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{Resolver, E164},
        routing::CacheSettings,
        store::{redis::RedisSettings, PoolSettings},
    };

    /// A request's future is moved as it runs (into the RPC's box, into its
    /// timeout), so whatever it holds is copied with every request. The
    /// tiers below L1 (a Redis round trip, a pooled query, the coalescing
    /// around them) once made an L1 hit's future 28 KB: a third of the
    /// daemon's instructions per lookup were those copies.
    #[test]
    fn an_l1_hit_does_not_carry_the_lower_tiers() {
        // the Redis connection's supervisor is spawned (and never run)
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _runtime = runtime.enter();
        let unreachable = Duration::from_millis(1);
        let store = PgStore::new(
            "postgres://switchboard_daemon@127.0.0.1:1/none",
            &PoolSettings {
                max_size: 1,
                wait_timeout: unreachable,
                connect_timeout: unreachable,
                query_timeout: unreachable,
            },
        )
        .unwrap();
        let l2 = RedisTier::new(
            "redis://127.0.0.1:1",
            store,
            RedisSettings {
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(5),
                timeout: unreachable,
                tombstone_ttl: Duration::from_secs(5),
                key_prefix: "test".into(),
            },
        )
        .unwrap();
        let resolver: AppResolver = RouteCache::new(
            l2,
            CacheSettings {
                capacity: 10,
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(5),
                unconfirmed_ttl: Duration::from_secs(5),
                max_stale: Duration::from_secs(60),
            },
        );
        let number = E164::from_canonical("+14155550100").unwrap();
        let resolving = resolver.resolve(&number);
        let size = std::mem::size_of_val(&resolving);
        assert!(size <= 2048, "resolving from L1 is a {size}-byte future");
    }
}
