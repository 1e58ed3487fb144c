//! `rps pgbench-scripts`: the pgbench scripts of the SQL baselines.

use std::path::Path;

use crate::cli::DataSet;

/// pgbench scripts over the bench data set's mix of hot and long-tail
/// numbers: `route.sql` is the daemon's own statement through the pooler;
/// `postgrest.sql` is the transaction PostgREST runs for
/// `GET /phone_numbers?number=eq.X&select=*,agents(*),organizations(*)`
/// (role and claims set per request, the CTE and `json_agg` shape).
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
    Ok(())
}
