//! Callers through the cache tiers: a warm `RouteCall` asks PostgreSQL
//! nothing, changes to customers reach every replica, and a pooler outage
//! does not stop warm calls from being routed with their customers.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use futures::future::join_all;
use switchboard::{admission::AdmissionMode, config::ServeConfig, proto::RouteCallRequest};
use tonic::Request;

use crate::helpers::{
    acme_with_own_limit, end_request, eventually, http_get, metric, spawn_on_via, spawn_seeded_app,
    spawn_seeded_app_via, spawn_seeded_app_with, usage_request, DaemonProcess, PrivateBouncer,
    Stack, TestApp,
};

/// The demo data's number of Acme Dental, and its customer Dana Whitfield.
const CALLED: &str = "+14155550100";
const DANA: &str = "+14155550123";
/// Nobody's customer.
const STRANGER: &str = "+14155550177";

fn call(caller: &str, gateway_call_id: &str) -> Request<RouteCallRequest> {
    let mut request = Request::new(RouteCallRequest {
        called_number: CALLED.into(),
        caller_number: caller.into(),
        gateway_call_id: gateway_call_id.into(),
        default_region: String::new(),
    });
    request.set_timeout(Duration::from_secs(5));
    request
}

/// Calls are admitted past the demo organization's limit (shadow mode,
/// which still runs admission): these tests make more calls than it
/// allows, and end few.
fn unlimited(config: &mut ServeConfig) {
    config.admission.admission_mode = AdmissionMode::Shadow;
}

/// The name of the customer `RouteCall` identifies `caller` as, `None` for
/// no customer.
async fn identified(app: &TestApp, caller: &str) -> Option<String> {
    let id = format!("gw-{}", uuid::Uuid::new_v4());
    let reply = app.client.clone().route_call(call(caller, &id)).await;
    reply.expect("routed").into_inner().customer.map(|c| c.name)
}

/// Statements the daemon has run through the pooler, by query, except the
/// recorder's writes (`RouteCall` records its call, behind the answer).
async fn reads(admin_addr: SocketAddr) -> BTreeMap<String, f64> {
    let (_, body) = http_get(admin_addr, "/metrics").await;
    body.lines()
        .filter_map(|line| {
            let series = line.strip_prefix("switchboard_store_query_seconds_count{")?;
            let (labels, value) = series.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            (!labels.contains("write_events")).then(|| (labels.to_string(), value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_route_call_asks_postgres_nothing() {
    // room for every call (none is ended)
    let (stack, db_name) = acme_with_own_limit(1000).await;
    let spool = tempfile::tempdir().unwrap();
    // a process of its own: its metrics count only its own statements
    let daemon =
        DaemonProcess::start(&stack, &db_name, stack.pgbouncer_port, spool.path(), &[]).await;
    let client = daemon.client().await;
    // the first call of each caller may read the tiers below
    for caller in [DANA, STRANGER, ""] {
        let id = format!("warm-{caller}");
        client.clone().route_call(call(caller, &id)).await.unwrap();
    }
    let before = reads(daemon.admin_addr).await;
    assert!(
        before.keys().any(|q| q.contains("find_customer")),
        "the first calls read the caller from PostgreSQL: {before:?}"
    );

    let answers = join_all((0..8).map(|task| {
        let mut client = client.clone();
        async move {
            let mut named = Vec::new();
            for i in 0..25 {
                let caller = [DANA, STRANGER, ""][i % 3];
                let id = format!("warm-call-{task}-{i}");
                let reply = client.route_call(call(caller, &id)).await.unwrap();
                named.push((caller, reply.into_inner().customer.map(|c| c.name)));
            }
            named
        }
    }))
    .await;
    for (caller, name) in answers.into_iter().flatten() {
        let expected = (caller == DANA).then(|| "Dana Whitfield".to_string());
        assert_eq!(name, expected, "caller {caller:?}");
    }
    assert_eq!(
        reads(daemon.admin_addr).await,
        before,
        "200 warm RouteCalls read PostgreSQL"
    );
    assert!(
        metric(
            daemon.admin_addr,
            "switchboard_caller_cache_hits_total{tier=\"l1\"}"
        )
        .await
            >= 133.0,
        "callers answered from L1"
    );
    daemon.kill();
}

#[tokio::test]
async fn a_customer_added_renamed_or_removed_reaches_every_replica() {
    let first = spawn_seeded_app_with(unlimited).await;
    let second = spawn_on_via(&first, first.stack.pgbouncer_port, unlimited).await;
    let db = first.direct().await;
    let caller = "+14155550188";
    for app in [&first, &second] {
        assert_eq!(identified(app, caller).await, None, "a stranger, cached");
    }
    let org = "(select id from public.organizations where slug = 'acme-dental')";
    let steps = [
        format!("insert into public.customers (org_id, phone, name) values ({org}, '{caller}', 'Ravi Patel')"),
        format!("update public.customers set name = 'Ravi K. Patel' where phone = '{caller}'"),
        format!("delete from public.customers where phone = '{caller}'"),
    ];
    let expected = [Some("Ravi Patel"), Some("Ravi K. Patel"), None];
    for (sql, expected) in steps.iter().zip(expected) {
        db.execute(sql.as_str(), &[]).await.unwrap();
        for app in [&first, &second] {
            eventually(
                &format!("{sql} shows in RouteCall"),
                Duration::from_secs(5),
                || async move { identified(app, caller).await.as_deref() == expected },
            )
            .await;
        }
    }
}

#[tokio::test]
async fn only_what_route_call_answers_is_logged_as_a_customer_change() {
    let app = spawn_seeded_app().await;
    let db = app.direct().await;
    let logged = || async {
        let row = db
            .query_one(
                "select count(*) from switchboard.routing_changes where entity = 'customer'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let start = logged().await;
    db.execute(
        "update public.customers set updated_at = now() where phone = $1",
        &[&DANA],
    )
    .await
    .unwrap();
    db.execute(
        "update public.customers set name = name where phone = $1",
        &[&DANA],
    )
    .await
    .unwrap();
    assert_eq!(logged().await, start, "nothing RouteCall answers changed");
    db.execute(
        "update public.customers set email = 'dana@example.net' where phone = $1",
        &[&DANA],
    )
    .await
    .unwrap();
    assert_eq!(logged().await, start + 1);
    // a customer moved to another number: both numbers are forgotten
    db.execute(
        "update public.customers set phone = '+14155550124' where phone = $1",
        &[&DANA],
    )
    .await
    .unwrap();
    assert_eq!(logged().await, start + 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_calls_are_routed_with_their_customers_and_recorded_while_the_pooler_is_down() {
    let mut bouncer = PrivateBouncer::start(&Stack::from_env()).await;
    let app = spawn_seeded_app_via(bouncer.port, unlimited).await;
    for caller in [DANA, STRANGER] {
        identified(&app, caller).await;
    }
    bouncer.kill();

    let calls = join_all((0..40).map(|i| {
        let mut client = app.client.clone();
        async move {
            let caller = [DANA, STRANGER][i % 2];
            let id = format!("outage-{i}");
            let reply = client.route_call(call(caller, &id)).await;
            let reply = reply.expect("a warm call routes without the pooler");
            let reply = reply.into_inner();
            let name = reply.customer.map(|c| c.name);
            assert_eq!(name.is_some(), caller == DANA, "caller {caller}");
            let usage = usage_request(&reply.call_id, "u1", &[("llm_tokens_in", 120.0)]);
            client
                .record_usage(usage)
                .await
                .expect("usage acknowledged");
            let end = end_request(&reply.call_id);
            client.end_call(end).await.expect("end acknowledged");
            reply.call_id
        }
    }))
    .await;

    bouncer.resume_process().await;
    let db = app.direct().await;
    let ids: Vec<uuid::Uuid> = calls.iter().map(|id| id.parse().unwrap()).collect();
    eventually(
        "every acknowledged call, usage and end lands",
        Duration::from_secs(30),
        || {
            let (db, ids) = (&db, &ids);
            async move {
                let row = db
                    .query_one(
                        "select count(*) filter (where c.ended_at is not null),
                                (select count(*) from public.usage_events u where u.call_id = any($1))
                           from public.calls c where c.id = any($1)",
                        &[ids],
                    )
                    .await
                    .unwrap();
                (row.get::<_, i64>(0), row.get::<_, i64>(1)) == (40, 40)
            }
        },
    )
    .await;
}
