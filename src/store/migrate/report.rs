//! What a `migrate` run did (or, dry, would do) to this database: read off
//! the database itself before and after, in the run's transaction, so the
//! report cannot drift from what the SQL does.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use tokio_postgres::{types::Type, Transaction};

use super::one_row;
use uuid::Uuid;

use super::{Applied, Shape};

/// The tables whose rows the report counts.
const COUNTED: [&str; 9] = [
    "organizations",
    "profiles",
    "memberships",
    "agents",
    "phone_numbers",
    "customers",
    "calls",
    "knowledge_base",
    "usage_events",
];

/// The parts of the schema and data a run may change, as they were.
pub(super) struct Snapshot {
    columns: BTreeMap<String, BTreeSet<String>>,
    constraints: BTreeMap<(String, String), String>,
    functions: BTreeSet<String>,
    rows: BTreeMap<String, i64>,
    last_issue: i64,
}

const COLUMNS_SQL: &str = "
    select c.relname::text, a.attname::text
      from pg_catalog.pg_class c
      join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')";

const CONSTRAINTS_SQL: &str = "
    select c.relname::text, con.conname::text, pg_catalog.pg_get_constraintdef(con.oid)
      from pg_catalog.pg_constraint con
      join pg_catalog.pg_class c on c.oid = con.conrelid
     where c.relnamespace = 'public'::regnamespace";

const FUNCTIONS_SQL: &str = "
    select p.oid::regprocedure::text from pg_catalog.pg_proc p
     where p.pronamespace = 'public'::regnamespace";

/// Customers' phones as they were, to count the ones rewritten.
const KEEP_PHONES_SQL: &str = "
    create temporary table adoption_phones_before on commit drop as
      select id, phone::text as phone from public.customers";

impl Snapshot {
    pub(super) async fn take(tx: &Transaction<'_>) -> Result<Self, tokio_postgres::Error> {
        let mut snapshot = Self::take_schema(tx).await?;
        snapshot.rows = count_rows(tx, &snapshot.columns).await?;
        if snapshot
            .columns
            .get("customers")
            .is_some_and(|c| c.contains("phone"))
        {
            tx.batch_execute(KEEP_PHONES_SQL).await?;
        }
        let issues_exist: bool = one_row(
            tx,
            "select to_regclass('switchboard.adoption_issues') is not null",
        )
        .await?
        .get(0);
        if issues_exist {
            snapshot.last_issue = one_row(
                tx,
                "select coalesce(max(id), 0) from switchboard.adoption_issues",
            )
            .await?
            .get(0);
        }
        Ok(snapshot)
    }

    /// The schema only: tables, columns, constraints and functions.
    async fn take_schema(tx: &Transaction<'_>) -> Result<Self, tokio_postgres::Error> {
        let mut columns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for row in tx.query_typed(COLUMNS_SQL, &[]).await? {
            columns.entry(row.get(0)).or_default().insert(row.get(1));
        }
        let constraints = tx
            .query_typed(CONSTRAINTS_SQL, &[])
            .await?
            .iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect();
        let functions = tx
            .query_typed(FUNCTIONS_SQL, &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        Ok(Self {
            columns,
            constraints,
            functions,
            rows: BTreeMap::new(),
            last_issue: 0,
        })
    }
}
async fn count_rows(
    tx: &Transaction<'_>,
    columns: &BTreeMap<String, BTreeSet<String>>,
) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let mut rows = BTreeMap::new();
    for table in COUNTED.iter().filter(|t| columns.contains_key(**t)) {
        let count: i64 = one_row(tx, &format!("select count(*) from public.{table}"))
            .await?
            .get(0);
        rows.insert(table.to_string(), count);
    }
    Ok(rows)
}

/// What a run did, or would do with `--dry-run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Rolled back: nothing was changed.
    pub dry_run: bool,
    /// What the database held before the run.
    pub shape: Shape,
    /// Migrations applied by this run, in order.
    pub applied: Vec<Applied>,
    pub tables_created: Vec<String>,
    /// `(table, column)` added to a table that existed before.
    pub columns_added: Vec<(String, String)>,
    /// `(table, constraint)` added to a table that existed before.
    pub constraints_added: Vec<(String, String)>,
    /// `(table, constraint, definition)` gone from a table.
    pub constraints_dropped: Vec<(String, String, String)>,
    pub functions_dropped: Vec<String>,
    /// Rows per table: `(table, before, after)`, where either is non-zero.
    pub rows: Vec<(String, i64, i64)>,
    /// Phone numbers this run put into `phone_numbers`.
    pub numbers_routed: i64,
    /// Of those, the ones whose stored spelling was not E.164 already.
    pub numbers_rewritten: i64,
    /// Customers whose phone this run rewrote to E.164.
    pub customer_phones_rewritten: i64,
    /// Memberships this run created, by role.
    pub memberships_created: BTreeMap<String, i64>,
    /// `(organization slug, user)` made owner by this run.
    pub owners: Vec<(String, String)>,
    /// Slugs of live organizations left without an owner.
    pub ownerless: Vec<String>,
    /// Rows this run added to `switchboard.adoption_issues`.
    pub issues: Vec<Issue>,
}

/// One row of `switchboard.adoption_issues`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub table: String,
    pub row_id: Option<Uuid>,
    pub issue: String,
}

impl Report {
    /// Compares the database now with `before`, in the same transaction.
    pub(super) async fn compare(
        tx: &Transaction<'_>,
        before: &Snapshot,
        shape: Shape,
        applied: Vec<Applied>,
    ) -> Result<Self, tokio_postgres::Error> {
        let after = Snapshot::take_schema(tx).await?;
        let existed = |table: &String| before.columns.contains_key(table);
        let tables_created = after
            .columns
            .keys()
            .filter(|t| !existed(t))
            .cloned()
            .collect();
        let columns_added = after
            .columns
            .iter()
            .filter(|(t, _)| existed(t))
            .flat_map(|(t, cols)| {
                cols.difference(&before.columns[t])
                    .map(move |c| (t.clone(), c.clone()))
            })
            .collect();
        let constraints_added = after
            .constraints
            .keys()
            .filter(|(t, _)| existed(t))
            .filter(|key| before.constraints.get(*key) != after.constraints.get(*key))
            .cloned()
            .collect();
        let constraints_dropped = before
            .constraints
            .iter()
            .filter(|(key, def)| after.constraints.get(*key) != Some(def))
            .map(|((t, c), def)| (t.clone(), c.clone(), def.clone()))
            .collect();
        let functions_dropped = before
            .functions
            .difference(&after.functions)
            .cloned()
            .collect();
        let counts = count_rows(tx, &after.columns).await?;
        let rows = COUNTED
            .iter()
            .map(|t| {
                let get = |m: &BTreeMap<String, i64>| m.get(*t).copied().unwrap_or(0);
                (t.to_string(), get(&before.rows), get(&counts))
            })
            .filter(|(_, b, a)| *b != 0 || *a != 0)
            .collect();

        let mut report = Report {
            shape,
            applied,
            tables_created,
            columns_added,
            constraints_added,
            constraints_dropped,
            functions_dropped,
            rows,
            ..Report::default()
        };
        if !after.columns.contains_key("memberships") {
            return Ok(report); // nothing was migrated: an empty report
        }
        report.read_conversions(tx, before).await?;
        Ok(report)
    }

    /// The rows converted. Rows of Switchboard's own tables created by this
    /// run carry the transaction's timestamp, `now()`, in `created_at` (or,
    /// changed, in `updated_at`).
    async fn read_conversions(
        &mut self,
        tx: &Transaction<'_>,
        before: &Snapshot,
    ) -> Result<(), tokio_postgres::Error> {
        let numbers = one_row(tx, "select count(*),
                        count(*) filter (where (to_jsonb(a) ->> 'phone_number') is distinct from p.number)
                   from public.phone_numbers p
                   join public.agents a on a.id = p.agent_id
                  where p.created_at = now()")
            .await?;
        self.numbers_routed = numbers.get(0);
        self.numbers_rewritten = numbers.get(1);
        if before
            .columns
            .get("customers")
            .is_some_and(|c| c.contains("phone"))
        {
            self.customer_phones_rewritten = one_row(
                tx,
                "select count(*) from public.customers c
                       join pg_temp.adoption_phones_before b on b.id = c.id
                      where c.phone is distinct from b.phone",
            )
            .await?
            .get(0);
        }
        self.memberships_created = tx
            .query_typed(
                "select role::text, count(*) from public.memberships
                  where created_at = now() group by role",
                &[],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        self.owners = tx
            .query_typed(
                "select o.slug, coalesce(u.email, u.id::text)
                   from public.memberships m
                   join public.organizations o on o.id = m.org_id
                   join auth.users u on u.id = m.user_id
                  where m.role = 'owner' and (m.created_at = now() or m.updated_at = now())
                  order by o.slug, 2",
                &[],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        self.ownerless = ownerless(tx).await?;
        self.issues = tx
            .query_typed(
                "select table_name, row_id, issue from switchboard.adoption_issues
                  where id > $1 order by table_name, row_id nulls first, issue",
                &[(&before.last_issue, Type::INT8)],
            )
            .await?
            .iter()
            .map(|row| Issue {
                table: row.get(0),
                row_id: row.get(1),
                issue: row.get(2),
            })
            .collect();
        Ok(())
    }

    /// Whether the run changed anything at all.
    pub fn changed_nothing(&self) -> bool {
        self.applied.is_empty()
            && self.tables_created.is_empty()
            && self.columns_added.is_empty()
            && self.constraints_added.is_empty()
            && self.constraints_dropped.is_empty()
            && self.functions_dropped.is_empty()
            && self.rows.iter().all(|(_, before, after)| before == after)
            && self.numbers_routed == 0
            && self.customer_phones_rewritten == 0
            && self.memberships_created.is_empty()
            && self.owners.is_empty()
            && self.issues.is_empty()
    }
}

/// Slugs of live organizations without an owner.
pub(super) async fn ownerless(tx: &Transaction<'_>) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(tx
        .query_typed(
            "select o.slug from public.organizations o
              where o.deleted_at is null
                and not exists (select 1 from public.memberships m
                                 where m.org_id = o.id and m.role = 'owner')
              order by o.slug",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(
                f,
                "dry run: nothing below was applied; the transaction was rolled back"
            )?;
        }
        writeln!(f, "database: {}", self.shape)?;
        if self.changed_nothing() {
            return writeln!(f, "nothing to do: the schema is up to date");
        }
        self.fmt_schema(f)?;
        self.fmt_data(f)
    }
}

impl Report {
    /// Migrations, tables, columns, constraints and functions.
    fn fmt_schema(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "to apply" } else { "applied" };
        writeln!(
            f,
            "migrations {verb}: {}",
            list(
                self.applied
                    .iter()
                    .map(|m| format!("V{} {}", m.version, m.name))
            )
        )?;
        if !self.tables_created.is_empty() {
            writeln!(f, "tables created: {}", self.tables_created.join(", "))?;
        }
        let mut by_table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (table, column) in &self.columns_added {
            by_table.entry(table).or_default().push(column);
        }
        for (table, columns) in by_table {
            writeln!(f, "columns added to {table}: {}", columns.join(", "))?;
        }
        for (table, name, definition) in &self.constraints_dropped {
            writeln!(f, "constraint dropped: {table}.{name} ({definition})")?;
        }
        let mut by_table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (table, name) in &self.constraints_added {
            by_table.entry(table).or_default().push(name);
        }
        for (table, names) in by_table {
            writeln!(f, "constraints added to {table}: {}", names.join(", "))?;
        }
        for function in &self.functions_dropped {
            writeln!(f, "function dropped: {function}")?;
        }
        Ok(())
    }

    /// Rows, numbers, phones, memberships, owners and issues.
    fn fmt_data(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, before, after) in &self.rows {
            writeln!(f, "rows in {table}: {before} -> {after}")?;
        }
        writeln!(
            f,
            "numbers routed: {} ({} rewritten to E.164)",
            self.numbers_routed, self.numbers_rewritten
        )?;
        writeln!(
            f,
            "customer phones rewritten to E.164: {}",
            self.customer_phones_rewritten
        )?;
        writeln!(
            f,
            "memberships created: {}",
            if self.memberships_created.is_empty() {
                "none".to_string()
            } else {
                list(
                    self.memberships_created
                        .iter()
                        .map(|(role, n)| format!("{n} {role}")),
                )
            }
        )?;
        for (org, user) in &self.owners {
            writeln!(f, "owner of {org}: {user}")?;
        }
        if !self.ownerless.is_empty() {
            writeln!(
                f,
                "organizations without an owner: {}",
                self.ownerless.join(", ")
            )?;
        }
        writeln!(
            f,
            "issues recorded in switchboard.adoption_issues: {}",
            self.issues.len()
        )?;
        for issue in &self.issues {
            match issue.row_id {
                Some(id) => writeln!(f, "  {} {id}: {}", issue.table, issue.issue)?,
                None => writeln!(f, "  {}: {}", issue.table, issue.issue)?,
            }
        }
        Ok(())
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
