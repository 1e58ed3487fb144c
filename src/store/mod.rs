//! Everything that speaks SQL. Nothing outside this module knows a query.
//!
//! * [`postgres`]: the pooled store behind routing ([`PgStore`]);
//! * [`calls`]: call records and usage, written in batches by the recorder;
//! * [`migrate`]: schema migrations over the direct connection;
//! * [`seed`]: the demo data set;
//! * [`redis`]: the route cache's L2 in Redis, and [`redis_link`]: the
//!   Redis connection it shares with admission.

pub mod calls;
pub mod migrate;
pub mod postgres;
pub mod redis;
pub mod redis_link;
pub mod routing_changes;
pub mod seed;

pub use postgres::{PgStore, PoolSettings};

use tokio_postgres::{Client, NoTls};

/// Opens one session on the direct (non-pooled) connection, for migrations
/// and seeding. The connection task is spawned and logs if it fails.
pub async fn connect_direct(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "direct database connection closed");
        }
    });
    Ok(client)
}
