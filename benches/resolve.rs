//! Cost of one route resolution on each tier: an L1 (in-process) hit, an
//! L2 (Redis) hit, and L3 (PostgreSQL through PgBouncer in transaction
//! mode); and the invalidation lag from a commit to a fresh answer. Compare
//! them as ratios within one run; absolute times on a shared machine move by
//! 2× between runs. The baselines of the L2 hit are a plain `GET` of a value
//! of a route part's size over the same kind of connection (redis-rs's
//! multiplexed connection), and the same `GET` followed by two at once, the
//! round trips an L2 hit makes: against the first, the difference is what
//! the second round trip costs; against the second, the tier's own work
//! (decoding). With the stack's Redis Cluster
//! (`SWITCHBOARD_TEST_REDIS_CLUSTER_URL`), the L2 hit is measured on it too.
//!
//! Needs the local stack: `deploy/local/stack up`, then
//! `eval "$(deploy/local/stack env)"; cargo bench --bench resolve`.

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use common::{bench_database, env, BenchDatabase};
use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::{
    domain::{Resolver, E164},
    invalidation,
    routing::{CacheSettings, RouteCache},
    store::{
        self,
        redis::{RedisSettings, RedisTier},
        redis_link::{RedisLink, RedisMode},
        PgStore, PoolSettings,
    },
};
use tokio::sync::watch;

fn pool_settings() -> PoolSettings {
    PoolSettings {
        max_size: 4,
        wait_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        query_timeout: Duration::from_secs(1),
    }
}

/// Entries that stay fresh for the whole run.
fn cache_settings() -> CacheSettings {
    CacheSettings {
        capacity: 1000,
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(5),
        unconfirmed_ttl: Duration::from_secs(600),
        max_stale: Duration::from_secs(600),
    }
}

/// The L2 baseline's key, outside every key prefix the daemon uses.
const BASELINE_KEY: &str = "bench-resolve-baseline";

fn resolve(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let number = E164::from_canonical("+14155550100").unwrap();
    let (l3, l2, l2_cluster, l1, redis_get) = runtime.block_on(async {
        let url = bench_database().await.pooled_url;
        let l3 = PgStore::new(&url, &pool_settings()).unwrap();
        let redis = RedisSettings {
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(5),
            timeout: Duration::from_millis(50),
            tombstone_ttl: Duration::from_secs(5),
            key_prefix: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        };
        let redis_ca = common::redis_ca_file().map(|ca| std::fs::read(ca).unwrap());
        let link = RedisLink::new(
            &env("REDIS_URL"),
            RedisMode::Standalone,
            redis_ca.clone(),
            redis.timeout,
        )
        .unwrap();
        let l2_cluster = std::env::var("SWITCHBOARD_TEST_REDIS_CLUSTER_URL")
            .ok()
            .map(|seeds| {
                let link =
                    RedisLink::new(&seeds, RedisMode::Cluster, redis_ca.clone(), redis.timeout)
                        .unwrap();
                RedisTier::with_connection(
                    link,
                    PgStore::new(&url, &pool_settings()).unwrap(),
                    redis.clone(),
                )
            });
        let l2 =
            RedisTier::with_connection(link, PgStore::new(&url, &pool_settings()).unwrap(), redis);
        let l1 = RouteCache::new(
            PgStore::new(&url, &pool_settings()).unwrap(),
            cache_settings(),
        );
        l1.set_confirmed(true);
        // warm every tier: L2 fills in the background
        assert!(l3.resolve(&number).await.unwrap().is_some());
        for _ in 0..20 {
            l2.resolve(&number).await.unwrap();
            if let Some(l2) = &l2_cluster {
                l2.resolve(&number).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        l1.resolve(&number).await.unwrap();
        let client = match redis_ca {
            Some(root_cert) => redis::Client::build_with_tls(
                env("REDIS_URL"),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(env("REDIS_URL")),
        };
        let mut redis_get = client
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(BASELINE_KEY)
            .arg(vec![b'x'; 400])
            .arg("EX")
            .arg(600)
            .query_async(&mut redis_get)
            .await
            .unwrap();
        (l3, l2, l2_cluster, l1, redis_get)
    });

    let mut group = c.benchmark_group("resolve");
    group.bench_function("l1_hit", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(l1.resolve(&number).await.unwrap()) })
    });
    group.bench_function("l2_redis_hit", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(l2.resolve(&number).await.unwrap()) })
    });
    group.bench_function("redis_get_400_bytes", |b| {
        b.to_async(&runtime).iter(|| {
            let mut connection = redis_get.clone();
            async move {
                let value: Vec<u8> = redis::cmd("GET")
                    .arg(BASELINE_KEY)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                black_box(value)
            }
        })
    });
    group.bench_function("redis_get_then_two_gets", |b| {
        b.to_async(&runtime).iter(|| {
            let get = |mut connection: redis::aio::MultiplexedConnection| async move {
                let value: Vec<u8> = redis::cmd("GET")
                    .arg(BASELINE_KEY)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                value
            };
            let connection = redis_get.clone();
            async move {
                let first = get(connection.clone()).await;
                let (a, b) = tokio::join!(get(connection.clone()), get(connection));
                black_box((first, a, b))
            }
        })
    });
    if let Some(l2_cluster) = &l2_cluster {
        group.bench_function("l2_redis_cluster_hit", |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(l2_cluster.resolve(&number).await.unwrap()) })
        });
    }
    group.bench_function("l3_postgres_via_pgbouncer", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(l3.resolve(&number).await.unwrap()) })
    });
    group.finish();
}

/// Invalidation lag: from an update's commit to the replica's cache
/// answering with the new row (trigger → NOTIFY → LISTEN session →
/// eviction → reload).
fn invalidation_lag(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let number = E164::from_canonical("+14155550100").unwrap();
    let (cache, admin, _stop) = runtime.block_on(async {
        let BenchDatabase {
            pooled_url: url,
            daemon_direct_url: daemon_direct,
            superuser_url: superuser,
            ..
        } = bench_database().await;
        let cache = RouteCache::new(
            PgStore::new(&url, &pool_settings()).unwrap(),
            cache_settings(),
        );
        let (stop, stopped) = watch::channel(false);
        invalidation::spawn(
            daemon_direct,
            cache.clone(),
            invalidation::Progress::starting_at(None),
            stopped,
        )
        .unwrap();
        while !cache.is_confirmed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let admin = store::connect_direct(&superuser).await.unwrap();
        (cache, admin, stop)
    });
    let mut version = 0u64;
    c.bench_function("invalidation/commit_to_fresh_answer", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (cache, admin, number) = (cache.clone(), &admin, number.clone());
            let first = version;
            version += iters;
            async move {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let name = format!("Reception {}", first + i);
                    cache.resolve(&number).await.unwrap(); // cached
                    admin
                        .execute(
                            "update agents set name = $1 where id = '00000000-0000-4000-8000-00000000b001'",
                            &[&name],
                        )
                        .await
                        .unwrap();
                    let committed = Instant::now();
                    while cache.resolve(&number).await.unwrap().unwrap().agent.name != name {
                        tokio::task::yield_now().await;
                    }
                    total += committed.elapsed();
                }
                total
            }
        })
    });
}

criterion_group!(benches, resolve, invalidation_lag);
criterion_main!(benches);
