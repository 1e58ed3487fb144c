//! `rps seed`: the bench data set, generated in the database. Not the demo
//! data set of `switchboard::store::seed`: thousands of numbers over many
//! organizations, their ids and settings those of [`crate::dataset`].

use crate::{
    cli::DataSet,
    dataset::{BENCH_CONCURRENCY_LIMIT, BENCH_LLM_CONFIG, BENCH_ORG_SETTINGS, MAX_CUSTOMERS},
};

pub async fn seed(database_url: &str, data: &DataSet) -> anyhow::Result<()> {
    anyhow::ensure!(
        data.organizations * data.customers_per_org <= MAX_CUSTOMERS,
        "at most {MAX_CUSTOMERS} customers in all"
    );
    let client = switchboard::store::connect_direct(database_url).await?;
    let orgs = data.organizations as i64;
    let numbers = data.numbers as i64;
    let org_id = "('00000000-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid";
    let agent_id = "('00000000-0000-4000-a000-' || lpad(to_hex(g), 12, '0'))::uuid";
    client
        .execute(
            &format!(
                "insert into public.organizations (id, slug, name, plan_tier, settings, concurrency_limit)
                 select {org_id}, 'bench-' || g, 'Bench organization ' || g, 'enterprise', $2::text::jsonb, $3::int4
                   from generate_series(0, $1::int8 - 1) g
                 on conflict do nothing"
            ),
            &[&orgs, &BENCH_ORG_SETTINGS, &BENCH_CONCURRENCY_LIMIT],
        )
        .await?;
    client
        .execute(
            &format!(
                "insert into public.agents (id, org_id, name, voice_id, llm_config)
                 select {agent_id}, {org_id}, 'Agent ' || g, 'aura-asteria-en', $2::text::jsonb
                   from generate_series(0, $1::int8 - 1) g
                 on conflict do nothing"
            ),
            &[&orgs, &BENCH_LLM_CONFIG],
        )
        .await?;
    client
        .execute(
            &format!(
                "insert into public.phone_numbers (org_id, agent_id, number)
                 select {org_id}, {agent_id}, '+1800' || lpad(i::text, 7, '0')
                   from generate_series(0, $1::int8 - 1) i, lateral (select i % $2::int8 as g) o
                 on conflict do nothing"
            ),
            &[&numbers, &orgs],
        )
        .await?;
    // customer c of organization g has dataset::customer_phone(g, c, per_org)
    let per_org = data.customers_per_org as i64;
    client
        .execute(
            &format!(
                "insert into public.customers (org_id, phone, name, email)
                 select {org_id}, '+1700' || lpad((g * $2::int8 + c)::text, 7, '0'),
                        'Customer ' || g || '-' || c, 'customer-' || g || '-' || c || '@bench.example'
                   from generate_series(0, $1::int8 - 1) g, generate_series(0, $2::int8 - 1) c
                 on conflict do nothing"
            ),
            &[&orgs, &per_org],
        )
        .await?;
    println!(
        "seeded {} numbers over {} organizations, {} customers each",
        data.numbers, data.organizations, data.customers_per_org
    );
    Ok(())
}
