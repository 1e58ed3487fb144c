//! Schema migrations: the plain SQL files in `migrations/`, embedded into the
//! binary at build time and applied in version order by refinery, which
//! records each one (with a checksum) in `switchboard.schema_history` and
//! refuses to run when an applied file has since been edited.

use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Internal schema: never exposed through the Supabase API. Holds the
/// migration history and helper functions.
const INTERNAL_SCHEMA_SQL: &str = "create schema if not exists switchboard";
const HISTORY_TABLE: &str = "switchboard.schema_history";

/// Serializes concurrent `migrate` runs (several replicas starting at once):
/// a session-level advisory lock held for the whole run.
const LOCK_SQL: &str = "select pg_advisory_lock(hashtext('switchboard.migrate'))";
const UNLOCK_SQL: &str = "select pg_advisory_unlock(hashtext('switchboard.migrate'))";

/// One applied migration, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i32,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error while preparing migrations: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Migration(#[from] refinery::Error),
}

/// Applies every pending migration over a direct session and returns the ones
/// applied by this run (empty when the schema was up to date).
pub async fn run(client: &mut Client) -> Result<Vec<Applied>, MigrateError> {
    client.batch_execute(LOCK_SQL).await?;
    let result = apply(client).await;
    // The lock goes with the session anyway; unlock explicitly so a
    // long-lived caller does not keep it.
    let unlocked = client.batch_execute(UNLOCK_SQL).await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<Vec<Applied>, MigrateError> {
    client.batch_execute(INTERNAL_SCHEMA_SQL).await?;
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner.run_async(client).await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| Applied {
            version: m.version(),
            name: m.name().to_string(),
        })
        .collect())
}
