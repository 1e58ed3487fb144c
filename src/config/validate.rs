//! What the types alone cannot check, named by the environment variables
//! an operator sets.

use super::ServeConfig;

impl ServeConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_bounds()?;
        self.validate_exposure()?;
        self.validate_listeners()
    }

    /// Sizes and waits: none is zero, each within its range.
    fn validate_bounds(&self) -> Result<(), String> {
        let (database, grpc, recorder, spool) =
            (&self.database, &self.grpc, &self.recorder, &self.spool);
        if database.db_pool_size == 0 {
            return Err("SWITCHBOARD_DB_POOL_SIZE must be at least 1".into());
        }
        for (name, value) in [
            ("SWITCHBOARD_DB_POOL_WAIT", database.db_pool_wait),
            (
                "SWITCHBOARD_DB_CONNECT_TIMEOUT",
                database.db_connect_timeout,
            ),
            ("SWITCHBOARD_DB_QUERY_TIMEOUT", database.db_query_timeout),
            ("SWITCHBOARD_REQUEST_TIMEOUT", grpc.request_timeout),
            ("SWITCHBOARD_MAX_QUEUE_DELAY", grpc.max_queue_delay),
            ("SWITCHBOARD_QUEUE_DELAY_TARGET", grpc.queue_delay_target),
            ("SWITCHBOARD_CACHE_TTL", self.cache.cache_ttl),
            ("SWITCHBOARD_REDIS_TIMEOUT", self.redis.redis_timeout),
            (
                "SWITCHBOARD_CACHE_NEGATIVE_TTL",
                self.cache.cache_negative_ttl,
            ),
            (
                "SWITCHBOARD_CACHE_UNCONFIRMED_TTL",
                self.cache.cache_unconfirmed_ttl,
            ),
            (
                "SWITCHBOARD_RECORDER_FLUSH_INTERVAL",
                recorder.recorder_flush_interval,
            ),
            (
                "SWITCHBOARD_RECORDER_WRITE_TIMEOUT",
                recorder.recorder_write_timeout,
            ),
            (
                "SWITCHBOARD_RECORDER_RETRY_INTERVAL",
                recorder.recorder_retry_interval,
            ),
            (
                "SWITCHBOARD_ADMISSION_TIMEOUT",
                self.admission.admission_timeout,
            ),
            (
                "SWITCHBOARD_MAX_CALL_DURATION",
                self.admission.max_call_duration,
            ),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if grpc.max_message_bytes < 1024 {
            return Err("SWITCHBOARD_MAX_MESSAGE_BYTES must be at least 1024".into());
        }
        for (name, value) in [
            ("SWITCHBOARD_MAX_IN_FLIGHT", grpc.max_in_flight),
            ("SWITCHBOARD_RECORDER_QUEUE", recorder.recorder_queue),
            (
                "SWITCHBOARD_RECORDER_BATCH_SIZE",
                recorder.recorder_batch_size,
            ),
            ("SWITCHBOARD_RECORDER_WRITERS", recorder.recorder_writers),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if recorder.recorder_writers >= database.db_pool_size {
            return Err(format!(
                "SWITCHBOARD_RECORDER_WRITERS ({}) must be less than SWITCHBOARD_DB_POOL_SIZE ({}): \
                 the pool also serves the routing reads",
                recorder.recorder_writers, database.db_pool_size
            ));
        }
        if spool.spool_segment_bytes < 4096 || spool.spool_max_bytes < spool.spool_segment_bytes {
            return Err(
                "SWITCHBOARD_SPOOL_SEGMENT_BYTES must be at least 4096 and at most SWITCHBOARD_SPOOL_MAX_BYTES"
                    .into(),
            );
        }
        Ok(())
    }

    /// Who may reach the gRPC listener, and whether tokens would cross the
    /// network in clear.
    fn validate_exposure(&self) -> Result<(), String> {
        let grpc = &self.grpc;
        let tokens = self.tokens().map_err(|e| e.to_string())?;
        if tokens.is_empty()
            && !grpc.grpc_addr.ip().is_loopback()
            && !self.auth.allow_unauthenticated
        {
            return Err(format!(
                "SWITCHBOARD_API_TOKENS is not set, and SWITCHBOARD_GRPC_ADDR ({}) is not a \
                 loopback address: set tokens for the gateways, or \
                 SWITCHBOARD_ALLOW_UNAUTHENTICATED=true if something in front authenticates them",
                grpc.grpc_addr
            ));
        }
        if grpc.queue_delay_target > grpc.max_queue_delay {
            return Err(format!(
                "SWITCHBOARD_QUEUE_DELAY_TARGET ({}) must not exceed SWITCHBOARD_MAX_QUEUE_DELAY ({}): \
                 the target is the shorter wait allowed while a queue stands",
                humantime::format_duration(grpc.queue_delay_target),
                humantime::format_duration(grpc.max_queue_delay)
            ));
        }
        if (grpc.max_concurrent_streams as usize) < grpc.max_in_flight {
            return Err(format!(
                "SWITCHBOARD_MAX_CONCURRENT_STREAMS ({}) must be at least SWITCHBOARD_MAX_IN_FLIGHT ({}): \
                 requests past the bound wait in the client instead of being refused at once",
                grpc.max_concurrent_streams, grpc.max_in_flight
            ));
        }
        if self.tokens_in_clear(&tokens) && !self.tls.tls_terminated_upstream {
            return Err(format!(
                "SWITCHBOARD_API_TOKENS would cross the network in clear: SWITCHBOARD_GRPC_ADDR \
                 ({}) is not a loopback address and the listener has no TLS. Set \
                 SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY, or \
                 SWITCHBOARD_TLS_TERMINATED_UPSTREAM=true if a proxy in front terminates TLS",
                grpc.grpc_addr
            ));
        }
        Ok(())
    }

    /// The TLS files that go together, and two distinct listeners.
    fn validate_listeners(&self) -> Result<(), String> {
        let tls = &self.tls;
        match (&tls.tls_cert, &tls.tls_key, &tls.tls_client_ca) {
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
        let (grpc_addr, admin_addr) = (self.grpc.grpc_addr, self.admin.admin_addr);
        if grpc_addr == admin_addr && grpc_addr.port() != 0 {
            return Err("SWITCHBOARD_GRPC_ADDR and SWITCHBOARD_ADMIN_ADDR must differ".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn defaults() -> ServeConfig {
        ServeConfig::with_defaults("postgres://x@h/db", "postgres://x@h/db", "redis://h/")
    }

    #[test]
    fn defaults_are_valid() {
        defaults().validate().unwrap();
    }

    #[test]
    fn bad_values_are_rejected_with_the_variable_name() {
        let mut config = defaults();
        config.database.db_pool_size = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("SWITCHBOARD_DB_POOL_SIZE"));
        let mut config = defaults();
        config.database.db_query_timeout = Duration::ZERO;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("SWITCHBOARD_DB_QUERY_TIMEOUT"));
        let mut config = defaults();
        config.recorder.recorder_writers = config.database.db_pool_size;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("SWITCHBOARD_RECORDER_WRITERS"));
    }

    #[test]
    fn exposure_and_listeners_are_checked() {
        let mut config = defaults();
        config.grpc.grpc_addr = "0.0.0.0:50051".parse().unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .starts_with("SWITCHBOARD_API_TOKENS is not set"));
        let mut config = defaults();
        config.tls.tls_key = Some("key.pem".into());
        assert_eq!(
            config.validate().unwrap_err(),
            "SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY go together"
        );
        let mut config = defaults();
        config.admin.admin_addr = config.grpc.grpc_addr;
        assert_eq!(
            config.validate().unwrap_err(),
            "SWITCHBOARD_GRPC_ADDR and SWITCHBOARD_ADMIN_ADDR must differ"
        );
    }
}
