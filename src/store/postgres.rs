//! PostgreSQL: the source of truth for routing data.
//!
//! Two kinds of connection:
//!
//! * the **pooled** path (`DATABASE_URL`) goes through a transaction-mode
//!   pooler (Supavisor's port 6543 in production, PgBouncer locally). A
//!   pooler in transaction mode hands each transaction to any server
//!   connection, so named prepared statements do not survive: every query
//!   here uses `query_typed` (an unnamed statement with the parameter types
//!   given up front, one round trip) and casts enum columns to `text`. No
//!   named or cached prepared statement, and no untyped query, on this path.
//! * the **direct** path (`DATABASE_DIRECT_URL`) is a plain session, used for
//!   migrations and seeding (and later for `LISTEN`).
//!
//! Every wait is bounded: pool checkout, connection set-up and each query
//! have their own timeout, so a dead or hung database turns into a
//! [`ResolveError`] in bounded time instead of a stuck call.

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::{types::Type, Row};

mod rows;

use self::rows::{
    agent_from_row, customer_from_row, organization_from_row, range_from_row, route_from_row,
    route_sharing,
};
use super::PgTarget;
use crate::domain::{
    Agent, AgentId, CallId, Customer, Directory, NumberRange, OrgId, Organization, ResolveError,
    Resolver, Route, E164,
};
use crate::telemetry::{outage::POSTGRES, series::Query};

/// Pool and timeout settings for the pooled path.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections this replica holds to the pooler.
    pub max_size: usize,
    /// Longest wait for a free pooled connection.
    pub wait_timeout: Duration,
    /// Longest wait to open a new connection (TCP + startup + auth).
    pub connect_timeout: Duration,
    /// Longest wait for one query's answer.
    pub query_timeout: Duration,
}

/// The pooled PostgreSQL store: implements [`Resolver`] for routing reads.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    query_timeout: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .finish()
    }
}

/// An organization's columns, named as `organization_from_row` reads them.
macro_rules! organization_columns {
    () => {
        "o.id as org_id, o.slug as org_slug, o.name as org_name,
           o.plan_tier::text as org_plan_tier, coalesce(o.settings, '{}') as org_settings,
           o.is_active and o.deleted_at is null as org_active,
           o.concurrency_limit as org_concurrency_limit"
    };
}

/// The organization's policy, named as `organization_from_row` reads it
/// (one call per organization read: see `ACTIVE_ROUTES_SQL`).
macro_rules! policy_column {
    () => {
        "switchboard.routing_policy(o.id) as org_policy"
    };
}

/// An agent's columns, named as `agent_from_row` reads them.
macro_rules! agent_columns {
    () => {
        "a.id as agent_id, a.name as agent_name, coalesce(a.voice_id, '') as agent_voice_id,
           coalesce(a.llm_config, '{}') as agent_llm_config, a.is_active as agent_active,
           a.concurrency_limit as agent_concurrency_limit"
    };
}

/// A route row: the number joined to its org and agent, as `route_from_row`
/// reads it. The composite key `(org_id, agent_id)` guarantees the agent
/// belongs to the number's organization.
macro_rules! route_select {
    ($policy:expr) => {
        concat!(
            "
    select p.number, p.is_active as number_active, p.id as number_id,
           p.concurrency_limit as number_concurrency_limit,
           ",
            organization_columns!(),
            ",
           ",
            $policy,
            ",
           ",
            agent_columns!(),
            "
      from public.phone_numbers p
      join public.organizations o on o.id = p.org_id
      join public.agents a on a.org_id = p.org_id and a.id = p.agent_id"
        )
    };
}

/// One resolution, one round trip. Public for the benchmarks, which run the
/// same statement straight through the pooler as the "no daemon" baseline.
pub const RESOLVE_NUMBER_SQL: &str = concat!(
    route_select!(policy_column!()),
    "\n     where p.number = $1"
);

/// One agent, for reloading just the part of routes a change evicted.
const RESOLVE_AGENT_SQL: &str = concat!(
    "
    select ",
    agent_columns!(),
    "
      from public.agents a
     where a.id = $1"
);

/// One organization, likewise.
const RESOLVE_ORGANIZATION_SQL: &str = concat!(
    "
    select ",
    organization_columns!(),
    ",
           ",
    policy_column!(),
    "
      from public.organizations o
     where o.id = $1"
);

/// Every active route, for warm start; `$1` caps the rows read. Each
/// organization's policy is built once (the CTE), not once per number.
const ACTIVE_ROUTES_SQL: &str = concat!(
    "
    with policies as materialized (
      select o.id, switchboard.routing_policy(o.id) as org_policy
        from public.organizations o
       where exists (select 1 from public.phone_numbers p where p.org_id = o.id and p.is_active))",
    route_select!("pol.org_policy"),
    "
      join policies pol on pol.id = o.id
     where p.is_active
     limit $1"
);

/// Every number range (ranges are few: a block of numbers each).
const RANGES_SQL: &str = "
    select r.id, r.prefix, r.org_id, r.agent_id, r.is_active, r.concurrency_limit
      from public.number_ranges r";

/// A query's row limit one past `limit`, to tell whether there are more.
fn one_more_than(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
}

/// Every provisioned number, whatever its state (the directory of the
/// route cache), one more than the limit to tell whether there are more.
const PROVISIONED_NUMBERS_SQL: &str = "
    select p.number from public.phone_numbers p limit $1";

/// A caller's customer record in one organization. Public for the
/// benchmarks, whose per-call baseline runs it through the pooler.
pub const FIND_CUSTOMER_SQL: &str = "
    select c.id, c.phone, c.name, c.email
      from public.customers c
     where c.org_id = $1 and c.phone = $2";

mod versions;

pub use self::versions::read_versions;

/// Why the pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolSetupError {
    #[error("DATABASE_URL {0}")]
    Url(#[from] super::connection::TargetError),
    #[error("cannot build the database pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

impl PgStore {
    /// Builds the pool. Connections are opened lazily, so this succeeds while
    /// the database is down; `ping` says whether it answers.
    pub fn new(database_url: &str, settings: &PoolSettings) -> Result<Self, PoolSetupError> {
        let PgTarget {
            mut config, tls, ..
        } = PgTarget::parse(database_url)?;
        config.connect_timeout(settings.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("switchboard");
        }
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                // `Fast` only checks that the connection is open: a
                // `select 1` per checkout would double the round trips.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .wait_timeout(Some(settings.wait_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            query_timeout: settings.query_timeout,
        })
    }

    /// Whether the database answers through the pooler right now.
    pub async fn ping(&self) -> Result<(), ResolveError> {
        self.query_typed(Query::Ping, "select 1", &[])
            .await
            .map(drop)
    }

    /// Every active route, if there are at most `limit`; `None` when there
    /// are more (too many to preload).
    pub async fn active_routes(&self, limit: usize) -> Result<Option<Vec<Route>>, ResolveError> {
        let cap = one_more_than(limit);
        let rows = self
            .query_typed(
                Query::ActiveRoutes,
                ACTIVE_ROUTES_SQL,
                &[(&cap, Type::INT8)],
            )
            .await?;
        if rows.len() > limit {
            return Ok(None);
        }
        // one unreadable row must not keep every other route from loading:
        // it is logged, counted and left to be read (and refused) on its own;
        // an organization (its policy compiled) is read once for all its
        // numbers
        let mut organizations: HashMap<OrgId, Arc<Organization>> = HashMap::new();
        let routes = rows
            .iter()
            .filter_map(|row| match route_sharing(row, &mut organizations) {
                Ok(route) => Some(route),
                Err(error) => {
                    metrics::counter!(
                        "switchboard_store_rows_skipped_total",
                        "query" => <&str>::from(Query::ActiveRoutes)
                    )
                    .increment(1);
                    let number = row.try_get::<_, &str>(0).unwrap_or("?");
                    tracing::warn!(%error, number, "warm start skips a route it cannot read");
                    None
                }
            })
            .collect();
        Ok(Some(routes))
    }

    /// Every number range.
    pub async fn number_ranges(&self) -> Result<Vec<NumberRange>, ResolveError> {
        let rows = self.query_typed(Query::Ranges, RANGES_SQL, &[]).await?;
        rows.iter().map(range_from_row).collect()
    }

    /// Every provisioned number, whatever its state; `None` if there are
    /// more than `limit`. A number stored in a form that is not E.164 is
    /// skipped: it is never looked up in that form.
    pub async fn provisioned_numbers(
        &self,
        limit: usize,
    ) -> Result<Option<Vec<E164>>, ResolveError> {
        let cap = one_more_than(limit);
        let rows = self
            .query_typed(
                Query::ProvisionedNumbers,
                PROVISIONED_NUMBERS_SQL,
                &[(&cap, Type::INT8)],
            )
            .await?;
        if rows.len() > limit {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .filter_map(|row| row.try_get::<_, &str>(0).ok())
                .filter_map(|number| E164::from_canonical(number).ok())
                .collect(),
        ))
    }

    /// Pool occupancy, for metrics and readiness.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// Runs one typed query on a pooled connection with every wait bounded.
    pub(super) async fn query_typed(
        &self,
        what: Query,
        sql: &str,
        params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, ResolveError> {
        self.run_typed(what, sql, params, self.query_timeout)
            .await
            .map_err(Failure::into_resolve_error)
    }

    /// One typed statement on a pooled connection: checkout, connect and the
    /// statement itself each bounded. Counts and times it as `what`.
    pub(super) async fn run_typed(
        &self,
        what: Query,
        sql: &str,
        params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
        timeout: Duration,
    ) -> Result<Vec<Row>, Failure> {
        let started = std::time::Instant::now();
        let outcome = async {
            let connection = self.pool.get().await.map_err(|e| {
                if matches!(e, PoolError::Timeout(_)) {
                    metrics::counter!("switchboard_db_pool_timeouts_total").increment(1);
                }
                Failure::Pool(e)
            })?;
            let mut client = Checkout(Some(connection));
            let conn = client.0.as_ref().expect("present until finished");
            match tokio::time::timeout(timeout, conn.query_typed(sql, params)).await {
                Ok(result) => {
                    client.finish();
                    result.map_err(Failure::Query)
                }
                // Not finished: `client` is dropped with its query unanswered
                // and the connection is discarded (see Checkout).
                Err(_) => Err(Failure::Timeout),
            }
        }
        .await;
        let what: &'static str = what.into();
        metrics::histogram!("switchboard_store_query_seconds", "query" => what)
            .record(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(_) => POSTGRES.succeeded(),
            // the database answered: it is up, the statement is at fault
            Err(Failure::Query(e)) if !transient(e) => POSTGRES.succeeded(),
            Err(failure) => POSTGRES.failed(&format_args!("{what}: {failure}")),
        }
        if outcome.is_err() {
            metrics::counter!("switchboard_store_query_errors_total", "query" => what).increment(1);
        }
        outcome
    }
}

/// Why a pooled statement did not complete.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection: the pool timed out or could not connect.
    Pool(PoolError),
    /// The statement did not answer in time (its connection is discarded).
    Timeout,
    /// The connection failed, or the database answered with an error.
    Query(tokio_postgres::Error),
}

impl Failure {
    /// What a reader of routes makes of it.
    fn into_resolve_error(self) -> ResolveError {
        match self {
            Failure::Pool(e) => pool_error(e),
            Failure::Timeout => ResolveError::Timeout("database query"),
            Failure::Query(e) => match transient(&e) {
                true => ResolveError::Unavailable(describe(&e)),
                false => ResolveError::Corrupt(describe(&e)),
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Pool(e) => write!(f, "no pooled connection: {}", describe(e)),
            Failure::Timeout => f.write_str("no answer within the query timeout"),
            Failure::Query(e) => f.write_str(&describe(e)),
        }
    }
}

/// An error as an operator needs it: with its causes (tokio-postgres says
/// "error connecting to server" and "db error", and keeps what happened in
/// its source) and, where PostgreSQL answered, its SQLSTATE.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut sqlstate = None;
    let mut current = error;
    while let Some(cause) = current.source() {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause;
    }
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
            sqlstate = Some(db.code().code().to_string());
            break;
        }
        current = e.source();
    }
    match sqlstate {
        Some(code) => format!("{text} (SQLSTATE {code})"),
        None => text,
    }
}

impl Resolver for PgStore {
    type Source = Self;

    fn source(&self) -> &Self {
        self
    }

    async fn resolve(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
        let rows = self
            .query_typed(
                Query::ResolveNumber,
                RESOLVE_NUMBER_SQL,
                &[(&number.as_str(), Type::TEXT)],
            )
            .await?;
        rows.first().map(route_from_row).transpose()
    }

    async fn resolve_agent(&self, id: AgentId) -> Result<Option<Arc<Agent>>, ResolveError> {
        let rows = self
            .query_typed(
                Query::ResolveAgent,
                RESOLVE_AGENT_SQL,
                &[(&id.uuid(), Type::UUID)],
            )
            .await?;
        rows.first()
            .map(|row| agent_from_row(row).map(Arc::new))
            .transpose()
    }

    async fn resolve_organization(
        &self,
        id: OrgId,
    ) -> Result<Option<Arc<Organization>>, ResolveError> {
        let rows = self
            .query_typed(
                Query::ResolveOrganization,
                RESOLVE_ORGANIZATION_SQL,
                &[(&id.uuid(), Type::UUID)],
            )
            .await?;
        rows.first()
            .map(|row| organization_from_row(row).map(Arc::new))
            .transpose()
    }

    fn ranges(
        &self,
    ) -> impl std::future::Future<Output = Result<Vec<NumberRange>, ResolveError>> + Send {
        self.number_ranges()
    }

    async fn resolve_caller(
        &self,
        org_id: OrgId,
        phone: &E164,
    ) -> Result<Option<Arc<Customer>>, ResolveError> {
        let rows = self
            .query_typed(
                Query::FindCustomer,
                FIND_CUSTOMER_SQL,
                &[(&org_id.uuid(), Type::UUID), (&phone.as_str(), Type::TEXT)],
            )
            .await?;
        rows.first()
            .map(|row| customer_from_row(row).map(Arc::new))
            .transpose()
    }
}

impl Directory for PgStore {
    async fn call_org(&self, call_id: CallId) -> Result<Option<OrgId>, ResolveError> {
        self.find_call_org(call_id).await
    }
}

/// A pooled connection in use. If the query is abandoned (its timeout fired,
/// or the request's own deadline dropped the future), the connection still
/// owes an answer to a query nobody waits for: it is closed instead of going
/// back to the pool, where the next caller would queue behind it.
struct Checkout(Option<Object>);

impl Checkout {
    /// The query completed: return the connection to the pool.
    fn finish(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(abandoned) = self.0.take() {
            metrics::counter!("switchboard_store_connections_discarded_total").increment(1);
            drop(Object::take(abandoned));
        }
    }
}

fn pool_error(e: PoolError) -> ResolveError {
    match e {
        PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            ResolveError::Timeout("database pool checkout")
        }
        PoolError::Timeout(_) => ResolveError::Timeout("database connect"),
        other => ResolveError::Unavailable(describe(&other)),
    }
}

/// Whether a query error means "not now" rather than "never": the
/// connection failing under us, or SQLSTATE classes 08 (connection), 53
/// (insufficient resources) and 57 (operator intervention: shutdown,
/// cancel). For routing reads anything else means this build and the
/// schema disagree.
pub(super) fn transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => ["08", "53", "57"]
            .iter()
            .any(|class| db.code().code().starts_with(class)),
        None => true,
    }
}
