//! The new versions of changed agents and organizations, read by the
//! invalidation listener on its own session (the direct connection), not
//! through the pool: what the route cache swaps in for them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_postgres::{types::Type, Row};

use super::{
    rows::{agent_from_row, organization_from_row},
    Failure,
};
use crate::domain::{AgentId, OrgId, ResolveError, Versions};

/// Agents by id: the new versions of changed agents, read by the
/// invalidation listener.
const AGENTS_SQL: &str = concat!(
    "
    select ",
    agent_columns!(),
    "
      from public.agents a
     where a.id = any($1)"
);

/// Organizations by id, likewise.
const ORGANIZATIONS_SQL: &str = concat!(
    "
    select ",
    organization_columns!(),
    ",
           ",
    policy_column!(),
    "
      from public.organizations o
     where o.id = any($1)"
);

/// The agents and organizations `agents` and `organizations` name, as they
/// are now, read on `client` (a session of its own: the invalidation
/// listener's, on the direct connection) in one statement for each kind,
/// each within `timeout`. An id not found is gone.
pub async fn read_versions(
    client: &tokio_postgres::Client,
    agents: &[AgentId],
    organizations: &[OrgId],
    timeout: Duration,
) -> Result<Versions, ResolveError> {
    let started = std::time::Instant::now();
    let agents = read_by_id(
        client,
        AGENTS_SQL,
        agents,
        agent_from_row,
        |a| a.id,
        timeout,
    );
    let agents = agents.await?;
    let organizations = read_by_id(
        client,
        ORGANIZATIONS_SQL,
        organizations,
        organization_from_row,
        |o| o.id,
        timeout,
    )
    .await?;
    Ok(Versions {
        agents,
        organizations,
        took: started.elapsed(),
    })
}

/// The rows `ids` name, read by `sql` (`$1`: the ids) on `client` unless
/// there are none: each id's value, `None` where no row has it.
async fn read_by_id<Id, T>(
    client: &tokio_postgres::Client,
    sql: &str,
    ids: &[Id],
    from_row: fn(&Row) -> Result<T, ResolveError>,
    id_of: fn(&T) -> Id,
    timeout: Duration,
) -> Result<HashMap<Id, Option<Arc<T>>>, ResolveError>
where
    Id: Copy + Eq + std::hash::Hash + Into<uuid::Uuid>,
{
    let mut read: HashMap<Id, Option<Arc<T>>> = ids.iter().map(|id| (*id, None)).collect();
    if ids.is_empty() {
        return Ok(read);
    }
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| (*id).into()).collect();
    for row in &read_on(client, sql, &uuids, timeout).await? {
        let value = from_row(row)?;
        read.insert(id_of(&value), Some(Arc::new(value)));
    }
    Ok(read)
}

/// One statement on `client` with the ids `$1`, within `timeout`.
async fn read_on(
    client: &tokio_postgres::Client,
    sql: &str,
    ids: &[uuid::Uuid],
    timeout: Duration,
) -> Result<Vec<Row>, ResolveError> {
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
        [(&ids, Type::UUID_ARRAY)];
    let read = client.query_typed(sql, &params);
    match tokio::time::timeout(timeout, read).await {
        Ok(read) => read.map_err(|e| Failure::Query(e).into_resolve_error()),
        Err(_) => Err(Failure::Timeout.into_resolve_error()),
    }
}
