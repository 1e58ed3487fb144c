//! What the benches share: the local stack's settings, a fresh bench
//! database, and a plain GET of the daemon's admin listener. Each bench is
//! its own crate and uses part of this.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use secrecy::SecretString;
use switchboard::store::{
    self,
    migrate::{self, MigrateOptions},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest an admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A setting of the local stack (`eval "$(deploy/local/stack env)"`).
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `eval \"$(deploy/local/stack env)\"` first")
    })
}

/// A fresh, migrated database with the demo data, and how to reach it.
pub struct BenchDatabase {
    pub name: String,
    /// As the daemon's role, through PgBouncer (transaction mode).
    pub pooled_url: String,
    /// As the daemon's role, direct (its LISTEN session).
    pub daemon_direct_url: String,
    /// As the superuser, direct.
    pub superuser_url: String,
}

pub async fn bench_database() -> BenchDatabase {
    let name = format!("sb_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = store::connect_direct(&env("SWITCHBOARD_TEST_PG_ADMIN_URL"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("create database {name}"))
        .await
        .unwrap();
    let (host, pg, bouncer) = (
        env("SWITCHBOARD_TEST_PG_HOST"),
        env("SWITCHBOARD_TEST_PG_PORT"),
        env("SWITCHBOARD_TEST_PGBOUNCER_PORT"),
    );
    // as the daemon connects in production: TLS, the certificate checked
    let tls = std::env::var("SWITCHBOARD_TEST_CA_FILE")
        .map(|ca| format!("?sslmode=verify-full&sslrootcert={ca}"))
        .unwrap_or_default();
    let superuser_url = format!("postgres://postgres@{host}:{pg}/{name}{tls}");
    let mut client = store::connect_direct(&superuser_url).await.unwrap();
    let options = MigrateOptions {
        daemon_password: Some(SecretString::from("local")),
        ..Default::default()
    };
    migrate::run(&mut client, &options).await.unwrap();
    store::seed::demo(&mut client).await.unwrap();
    let daemon = migrate::DAEMON_ROLE;
    BenchDatabase {
        pooled_url: format!("postgres://{daemon}@{host}:{bouncer}/{name}{tls}"),
        daemon_direct_url: format!("postgres://{daemon}@{host}:{pg}/{name}{tls}"),
        superuser_url,
        name,
    }
}

/// The CA that `rediss://` on the local stack needs, if any.
pub fn redis_ca_file() -> Option<std::path::PathBuf> {
    std::env::var_os("SWITCHBOARD_REDIS_CA_FILE").map(Into::into)
}

/// A minimal HTTP/1.0 GET on the admin listener: (status code, body), or
/// `None` when it does not answer within [`ADMIN_TIMEOUT`].
pub async fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
