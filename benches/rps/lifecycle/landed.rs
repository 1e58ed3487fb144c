//! The landed check: that every call, end and usage the daemon acknowledged
//! is in the database exactly once, and that `usage_daily` grew by exactly
//! what was acknowledged.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use tokio_postgres::{Client, IsolationLevel};
use uuid::Uuid;

use super::{
    call::{CallOutcome, END_REASON_STORED, END_STATUS_STORED},
    expected::{Expected, UsageKey},
};

/// `usage_daily` summed per organization and metric: thousandths of the
/// quantity, and events.
pub type Rollup = HashMap<(Uuid, String), (i64, i64)>;

/// One kind of record, compared.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Count {
    pub acknowledged: i64,
    pub landed: i64,
    pub lost: i64,
    pub duplicated: i64,
    /// Requests that failed (errors, deadlines): they may land or not.
    pub unacknowledged: i64,
    pub unacknowledged_landed: i64,
}

/// The four comparisons, named as printed.
pub type Landed = Vec<(&'static str, Count)>;

/// The comparison of `usage_daily`'s growth, counted in thousandths of a
/// unit (every other one counts records).
pub const QUANTITY: &str = "usage_daily quantity";

/// How many of what a comparison counts make one of what it reports.
pub fn per_unit(kind: &str) -> f64 {
    if kind == QUANTITY {
        1000.0
    } else {
        1.0
    }
}

/// The bench database, and `usage_daily` as it was before the run.
pub struct Database {
    client: Client,
    before: Rollup,
}

impl Database {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let client = switchboard::store::connect_direct(url).await?;
        let before = rollup(&client).await?;
        Ok(Self { client, before })
    }

    /// Reads until everything acknowledged is there, or `timeout`, then
    /// compares.
    pub async fn check(
        &mut self,
        outcomes: &[CallOutcome],
        run_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Landed> {
        let expected = Expected::of(outcomes);
        let give_up = Instant::now() + timeout;
        loop {
            let landed = self.compare(&expected, run_id).await?;
            let lost: i64 = landed.iter().map(|(_, c)| c.lost).sum();
            if lost == 0 || Instant::now() >= give_up {
                return Ok(landed);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One consistent reading (a repeatable-read snapshot: `usage_daily`
    /// is written in the same transactions as the events it sums).
    async fn compare(&mut self, expected: &Expected, run_id: &str) -> anyhow::Result<Landed> {
        let tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let call_ids: Vec<Uuid> = expected.opened.values().copied().collect();
        let calls = tx
            .query(
                "select id, gateway_call_id, ended_at is not null, end_reason, status
                   from public.calls
                  where starts_with(gateway_call_id, $1) or id = any($2)",
                &[&format!("{run_id}-"), &call_ids],
            )
            .await?;
        let usage = tx
            .query(
                "select id from public.usage_events where call_id = any($1)",
                &[&call_ids],
            )
            .await?;
        let after = rollup(&tx).await?;
        tx.commit().await?;
        let calls: Vec<CallRow> = calls
            .iter()
            .map(|r| CallRow {
                id: r.get(0),
                gateway_call_id: r.get(1),
                ended: r.get(2),
                end_reason: r.get(3),
                status: r.get(4),
            })
            .collect();
        let usage: Vec<Uuid> = usage.iter().map(|r| r.get(0)).collect();
        let (usage_count, landed_unacked) = compare_usage(expected, &usage);
        Ok(vec![
            ("calls opened", compare_opened(expected, &calls)),
            ("calls ended", compare_ended(expected, &calls)),
            ("usage events", usage_count),
            (
                QUANTITY,
                compare_rollup(expected, &landed_unacked, &self.before, &after),
            ),
        ])
    }
}

async fn rollup(client: &impl tokio_postgres::GenericClient) -> anyhow::Result<Rollup> {
    let rows = client
        .query(
            "select org_id, metric, round(sum(quantity) * 1000)::int8, sum(events)::int8
               from public.usage_daily group by 1, 2",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect())
}

/// What the check reads of a `calls` row.
pub struct CallRow {
    pub id: Uuid,
    pub gateway_call_id: Option<String>,
    pub ended: bool,
    pub end_reason: Option<String>,
    pub status: String,
}

/// A row per acknowledged RouteCall, under its gateway call id and the id
/// it was answered with; any other row of the run's is one too many.
pub fn compare_opened(expected: &Expected, rows: &[CallRow]) -> Count {
    let mut count = Count {
        acknowledged: expected.opened.len() as i64,
        unacknowledged: expected.unopened.len() as i64,
        ..Count::default()
    };
    let mut seen = HashSet::new();
    for row in rows {
        let Some(gateway_call_id) = &row.gateway_call_id else {
            continue;
        };
        if !seen.insert(gateway_call_id) {
            count.duplicated += 1;
        } else if let Some(&id) = expected.opened.get(gateway_call_id) {
            // under another id, the row is not the call's own
            if id == row.id {
                count.landed += 1;
            } else {
                count.duplicated += 1;
            }
        } else if expected.unopened.contains(gateway_call_id) {
            count.unacknowledged_landed += 1;
        } else {
            count.duplicated += 1;
        }
    }
    count.lost = count.acknowledged - count.landed;
    count
}

/// An end recorded, as sent, for every acknowledged EndCall; an end on a
/// call no EndCall was sent for is one too many.
pub fn compare_ended(expected: &Expected, rows: &[CallRow]) -> Count {
    let mut count = Count {
        acknowledged: expected.ended.len() as i64,
        unacknowledged: expected.unended.len() as i64,
        ..Count::default()
    };
    for row in rows.iter().filter(|r| r.ended) {
        let as_sent =
            row.end_reason.as_deref() == Some(END_REASON_STORED) && row.status == END_STATUS_STORED;
        if expected.ended.contains(&row.id) {
            count.landed += i64::from(as_sent);
        } else if expected.unended.contains(&row.id) {
            count.unacknowledged_landed += 1;
        } else {
            count.duplicated += 1;
        }
    }
    count.lost = count.acknowledged - count.landed;
    count
}

/// A row per acknowledged usage item, by the id the daemon derives; a row
/// under any id no request named is one too many. Also returns the
/// unacknowledged items that landed.
pub fn compare_usage(expected: &Expected, rows: &[Uuid]) -> (Count, Vec<UsageKey>) {
    let mut count = Count {
        acknowledged: expected.usage.len() as i64,
        unacknowledged: expected.unacked_usage.len() as i64,
        ..Count::default()
    };
    let mut landed_unacked = Vec::new();
    for id in rows {
        if expected.usage.contains_key(id) {
            count.landed += 1;
        } else if let Some(key) = expected.unacked_usage.get(id) {
            count.unacknowledged_landed += 1;
            landed_unacked.push(key.clone());
        } else {
            count.duplicated += 1;
        }
    }
    count.lost = count.acknowledged - count.landed;
    (count, landed_unacked)
}

/// `usage_daily` grew, per organization and metric, by the acknowledged
/// quantities and those of unacknowledged items that landed: less is lost,
/// more is duplicated.
pub fn compare_rollup(
    expected: &Expected,
    landed_unacked: &[UsageKey],
    before: &Rollup,
    after: &Rollup,
) -> Count {
    let mut want: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
    for key in expected.usage.values() {
        *want.entry((key.org, key.metric.clone())).or_default() += key.thousandths;
    }
    let unacked: i64 = landed_unacked.iter().map(|k| k.thousandths).sum();
    for key in landed_unacked {
        *want.entry((key.org, key.metric.clone())).or_default() += key.thousandths;
    }
    let mut count = Count {
        acknowledged: want.values().sum::<i64>() - unacked,
        unacknowledged: expected.unacked_usage.values().map(|k| k.thousandths).sum(),
        unacknowledged_landed: unacked,
        ..Count::default()
    };
    for (key, want) in want {
        let grew = after.get(&key).map_or(0, |a| a.0) - before.get(&key).map_or(0, |b| b.0);
        count.lost += (want - grew).max(0);
        count.duplicated += (grew - want).max(0);
    }
    count.landed = count.acknowledged - count.lost;
    count
}
