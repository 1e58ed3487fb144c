//! TLS to PostgreSQL, PgBouncer and Redis, as production runs it: the local
//! stack serves all three with a certificate from its own throw-away CA.
//! (Every other test connects with `sslmode=verify-full` and `rediss://`
//! too; these show what is refused, and that TLS is really in use.)

use std::{path::Path, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use switchboard::store::{self, connection::is_tls_failure, ConnectError, PgTarget, SslMode};
use tonic::Code;

use crate::helpers::{
    create_database, eventually, metric, reason, route_request, spawn_app_on, spawn_on_via,
    spawn_seeded_app_with, switchboard_command, PrivatePostgres, Stack,
};

/// The stack's direct PostgreSQL URL with `query` as its parameters.
fn direct_with(stack: &Stack, query: &str) -> String {
    format!(
        "postgres://postgres@{}:{}/postgres?{query}",
        stack.pg_host, stack.pg_port
    )
}

fn ca(stack: &Stack) -> String {
    stack
        .ca_file
        .as_ref()
        .expect("the stack serves TLS")
        .display()
        .to_string()
}

/// A CA of the test's own, which signed nothing the stack serves.
fn unrelated_ca(dir: &Path) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let path = dir.join("other-ca.crt");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path.display().to_string()
}

/// Whether the session runs over TLS, as the server sees it. Unprepared,
/// as every statement through the transaction pooler must be: a named
/// statement may meet another client's of the same name on the server.
async fn uses_tls(url: &str) -> bool {
    let client = store::connect_direct(url).await.expect(url);
    client
        .query_typed(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .first()
        .expect("this session's row")
        .get(0)
}

/// The error and its causes, as the daemon reports them.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text = format!("{text}: {next}");
        cause = next.source();
    }
    text
}

fn refused_in_the_handshake(result: Result<tokio_postgres::Client, ConnectError>) -> String {
    match result {
        Ok(_) => panic!("connected"),
        Err(ConnectError::Connect(error)) => {
            assert!(is_tls_failure(&error), "{error}");
            with_causes(&error)
        }
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn verify_full_connects_and_every_mode_that_encrypts_does() {
    let stack = Stack::from_env();
    let ca = ca(&stack);
    for query in [
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        "sslmode=require".to_string(),
        // libpq's default: TLS whenever the server offers it
        "sslmode=prefer".to_string(),
        String::new(),
    ] {
        assert!(
            uses_tls(&direct_with(&stack, &query)).await,
            "{query:?} did not encrypt"
        );
    }
    assert!(!uses_tls(&direct_with(&stack, "sslmode=disable")).await);

    // and through PgBouncer, whose clients and server connections use TLS
    let pooled = format!(
        "postgres://postgres@{}:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
        stack.pg_host, stack.pgbouncer_port
    );
    assert!(
        uses_tls(&pooled).await,
        "PgBouncer's connection to PostgreSQL"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_or_for_another_host_is_refused() {
    let stack = Stack::from_env();
    let dir = tempfile::tempdir().unwrap();
    let other = unrelated_ca(dir.path());
    for port in [stack.pg_port, stack.pgbouncer_port] {
        let url = format!(
            "postgres://postgres@{}:{port}/postgres?sslmode=verify-full&sslrootcert={other}",
            stack.pg_host
        );
        let error = refused_in_the_handshake(store::connect_direct(&url).await);
        assert!(error.contains("UnknownIssuer"), "{error}");
    }

    // the right CA, but the certificate does not name the host asked for
    // (hostaddr reaches the server, host is what is verified)
    let ca = ca(&stack);
    let elsewhere = format!(
        "postgres://postgres@db.example.com:{}/postgres?hostaddr={}&sslrootcert={ca}",
        stack.pg_port, stack.pg_host
    );
    let error = refused_in_the_handshake(
        store::connect_direct(&format!("{elsewhere}&sslmode=verify-full")).await,
    );
    assert!(error.contains("not valid for name"), "{error}");
    // verify-ca checks the chain only, as libpq does
    assert!(uses_tls(&format!("{elsewhere}&sslmode=verify-ca")).await);
}

#[tokio::test]
async fn require_without_tls_on_the_server_is_refused_at_once_by_every_command() {
    // a PostgreSQL of the test's own, without TLS
    let pg = PrivatePostgres::start(&Stack::from_env()).await;
    let plain = pg.stack();
    let db_name = create_database(&plain).await;
    let url = |user: &str, mode: &str| {
        format!(
            "postgres://{user}@{}:{}/{db_name}?sslmode={mode}",
            plain.pg_host, plain.pg_port
        )
    };
    for mode in ["require", "verify-full"] {
        let error = refused_in_the_handshake(store::connect_direct(&url("postgres", mode)).await);
        assert!(error.contains("server does not support TLS"), "{error}");
    }
    // prefer falls back to plaintext there, as libpq does
    assert!(!uses_tls(&url("postgres", "prefer")).await);

    for command in [&["migrate"][..], &["seed", "--demo"]] {
        let out = switchboard_command()
            .args(command)
            .env("DATABASE_DIRECT_URL", url("postgres", "require"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?}: {stderr}");
        assert!(
            stderr.contains("does not support TLS"),
            "{command:?}: {stderr}"
        );
    }

    // `serve` does not start: a setting that cannot work, not an outage
    let out = switchboard_command()
        .arg("serve")
        .env("DATABASE_URL", url("switchboard_daemon", "disable"))
        .env("DATABASE_DIRECT_URL", url("switchboard_daemon", "require"))
        .env("REDIS_URL", &plain.redis_plain_url)
        .env("SWITCHBOARD_GRPC_ADDR", "127.0.0.1:0")
        .env("SWITCHBOARD_ADMIN_ADDR", "127.0.0.1:0")
        .env("SWITCHBOARD_SPOOL_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("DATABASE_DIRECT_URL") && stderr.contains("sslmode=require"),
        "{stderr}"
    );
    // and no password or URL in what it printed
    assert!(!stderr.contains("postgres://"), "{stderr}");
}

#[test]
fn unusable_tls_settings_are_refused_before_connecting() {
    for (url, expected) in [
        ("postgres://h/db?sslmode=allow", "allow"),
        (
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            "/nonexistent/ca.crt",
        ),
    ] {
        let error = PgTarget::parse(url).unwrap_err().to_string();
        assert!(error.contains(expected), "{url}: {error}");
    }
    let target = PgTarget::parse("postgres://h/db?sslmode=verify-full&sslrootcert=system").unwrap();
    assert_eq!(target.mode, SslMode::VerifyFull);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_cache_admission_and_tombstones_work_over_redis_tls() {
    let stack = Stack::from_env();
    assert!(
        stack.redis_url.starts_with("rediss://"),
        "{}",
        stack.redis_url
    );
    let db_name = create_database(&stack).await;
    let mut db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    store::seed::demo(&mut db).await.unwrap();
    // nothing preloaded: lookups go through L2, and fill it; and no call
    // admitted without Redis, so an admitted call proves it is reached
    let cold = |c: &mut switchboard::config::ServeConfig| {
        c.cache.cache_warm_limit = 0;
        c.admission.admission_on_redis_down = switchboard::admission::RedisDownPolicy::Reject;
        // about TLS working, not about speed: on a loaded machine a TLS
        // exchange may take longer than the default Redis timeout, and a
        // route is filled into L2 only once
        c.redis.redis_timeout = Duration::from_secs(2);
    };
    let pooler = stack.pgbouncer_port;
    let app = spawn_app_on(stack, db_name, cold).await;

    // admission: a lease taken in Redis, over TLS
    eventually(
        "a call admitted through Redis over TLS",
        Duration::from_secs(5),
        || {
            let mut client = app.client.clone();
            async move {
                client
                    .route_call(route_request("+14155550100", "tls-call"))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    // L2: a second replica's first lookup is answered from Redis
    let second = spawn_on_via(&app, pooler, cold).await;
    let key_prefix = &app.db_name;
    let redis = app.stack.redis_client();
    let plain = redis.get_multiplexed_async_connection().await.unwrap();
    eventually(
        "the route is filled into Redis",
        Duration::from_secs(5),
        || {
            let plain = plain.clone();
            async move {
                !values(plain, &format!("{key_prefix}:*:n:+14155550100"))
                    .await
                    .is_empty()
            }
        },
    )
    .await;
    // its admission decides by the Redis-down policy (reject) until its
    // own connection over TLS is up
    second.connected_to_redis().await;
    let mut second_client = second.client.clone();
    second_client
        .route_call(route_request("+14155550100", "tls-call-2"))
        .await
        .expect("routed by the second replica");
    assert!(
        metric(
            second.admin_addr,
            r#"switchboard_cache_hits_total{tier="l2"}"#
        )
        .await
            >= 1.0
    );

    // invalidation: the change's tombstone is written over TLS
    db.execute(
        "update public.agents set name = 'Over TLS' where id = (select agent_id from public.phone_numbers where number = '+14155550100')",
        &[],
    )
    .await
    .unwrap();
    eventually(
        "a tombstone replaces the agent in Redis",
        Duration::from_secs(5),
        || {
            let plain = plain.clone();
            async move {
                values(plain, &format!("{key_prefix}:*:a:*"))
                    .await
                    .iter()
                    .any(|value| value == b"tombstone")
            }
        },
    )
    .await;
}

/// The values of the keys matching `pattern`, read in plaintext.
async fn values(mut redis: redis::aio::MultiplexedConnection, pattern: &str) -> Vec<Vec<u8>> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut values = Vec::new();
    for key in keys {
        values.push(
            redis::cmd("GET")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap(),
        );
    }
    values
}

#[tokio::test]
async fn redis_with_a_certificate_from_another_ca_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let other = unrelated_ca(dir.path());
    let mut app = spawn_seeded_app_with(|c| {
        c.redis.redis_ca_file = Some(other.into());
        c.admission.admission_on_redis_down = switchboard::admission::RedisDownPolicy::Reject;
    })
    .await;
    let status = app
        .client
        .route_call(route_request("+14155550100", "untrusted-redis"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unavailable, "admission_unavailable")
    );
}
