//! Reading the routing change log (`switchboard.routing_changes`, written by
//! triggers, see migrations/V4) for the invalidation listener's replay.

use std::time::Duration;

use tokio_postgres::{
    types::{ToSql, Type},
    Client, Row,
};

use super::{describe, PgStore};
use crate::{
    domain::{Change, E164},
    telemetry::series::Query,
};

/// One logged change.
#[derive(Debug, Clone)]
pub struct LoggedChange {
    pub id: i64,
    /// What changed; `None` when the row names nothing this version knows
    /// (an entity added later, a malformed key).
    pub change: Option<Change>,
}

/// The change a log row or a notification names: its `entity` (`number`,
/// `agent`, `organization`, `customer` or `range`) and `key` (the E.164
/// number, the id, for a customer `<org id>:<phone>`, for a range its
/// prefix).
pub fn parse(entity: &str, key: &str) -> Option<Change> {
    match entity {
        "number" => E164::from_canonical(key).ok().map(Change::Number),
        "agent" => key.parse().ok().map(Change::Agent),
        "organization" => key.parse().ok().map(Change::Organization),
        "customer" => {
            let (org_id, phone) = key.split_once(':')?;
            let phone = E164::from_canonical(phone).ok()?;
            Some(Change::Customer(org_id.parse().ok()?, phone))
        }
        "range" => {
            let digits = key.strip_prefix('+')?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| Change::Range(key.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_keys_name_the_organization_and_the_phone() {
        let org = "6f1c1a36-58a4-4f1e-9a51-0c0f3b7d2e11";
        assert_eq!(
            parse("customer", &format!("{org}:+14155550199")),
            Some(Change::Customer(
                org.parse().unwrap(),
                E164::from_canonical("+14155550199").unwrap()
            ))
        );
        for key in [
            "+14155550199".to_string(),
            format!("{org}:4155550199"),
            format!("{org}+14155550199"),
            "not-a-uuid:+14155550199".to_string(),
        ] {
            assert_eq!(parse("customer", &key), None, "{key}");
        }
        assert_eq!(parse("invoice", org), None);
    }

    #[test]
    fn range_keys_are_prefixes() {
        assert_eq!(
            parse("range", "+1646555"),
            Some(Change::Range("+1646555".into()))
        );
        for key in ["1646555", "+", "+1646 555", "+1646x"] {
            assert_eq!(parse("range", key), None, "{key}");
        }
    }
}

/// What a replay found.
#[derive(Debug, Clone, Default)]
pub struct ChangeLog {
    /// Changes after the requested id (and within the overlap), in id order.
    pub changes: Vec<LoggedChange>,
    /// Smallest id still in the log: above `last + 1` means rows the caller
    /// never saw may have been pruned.
    pub oldest_id: Option<i64>,
    pub newest_id: Option<i64>,
}

const BOUNDS_SQL: &str = "select min(id), max(id) from switchboard.routing_changes";

/// Everything after `last_id`, plus whatever was logged up to `overlap`
/// before it: a transaction can take its id early and commit late, so ids do
/// not arrive in order. Applying a change twice is harmless.
const SINCE_SQL: &str = "
    select id, entity, key
      from switchboard.routing_changes
     where id > $1
        or changed_at > (select changed_at from switchboard.routing_changes where id = $1)
                        - make_interval(secs => $2)
     order by id";

/// Where the log is read from: the listener's own direct session, or the
/// pooled connections (a replica that follows a relay instead of listening).
pub trait LogReader {
    fn rows(
        &self,
        sql: &'static str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> impl std::future::Future<Output = Result<Vec<Row>, String>> + Send;
}

impl LogReader for Client {
    async fn rows(
        &self,
        sql: &'static str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, String> {
        self.query_typed(sql, params)
            .await
            .map_err(|e| describe(&e))
    }
}

impl LogReader for PgStore {
    async fn rows(
        &self,
        sql: &'static str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, String> {
        self.query_typed(Query::ChangeLog, sql, params)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Reads the log's bounds and, after a first session (`last_id` seen), the
/// changes after it.
pub async fn since(
    reader: &impl LogReader,
    last_id: Option<i64>,
    overlap: Duration,
) -> Result<ChangeLog, String> {
    let bounds = reader.rows(BOUNDS_SQL, &[]).await?;
    let (oldest_id, newest_id) = bounds
        .first()
        .map(|row| (row.get(0), row.get(1)))
        .unwrap_or_default();
    let changes = match last_id {
        None => Vec::new(),
        Some(last_id) => reader
            .rows(
                SINCE_SQL,
                &[
                    (&last_id, Type::INT8),
                    (&overlap.as_secs_f64(), Type::FLOAT8),
                ],
            )
            .await?
            .iter()
            .map(|row| LoggedChange {
                id: row.get(0),
                change: parse(row.get(1), row.get(2)),
            })
            .collect(),
    };
    Ok(ChangeLog {
        changes,
        oldest_id,
        newest_id,
    })
}
