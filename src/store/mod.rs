//! Everything that speaks SQL. Nothing outside this module knows a query.
//!
//! * [`postgres`]: the pooled store behind routing ([`PgStore`]);
//! * [`connection`]: how every PostgreSQL connection is opened, with TLS;
//! * [`calls`]: call records and usage, written in batches by the recorder;
//! * [`migrate`]: schema migrations over the direct connection;
//! * [`seed`]: the demo data set;
//! * [`redis`]: the route cache's L2 in Redis, and [`redis_link`]: the
//!   Redis connection it shares with admission.

pub mod calls;
pub mod connection;
pub mod migrate;
pub mod postgres;
pub mod redis;
pub mod redis_link;
pub mod routing_changes;
pub mod seed;

pub use postgres::{describe, PgStore, PoolSettings};

use tokio_postgres::Client;

pub use connection::{PgTarget, SslMode, TargetError};

/// Why a direct session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the connection string {0}")]
    Target(#[from] TargetError),
    #[error(transparent)]
    Connect(#[from] tokio_postgres::Error),
}

/// Opens one session on the direct (non-pooled) connection, for migrations
/// and seeding, with TLS as its `sslmode` says. The connection task is
/// spawned and logs if it fails.
pub async fn connect_direct(url: &str) -> Result<Client, ConnectError> {
    let (client, connection) = PgTarget::parse(url)?.connect().await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "direct database connection closed");
        }
    });
    Ok(client)
}
