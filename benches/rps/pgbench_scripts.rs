//! `rps pgbench-scripts`: the pgbench scripts of the SQL baselines.

use std::path::Path;

use crate::cli::DataSet;

/// The share of callers (with a caller id) who are customers, as in
/// `rps load --rpc route-call`'s default mix (0.6 known, 0.3 strangers, the
/// rest withheld, who are never looked up).
pub const KNOWN_CALLER_PERCENT: usize = 67;

/// Customer `:idx` of bench organization `:org` (`+1700`), or a stranger
/// (`+1799`), as a pgbench SQL expression: `dataset::customer_phone` and
/// `dataset::stranger_phone` in SQL.
fn caller_phone(prefix: &str, data: &DataSet) -> String {
    format!(
        "'{prefix}' || lpad((:org::int * {} + :idx::int)::text, 7, '0')",
        data.customers_per_org
    )
}

/// Bench organization `:org`'s id (`dataset::bench_org_id` in SQL).
const ORG_ID_SQL: &str = "('00000000-0000-4000-9000-' || lpad(to_hex(:org::int), 12, '0'))::uuid";

/// Picks an organization and a customer index.
fn pick_caller(data: &DataSet) -> String {
    format!(
        "\\set org random(0, {})\n\\set idx random(0, {})\n",
        data.organizations - 1,
        data.customers_per_org - 1
    )
}

/// pgbench scripts over the bench data set's mix of hot and long-tail
/// numbers: `route.sql` is the daemon's own statement through the pooler;
/// `postgrest.sql` is the transaction PostgREST runs for
/// `GET /phone_numbers?number=eq.X&select=*,agents(*),organizations(*)`
/// (role and claims set per request, the CTE and `json_agg` shape).
/// Then the call path's own: `customer.sql` and `commit.sql`.
pub fn pgbench_scripts(dir: &Path, data: &DataSet) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pick = format!(
        "\\set hot random(0, 99)\n\\set tail random(0, {})\n\\set roll random(1, 100)\n\\set i case when :roll <= 80 then :hot else :tail end\n",
        data.numbers - 1
    );
    let number = "'+1800' || lpad(:i::text, 7, '0')";
    let route = switchboard::store::postgres::RESOLVE_NUMBER_SQL
        .replace("$1", number)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(dir.join("route.sql"), format!("{pick}{route};\n"))?;
    let postgrest = format!(
        "{pick}BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;\n\
         select set_config('search_path', '\"public\", \"extensions\"', true), set_config('role', 'service_role', true), set_config('request.jwt.claims', '{{\"role\":\"service_role\",\"iss\":\"supabase\"}}', true), set_config('request.method', 'GET', true), set_config('request.path', '/phone_numbers', true), set_config('request.headers', '{{\"accept\":\"application/json\"}}', true), set_config('request.cookies', '{{}}', true);\n\
         WITH pgrst_source AS ( SELECT \"public\".\"phone_numbers\".*, row_to_json(\"phone_numbers_agents_1\".*)::jsonb AS \"agents\", row_to_json(\"phone_numbers_organizations_1\".*)::jsonb AS \"organizations\" FROM \"public\".\"phone_numbers\" LEFT JOIN LATERAL ( SELECT \"agents_1\".* FROM \"public\".\"agents\" AS \"agents_1\" WHERE \"agents_1\".\"org_id\" = \"public\".\"phone_numbers\".\"org_id\" AND \"agents_1\".\"id\" = \"public\".\"phone_numbers\".\"agent_id\" ) AS \"phone_numbers_agents_1\" ON TRUE LEFT JOIN LATERAL ( SELECT \"organizations_1\".* FROM \"public\".\"organizations\" AS \"organizations_1\" WHERE \"organizations_1\".\"id\" = \"public\".\"phone_numbers\".\"org_id\" ) AS \"phone_numbers_organizations_1\" ON TRUE WHERE \"public\".\"phone_numbers\".\"number\" = {number} ) SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, coalesce(json_agg(_postgrest_t), '[]') AS body, nullif(current_setting('response.headers', true), '') AS response_headers, nullif(current_setting('response.status', true), '') AS response_status, '' AS response_inserted FROM ( SELECT * FROM pgrst_source ) _postgrest_t;\n\
         COMMIT;\n"
    );
    std::fs::write(dir.join("postgrest.sql"), postgrest)?;
    std::fs::write(dir.join("customer.sql"), customer_script(data))?;
    std::fs::write(dir.join("commit.sql"), COMMIT_SCRIPT)?;
    std::fs::write(dir.join("crm.sql"), crm_script(data))?;
    Ok(())
}

/// The per-call customer lookup a `RouteCall` made before customers were
/// cached: the daemon's own statement (`FIND_CUSTOMER_SQL`), through the
/// pooler, for a caller of a random organization who is one of its
/// customers or a stranger, in the run's mix. What "just ask PostgreSQL on
/// every call" costs.
fn customer_script(data: &DataSet) -> String {
    let known = caller_phone("+1700", data);
    let stranger = caller_phone("+1799", data);
    let phone =
        format!("case when :roll::int <= {KNOWN_CALLER_PERCENT} then {known} else {stranger} end");
    let query = switchboard::store::postgres::FIND_CUSTOMER_SQL
        .replace("$1", ORG_ID_SQL)
        .replace("$2", &phone)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!("{}\\set roll random(1, 100)\n{query};\n", pick_caller(data))
}

/// A CRM editing its customers: one customer renamed, in its own
/// transaction, through the pooler. Run with the change-log triggers and
/// with them disabled, it is what logging customer changes costs.
fn crm_script(data: &DataSet) -> String {
    format!(
        "{}update public.customers set name = 'Customer ' || :idx || ' (' || :client_id || '-' || random() || ')' where org_id = {ORG_ID_SQL} and phone = {};\n",
        pick_caller(data),
        caller_phone("+1700", data)
    )
}

/// A bare durable commit: one small row in a scratch table (`bench.commits`,
/// made by `deploy/local/bench`), its own transaction, through the pooler.
/// Every acknowledged `EndCall` and `RecordUsage` waits for at least this
/// much; with many clients, PostgreSQL's own group commit shows.
const COMMIT_SCRIPT: &str = "insert into bench.commits (client) values (:client_id);\n";
