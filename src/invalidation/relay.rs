//! The invalidation relay, for fleets whose direct connections are
//! budgeted (`SWITCHBOARD_INVALIDATION_LISTENERS` > 0): instead of one
//! `LISTEN` session per replica, at most N replicas listen, and republish
//! every notification on a Redis channel that every replica follows.
//!
//! * **Listening** is a turn a replica takes: one of N slots in Redis
//!   (`<prefix>:v1:listener:<slot>`), held with a short lease it renews every
//!   second. A replica that holds one opens the `LISTEN` session and
//!   `PUBLISH`es each notification's payload as it is; one that loses it (or
//!   cannot renew it) closes the session. A stopped listener's slot is free
//!   again within [`SLOT_LEASE`], and another replica takes it.
//! * **Following**: every replica (listeners too) subscribes to the channel
//!   and applies what arrives, exactly as a listener applies a
//!   notification. Pub/sub delivers at most once, so after every
//!   (re)subscription the follower replays the change log from the last
//!   change it applied (and, as a listener does after a reconnect, a few
//!   seconds before it, for changes committed out of order), and every
//!   [`REPLAY_EVERY`] besides it reads what came after that change, through
//!   the pooler: a message lost (Redis restarted, a publish that failed, no
//!   listener for a moment) is applied within that long. While the follower
//!   is not subscribed, or its last replay failed, the cache is unconfirmed
//!   and trusts its entries only briefly, as with a listener down.
//!
//! On a Redis Cluster, the publisher's `PUBLISH` goes to any node and the
//! cluster forwards it to every other; the follower subscribes on one seed
//! node, the next one after a failure.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::StreamExt;
use redis::{AsyncCommands, Script};
use tokio::sync::watch;

use super::{apply_payloads, on_task, replay, replay_within, ListenerThread, Listening, Progress};
use crate::{
    domain::Resolver,
    routing::RouteCache,
    store::{
        redis_link::{RedisLink, RENEW_IF_HELD},
        PgStore,
    },
    telemetry::{outage::LISTENER, series::RelayPublish},
};

/// How long a listener's slot outlives its last renewal.
pub const SLOT_LEASE: Duration = Duration::from_secs(5);
/// How often a listener renews its slot, and a replica without one tries
/// to take one.
const SLOT_RENEW_EVERY: Duration = Duration::from_secs(1);
/// The safety net under pub/sub: how often the follower replays the log.
pub const REPLAY_EVERY: Duration = Duration::from_secs(2);
/// Pause before resubscribing after a failure.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(250);
/// Longest wait for one Redis command of the relay.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// What the relay needs to know.
#[derive(Clone)]
pub struct RelaySettings {
    /// Most replicas listening at once.
    pub listeners: u32,
    /// Namespace of the slots and the channel.
    pub key_prefix: String,
    /// Set while this replica listens (for `/readyz`).
    pub listening: Arc<AtomicBool>,
}

impl RelaySettings {
    fn channel(&self) -> String {
        format!("{}:v1:changes", self.key_prefix)
    }

    fn slot(&self, slot: u32) -> String {
        format!("{}:v1:listener:{slot}", self.key_prefix)
    }
}

/// Starts the relay's two tasks on the current runtime: taking a turn at
/// listening (and publishing), and following the channel. Both stop at
/// `stop`; the returned [`ListenerThread`] resolves when they have.
pub fn spawn<R: Resolver>(
    direct_url: String,
    cache: Arc<RouteCache<R>>,
    progress: Arc<Progress>,
    store: PgStore,
    redis: RedisLink,
    settings: RelaySettings,
    stop: watch::Receiver<bool>,
) -> ListenerThread {
    let replica = uuid::Uuid::new_v4().to_string();
    let listen = take_turns(
        direct_url,
        redis.clone(),
        settings.clone(),
        replica,
        stop.clone(),
    );
    let follow = follow(cache, progress, store, redis, settings, stop);
    on_task(async move {
        tokio::join!(listen, follow);
    })
}

/// Holds a listener slot whenever one is free, and while it does, listens
/// and publishes.
async fn take_turns(
    direct_url: String,
    redis: RedisLink,
    settings: RelaySettings,
    replica: String,
    mut stop: watch::Receiver<bool>,
) {
    let renew = Script::new(RENEW_IF_HELD);
    let mut held: Option<u32> = None;
    let mut listening: Option<Listening> = None;
    let mut renewals = tokio::time::interval(SLOT_RENEW_EVERY);
    metrics::gauge!("switchboard_invalidation_relay_listening").set(0.0);
    loop {
        tokio::select! {
            () = stopping(&mut stop) => return,
            _ = renewals.tick() => {
                held = hold_slot(&redis, &settings, &renew, &replica, held).await;
                if held.is_none() && listening.take().is_some() {
                    tracing::info!("invalidation relay: listener slot lost; stopped listening");
                }
                if held.is_some() && listening.is_none() {
                    match Listening::start(&direct_url).await {
                        Ok(session) => {
                            tracing::info!(slot = held, "invalidation relay: listening and publishing");
                            listening = Some(session);
                        }
                        Err(error) => LISTENER.failed(&error),
                    }
                }
                settings.listening.store(listening.is_some(), Ordering::Release);
                metrics::gauge!("switchboard_invalidation_relay_listening")
                    .set(if listening.is_some() { 1.0 } else { 0.0 });
            }
            payload = next_payload(&mut listening) => match payload {
                Ok(payload) => publish(&redis, &settings, payload).await,
                Err(error) => {
                    LISTENER.failed(&error);
                    listening = None;
                    settings.listening.store(false, Ordering::Release);
                }
            }
        }
    }
}

/// The next notification of the session, if there is one; never resolves
/// without one.
async fn next_payload(listening: &mut Option<Listening>) -> Result<String, String> {
    match listening {
        Some(session) => session.next().await,
        None => std::future::pending().await,
    }
}

/// Renews the slot held, or takes a free one: the slot held afterwards.
async fn hold_slot(
    redis: &RedisLink,
    settings: &RelaySettings,
    renew: &Script,
    replica: &str,
    held: Option<u32>,
) -> Option<u32> {
    if !redis.is_connected() {
        return None;
    }
    let lease_ms = SLOT_LEASE.as_millis() as u64;
    if let Some(slot) = held {
        let mut invocation = renew.key(settings.slot(slot));
        invocation.arg(replica).arg(lease_ms);
        let renewed: Result<u32, _> = redis
            .run(COMMAND_TIMEOUT, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await;
        return matches!(renewed, Ok(1)).then_some(slot);
    }
    for slot in 0..settings.listeners {
        let key = settings.slot(slot);
        let replica = replica.to_owned();
        let taken: Result<Option<String>, _> = redis
            .run(COMMAND_TIMEOUT, |mut c| async move {
                let options = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::PX(lease_ms));
                c.set_options(key, replica, options).await
            })
            .await;
        match taken {
            Ok(Some(_)) => return Some(slot),
            Ok(None) => continue,
            Err(_) => return None,
        }
    }
    None
}

async fn publish(redis: &RedisLink, settings: &RelaySettings, payload: String) {
    let channel = settings.channel();
    let published: Result<u32, _> = redis
        .run(COMMAND_TIMEOUT, |mut c| async move {
            c.publish(channel, payload).await
        })
        .await;
    let outcome = if published.is_ok() {
        RelayPublish::Published
    } else {
        RelayPublish::Failed
    };
    metrics::counter!("switchboard_invalidation_relay_publishes_total", "outcome" => <&str>::from(outcome))
        .increment(1);
}

/// Subscribes to the channel, replays the log after every subscription and
/// every [`REPLAY_EVERY`], and applies what arrives.
async fn follow<R: Resolver>(
    cache: Arc<RouteCache<R>>,
    progress: Arc<Progress>,
    store: PgStore,
    redis: RedisLink,
    settings: RelaySettings,
    mut stop: watch::Receiver<bool>,
) {
    let channel = settings.channel();
    let mut attempt = 0usize;
    loop {
        let subscribed = async {
            let mut pubsub = redis.subscriber(attempt).await?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub.into_on_message())
        };
        let mut messages = tokio::select! {
            () = stopping(&mut stop) => return,
            subscribed = subscribed => match subscribed {
                Ok(messages) => messages,
                Err(error) => {
                    LISTENER.failed(&format!("relay: subscribe: {error}"));
                    attempt += 1;
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue;
                }
            },
        };
        let mut replays = tokio::time::interval(REPLAY_EVERY);
        // the first, right after subscribing, reaches back over the overlap
        replays.tick().await;
        let replayed = replay(&store, &cache, &progress).await;
        confirm(&cache, replayed);
        loop {
            tokio::select! {
                () = stopping(&mut stop) => return,
                _ = replays.tick() => {
                    let replayed =
                        replay_within(&store, &cache, &progress, Duration::ZERO).await;
                    confirm(&cache, replayed);
                }
                message = messages.next() => match message {
                    Some(message) => {
                        let payload: String = message.get_payload().unwrap_or_default();
                        apply_payloads(&[payload], &cache, &progress, None).await;
                    }
                    None => break,
                },
            }
        }
        cache.set_confirmed(false);
        metrics::gauge!("switchboard_invalidation_listener_connected").set(0.0);
        LISTENER.failed(&"relay: subscription ended".to_string());
        attempt += 1;
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

/// Resolves once `stop` is raised (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// The cache is confirmed while the follower is subscribed and its last
/// replay succeeded.
fn confirm<R: Resolver>(cache: &RouteCache<R>, replayed: Result<(), String>) {
    match replayed {
        Ok(()) => {
            if !cache.is_confirmed() {
                tracing::info!("invalidation relay: following");
            }
            cache.set_confirmed(true);
            metrics::gauge!("switchboard_invalidation_listener_connected").set(1.0);
            LISTENER.recovered();
        }
        Err(error) => {
            cache.set_confirmed(false);
            metrics::gauge!("switchboard_invalidation_listener_connected").set(0.0);
            LISTENER.failed(&format!("relay: {error}"));
        }
    }
}
