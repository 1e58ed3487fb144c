//! The application: built from a [`ServeConfig`], bound to its listeners,
//! then run until a shutdown signal. `main` and the integration tests drive
//! the same code; tests bind port 0 and stop it with their own signal.
//!
//! [`Application::build`] wires everything: the database pool, the spool,
//! the tiers, the router, the services, the listeners (`wiring.rs`,
//! `grpc.rs`). [`Application::run_until_stopped`] spawns the servers and
//! the background tasks, supervises them, and drains them in order
//! (`run.rs`).

mod grpc;
mod last_known_good;
mod run;
mod warm;
mod wiring;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};

pub use warm::WarmStart;

use self::{grpc::GrpcServer, run::RecorderTask};
use crate::{
    admission::Admission,
    api::CallRouterService,
    config::ServeConfig,
    invalidation::Progress,
    proto::call_router_server::CallRouterServer,
    routing::{RouteCache, Router},
    store::{redis::RedisTier, redis_link::RedisLink, PgStore},
    telemetry,
};

/// What the router resolves through: L1 (in process) → L2 (Redis) → L3
/// (PostgreSQL).
pub(crate) type AppResolver = Arc<RouteCache<RedisTier<PgStore>>>;
type RouterService = CallRouterServer<CallRouterService<AppResolver>>;

/// A built, bound, not yet serving Switchboard.
pub struct Application {
    config: ServeConfig,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    store: PgStore,
    cache: AppResolver,
    /// Where the invalidation listener starts, and the copy records.
    progress: Arc<Progress>,
    restored: Arc<last_known_good::Restored>,
    redis: RedisLink,
    grpc: GrpcServer,
    /// Already running: the router needs its queue.
    recorder: RecorderTask,
}

impl Application {
    /// Validates the configuration, builds the database pool, opens the
    /// recorder's spool, binds both listeners, then wires the route cache's
    /// tiers, admission, the recorder, the router and the gRPC services.
    /// Does not wait for the database or Redis: a daemon started during an
    /// outage comes up, reports not ready, and recovers by itself.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        // before anything counts: opening the spool already may
        telemetry::metrics_handle();
        let store = wiring::connect_store(&config).await?;
        let spool = wiring::open_spool(config.spool_settings()).await?;
        let tls = grpc::tls_config(&config.tls)?;
        wiring::warn_if_tokens_in_clear(&config)?;
        let grpc_listener = wiring::listen(config.grpc.grpc_addr, "gRPC").await?;
        let admin_listener = wiring::listen(config.admin.admin_addr, "admin HTTP").await?;

        let redis = wiring::redis_link(&config.redis)?;
        let l2 = RedisTier::with_connection(redis.clone(), store.clone(), config.redis_settings());
        let cache = RouteCache::new(l2, config.cache_settings());
        // before the listener starts: it replays from the copy's change
        let restored = Arc::new(last_known_good::Restored::default());
        let progress = if config.cache.cache_snapshot_interval.is_zero() {
            Progress::starting_at(None)
        } else {
            last_known_good::restore(&cache, &config.spool.spool_dir, &restored).await
        };
        let admission = Admission::new(redis.clone(), config.admission_settings());
        let (recorder, recorder_task) = RecorderTask::start(&config, store.clone(), spool);
        let router = Arc::new(Router::new(
            cache.clone(),
            store.clone(),
            admission,
            recorder,
        ));
        let grpc = GrpcServer::new(&config, router, tls).await?;
        Ok(Self {
            config,
            grpc_listener,
            admin_listener,
            store,
            cache,
            progress,
            restored,
            redis,
            grpc,
            recorder: recorder_task,
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
    /// error if a server, the recorder or the invalidation listener stops
    /// by itself, or warm start fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let grpc_addr = self.grpc_listener.local_addr()?;
        let admin_addr = self.admin_listener.local_addr()?;
        let (stop, stopping) = watch::channel(false);
        let mut tasks = self.spawn(stopping)?;
        tracing::info!(%grpc_addr, %admin_addr, "switchboard serving");
        tasks.supervise(shutdown).await?;
        tasks.drain(stop).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        domain::{Resolver, E164},
        routing::CacheSettings,
        store::{
            redis::RedisSettings,
            redis_link::{RedisLink, RedisMode},
            PoolSettings,
        },
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
        let link = RedisLink::new(
            "redis://127.0.0.1:1",
            RedisMode::Standalone,
            None,
            unreachable,
        )
        .unwrap();
        let l2 = RedisTier::with_connection(
            link,
            store,
            RedisSettings {
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(5),
                timeout: unreachable,
                tombstone_ttl: Duration::from_secs(5),
                key_prefix: "test".into(),
            },
        );
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
