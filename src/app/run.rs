//! Running a built application: spawn the servers and the background
//! tasks, supervise them until shutdown, then drain them in order.

use std::{fmt::Display, future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::{
    sync::watch,
    task::{AbortHandle, JoinError, JoinHandle},
};
use tonic_health::server::HealthReporter;

use super::{
    last_known_good,
    warm::{warm_start, WarmStart},
    AppResolver, Application, RouterService,
};
use crate::{
    admin::{self, AdminState},
    admission::{reconcile, Admission},
    config::ServeConfig,
    invalidation::{self, ListenerThread},
    recorder::{Recorder, Spool},
    store::PgStore,
    telemetry,
};

/// Everything that runs while the daemon serves.
pub(super) struct Tasks {
    grpc: JoinHandle<anyhow::Result<()>>,
    admin: JoinHandle<anyhow::Result<()>>,
    listener: ListenerThread,
    /// Resolves only if warm start fails (see [`failure_of`]).
    warm: Pin<Box<dyn Future<Output = JoinError> + Send>>,
    warm_abort: AbortHandle,
    recorder: RecorderTask,
    /// Lease reconciliation: stateless between passes, aborted at drain.
    reconciler: JoinHandle<()>,
    /// The route cache's copy on disk, written once more at drain.
    last_known_good: Option<LastKnownGood>,
    cache: AppResolver,
    health: HealthReporter,
    grace: Duration,
}

impl Application {
    /// Spawns the gRPC and admin servers, the invalidation listener's
    /// thread and warm start (the recorder's batcher already runs).
    pub(super) fn spawn(self, stop: watch::Receiver<bool>) -> anyhow::Result<Tasks> {
        let (config, cache, store) = (self.config, self.cache, self.store);
        let health = self.grpc.health.clone();
        let load = self.grpc.limiter.clone();
        let grpc = tokio::spawn(self.grpc.serve(self.grpc_listener, stopped(stop.clone())));
        let direct_url = config
            .database
            .database_direct_url
            .expose_secret()
            .to_string();
        let relay_listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let listener = match config.cache.invalidation_listeners {
            0 => invalidation::spawn(
                direct_url,
                cache.clone(),
                self.progress.clone(),
                stop.clone(),
            )
            .context("cannot start the invalidation listener's thread")?,
            listeners => invalidation::relay::spawn(
                direct_url,
                cache.clone(),
                self.progress.clone(),
                store.clone(),
                self.redis.clone(),
                invalidation::relay::RelaySettings {
                    listeners,
                    key_prefix: config.redis.redis_key_prefix.clone(),
                    listening: relay_listening.clone(),
                },
                stop.clone(),
            ),
        };
        let snapshot_interval = config.cache.cache_snapshot_interval;
        let last_known_good = (!snapshot_interval.is_zero()).then(|| LastKnownGood {
            dir: config.spool.spool_dir.clone(),
            progress: self.progress.clone(),
            keeper: tokio::spawn(last_known_good::keep(
                cache.clone(),
                self.progress.clone(),
                config.spool.spool_dir.clone(),
                snapshot_interval,
                stop.clone(),
            )),
        });
        let warmed = Arc::new(WarmStart::default());
        let warm = tokio::spawn(warm_start(
            store.clone(),
            cache.clone(),
            config.cache.cache_warm_limit,
            warmed.clone(),
        ));
        let reconciler = tokio::spawn(reconcile::run(
            Admission::new(self.redis.clone(), config.admission_settings()),
            store.clone(),
            config.admission.lease_reconcile_interval,
            stop.clone(),
        ));
        let redis = self.redis.clone();
        let (holding, confirmed, restored) = (cache.clone(), cache.clone(), self.restored.clone());
        let directory = cache.clone();
        let state = AdminState {
            metrics: telemetry::metrics_handle(),
            store,
            redis: Arc::new(move || redis.get().is_some()),
            holds_routes: Arc::new(move || holding.holds_routes()),
            relay: (config.cache.invalidation_listeners > 0).then(|| -> admin::Check {
                Arc::new(move || relay_listening.load(std::sync::atomic::Ordering::Acquire))
            }),
            restored: Arc::new(move || restored.restored()),
            listening: Arc::new(move || confirmed.is_confirmed()),
            warmed: Arc::new(move || warmed.is_finished()),
            load,
            directory: Arc::new(move || directory.directory_len()),
        };
        let admin_listener = self.admin_listener;
        let admin = tokio::spawn(async move {
            admin::serve(admin_listener, state, stopped(stop))
                .await
                .context("admin HTTP server failed")
        });
        Ok(Tasks {
            grpc,
            admin,
            listener,
            warm_abort: warm.abort_handle(),
            warm: Box::pin(failure_of(warm)),
            recorder: self.recorder,
            reconciler,
            last_known_good,
            cache,
            health,
            grace: config.shutdown_grace,
        })
    }
}

impl Tasks {
    /// Waits for `shutdown`; a server or task that stops by itself before
    /// (warm start only by failing) is an error.
    pub(super) async fn supervise(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            () = shutdown => Ok(()),
            result = &mut self.grpc => Err(unexpected_stop("gRPC server", result)),
            result = &mut self.admin => Err(unexpected_stop("admin server", result)),
            result = &mut self.listener => {
                Err(unexpected_stop("invalidation listener", result.map(Ok)))
            }
            result = &mut self.recorder.batcher => {
                Err(unexpected_stop("recorder", result.map(Ok)))
            }
            failure = &mut self.warm => Err(unexpected_stop("warm start", Err(failure))),
        }
    }

    /// Stops in order: health says NOT_SERVING, listeners stop accepting,
    /// in-flight requests finish, the recorder drains, then the admin
    /// server and the invalidation listener stop, each bounded by the grace.
    pub(super) async fn drain(mut self, stop: watch::Sender<bool>) -> anyhow::Result<()> {
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight requests");
        self.health.set_not_serving::<RouterService>().await;
        let _ = stop.send(true);
        self.warm_abort.abort();
        self.reconciler.abort();
        let grace = self.grace;
        match tokio::time::timeout(grace, &mut self.grpc).await {
            Ok(result) => result.context("gRPC server task panicked")??,
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "shutdown grace expired with gRPC requests in flight"
                );
                self.grpc.abort();
            }
        }
        tracing::info!("draining the recorder");
        self.recorder.drain(grace).await?;
        if let Some(copy) = self.last_known_good {
            copy.keeper.abort();
            last_known_good::write(&self.cache, &copy.progress, &copy.dir).await;
        }
        match tokio::time::timeout(grace, &mut self.admin).await {
            Ok(result) => result.context("admin server task panicked")??,
            Err(_) => self.admin.abort(),
        }
        // on a thread of its own, it cannot be aborted: it stops at `stop`
        match tokio::time::timeout(grace, &mut self.listener).await {
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

/// The task that keeps the route cache's copy on disk, and what the last
/// copy at drain needs.
struct LastKnownGood {
    dir: std::path::PathBuf,
    progress: Arc<crate::invalidation::Progress>,
    keeper: JoinHandle<()>,
}

/// The recorder's batcher: started when the application is built (the
/// router needs its queue), stopped only after the gRPC server has
/// answered its last request.
pub(super) struct RecorderTask {
    stop: watch::Sender<bool>,
    batcher: JoinHandle<()>,
}

impl RecorderTask {
    pub(super) fn start(config: &ServeConfig, store: PgStore, spool: Spool) -> (Recorder, Self) {
        let (stop, stopping) = watch::channel(false);
        let (recorder, batcher) = Recorder::start(
            store,
            config.recorder_settings(),
            spool,
            stopping,
            config.shutdown_grace,
        );
        (recorder, Self { stop, batcher })
    }

    async fn drain(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        // the batcher bounds its own drain by the grace; this only guards
        // against it hanging
        match tokio::time::timeout(grace + Duration::from_secs(1), &mut self.batcher).await {
            Ok(result) => result.context("recorder task panicked")?,
            Err(_) => {
                tracing::error!(?grace, "recorder did not finish draining");
                self.batcher.abort();
            }
        }
        Ok(())
    }
}

/// Resolves once the stop flag is raised (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves only if `task` fails (panics, or is aborted): a task that is
/// meant to finish, such as warm start, supervised like those meant to run
/// until shutdown.
async fn failure_of(task: JoinHandle<()>) -> JoinError {
    match task.await {
        Ok(()) => std::future::pending().await,
        Err(failure) => failure,
    }
}

fn unexpected_stop(what: &str, result: Result<anyhow::Result<()>, impl Display>) -> anyhow::Error {
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

    #[tokio::test]
    async fn a_task_that_finishes_is_no_failure_and_one_that_panics_is() {
        let finished = tokio::spawn(async {});
        let waited = tokio::time::timeout(Duration::from_millis(50), failure_of(finished)).await;
        assert!(waited.is_err(), "a finished task is not a failure");
        let panicked = tokio::spawn(async { panic!("warm start broke") });
        assert!(failure_of(panicked).await.is_panic());
    }

    #[test]
    fn an_unexpected_stop_says_what_stopped_and_how() {
        let died = unexpected_stop("warm start", Err::<anyhow::Result<()>, _>("panicked: boom"));
        assert_eq!(died.to_string(), "warm start task died: panicked: boom");
        let stopped = unexpected_stop("admin server", Ok::<_, String>(Ok(())));
        assert_eq!(
            stopped.to_string(),
            "admin server stopped without being asked to"
        );
    }
}
