//! Adopting a single-tenant database in place (V2's phases, see
//! migrations/README.md): every legacy row survives, once, under the default
//! organization; agents' numbers route; what cannot be adopted is recorded;
//! a second run changes nothing; the daemon routes the result.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use secrecy::SecretString;
use serde_json::{json, Value};
use switchboard::{
    proto::{LookupNumberRequest, RouteCallRequest},
    store::{
        self,
        migrate::{Adoption, MigrateError, MigrateOptions, Report},
    },
};
use tokio_postgres::{error::SqlState, Client};
use uuid::Uuid;

use crate::helpers::{create_database, create_empty_database, spawn_app_on, Stack};

/// The single-tenant schema this release adopts, as a legacy Supabase app
/// created it: the schema part of tests/fixtures/single_tenant.sql.
fn legacy_schema() -> &'static str {
    include_str!("../fixtures/single_tenant.sql")
        .split_once("-- data ---")
        .expect("the fixture marks where its data starts")
        .0
}

/// Legacy timestamps are offsets from this instant.
const EPOCH: &str = "timestamptz '2024-03-01 09:00:00+00'";

struct LegacyAgent {
    id: Uuid,
    name: Option<String>,
    phone_number: Option<String>,
    voice_id: Option<String>,
    system_prompt: Option<String>,
    /// The E.164 number that routes to this agent after adoption.
    routes: Option<String>,
    /// Listed in adoption_issues (a number that cannot be routed).
    issue: bool,
}

impl LegacyAgent {
    fn is_west(&self) -> bool {
        self.name.as_deref().is_some_and(|n| n.starts_with("West "))
    }
}

struct LegacyCustomer {
    id: Uuid,
    phone: Option<String>,
    /// `phone` after adoption: E.164 where it could be normalized.
    adopted_phone: Option<String>,
    issue: bool,
}

struct LegacyCall {
    id: Uuid,
    agent: Option<usize>,
    customer: Option<usize>,
    status: Option<String>,
}

/// A legacy database, built, and what adoption must make of it.
struct Legacy {
    db: String,
    agents: Vec<LegacyAgent>,
    customers: Vec<LegacyCustomer>,
    calls: Vec<LegacyCall>,
}

/// 200 agents with numbers in every notation a legacy app might have
/// stored, 3,000 customers, 5,000 calls.
fn legacy_agents() -> Vec<LegacyAgent> {
    (0..200usize)
        .map(|i| {
            let (number, routes) = match i {
                _ if i % 50 == 1 => (None, None),
                9 => (Some(String::new()), None),
                // agent 0's number, spelled differently
                198 => (Some("+1 (415) 555-0000".to_string()), None),
                _ => {
                    let us = format!("+1415555{i:04}");
                    let uk = format!("+44207946{i:04}");
                    match i % 10 {
                        0 | 1 => (Some(us.clone()), Some(us)),
                        2 | 3 => (Some(format!("(415) 555-{i:04}")), Some(us)),
                        4 => (Some(format!("+1 415-555-{i:04}")), Some(us)),
                        5 => (Some(format!("0044 20 7946 {i:04}")), Some(uk)),
                        6 => (Some(format!("1-415-555-{i:04}")), Some(us)),
                        7 => (Some(format!("011 44 20 7946 {i:04}")), Some(uk)),
                        8 => (Some(format!("415.555.{i:04}")), Some(us)),
                        _ => match (i / 10) % 3 {
                            0 => (Some(format!("ext {i}")), None),
                            1 => (Some(format!("555-{i:04}")), None), // local, no area code
                            _ => (Some(format!("n/a {i}")), None),
                        },
                    }
                }
            };
            LegacyAgent {
                id: Uuid::new_v4(),
                name: if i % 67 == 5 {
                    None
                } else if i % 20 == 3 {
                    Some(format!("West {i}"))
                } else {
                    Some(format!("Agent {i}"))
                },
                issue: number.is_some() && routes.is_none(),
                phone_number: number,
                routes,
                voice_id: (i % 13 != 0).then(|| format!("aura-{}", i % 4)),
                system_prompt: (i % 11 != 0).then(|| format!("You are agent {i}.")),
            }
        })
        .collect()
}

fn legacy_customers() -> Vec<LegacyCustomer> {
    let mut customers: Vec<LegacyCustomer> = (0..3000usize)
        .map(|j| {
            let e164 = format!("+1628555{j:04}");
            let (phone, adopted_phone) = match j % 100 {
                9 => (None, None),
                19 => (Some(format!("unknown {j}")), None),
                // customer j - 29's phone (E.164), spelled differently
                29 => (Some(format!("+1 628 555 {:04}", j - 29)), None),
                // customer j - 32's phone, also in national notation
                39 => (Some(format!("628-555-{:04}", j - 32)), None),
                _ => match j % 10 {
                    7 => (Some(format!("(628) 555-{j:04}")), Some(e164)),
                    8 => (Some(format!("628.555.{j:04}")), Some(e164)),
                    _ => (Some(e164.clone()), Some(e164)),
                },
            };
            LegacyCustomer {
                id: Uuid::new_v4(),
                issue: adopted_phone.is_none(),
                adopted_phone: adopted_phone.or_else(|| phone.clone()),
                phone,
            }
        })
        .collect();
    // Two national spellings of one number: the smaller id gets the E.164
    // form, the other keeps its own.
    for j in (39..3000).step_by(100) {
        let (a, b) = (j - 32, j);
        if customers[b].id < customers[a].id {
            let e164 = customers[a].adopted_phone.take();
            customers[a].adopted_phone = customers[a].phone.clone();
            customers[a].issue = true;
            customers[b].adopted_phone = e164;
            customers[b].issue = false;
        }
    }
    customers
}

fn legacy_calls(agents: &[LegacyAgent], customers: &[LegacyCustomer]) -> Vec<LegacyCall> {
    (0..5000usize)
        .map(|k| {
            let agent = (k % 97 != 0).then_some((k * 7) % agents.len());
            let west = agent.is_some_and(|a| agents[a].is_west());
            // the tenant split moves West's calls: keep their customers clean
            let customer = Some((k * 13) % customers.len())
                .filter(|&c| k % 10 != 0 && !(west && customers[c].issue));
            let status = if k % 50 == 7 {
                None
            } else if k % 500 == 3 && !west {
                Some("voicemail".to_string()) // not a status of the new schema
            } else {
                Some(["completed", "failed", "in_progress"][k % 3].to_string())
            };
            LegacyCall {
                id: Uuid::new_v4(),
                agent,
                customer,
                status,
            }
        })
        .collect()
}

async fn build_legacy(stack: &Stack) -> Legacy {
    let db = create_empty_database(stack).await;
    let client = connect(stack, &db).await;
    client.batch_execute(legacy_schema()).await.unwrap();

    let agents = legacy_agents();
    let customers = legacy_customers();
    let calls = legacy_calls(&agents, &customers);

    let ids = |v: &[LegacyAgent]| v.iter().map(|a| a.id).collect::<Vec<_>>();
    client
        .execute(
            &format!(
                "insert into agents (id, name, phone_number, voice_id, system_prompt, created_at)
                 select id, name, phone, voice, prompt, {EPOCH} + minute * interval '1 minute'
                   from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[])
                     as t(id, name, phone, voice, prompt, minute)"
            ),
            &[
                &ids(&agents),
                &agents.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                &agents
                    .iter()
                    .map(|a| a.phone_number.clone())
                    .collect::<Vec<_>>(),
                &agents.iter().map(|a| a.voice_id.clone()).collect::<Vec<_>>(),
                &agents
                    .iter()
                    .map(|a| a.system_prompt.clone())
                    .collect::<Vec<_>>(),
                &(0..agents.len() as i32).collect::<Vec<_>>(),
            ],
        )
        .await
        .unwrap();
    client
        .execute(
            "insert into customers (id, phone, name, email)
             select id, phone, 'Customer ' || n, case when n % 3 = 0 then 'c' || n || '@example.com' end
               from unnest($1::uuid[], $2::text[]) with ordinality as t(id, phone, n)",
            &[
                &customers.iter().map(|c| c.id).collect::<Vec<_>>(),
                &customers.iter().map(|c| c.phone.clone()).collect::<Vec<_>>(),
            ],
        )
        .await
        .unwrap();
    client
        .execute(
            &format!(
                "insert into calls (id, agent_id, customer_id, from_number, to_number, status, started_at, ended_at)
                 select t.id, t.agent, t.customer, coalesce(c.phone, 'anonymous'), a.phone_number, t.status,
                        {EPOCH} + n * interval '1 minute',
                        case when n % 9 <> 0 then {EPOCH} + n * interval '1 minute' + interval '95 seconds' end
                   from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) with ordinality
                          as t(id, agent, customer, status, n)
                   left join agents a on a.id = t.agent
                   left join customers c on c.id = t.customer"
            ),
            &[
                &calls.iter().map(|c| c.id).collect::<Vec<_>>(),
                &calls
                    .iter()
                    .map(|c| c.agent.map(|a| agents[a].id))
                    .collect::<Vec<_>>(),
                &calls
                    .iter()
                    .map(|c| c.customer.map(|k| customers[k].id))
                    .collect::<Vec<_>>(),
                &calls.iter().map(|c| c.status.clone()).collect::<Vec<_>>(),
            ],
        )
        .await
        .unwrap();
    Legacy {
        db,
        agents,
        customers,
        calls,
    }
}

async fn connect(stack: &Stack, db: &str) -> Client {
    store::connect_direct(&stack.direct_url(db)).await.unwrap()
}

/// `switchboard migrate` with these adoption settings.
async fn migrate(stack: &Stack, db: &str, adopt: Adoption) -> Result<Report, MigrateError> {
    let mut client = connect(stack, db).await;
    let options = MigrateOptions {
        adopt,
        // the stack trusts local connections; a password still gives LOGIN
        daemon_password: Some(SecretString::from("local")),
        dry_run: false,
    };
    switchboard::store::migrate::run(&mut client, &options).await
}

fn acme() -> Adoption {
    Adoption {
        org_slug: Some("acme-telecom".into()),
        org_name: Some("Acme Telecom".into()),
        owner_email: Some("owner@example.com".into()),
        calling_code: None,
        // most tests build no user with that email; the ones about owners do
        allow_ownerless: true,
    }
}

/// Every row of a table as JSON, by id.
async fn rows(client: &Client, table: &str) -> HashMap<Uuid, Value> {
    client
        .query(&format!("select id, to_jsonb(t) from {table} t"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Every row of every table the migrations create or adopt, as text.
async fn everything(client: &Client) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for table in [
        "auth.users",
        "public.organizations",
        "public.memberships",
        "public.profiles",
        "public.agents",
        "public.customers",
        "public.phone_numbers",
        "public.calls",
        "public.usage_events",
        "public.knowledge_base",
        "public.invitations",
        "public.audit_log",
        "switchboard.adoption_issues",
        "switchboard.schema_history",
    ] {
        let text: String = client
            .query_one(
                &format!("select coalesce(string_agg(t::text, E'\\n' order by t::text), '') from {table} t"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        all.push((table.to_string(), text));
    }
    all
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Asserts that each legacy row survived with its legacy columns as they
/// were, except where `expected` says what adoption makes of them.
fn assert_survived(
    table: &str,
    before: &HashMap<Uuid, Value>,
    after: &HashMap<Uuid, Value>,
    expected: impl Fn(&Uuid, &mut serde_json::Map<String, Value>),
) {
    assert_eq!(
        before.keys().collect::<BTreeSet<_>>(),
        after.keys().collect::<BTreeSet<_>>(),
        "{table}: the set of rows changed"
    );
    for (id, old) in before {
        let mut want = old.as_object().unwrap().clone();
        expected(id, &mut want);
        let new = after[id].as_object().unwrap();
        for (column, value) in &want {
            assert_eq!(
                new.get(column),
                Some(value),
                "{table} {id}: column {column} (legacy row {old})"
            );
        }
    }
}

#[tokio::test]
async fn adoption_keeps_every_legacy_row_under_one_organization() {
    let stack = Stack::from_env();
    let legacy = build_legacy(&stack).await;
    let client = connect(&stack, &legacy.db).await;
    let before: Vec<_> =
        futures::future::join_all(["agents", "customers", "calls"].map(|t| rows(&client, t))).await;

    // As on Supabase: auth.users exists before the migrations, with the user
    // who is to own the adopted organization.
    client
        .batch_execute(include_str!("../../migrations/V1__supabase_auth_shim.sql"))
        .await
        .unwrap();
    let owner: Uuid = client
        .query_one(
            "insert into auth.users (email) values ('Owner@Example.com') returning id",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let applied = migrate(&stack, &legacy.db, acme())
        .await
        .expect("adoption")
        .applied;
    assert!(
        applied.iter().any(|m| m.name == "tenancy") && applied[0].version == 1,
        "every migration applies to the legacy database: {applied:?}"
    );

    // one organization, as configured, owned by the configured user
    let orgs = client
        .query("select id, slug, name from organizations", &[])
        .await
        .unwrap();
    assert_eq!(orgs.len(), 1);
    let org: Uuid = orgs[0].get(0);
    assert_eq!(
        (orgs[0].get::<_, &str>(1), orgs[0].get::<_, &str>(2)),
        ("acme-telecom", "Acme Telecom")
    );
    let members = client
        .query("select user_id, role::text from memberships", &[])
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(
        (members[0].get::<_, Uuid>(0), members[0].get::<_, &str>(1)),
        (owner, "owner")
    );

    // every legacy row, once, with its values and relations
    let agent_by_id: HashMap<Uuid, &LegacyAgent> =
        legacy.agents.iter().map(|a| (a.id, a)).collect();
    let customer_by_id: HashMap<Uuid, &LegacyCustomer> =
        legacy.customers.iter().map(|c| (c.id, c)).collect();
    let after = rows(&client, "agents").await;
    assert_survived("agents", &before[0], &after, |id, row| {
        if row["name"].is_null() {
            row.insert(
                "name".into(),
                json!(format!("Agent {}", &id.to_string()[..8])),
            );
        }
        if row["voice_id"].is_null() {
            row.insert("voice_id".into(), json!(""));
        }
        let prompt = &agent_by_id[id].system_prompt;
        row.insert(
            "llm_config".into(),
            prompt
                .as_ref()
                .map_or(json!({}), |p| json!({ "system_prompt": p })),
        );
    });
    assert_survived(
        "customers",
        &before[1],
        &rows(&client, "customers").await,
        |id, row| {
            row.insert("phone".into(), json!(customer_by_id[id].adopted_phone));
        },
    );
    assert_survived(
        "calls",
        &before[2],
        &rows(&client, "calls").await,
        |_, row| {
            if row["status"].is_null() {
                row.insert("status".into(), json!("completed"));
            }
        },
    );
    assert_eq!(before[2].len(), legacy.calls.len());
    for call in &legacy.calls {
        let row = &before[2][&call.id];
        assert_eq!(
            row["agent_id"],
            json!(call.agent.map(|a| legacy.agents[a].id.to_string()))
        );
        assert_eq!(
            row["customer_id"],
            json!(call.customer.map(|c| legacy.customers[c].id.to_string()))
        );
    }

    // all of it in the default organization, which is now required
    for table in ["agents", "customers", "calls", "phone_numbers"] {
        let stray = client
            .query_one(
                &format!("select count(*) from {table} where org_id is distinct from $1"),
                &[&org],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(stray, 0, "{table} rows outside the default organization");
        let nullable: String = client
            .query_one(
                "select is_nullable from information_schema.columns
                  where table_schema = 'public' and table_name = $1 and column_name = 'org_id'",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(nullable, "NO", "{table}.org_id");
    }

    // each usable number routes to its agent, nothing else does
    let routed: BTreeMap<String, Uuid> = client
        .query("select number, agent_id from phone_numbers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: BTreeMap<String, Uuid> = legacy
        .agents
        .iter()
        .filter_map(|a| Some((a.routes.clone()?, a.id)))
        .collect();
    assert_eq!(routed, expected);
    assert_eq!(routed.len(), 200 - 4 - 20 - 1);

    // what could not be adopted as is, row by row, and nothing else
    let recorded: BTreeSet<(String, Uuid)> = client
        .query(
            "select table_name, row_id from switchboard.adoption_issues where row_id is not null",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let agent_issues = legacy
        .agents
        .iter()
        .filter(|a| a.issue)
        .map(|a| ("public.agents".to_string(), a.id));
    let customer_issues = legacy
        .customers
        .iter()
        .filter(|c| c.issue)
        .map(|c| ("public.customers".to_string(), c.id));
    let wanted: BTreeSet<_> = agent_issues.chain(customer_issues).collect();
    assert_eq!(recorded, wanted);
    assert_eq!(wanted.len(), 21 + 4 * 30);
    let duplicate: String = client
        .query_one(
            "select issue from switchboard.adoption_issues where row_id = $1",
            &[&legacy.agents[198].id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        duplicate.contains(&legacy.agents[0].id.to_string()),
        "{duplicate}"
    );
    let general: Vec<String> = client
        .query(
            "select issue from switchboard.adoption_issues where row_id is null order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for needle in [
        "customers_phone_not_null",
        "customers_phone_check",
        "calls_status_check",
        r#"dropped pre-existing policy "allow all""#,
    ] {
        assert!(
            general.iter().any(|issue| issue.contains(needle)),
            "no issue mentions {needle}: {general:#?}"
        );
    }
    assert_eq!(general.len(), 4, "{general:#?}");

    // the composite foreign keys, validated; the legacy single-column ones gone
    let composite: BTreeSet<String> = client
        .query(
            "select conname::text from pg_constraint
              where contype = 'f' and cardinality(conkey) = 2 and convalidated
                and conrelid in ('phone_numbers'::regclass, 'calls'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        composite,
        [
            "calls_agent_fkey",
            "calls_customer_fkey",
            "phone_numbers_agent_fkey"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from pg_constraint
              where conrelid = 'calls'::regclass and contype = 'f' and cardinality(conkey) = 1
                and confrelid in ('agents'::regclass, 'customers'::regclass)"
        )
        .await,
        0
    );
    // RLS on, the legacy policy gone
    assert_eq!(
        count(
            &client,
            "select count(*) from pg_class
              where oid in ('agents'::regclass, 'customers'::regclass, 'calls'::regclass,
                            'phone_numbers'::regclass)
                and relrowsecurity"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from pg_policies where policyname = 'allow all'"
        )
        .await,
        0
    );

    // and they hold: no cross-tenant reference; deleting an adopted agent
    // keeps its calls, as on a fresh schema
    let agent = legacy.agents[20].id;
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("insert into organizations (slug, name) values ('other', 'Other')")
        .await
        .unwrap();
    let cross = tx
        .execute(
            "insert into phone_numbers (org_id, agent_id, number)
             select id, $1, '+14155559999' from organizations where slug = 'other'",
            &[&agent],
        )
        .await
        .unwrap_err();
    assert_eq!(cross.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION));
    tx.rollback().await.unwrap();
    let its_calls: Vec<Uuid> = legacy
        .calls
        .iter()
        .filter(|c| c.agent.is_some_and(|a| legacy.agents[a].id == agent))
        .map(|c| c.id)
        .collect();
    assert!(!its_calls.is_empty());
    let tx = client.transaction().await.unwrap();
    tx.execute("delete from phone_numbers where agent_id = $1", &[&agent])
        .await
        .unwrap();
    tx.execute("delete from agents where id = $1", &[&agent])
        .await
        .unwrap();
    let kept: i64 = tx
        .query_one(
            "select count(*) from calls where id = any($1) and agent_id is null",
            &[&its_calls],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept as usize, its_calls.len());
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn migrating_an_adopted_database_again_changes_nothing() {
    let stack = Stack::from_env();
    let legacy = build_legacy(&stack).await;
    migrate(&stack, &legacy.db, acme()).await.expect("adoption");
    let client = connect(&stack, &legacy.db).await;
    let adopted = everything(&client).await;
    assert!(adopted
        .iter()
        .any(|(t, rows)| t == "public.agents" && !rows.is_empty()));

    let report = migrate(&stack, &legacy.db, acme()).await.unwrap();
    assert!(report.changed_nothing(), "{report}");
    // other settings make no difference either
    let report = migrate(&stack, &legacy.db, Adoption::default())
        .await
        .unwrap();
    assert!(report.changed_nothing(), "{report}");

    let again = everything(&client).await;
    for ((table, before), (_, after)) in adopted.iter().zip(&again) {
        assert!(before == after, "{table} changed");
    }
}

#[tokio::test]
async fn the_daemon_routes_adopted_numbers_and_knows_adopted_callers() {
    let stack = Stack::from_env();
    let legacy = build_legacy(&stack).await;
    migrate(&stack, &legacy.db, acme()).await.expect("adoption");
    let agents = legacy.agents;
    let db = legacy.db;
    // Patient timeouts: this test is about what adoption produced, not about
    // latency on a busy machine.
    let mut app = spawn_app_on(stack, db, |config| {
        config.database.db_connect_timeout = Duration::from_secs(5);
        config.database.db_query_timeout = Duration::from_secs(5);
        config.grpc.request_timeout = Duration::from_secs(10);
    })
    .await;

    // (agent, number asked, region)
    for (i, asked, region) in [
        (2, "+14155550002", ""), // stored as "(415) 555-0002"
        (2, "(415) 555-0002", "US"),
        (25, "+442079460025", ""), // stored as "0044 20 7946 0025"
        (78, "+14155550078", ""),  // stored as "415.555.0078", no voice_id
        (0, "+14155550000", ""),   // also agent 198's number, spelled differently
    ] {
        let route = app
            .client
            .lookup_number(LookupNumberRequest {
                number: asked.into(),
                default_region: region.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("{asked}: {s:?}"))
            .into_inner()
            .route
            .unwrap();
        let org = route.organization.unwrap();
        assert_eq!(
            (org.slug.as_str(), org.name.as_str()),
            ("acme-telecom", "Acme Telecom")
        );
        let agent = route.agent.unwrap();
        assert_eq!(agent.id, agents[i].id.to_string(), "{asked}");
        assert_eq!(agent.name, agents[i].name.clone().unwrap());
        assert_eq!(
            agent.voice_id,
            agents[i].voice_id.clone().unwrap_or_default()
        );
    }

    // an adopted customer stored as "(628) 555-0017" is recognised
    let reply = app
        .client
        .route_call(RouteCallRequest {
            called_number: "+14155550002".into(),
            caller_number: "+16285550017".into(),
            gateway_call_id: "gw-adopted-1".into(),
            default_region: String::new(),
        })
        .await
        .expect("route")
        .into_inner();
    let customer = reply.customer.expect("known caller");
    assert_eq!(customer.phone, "+16285550017");
    assert_eq!(customer.name, "Customer 18"); // ordinality counts from 1

    let unknown = app
        .client
        .lookup_number(LookupNumberRequest {
            number: "+14155550019".into(), // "555-0019" in the legacy table
            default_region: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_fresh_database_adopts_nothing() {
    let stack = Stack::from_env();
    let db = create_empty_database(&stack).await;
    migrate(&stack, &db, acme()).await.unwrap();
    let client = connect(&stack, &db).await;
    for table in [
        "organizations",
        "memberships",
        "agents",
        "phone_numbers",
        "switchboard.adoption_issues",
    ] {
        assert_eq!(
            count(&client, &format!("select count(*) from {table}")).await,
            0,
            "{table}"
        );
    }
}

#[tokio::test]
async fn adoption_settings_are_checked_and_an_unknown_owner_is_recorded() {
    let stack = Stack::from_env();
    let legacy_sql = format!(
        "{}
         insert into agents (name, phone_number) values
           ('London', '020 7946 0001'), ('Boston', '+1 617 555 0100');",
        legacy_schema()
    );

    // '+44' is read as 44; nobody has the owner's email
    let db = create_empty_database(&stack).await;
    connect(&stack, &db)
        .await
        .batch_execute(&legacy_sql)
        .await
        .unwrap();
    let adopt = Adoption {
        owner_email: Some("nobody@example.com".into()),
        calling_code: Some("+44".into()),
        allow_ownerless: true,
        ..Default::default()
    };
    migrate(&stack, &db, adopt).await.expect("adoption");
    let client = connect(&stack, &db).await;
    let numbers: BTreeSet<String> = client
        .query("select number from phone_numbers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        numbers,
        ["+16175550100", "+442079460001"].map(String::from).into()
    );
    let org = client
        .query_one("select slug, name from organizations", &[])
        .await
        .unwrap();
    assert_eq!(
        (org.get::<_, &str>(0), org.get::<_, &str>(1)),
        ("default", "Default organization")
    );
    let issues: Vec<String> = client
        .query(
            "select issue from switchboard.adoption_issues where table_name = 'public.memberships'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(issues.len(), 1);
    assert!(issues[0].contains("nobody@example.com"), "{issues:?}");

    // a calling code that is not one: refused, the legacy tables untouched
    let db = create_empty_database(&stack).await;
    connect(&stack, &db)
        .await
        .batch_execute(&legacy_sql)
        .await
        .unwrap();
    let adopt = Adoption {
        calling_code: Some("44x".into()),
        ..Default::default()
    };
    let error = migrate(&stack, &db, adopt).await.unwrap_err();
    assert!(format!("{error:?}").contains("calling code"), "{error:?}");
    let client = connect(&stack, &db).await;
    assert_eq!(
        count(
            &client,
            "select count(*) from information_schema.columns
              where table_name = 'agents' and column_name = 'org_id'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn legacy_numbers_normalize_to_e164_or_not_at_all() {
    let stack = Stack::from_env();
    let db = create_database(&stack).await;
    let client = connect(&stack, &db).await;
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("+14155550100", "1", Some("+14155550100")),
        ("+1 (415) 555-0100", "1", Some("+14155550100")),
        ("(415) 555-0100", "1", Some("+14155550100")),
        ("415.555.0100", "1", Some("+14155550100")),
        ("1-415-555-0100", "1", Some("+14155550100")),
        ("0044 20 7946 0000", "1", Some("+442079460000")),
        ("011 44 20 7946 0000", "1", Some("+442079460000")),
        ("555-0100", "1", None),       // no area code
        ("(015) 555-0100", "1", None), // no such area code
        ("415 555 01000", "1", None),
        ("020 7946 0000", "44", Some("+442079460000")),
        ("44 20 7946 0000", "44", Some("+442079460000")),
        ("01 23 45 67 89", "33", Some("+33123456789")),
        ("ext 12", "1", None),
        ("", "1", None),
        ("+0 123 4567", "1", None),
        ("+1 415 555 0100 0000 0000", "1", None),
    ];
    for (raw, code, expected) in cases {
        let got: Option<String> = client
            .query_one(
                "select switchboard.legacy_number_to_e164($1, $2)",
                &[raw, code],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            got.as_deref(),
            *expected,
            "{raw:?} with calling code {code}"
        );
    }
}

/// The SQL of "Splitting a tenant" in docs/adoption.md.
fn readme_split_example() -> &'static str {
    let guide = include_str!("../../docs/adoption.md");
    let section = guide
        .split_once("## Splitting a tenant")
        .expect("docs/adoption.md has the split section")
        .1;
    let block = section.split_once("```sql\n").expect("an SQL block").1;
    block.split_once("```").expect("the block ends").0
}

#[tokio::test]
async fn the_readme_tenant_split_runs_on_an_adopted_database() {
    let stack = Stack::from_env();
    let legacy = build_legacy(&stack).await;
    let adopt = Adoption {
        allow_ownerless: true,
        ..Default::default()
    };
    migrate(&stack, &legacy.db, adopt).await.expect("adoption");
    let client = connect(&stack, &legacy.db).await;
    // what the new schema adds: documents and usage, for West and others
    client
        .batch_execute(
            "insert into auth.users (email) values ('West-Owner@example.com');
             insert into knowledge_base (org_id, agent_id, title, content)
             select org_id, id, 'Hours of ' || name, 'Nine to five.' from agents;
             insert into knowledge_base (org_id, title, content)
             select id, 'Shared', 'For every agent.' from organizations;
             insert into usage_events (id, org_id, call_id, metric, quantity)
             select gen_random_uuid(), org_id, id, 'call_seconds', 95 from calls;",
        )
        .await
        .unwrap();
    let totals = "select (select count(*) from agents), (select count(*) from calls),
                         (select count(*) from knowledge_base), (select count(*) from usage_events)";
    let totals_of = |row: tokio_postgres::Row| -> [i64; 4] { std::array::from_fn(|i| row.get(i)) };
    let before = totals_of(client.query_one(totals, &[]).await.unwrap());
    let customers_before = count(&client, "select count(*) from customers").await;

    client
        .batch_execute(readme_split_example())
        .await
        .expect("the README's example runs");

    let west: BTreeSet<Uuid> = legacy
        .agents
        .iter()
        .filter(|a| a.is_west())
        .map(|a| a.id)
        .collect();
    assert_eq!(west.len(), 10);
    let new_org: Uuid = client
        .query_one(
            "select id from organizations where slug = 'west-clinic'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let moved: BTreeSet<Uuid> = client
        .query("select id from agents where org_id = $1", &[&new_org])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(moved, west);
    // everything of West's moved with it, nothing else did
    for sql in [
        "select count(*) from phone_numbers p join agents a on a.id = p.agent_id
          where (a.org_id = $1) <> (p.org_id = $1)",
        "select count(*) from calls c join agents a on a.id = c.agent_id
          where (a.org_id = $1) <> (c.org_id = $1)",
        "select count(*) from knowledge_base k join agents a on a.id = k.agent_id
          where (a.org_id = $1) <> (k.org_id = $1)",
        "select count(*) from usage_events u join calls c on c.id = u.call_id
          where (c.org_id = $1) <> (u.org_id = $1)",
        "select count(*) from calls c join customers k on k.id = c.customer_id
          where (k.org_id = $1) <> (c.org_id = $1)",
    ] {
        let wrong: i64 = client.query_one(sql, &[&new_org]).await.unwrap().get(0);
        assert_eq!(wrong, 0, "{sql}");
    }
    let moved_calls: i64 = client
        .query_one("select count(*) from calls where org_id = $1", &[&new_org])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        moved_calls as usize,
        legacy
            .calls
            .iter()
            .filter(|c| c.agent.is_some_and(|a| legacy.agents[a].is_west()))
            .count()
    );
    // customers both tenants know were copied, the rest moved or stayed
    let copies = count(&client, "select count(*) from customers").await - customers_before;
    assert!(copies > 0);
    let shared: i64 = client
        .query_one(
            "select count(*) from customers c
              where c.org_id = $1
                and exists (select 1 from customers o
                             where o.phone = c.phone and o.org_id <> $1)",
            &[&new_org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shared, copies);
    assert_eq!(
        totals_of(client.query_one(totals, &[]).await.unwrap()),
        before
    );
    let owner: String = client
        .query_one(
            "select u.email from memberships m join auth.users u on u.id = m.user_id
              where m.org_id = $1 and m.role = 'owner'",
            &[&new_org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "West-Owner@example.com");
}
