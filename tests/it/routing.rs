//! Resolution of numbers to routes, from PostgreSQL through PgBouncer.

use std::{collections::HashSet, time::Duration};

use serde_json::json;
use switchboard::{
    api::struct_to_json,
    proto::{LookupNumberRequest, RouteCallRequest},
};
use tonic::Code;

use crate::helpers::{eventually, spawn_seeded_app};

fn call(called: &str, caller: &str) -> RouteCallRequest {
    RouteCallRequest {
        called_number: called.into(),
        caller_number: caller.into(),
        gateway_call_id: format!("gw-{}", uuid::Uuid::new_v4()),
        default_region: String::new(),
    }
}

#[tokio::test]
async fn route_call_returns_the_route_and_the_known_customer() {
    let mut app = spawn_seeded_app().await;

    let reply = app
        .client
        .route_call(call("+14155550100", "+1 415 555 0123"))
        .await
        .expect("route")
        .into_inner();

    uuid::Uuid::parse_str(&reply.call_id).expect("call_id is a UUID");
    let route = reply.route.expect("route");
    assert_eq!(route.number, "+14155550100");
    let org = route.organization.expect("organization");
    assert_eq!(
        (org.slug.as_str(), org.name.as_str()),
        ("acme-dental", "Acme Dental")
    );
    assert_eq!(org.plan_tier, "starter");
    assert_eq!(
        serde_json::Value::Object(struct_to_json(org.settings.as_ref().unwrap())),
        json!({"timezone": "America/Los_Angeles", "business_hours": "08:00-17:00"})
    );
    let agent = route.agent.expect("agent");
    assert_eq!(
        (agent.name.as_str(), agent.voice_id.as_str()),
        ("Reception", "aura-asteria-en")
    );
    assert_eq!(
        struct_to_json(agent.llm_config.as_ref().unwrap())["model"],
        json!("gpt-4o-mini")
    );
    let customer = reply.customer.expect("the caller is a known customer");
    assert_eq!(customer.name, "Dana Whitfield");
    assert_eq!(customer.phone, "+14155550123");
}

#[tokio::test]
async fn every_call_gets_its_own_call_id() {
    let mut app = spawn_seeded_app().await;
    let mut ids = HashSet::new();
    // Globex is an enterprise organization: 20 calls are within its limit
    for _ in 0..20 {
        let reply = app
            .client
            .route_call(call("+13125550100", ""))
            .await
            .unwrap();
        assert!(ids.insert(reply.into_inner().call_id), "call ids repeat");
    }
}

#[tokio::test]
async fn unknown_withheld_or_garbage_callers_still_route_without_a_customer() {
    let mut app = spawn_seeded_app().await;
    for caller in ["", "anonymous", "+14155550199", "not a number"] {
        let reply = app
            .client
            .route_call(call("+14155550100", caller))
            .await
            .unwrap_or_else(|s| panic!("caller {caller:?}: {s:?}"))
            .into_inner();
        assert!(reply.customer.is_none(), "caller {caller:?}");
    }
    // A customer of another organization is not this org's customer.
    let reply = app
        .client
        .route_call(call("+14155550100", "+13125550199"))
        .await
        .unwrap();
    assert!(reply.into_inner().customer.is_none());
}

#[tokio::test]
async fn national_international_and_uri_forms_resolve_to_the_same_number() {
    let mut app = spawn_seeded_app().await;
    let cases = [
        ("(415) 555-0142", "US", "+14155550142"),
        ("415.555.0142", "us", "+14155550142"),
        ("011 1 415 555 0142", "", "+14155550142"),
        (
            "sip:+14155550142@trunk.example.com;user=phone",
            "",
            "+14155550142",
        ),
        ("tel:+1-415-555-0142", "", "+14155550142"),
        ("020 7946 0123", "GB", "+442079460123"),
        ("0044 20 7946 0123", "", "+442079460123"),
        ("+44 (0)20 7946 0123", "", "+442079460123"),
    ];
    for (number, region, expected) in cases {
        let route = app
            .client
            .lookup_number(LookupNumberRequest {
                number: number.into(),
                default_region: region.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("{number} ({region}): {s:?}"))
            .into_inner()
            .route
            .unwrap();
        assert_eq!(route.number, expected, "{number} ({region})");
        assert_eq!(route.organization.unwrap().slug, "northwind-realty");
    }
}

#[tokio::test]
async fn lookup_has_no_side_effects_and_sees_changes_through_the_cache() {
    let mut app = spawn_seeded_app().await;
    let db = app.direct().await;
    let request = || LookupNumberRequest {
        number: "+14155550142".into(),
        default_region: String::new(),
    };
    let agent =
        |reply: switchboard::proto::LookupNumberResponse| reply.route.unwrap().agent.unwrap().name;
    assert_eq!(
        agent(
            app.client
                .lookup_number(request())
                .await
                .unwrap()
                .into_inner()
        ),
        "Leasing"
    );
    let calls: i64 = db
        .query_one("select count(*) from calls", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(calls, 0, "a lookup writes nothing");

    // Repoint the number to another agent of the same org: the change
    // notification evicts the cached binding.
    db.batch_execute(
        "update agents set is_active = true where name = 'After hours';
         update phone_numbers set agent_id = '00000000-0000-4000-8000-00000000b003'
          where number = '+14155550142'",
    )
    .await
    .unwrap();
    let client = app.client.clone();
    eventually(
        "the cached route follows the change",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move {
                client
                    .lookup_number(request())
                    .await
                    .map(|r| agent(r.into_inner()))
                    .ok()
                    == Some("After hours".to_string())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn switched_off_numbers_agents_and_orgs_are_refused_with_distinct_reasons() {
    let mut app = spawn_seeded_app().await;
    let cases = [
        ("+19995550100", Code::NotFound, "number_not_found"),
        ("+14155550143", Code::FailedPrecondition, "agent_inactive"),
        ("+14155550144", Code::FailedPrecondition, "number_inactive"),
        (
            "+12125550100",
            Code::FailedPrecondition,
            "organization_inactive",
        ),
    ];
    for (number, code, reason) in cases {
        let status = app
            .client
            .route_call(call(number, "+14155550123"))
            .await
            .expect_err(number);
        assert_eq!(status.code(), code, "{number}: {status:?}");
        assert_eq!(
            status
                .metadata()
                .get("switchboard-reason")
                .unwrap()
                .to_str()
                .unwrap(),
            reason,
            "{number}"
        );
    }
}
