//! The command line as operators and deployments know it: every flag and
//! environment variable, each command's defaults, the errors' names.

use std::{collections::BTreeSet, time::Duration};

use clap::{CommandFactory, Parser};

use super::*;

/// Every flag of `switchboard serve` and its environment variable.
const SERVE: &[(&str, &str)] = &[
    ("database-url", "DATABASE_URL"),
    ("database-direct-url", "DATABASE_DIRECT_URL"),
    ("db-pool-size", "SWITCHBOARD_DB_POOL_SIZE"),
    ("db-pool-wait", "SWITCHBOARD_DB_POOL_WAIT"),
    ("db-connect-timeout", "SWITCHBOARD_DB_CONNECT_TIMEOUT"),
    ("db-query-timeout", "SWITCHBOARD_DB_QUERY_TIMEOUT"),
    ("redis-url", "REDIS_URL"),
    ("redis-mode", "SWITCHBOARD_REDIS_MODE"),
    ("redis-ca-file", "SWITCHBOARD_REDIS_CA_FILE"),
    ("redis-timeout", "SWITCHBOARD_REDIS_TIMEOUT"),
    ("redis-ttl", "SWITCHBOARD_REDIS_TTL"),
    ("redis-key-prefix", "SWITCHBOARD_REDIS_KEY_PREFIX"),
    ("cache-capacity", "SWITCHBOARD_CACHE_CAPACITY"),
    ("cache-ttl", "SWITCHBOARD_CACHE_TTL"),
    ("cache-negative-ttl", "SWITCHBOARD_CACHE_NEGATIVE_TTL"),
    ("cache-unconfirmed-ttl", "SWITCHBOARD_CACHE_UNCONFIRMED_TTL"),
    ("cache-warm-limit", "SWITCHBOARD_CACHE_WARM_LIMIT"),
    ("cache-max-stale", "SWITCHBOARD_CACHE_MAX_STALE"),
    (
        "cache-snapshot-interval",
        "SWITCHBOARD_CACHE_SNAPSHOT_INTERVAL",
    ),
    (
        "invalidation-listeners",
        "SWITCHBOARD_INVALIDATION_LISTENERS",
    ),
    ("grpc-addr", "SWITCHBOARD_GRPC_ADDR"),
    ("request-timeout", "SWITCHBOARD_REQUEST_TIMEOUT"),
    ("max-message-bytes", "SWITCHBOARD_MAX_MESSAGE_BYTES"),
    ("max-in-flight", "SWITCHBOARD_MAX_IN_FLIGHT"),
    (
        "max-concurrent-streams",
        "SWITCHBOARD_MAX_CONCURRENT_STREAMS",
    ),
    ("max-queue-delay", "SWITCHBOARD_MAX_QUEUE_DELAY"),
    ("queue-delay-target", "SWITCHBOARD_QUEUE_DELAY_TARGET"),
    ("overload-refusal", "SWITCHBOARD_OVERLOAD_REFUSAL"),
    ("admin-addr", "SWITCHBOARD_ADMIN_ADDR"),
    ("api-tokens", "SWITCHBOARD_API_TOKENS"),
    ("allow-unauthenticated", "SWITCHBOARD_ALLOW_UNAUTHENTICATED"),
    (
        "tls-terminated-upstream",
        "SWITCHBOARD_TLS_TERMINATED_UPSTREAM",
    ),
    ("tls-cert", "SWITCHBOARD_TLS_CERT"),
    ("tls-key", "SWITCHBOARD_TLS_KEY"),
    ("tls-client-ca", "SWITCHBOARD_TLS_CLIENT_CA"),
    ("shutdown-grace", "SWITCHBOARD_SHUTDOWN_GRACE"),
    ("spool-dir", "SWITCHBOARD_SPOOL_DIR"),
    ("spool-max-bytes", "SWITCHBOARD_SPOOL_MAX_BYTES"),
    ("spool-segment-bytes", "SWITCHBOARD_SPOOL_SEGMENT_BYTES"),
    ("recorder-queue", "SWITCHBOARD_RECORDER_QUEUE"),
    ("recorder-batch-size", "SWITCHBOARD_RECORDER_BATCH_SIZE"),
    ("recorder-writers", "SWITCHBOARD_RECORDER_WRITERS"),
    (
        "recorder-flush-interval",
        "SWITCHBOARD_RECORDER_FLUSH_INTERVAL",
    ),
    (
        "recorder-write-timeout",
        "SWITCHBOARD_RECORDER_WRITE_TIMEOUT",
    ),
    (
        "recorder-retry-interval",
        "SWITCHBOARD_RECORDER_RETRY_INTERVAL",
    ),
    ("admission-mode", "SWITCHBOARD_ADMISSION_MODE"),
    (
        "admission-on-redis-down",
        "SWITCHBOARD_ADMISSION_ON_REDIS_DOWN",
    ),
    ("admission-timeout", "SWITCHBOARD_ADMISSION_TIMEOUT"),
    ("limit-starter", "SWITCHBOARD_LIMIT_STARTER"),
    ("limit-pro", "SWITCHBOARD_LIMIT_PRO"),
    ("limit-enterprise", "SWITCHBOARD_LIMIT_ENTERPRISE"),
    ("max-call-duration", "SWITCHBOARD_MAX_CALL_DURATION"),
    (
        "lease-reconcile-interval",
        "SWITCHBOARD_LEASE_RECONCILE_INTERVAL",
    ),
];

/// The other commands' flags ("" where there is no environment variable).
const GLOBAL: &[(&str, &str)] = &[
    ("log-format", "SWITCHBOARD_LOG_FORMAT"),
    ("log-filter", "SWITCHBOARD_LOG"),
];
const MIGRATE: &[(&str, &str)] = &[
    ("database-direct-url", "DATABASE_DIRECT_URL"),
    ("daemon-password", "SWITCHBOARD_DAEMON_PASSWORD"),
    ("adopt-org-slug", "SWITCHBOARD_ADOPT_ORG_SLUG"),
    ("adopt-org-name", "SWITCHBOARD_ADOPT_ORG_NAME"),
    ("adopt-owner-email", "SWITCHBOARD_ADOPT_OWNER_EMAIL"),
    ("adopt-calling-code", "SWITCHBOARD_ADOPT_CALLING_CODE"),
    ("adopt-allow-ownerless", "SWITCHBOARD_ADOPT_ALLOW_OWNERLESS"),
    ("dry-run", ""),
];
const SEED: &[(&str, &str)] = &[("database-direct-url", "DATABASE_DIRECT_URL"), ("demo", "")];
const CLIENT: &[(&str, &str)] = &[
    ("addr", "SWITCHBOARD_CLIENT_ADDR"),
    ("token", "SWITCHBOARD_CLIENT_TOKEN"),
    ("ca-cert", "SWITCHBOARD_CLIENT_CA_CERT"),
    ("cert", "SWITCHBOARD_CLIENT_CERT"),
    ("key", "SWITCHBOARD_CLIENT_KEY"),
];

/// The flags `command` itself defines, each with its environment variable
/// ("" for none), `--help` and `--version` aside.
fn flags_of(command: &clap::Command) -> BTreeSet<(String, String)> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((long.to_string(), env.unwrap_or_default()))
        })
        .filter(|(long, _)| long != "help" && long != "version")
        .collect()
}

fn table(rows: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    rows.iter()
        .map(|(long, env)| (long.to_string(), env.to_string()))
        .collect()
}

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_flag_and_environment_variable_is_known() {
    let cli = Cli::command();
    assert_eq!(flags_of(&cli), table(GLOBAL));
    for (name, expected) in [
        ("serve", SERVE),
        ("migrate", MIGRATE),
        ("seed", SEED),
        ("client", CLIENT),
    ] {
        let command = cli.find_subcommand(name).expect("the command exists");
        assert_eq!(flags_of(command), table(expected), "switchboard {name}");
    }
    assert_eq!(SERVE.len(), table(SERVE).len(), "a flag listed twice");
}

#[test]
fn defaults_come_from_the_attributes() {
    let config = ServeConfig::with_defaults("postgres://x@h/db", "postgres://x@h/d2", "redis://h/");
    assert_eq!(config.grpc.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
    assert_eq!(config.admin.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
    assert_eq!(config.database.db_pool_size, DEFAULT_DB_POOL_SIZE);
    assert_eq!(config.database.db_query_timeout, Duration::from_millis(250));
    assert_eq!(config.spool.spool_dir.to_str(), Some(DEFAULT_SPOOL_DIR));
    assert_eq!(config.redis.redis_key_prefix, DEFAULT_REDIS_KEY_PREFIX);
    assert_eq!(config.redis.redis_ca_file, None);
    assert_eq!(config.admission.limit_enterprise, DEFAULT_LIMIT_ENTERPRISE);
    assert!(config.auth.api_tokens.is_none() && !config.auth.allow_unauthenticated);
    let config = ServeConfig::from_flags([
        "--database-url=postgres://x@h/db",
        "--database-direct-url=postgres://x@h/db",
        "--redis-url=redis://h/",
        "--db-pool-size=3",
        "--cache-ttl=1m",
    ])
    .unwrap();
    assert_eq!(config.database.db_pool_size, 3);
    assert_eq!(config.cache.cache_ttl, Duration::from_secs(60));
    assert!(ServeConfig::from_flags(["--database-url", "postgres://x@h/db"]).is_err());
}

#[test]
fn values_are_parsed_or_refused() {
    assert!(duration("soon").is_err());
    assert!(secret(" ").is_err());
}

#[test]
fn parse_errors_name_the_environment_variable() {
    let error = Cli::try_parse_from([
        "switchboard",
        "serve",
        "--database-url",
        "postgres://h/db",
        "--db-query-timeout",
        "soon",
    ])
    .unwrap_err();
    assert_eq!(
        env_var_for(&error).as_deref(),
        Some("SWITCHBOARD_DB_QUERY_TIMEOUT")
    );
}
