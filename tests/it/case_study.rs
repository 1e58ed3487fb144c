//! Adopting a multi-tenant database built by following the voice-agent case
//! study (tests/fixtures/case_study.sql, migrations/README.md "Adopting a
//! multi-tenant database"), on a database owned by a non-superuser as on
//! Supabase: one `switchboard migrate` run, after which every row is there
//! once, every number routes to its organization and agent, every
//! organization has an owner, ordinary updates work, and a second run
//! changes nothing. Who sees what is tested by pgTAP
//! (tests/pgtap/adopted/case_study_test.sql).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use secrecy::SecretString;
use serde_json::Value;
use switchboard::{
    proto::{LookupNumberRequest, RouteCallRequest},
    store::{
        self,
        migrate::{self, Adoption, MigrateError, MigrateOptions, Report, Shape},
    },
};
use tokio_postgres::Client;

use crate::helpers::{create_supabase_like_database, spawn_app_on, Stack};

const AUTH_SHIM: &str = include_str!("../../migrations/V1__supabase_auth_shim.sql");
const CASE_STUDY: &str = include_str!("../fixtures/case_study.sql");

const SUNRISE: &str = "0a000000-0000-4000-8000-000000000001";
const BAY: &str = "0a000000-0000-4000-8000-000000000002";
const CORNER: &str = "0a000000-0000-4000-8000-000000000003";
const MASTER: &str = "00000000-0000-0000-0000-000000000000";

fn user(n: u8) -> String {
    format!("0b000000-0000-4000-8000-0000000000{n:02x}")
}
fn agent(n: u8) -> String {
    format!("0c000000-0000-4000-8000-0000000000{n:02x}")
}
fn customer(n: u8) -> String {
    format!("0d000000-0000-4000-8000-0000000000{n:02x}")
}

/// The case study's database, before Switchboard: Supabase's `auth` schema
/// first (the shim, as on plain PostgreSQL), then the fixture, both loaded
/// by the database's non-superuser owner.
struct CaseStudy {
    db: String,
    /// The owner's URL.
    url: String,
    /// The owner's session.
    client: Client,
}

async fn build(stack: &Stack) -> CaseStudy {
    let (db, url) = create_supabase_like_database(stack).await;
    let client = store::connect_direct(&url).await.unwrap();
    client.batch_execute(AUTH_SHIM).await.unwrap();
    client.batch_execute(CASE_STUDY).await.unwrap();
    CaseStudy { db, url, client }
}

async fn migrate(url: &str, adopt: Adoption, dry_run: bool) -> Result<Report, MigrateError> {
    let mut client = store::connect_direct(url).await.unwrap();
    migrate::run(
        &mut client,
        &MigrateOptions {
            adopt,
            // the stack trusts local connections; a password still gives LOGIN
            daemon_password: Some(SecretString::from("local")),
            dry_run,
        },
    )
    .await
}

fn ops_owns_the_rest() -> Adoption {
    Adoption {
        owner_email: Some("ops@platform.test".into()),
        ..Default::default()
    }
}

/// Every row of the case study's tables as JSON, by table and id.
async fn everything(client: &Client) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut all = BTreeMap::new();
    for table in [
        "organizations",
        "profiles",
        "agents",
        "customers",
        "calls",
        "knowledge_base",
    ] {
        let rows = client
            .query(
                &format!("select id::text, to_jsonb(t) from public.{table} t"),
                &[],
            )
            .await
            .unwrap();
        all.insert(
            table.to_string(),
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        );
    }
    all
}

/// The schema as a list of `table.column`, to see that nothing was left.
async fn columns(client: &Client) -> Vec<String> {
    client
        .query(
            "select table_name || '.' || column_name from information_schema.columns
              where table_schema in ('public', 'switchboard') order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn the_case_study_is_adopted_in_one_run_and_a_second_run_changes_nothing() {
    let stack = Stack::from_env();
    let CaseStudy { url, client, .. } = build(&stack).await;
    let before = everything(&client).await;
    let schema_before = columns(&client).await;

    // a dry run reports the conversion and leaves everything as it was
    let plan = migrate(&url, ops_owns_the_rest(), true).await.unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.shape, Shape::MultiTenant);
    assert_eq!(
        everything(&client).await,
        before,
        "a dry run changes no row"
    );
    assert_eq!(columns(&client).await, schema_before, "nor the schema");

    let report = migrate(&url, ops_owns_the_rest(), false).await.unwrap();
    assert!(!report.dry_run);
    // the dry run said exactly what the run then did
    assert_eq!(
        Report {
            dry_run: false,
            ..plan.clone()
        },
        report,
        "{plan}\n{report}"
    );
    assert!(report.applied.len() >= 6, "{report}");
    assert!(report
        .columns_added
        .contains(&("profiles".into(), "last_active_org_id".into())));
    assert_eq!((report.numbers_routed, report.numbers_rewritten), (7, 7));
    assert_eq!(report.customer_phones_rewritten, 6);
    assert_eq!(
        report.functions_dropped,
        vec![
            "get_my_org_id()".to_string(),
            "is_super_admin()".to_string()
        ]
    );

    // every row is there once, with its relations: the case study's columns
    // keep their values (phones and numbers aside, below)
    let after = everything(&client).await;
    for (table, rows) in &before {
        let adopted = &after[table];
        assert_eq!(
            rows.keys().collect::<BTreeSet<_>>(),
            adopted.keys().collect::<BTreeSet<_>>(),
            "{table}: the same rows"
        );
        for (id, row) in rows {
            for (column, value) in row.as_object().unwrap() {
                let changed_on_purpose = matches!(
                    (table.as_str(), column.as_str()),
                    ("customers", "phone") | ("agents", "is_active") | ("calls", "status")
                );
                if !changed_on_purpose {
                    assert_eq!(&adopted[id][column], value, "{table} {id} {column}");
                }
            }
        }
    }

    // memberships from profiles: the first admin owns; ops owns Corner Bakery
    let memberships: BTreeSet<(String, String, String)> = client
        .query(
            "select org_id::text, user_id::text, role::text from memberships",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        (MASTER, user(1), "owner"),
        (SUNRISE, user(2), "owner"),
        (SUNRISE, user(3), "manager"),
        (SUNRISE, user(4), "viewer"),
        (BAY, user(5), "owner"),
        (BAY, user(6), "admin"),
        (BAY, user(7), "viewer"),
        (CORNER, user(8), "manager"),
        (CORNER, user(10), "owner"),
    ]
    .into_iter()
    .map(|(o, u, r)| (o.to_string(), u, r.to_string()))
    .collect();
    assert_eq!(memberships, expected);

    // numbers: normalized, each once; the later spelling of a taken number
    // and 'ext 12' are not routed but recorded
    let numbers: BTreeMap<String, (String, bool)> = client
        .query(
            "select number, agent_id::text, is_active from phone_numbers",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let expected: BTreeMap<String, (String, bool)> = [
        ("+14155550100", agent(1), true),
        ("+14155550101", agent(2), false), // an inactive agent's number
        ("+14155550102", agent(3), true),
        ("+14155550105", agent(4), true),
        ("+14155550107", agent(5), true),
        ("+442079460018", agent(6), true),
        ("+14155550199", agent(9), true),
    ]
    .into_iter()
    .map(|(n, a, active)| (n.to_string(), (a, active)))
    .collect();
    assert_eq!(numbers, expected);

    let phones: BTreeMap<String, String> = client
        .query("select id::text, phone from customers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (n, phone) in [
        (1, "+14155550200"),
        (2, "(415) 555-0200"), // Ann's second spelling: kept, recorded
        (3, "+14155550201"),
        (4, "unknown"),
        (7, "+14155550301"),
        (8, "+14155550302"),
        (9, "+442079460500"),
        (10, "+442079460501"),
    ] {
        assert_eq!(phones[&customer(n)], phone, "customer {n}");
    }

    let issues: BTreeSet<(String, Option<String>)> = report
        .issues
        .iter()
        .filter(|i| i.row_id.is_some())
        .map(|i| (i.table.clone(), i.row_id.map(|id| id.to_string())))
        .collect();
    let expected: BTreeSet<(String, Option<String>)> = [
        ("public.agents", agent(7)),
        ("public.agents", agent(8)),
        ("public.customers", customer(2)),
        ("public.customers", customer(4)),
        ("public.profiles", user(9)),
    ]
    .into_iter()
    .map(|(t, id)| (t.to_string(), Some(id)))
    .collect();
    assert_eq!(issues, expected, "{report}");

    // what failed before adoption now works, as the owner of the data
    client
        .batch_execute(&format!(
            "update organizations set name = 'Sunrise Dental Care', plan_tier = 'pro'
              where id = '{SUNRISE}';
             update customers set name = 'Ben O.' where id = '{c3}';
             delete from phone_numbers where agent_id = '{a3}';
             delete from agents where id = '{a3}';",
            c3 = customer(3),
            a3 = agent(3),
        ))
        .await
        .expect("rename, change plan, edit a customer, delete an agent with calls");
    let orphaned: i64 = client
        .query_one(
            "select count(*) from calls where agent_id is null and id in (
               '0e000000-0000-4000-8000-000000000004', '0e000000-0000-4000-8000-000000000005')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphaned, 2, "the agent's calls stay, without it");
    client
        .batch_execute(&format!("delete from organizations where id = '{CORNER}'"))
        .await
        .expect("deleting an organization takes its rows with it");

    // a second run: nothing to do, nothing changed
    let now = everything(&client).await;
    let again = migrate(&url, ops_owns_the_rest(), false).await.unwrap();
    assert!(again.changed_nothing(), "{again}");
    assert_eq!(again.shape, Shape::Current);
    assert_eq!(everything(&client).await, now);
}

#[tokio::test]
async fn adoption_that_would_leave_an_organization_without_an_owner_changes_nothing() {
    let stack = Stack::from_env();
    let CaseStudy { url, client, .. } = build(&stack).await;
    let before = everything(&client).await;
    let schema_before = columns(&client).await;

    let error = migrate(&url, Adoption::default(), false).await.unwrap_err();
    match &error {
        MigrateError::Ownerless(slugs) => assert_eq!(slugs, &["corner-bakery".to_string()]),
        other => panic!("{other}"),
    }
    assert!(error.to_string().contains("SWITCHBOARD_ADOPT_OWNER_EMAIL"));
    assert_eq!(everything(&client).await, before);
    assert_eq!(columns(&client).await, schema_before);

    // told to, it adopts and records the organization
    let adopt = Adoption {
        allow_ownerless: true,
        ..Default::default()
    };
    let report = migrate(&url, adopt, false).await.unwrap();
    assert_eq!(report.ownerless, vec!["corner-bakery".to_string()]);
    assert!(report
        .issues
        .iter()
        .any(|i| i.table == "public.organizations"
            && i.row_id.map(|id| id.to_string()).as_deref() == Some(CORNER)));
}

#[tokio::test]
async fn the_daemon_routes_every_adopted_number_to_its_organization_and_agent() {
    let stack = Stack::from_env();
    let CaseStudy { db, url, .. } = build(&stack).await;
    migrate(&url, ops_owns_the_rest(), false).await.unwrap();
    let mut app = spawn_app_on(stack, db, |config| {
        config.database.db_connect_timeout = Duration::from_secs(5);
        config.database.db_query_timeout = Duration::from_secs(5);
        config.grpc.request_timeout = Duration::from_secs(10);
    })
    .await;

    // (number as a gateway sends it, organization slug, agent)
    for (asked, slug, expected_agent) in [
        ("+14155550100", "sunrise-dental", agent(1)),
        ("+14155550102", "bay-plumbing", agent(3)), // NULL llm_config
        ("+14155550105", "bay-plumbing", agent(4)),
        ("+14155550107", "bay-plumbing", agent(5)), // NULL is_active
        ("+442079460018", "corner-bakery", agent(6)),
        ("+14155550199", "admin", agent(9)),
    ] {
        let route = app
            .client
            .lookup_number(LookupNumberRequest {
                number: asked.into(),
                default_region: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("{asked}: {s:?}"))
            .into_inner()
            .route
            .unwrap();
        assert_eq!(route.organization.unwrap().slug, slug, "{asked}");
        assert_eq!(route.agent.unwrap().id, expected_agent, "{asked}");
    }

    // a caller the organization knows, stored as '415-555-0301'
    let reply = app
        .client
        .route_call(RouteCallRequest {
            called_number: "+14155550102".into(),
            caller_number: "+14155550301".into(),
            gateway_call_id: "gw-case-study-1".into(),
            default_region: String::new(),
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(reply.customer.expect("known caller").id, customer(7));

    // the same caller is a different customer of each organization
    let reply = app
        .client
        .route_call(RouteCallRequest {
            called_number: "+14155550105".into(),
            caller_number: "+14155550300".into(),
            gateway_call_id: "gw-case-study-2".into(),
            default_region: String::new(),
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(reply.customer.expect("known caller").id, customer(6));

    // not routed: an inactive agent's number, and no number at all
    for asked in ["+14155550101", "+14155550103"] {
        let status = app
            .client
            .route_call(RouteCallRequest {
                called_number: asked.into(),
                caller_number: String::new(),
                gateway_call_id: format!("gw-case-study-{asked}"),
                default_region: String::new(),
            })
            .await
            .unwrap_err();
        assert_ne!(status.code(), tonic::Code::Internal, "{asked}: {status:?}");
        assert_ne!(status.code(), tonic::Code::Ok, "{asked}");
    }
    app.stop().await.unwrap();
}
