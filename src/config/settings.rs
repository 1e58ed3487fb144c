//! The configuration as each part of the daemon takes it: one place that
//! says which setting goes where, for the application and the benchmarks.

use std::time::Duration;

use super::ServeConfig;
use crate::{
    admission::{AdmissionSettings, PlanLimits},
    api::overload::LimitSettings,
    recorder::{RecorderSettings, SpoolSettings},
    routing::CacheSettings,
    store::{redis::RedisSettings, PoolSettings},
};

impl ServeConfig {
    /// The pool of connections to the transaction pooler.
    pub fn pool_settings(&self) -> PoolSettings {
        let database = &self.database;
        PoolSettings {
            max_size: database.db_pool_size,
            wait_timeout: database.db_pool_wait,
            connect_timeout: database.db_connect_timeout,
            query_timeout: database.db_query_timeout,
        }
    }

    /// The route cache in Redis (L2).
    pub fn redis_settings(&self) -> RedisSettings {
        let (redis, database) = (&self.redis, &self.database);
        RedisSettings {
            ttl: redis.redis_ttl,
            negative_ttl: self.cache.cache_negative_ttl,
            timeout: redis.redis_timeout,
            // outlives any load: checkout, connect and query are bounded
            tombstone_ttl: database.db_pool_wait
                + database.db_connect_timeout
                + database.db_query_timeout
                + Duration::from_secs(1),
            key_prefix: redis.redis_key_prefix.clone(),
        }
    }

    /// The route cache in process (L1).
    pub fn cache_settings(&self) -> CacheSettings {
        let cache = &self.cache;
        CacheSettings {
            capacity: cache.cache_capacity,
            ttl: cache.cache_ttl,
            negative_ttl: cache.cache_negative_ttl,
            unconfirmed_ttl: cache.cache_unconfirmed_ttl,
            max_stale: cache.cache_max_stale,
        }
    }

    /// Concurrent-call limits, under the deployment's Redis key prefix.
    pub fn admission_settings(&self) -> AdmissionSettings {
        let admission = &self.admission;
        AdmissionSettings {
            mode: admission.admission_mode,
            on_redis_down: admission.admission_on_redis_down,
            limits: PlanLimits {
                starter: admission.limit_starter,
                pro: admission.limit_pro,
                enterprise: admission.limit_enterprise,
            },
            max_call_duration: admission.max_call_duration,
            timeout: admission.admission_timeout,
            key_prefix: self.redis.redis_key_prefix.clone(),
        }
    }

    /// The recorder's spool on disk.
    pub fn spool_settings(&self) -> SpoolSettings {
        let spool = &self.spool;
        SpoolSettings {
            dir: spool.spool_dir.clone(),
            max_bytes: spool.spool_max_bytes,
            segment_bytes: spool.spool_segment_bytes,
        }
    }

    /// The recorder's queue and batches.
    pub fn recorder_settings(&self) -> RecorderSettings {
        let recorder = &self.recorder;
        RecorderSettings {
            queue_capacity: recorder.recorder_queue,
            batch_size: recorder.recorder_batch_size,
            writers: recorder.recorder_writers,
            flush_interval: recorder.recorder_flush_interval,
            write_timeout: recorder.recorder_write_timeout,
            retry_interval: recorder.recorder_retry_interval,
            spool_dir: self.spool.spool_dir.clone(),
        }
    }

    /// The adaptive concurrency limit's bounds and targets.
    pub fn limit_settings(&self) -> LimitSettings {
        let grpc = &self.grpc;
        LimitSettings {
            max_in_flight: grpc.max_in_flight,
            target: grpc.queue_delay_target,
            interval: super::defaults::QUEUE_DELAY_INTERVAL,
            max_queue_delay: grpc.max_queue_delay,
        }
    }
}
