//! Schema migrations: the plain SQL files in `migrations/`, embedded into the
//! binary at build time and applied in version order by refinery, which
//! records each one (with a checksum) in `switchboard.schema_history` and
//! refuses to run when an applied file has since been edited.

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::{types::Type, Client};

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

/// What `migrate` needs beyond the SQL files.
#[derive(Debug, Default, Clone)]
pub struct MigrateOptions {
    /// Adopting a single-tenant database: who owns its rows.
    pub adopt: Adoption,
    /// Password for the daemon's role (`switchboard_daemon`). When set, the
    /// role may log in with it; when not, the role is left as it is.
    pub daemon_password: Option<SecretString>,
}

/// Settings for adopting an existing single-tenant database (see
/// migrations/README.md). Unused on a database without legacy rows.
#[derive(Debug, Default, Clone)]
pub struct Adoption {
    /// Slug of the organization that receives the legacy rows (`default`).
    pub org_slug: Option<String>,
    /// Its display name (`Default organization`).
    pub org_name: Option<String>,
    /// Email of an existing user to make its owner.
    pub owner_email: Option<String>,
    /// Country calling code for legacy numbers stored without one (`1`).
    pub calling_code: Option<String>,
}

/// The role the daemon connects as.
pub const DAEMON_ROLE: &str = "switchboard_daemon";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error while migrating: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Migration(#[from] refinery::Error),
}

/// Applies every pending migration over a direct session and returns the ones
/// applied by this run (empty when the schema was up to date).
pub async fn run(
    client: &mut Client,
    options: &MigrateOptions,
) -> Result<Vec<Applied>, MigrateError> {
    client.batch_execute(LOCK_SQL).await?;
    let result = apply(client, options).await;
    // The lock goes with the session anyway; unlock explicitly so a
    // long-lived caller does not keep it.
    let unlocked = client.batch_execute(UNLOCK_SQL).await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply(
    client: &mut Client,
    options: &MigrateOptions,
) -> Result<Vec<Applied>, MigrateError> {
    client.batch_execute(INTERNAL_SCHEMA_SQL).await?;
    // The migrations read these session settings (V2, adoption phase).
    let adopt = &options.adopt;
    for (name, value) in [
        ("switchboard.adopt_org_slug", &adopt.org_slug),
        ("switchboard.adopt_org_name", &adopt.org_name),
        ("switchboard.adopt_owner_email", &adopt.owner_email),
        ("switchboard.adopt_calling_code", &adopt.calling_code),
    ] {
        let value = value.as_deref().unwrap_or("");
        client
            .query_typed(
                "select set_config($1, $2, false)",
                &[(&name, Type::TEXT), (&value, Type::TEXT)],
            )
            .await?;
    }
    // All pending migrations in one transaction: a run that fails changes
    // nothing (no policies live over half-converted data, no half-adopted
    // legacy schema), and a rerun starts from where the database was.
    let mut runner = embedded::migrations::runner().set_grouped(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    let mut applied = Vec::new();
    let mut attempt = 0;
    loop {
        let run = runner.run_async(client).await;
        let report = match &run {
            Ok(report) => Some(report),
            Err(error) => error.report(),
        };
        applied.extend(report.into_iter().flat_map(|report| {
            report.applied_migrations().iter().map(|m| Applied {
                version: m.version(),
                name: m.name().to_string(),
            })
        }));
        match run {
            Ok(_) => break,
            // The run is one transaction, rolled back when PostgreSQL
            // chose it as the deadlock's victim: a rerun applies it all.
            // (Seen with autovacuum's ANALYZE of a table whose policies a
            // migration replaces.)
            Err(error) if attempt < DEADLOCK_RETRIES && is_deadlock(&error) => {
                attempt += 1;
                tracing::warn!(%error, attempt, "migration deadlocked; running it again");
            }
            Err(error) => return Err(error.into()),
        }
    }
    if let Some(password) = &options.daemon_password {
        set_daemon_password(client, password).await?;
    }
    Ok(applied)
}

/// Reruns of a migration that deadlocked with another session.
const DEADLOCK_RETRIES: u32 = 3;

/// Whether PostgreSQL aborted the migration to break a deadlock
/// (SQLSTATE 40P01).
fn is_deadlock(error: &refinery::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(db) = current
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.as_db_error())
        {
            return *db.code() == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED;
        }
        cause = current.source();
    }
    false
}

/// Lets the daemon's role log in with `password`. Only a SCRAM verifier,
/// computed here, reaches the server: the password never appears in its
/// statement log.
async fn set_daemon_password(client: &Client, password: &SecretString) -> Result<(), MigrateError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
    // DDL takes no parameters; the verifier is base64 and `$`-separated, so
    // quoting it as a literal is safe.
    let sql = format!("alter role {DAEMON_ROLE} with login password '{verifier}'");
    // Roles are cluster-wide: migrations of other databases in the same
    // cluster may update the role at the same moment ("tuple concurrently
    // updated"). That is worth a few retries, not a failed migration.
    let mut attempt = 0;
    loop {
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 5
                    && e.as_db_error()
                        .is_some_and(|db| db.message().contains("concurrently updated")) =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
