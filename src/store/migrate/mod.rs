//! Schema migrations: the plain SQL files in `migrations/`, embedded into the
//! binary at build time and applied in version order by refinery, which
//! records each one (with a checksum) in `switchboard.schema_history` and
//! refuses to run when an applied file has since been edited.
//!
//! A run is one transaction: every pending migration, and the adoption of
//! a multi-tenant database (`migrations/adoption/`) between them, commit
//! together or not at all. A dry run does the same and rolls back, reporting
//! what it did ([`Report`]).

mod in_transaction;
mod report;

use refinery::Target;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::{types::Type, Client, Row, Transaction};

use in_transaction::InTransaction;
pub use report::{Issue, Report};

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

/// Adopting a multi-tenant database: the steps around the migrations.
const ADOPT_BEFORE_V2: &str = include_str!("../../../migrations/adoption/before_v2.sql");
const ADOPT_AFTER_V2: &str = include_str!("../../../migrations/adoption/after_v2.sql");
const ADOPT_AFTER_ALL: &str = include_str!("../../../migrations/adoption/after_all.sql");
/// The migration that creates the tenancy tables.
const TENANCY_VERSION: i32 = 2;

/// One applied migration, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i32,
    pub name: String,
}

/// What `migrate` needs beyond the SQL files.
#[derive(Debug, Default, Clone)]
pub struct MigrateOptions {
    /// Adopting an existing database: who owns its rows.
    pub adopt: Adoption,
    /// Password for the daemon's role (`switchboard_daemon`). When set, the
    /// role may log in with it; when not, the role is left as it is.
    pub daemon_password: Option<SecretString>,
    /// Do everything, report it, and roll it all back.
    pub dry_run: bool,
}

/// Settings for adopting an existing database (see migrations/README.md).
/// Unused on a database without an application's rows.
#[derive(Debug, Default, Clone)]
pub struct Adoption {
    /// Single-tenant: slug of the organization that receives the rows
    /// (`default`).
    pub org_slug: Option<String>,
    /// Single-tenant: its display name (`Default organization`).
    pub org_name: Option<String>,
    /// Email of an existing user who becomes the owner of every organization
    /// that would otherwise have none.
    pub owner_email: Option<String>,
    /// Country calling code for numbers stored without one (`1`).
    pub calling_code: Option<String>,
    /// Finish an adoption that leaves an organization without an owner
    /// (recorded as an issue) instead of refusing it.
    pub allow_ownerless: bool,
}

/// What the database held before the run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, strum::Display)]
pub enum Shape {
    /// Migrated by Switchboard already: nothing to adopt.
    #[default]
    #[strum(to_string = "migrated by Switchboard")]
    Current,
    /// No tables of an application: the schema is created.
    #[strum(to_string = "empty")]
    Empty,
    /// A single-tenant application's agents, customers and calls, without
    /// organizations (adopted by V2).
    #[strum(to_string = "single-tenant (agents, customers and calls without organizations)")]
    SingleTenant,
    /// Organizations, and profiles carrying `org_id` and `role`: the
    /// voice-agent case study (adopted by `migrations/adoption/`).
    #[strum(to_string = "multi-tenant (profiles carry org_id and role)")]
    MultiTenant,
}

impl Shape {
    fn adopts(self) -> bool {
        matches!(self, Shape::SingleTenant | Shape::MultiTenant)
    }
}

/// The role the daemon connects as.
pub const DAEMON_ROLE: &str = "switchboard_daemon";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// PostgreSQL's message and SQLSTATE are in the text; not chained as a
    /// source, so that they are printed once.
    #[error("database error while migrating: {}", crate::store::describe(.0))]
    Database(tokio_postgres::Error),
    #[error(transparent)]
    Migration(#[from] refinery::Error),
    #[error(
        "adoption would leave {} without an owner: set SWITCHBOARD_ADOPT_OWNER_EMAIL to a user who \
         should own them, or pass --adopt-allow-ownerless to adopt them without one; nothing was changed",
        .0.join(", ")
    )]
    Ownerless(Vec<String>),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(error: tokio_postgres::Error) -> Self {
        MigrateError::Database(error)
    }
}

impl MigrateError {
    /// Whether PostgreSQL aborted the run to break a deadlock (SQLSTATE
    /// 40P01).
    fn is_deadlock(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match self {
            MigrateError::Database(error) => Some(error),
            _ => Some(self),
        };
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
}

/// Applies every pending migration over a direct session, adopting what the
/// database held, and reports what changed (nothing, when the schema was up
/// to date). With `dry_run`, reports and changes nothing.
pub async fn run(client: &mut Client, options: &MigrateOptions) -> Result<Report, MigrateError> {
    client.batch_execute(LOCK_SQL).await?;
    let result = run_locked(client, options).await;
    // The lock goes with the session anyway; unlock explicitly so a
    // long-lived caller does not keep it.
    let unlocked = client.batch_execute(UNLOCK_SQL).await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn run_locked(client: &mut Client, options: &MigrateOptions) -> Result<Report, MigrateError> {
    let mut attempt = 0;
    loop {
        match run_once(client, options).await {
            // The run is one transaction, rolled back when PostgreSQL chose
            // it as the deadlock's victim: a rerun applies it all. (Seen with
            // autovacuum's ANALYZE of a table whose policies a migration
            // replaces.)
            Err(error) if attempt < DEADLOCK_RETRIES && error.is_deadlock() => {
                attempt += 1;
                tracing::warn!(%error, attempt, "migration deadlocked; running it again");
            }
            Ok(report) => {
                if let (false, Some(password)) = (options.dry_run, &options.daemon_password) {
                    set_daemon_password(client, password).await?;
                }
                return Ok(report);
            }
            Err(error) => return Err(error),
        }
    }
}

async fn run_once(client: &mut Client, options: &MigrateOptions) -> Result<Report, MigrateError> {
    let tx = client.transaction().await?;
    // "already exists, skipping" for every column adoption finds in place:
    // the report says what changed
    tx.batch_execute("set local client_min_messages = warning")
        .await?;
    tx.batch_execute(INTERNAL_SCHEMA_SQL).await?;
    set_adoption_settings(&tx, &options.adopt).await?;
    let before = report::Snapshot::take(&tx).await?;
    let shape = detect_shape(&tx).await?;

    // V2 needs the multi-tenant tables' missing columns before it runs; its
    // tables exist for the conversion after it; V3's policies and the rest
    // come after that. One transaction throughout.
    if shape == Shape::MultiTenant {
        tx.batch_execute(ADOPT_BEFORE_V2).await?;
    }
    let mut applied = migrate_to(&tx, Target::Version(TENANCY_VERSION)).await?;
    if shape == Shape::MultiTenant {
        tx.batch_execute(ADOPT_AFTER_V2).await?;
    }
    applied.extend(migrate_to(&tx, Target::Latest).await?);
    if shape == Shape::MultiTenant {
        tx.batch_execute(ADOPT_AFTER_ALL).await?;
    }

    let mut report = Report::compare(&tx, &before, shape, applied).await?;
    if shape.adopts() && !report.ownerless.is_empty() {
        if !options.adopt.allow_ownerless {
            return Err(MigrateError::Ownerless(report.ownerless));
        }
        record_ownerless(&tx).await?;
        report = Report::compare(&tx, &before, shape, report.applied).await?;
    }
    if options.dry_run {
        tx.rollback().await?;
        report.dry_run = true;
        return Ok(report);
    }
    tx.commit().await?;
    Ok(report)
}

/// The migrations up to `target` not yet applied, applied in `tx`.
async fn migrate_to(tx: &Transaction<'_>, target: Target) -> Result<Vec<Applied>, MigrateError> {
    let mut runner = embedded::migrations::runner()
        .set_grouped(true)
        .set_target(target);
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner.run_async(&mut InTransaction(tx)).await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| Applied {
            version: m.version(),
            name: m.name().to_string(),
        })
        .collect())
}

/// The migrations read these settings (V2 and `migrations/adoption/`), for
/// this transaction only.
async fn set_adoption_settings(tx: &Transaction<'_>, adopt: &Adoption) -> Result<(), MigrateError> {
    for (name, value) in [
        ("switchboard.adopt_org_slug", &adopt.org_slug),
        ("switchboard.adopt_org_name", &adopt.org_name),
        ("switchboard.adopt_owner_email", &adopt.owner_email),
        ("switchboard.adopt_calling_code", &adopt.calling_code),
    ] {
        let value = value.as_deref().unwrap_or("");
        tx.query_typed(
            "select set_config($1, $2, true)",
            &[(&name, Type::TEXT), (&value, Type::TEXT)],
        )
        .await?;
    }
    Ok(())
}

/// The one row of a statement that always answers one (an aggregate, a
/// `select` of constants). `migrate` runs on the direct connection, but like
/// the rest of the store it sends only unnamed statements: nothing here
/// breaks if an operator points it at a pooler.
async fn one_row(tx: &Transaction<'_>, sql: &str) -> Result<Row, tokio_postgres::Error> {
    let mut rows = tx.query_typed(sql, &[]).await?;
    // an aggregate without GROUP BY answers exactly one row
    Ok(rows.swap_remove(0))
}

/// What the database holds, read before anything runs.
async fn detect_shape(tx: &Transaction<'_>) -> Result<Shape, MigrateError> {
    let row = one_row(
        tx,
        "select
               exists (select 1 from pg_attribute
                        where attrelid = to_regclass('public.profiles') and attname = 'org_id'
                          and not attisdropped),
               to_regclass('switchboard.adoptions') is not null,
               to_regclass('switchboard.schema_history') is not null,
               coalesce(to_regclass('public.agents'), to_regclass('public.customers'),
                        to_regclass('public.calls')) is not null",
    )
    .await?;
    let (profiles_with_org, adoptions, history, application_tables): (bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    // (tables that may not exist are read in statements of their own: a
    // statement naming a missing table fails as a whole)
    let adopted = adoptions
        && !tx
            .query_typed(
                "select 1 from switchboard.adoptions where shape = 'multi_tenant'",
                &[],
            )
            .await?
            .is_empty();
    let tenancy_applied = history
        && !tx
            .query_typed(
                "select 1 from switchboard.schema_history where version = $1",
                &[(&TENANCY_VERSION, Type::INT4)],
            )
            .await?
            .is_empty();
    Ok(if profiles_with_org && !adopted {
        Shape::MultiTenant
    } else if tenancy_applied {
        Shape::Current
    } else if application_tables {
        Shape::SingleTenant
    } else {
        Shape::Empty
    })
}

/// Records each live organization left without an owner.
async fn record_ownerless(tx: &Transaction<'_>) -> Result<(), MigrateError> {
    tx.batch_execute(
        "insert into switchboard.adoption_issues (table_name, row_id, issue)
         select 'public.organizations', o.id, 'no owner: adopted without one (--adopt-allow-ownerless)'
           from public.organizations o
          where o.deleted_at is null
            and not exists (select 1 from public.memberships m where m.org_id = o.id and m.role = 'owner')",
    )
    .await?;
    Ok(())
}

/// Reruns of a migration that deadlocked with another session.
const DEADLOCK_RETRIES: u32 = 3;

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
