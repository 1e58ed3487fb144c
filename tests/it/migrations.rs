//! `switchboard migrate`: history with checksums, idempotent, refuses edited
//! history; the schema enforces E.164 and tenant-consistent references.

use switchboard::store::{self, migrate};

use crate::helpers::{create_database, create_empty_database, Stack};

#[tokio::test]
async fn migrating_twice_applies_nothing_the_second_time() {
    let stack = Stack::from_env();
    let db = create_database(&stack).await; // applies everything once
    let mut client = store::connect_direct(&stack.direct_url(&db)).await.unwrap();
    let report = migrate::run(&mut client, &Default::default())
        .await
        .unwrap();
    assert!(report.changed_nothing(), "{report}");
    let recorded: i64 = client
        .query_one("select count(*) from switchboard.schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert!(recorded >= 3, "history has {recorded} rows");
}

#[tokio::test]
async fn a_failed_run_changes_nothing() {
    let stack = Stack::from_env();
    let db = create_empty_database(&stack).await;
    let mut client = store::connect_direct(&stack.direct_url(&db)).await.unwrap();
    // something in the way of V4: a table of its name and another shape
    client
        .batch_execute(
            "create schema switchboard;
             create table switchboard.routing_changes (unrelated int)",
        )
        .await
        .unwrap();
    migrate::run(&mut client, &Default::default())
        .await
        .expect_err("V4 cannot be applied");
    // V1 to V3 were not left applied, their policies not left live
    let created: Option<String> = client
        .query_one("select to_regclass('public.organizations')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, None);
    let history: Option<String> = client
        .query_one(
            "select to_regclass('switchboard.schema_history')::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, None, "not even the history table is left");

    // once the obstacle is gone, one run applies everything
    client
        .batch_execute("drop table switchboard.routing_changes")
        .await
        .unwrap();
    let applied = migrate::run(&mut client, &Default::default())
        .await
        .unwrap()
        .applied;
    assert!(applied.len() >= 6, "{applied:?}");
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused() {
    let stack = Stack::from_env();
    let db = create_database(&stack).await;
    let mut client = store::connect_direct(&stack.direct_url(&db)).await.unwrap();
    client
        .execute(
            "update switchboard.schema_history set checksum = '1' where version = 1",
            &[],
        )
        .await
        .unwrap();
    let error = migrate::run(&mut client, &Default::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("different"), "{error}");
}

#[tokio::test]
async fn the_schema_rejects_malformed_numbers_and_cross_tenant_references() {
    let stack = Stack::from_env();
    let db = create_database(&stack).await;
    let mut client = store::connect_direct(&stack.direct_url(&db)).await.unwrap();
    store::seed::demo(&mut client).await.unwrap();

    let bad_number = client
        .execute(
            "insert into phone_numbers (org_id, agent_id, number) values \
             ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000b001', '4155550100')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        bad_number.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
    );

    // Acme's number pointing at Northwind's agent: the composite foreign key
    // (org_id, agent_id) makes it impossible.
    let cross_tenant = client
        .execute(
            "insert into phone_numbers (org_id, agent_id, number) values \
             ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000b002', '+14155550999')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        cross_tenant.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    );

    // Seeding again changes nothing.
    let everything = "select (select count(*) from phone_numbers) + (select count(*) from agents)
                           + (select count(*) from routing_rules) + (select count(*) from number_ranges)
                           + (select count(*) from caller_list_entries)";
    let before: i64 = client.query_one(everything, &[]).await.unwrap().get(0);
    store::seed::demo(&mut client).await.unwrap();
    let after: i64 = client.query_one(everything, &[]).await.unwrap().get(0);
    assert_eq!(after, before);
    let numbers: i64 = client
        .query_one("select count(*) from phone_numbers", &[])
        .await
        .unwrap()
        .get(0);
    // every demo number but the one routed by its range is a row
    assert_eq!(numbers as usize, store::seed::DEMO_NUMBERS.len() - 1);
}

#[tokio::test]
async fn api_roles_see_nothing_without_policies() {
    let stack = Stack::from_env();
    let db = create_database(&stack).await;
    let mut client = store::connect_direct(&stack.direct_url(&db)).await.unwrap();
    store::seed::demo(&mut client).await.unwrap();
    client
        .batch_execute(
            "grant select on public.phone_numbers, public.organizations to anon, authenticated",
        )
        .await
        .unwrap();
    for role in ["anon", "authenticated"] {
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&format!("set local role {role}"))
            .await
            .unwrap();
        let visible: i64 = tx
            .query_one("select count(*) from public.phone_numbers", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(visible, 0, "{role} sees phone numbers");
        tx.rollback().await.unwrap();
    }
}
