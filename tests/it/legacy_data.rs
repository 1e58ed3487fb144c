//! Data the daemon did not write and a database it cannot use: legacy NULLs
//! and unreadable rows never turn into `INTERNAL` for the routes around them,
//! and an operator reads PostgreSQL's own words for what went wrong.

use std::time::Duration;

use switchboard::{config::ServeConfig, proto::LookupNumberRequest, store, Application};
use tonic::Request;

use crate::helpers::{create_database, eventually, http_get, metric, spawn_app_on, Stack};

fn lookup(number: &str) -> Request<LookupNumberRequest> {
    Request::new(LookupNumberRequest {
        number: number.into(),
        default_region: String::new(),
    })
}

/// A seeded database where, as in databases that predate Switchboard,
/// `agents.llm_config` and `voice_id` and `organizations.settings` may be
/// NULL, and one number is stored in a form no check caught.
async fn legacy_database(stack: &Stack) -> String {
    let db_name = create_database(stack).await;
    let mut db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    store::seed::demo(&mut db).await.unwrap();
    db.batch_execute(
        "alter table public.agents alter column llm_config drop not null,
                                   alter column voice_id drop not null;
         alter table public.organizations alter column settings drop not null;
         update public.agents set llm_config = null, voice_id = null
          where id = (select agent_id from public.phone_numbers where number = '+14155550100');
         update public.organizations set settings = null where slug = 'acme-dental';",
    )
    .await
    .unwrap();
    // a number the daemon cannot read: every check on the column dropped
    let checks: Vec<String> = db
        .query(
            "select conname::text from pg_constraint
              where conrelid = 'public.phone_numbers'::regclass and contype = 'c'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for check in checks {
        db.batch_execute(&format!(
            "alter table public.phone_numbers drop constraint \"{check}\""
        ))
        .await
        .unwrap();
    }
    db.batch_execute(
        "update public.phone_numbers set number = '(212) 555-0199'
          where number = '+13125550100'",
    )
    .await
    .unwrap();
    db_name
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_nulls_route_and_an_unreadable_row_does_not_stop_warm_start() {
    let stack = Stack::from_env();
    let db_name = legacy_database(&stack).await;
    let app = spawn_app_on(stack, db_name, |_| {}).await;

    // warm start skipped the unreadable row, counted it, and loaded the rest
    assert_eq!(
        metric(
            app.admin_addr,
            r#"switchboard_store_rows_skipped_total{query="active_routes"}"#
        )
        .await,
        1.0
    );
    let mut client = app.client.clone();
    // NULL llm_config, voice_id and settings read as empty
    let route = client
        .lookup_number(lookup("+14155550100"))
        .await
        .expect("a route with legacy NULLs")
        .into_inner()
        .route
        .unwrap();
    assert_eq!(route.agent.unwrap().voice_id, "");
    // the others were preloaded and route as before
    client
        .lookup_number(lookup("+14155550142"))
        .await
        .expect("another organization's number");
}

#[tokio::test]
async fn readiness_carries_postgresql_s_own_message_and_sqlstate() {
    let stack = Stack::from_env();
    let db_name = create_database(&stack).await;
    // a role that does not exist: PostgreSQL refuses the login itself
    let url = stack
        .direct_url(&db_name)
        .replace("postgres@", "no_such_role@");
    let mut config = ServeConfig::with_defaults(&url, &url, &stack.redis_url);
    config.redis.redis_ca_file = stack.ca_file.clone();
    config.grpc.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.admin.admin_addr = "127.0.0.1:0".parse().unwrap();
    let spool = tempfile::tempdir().unwrap();
    config.spool.spool_dir = spool.path().to_path_buf();
    let app = Application::build(config).await.expect("starts, not ready");
    let admin = app.admin_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    eventually("readyz answers", Duration::from_secs(10), || async {
        http_get(admin, "/readyz").await.0 != 0
    })
    .await;
    let (code, body) = http_get(admin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(r#"role "no_such_role" does not exist"#) && body.contains("SQLSTATE 28000"),
        "{body}"
    );
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
