//! `ExplainRoute`: how a number is read, which tier answers, what is
//! switched off and what admission would decide, with the reasons RouteCall
//! would give, and without taking a slot, writing a row or filling a cache.

use std::time::Duration;

use switchboard::{
    admission::{AdmissionMode, RedisDownPolicy},
    config::ServeConfig,
    proto::{
        call_router_client::CallRouterClient, AdmissionDecision, ExplainRouteRequest,
        ExplainRouteResponse, LookupNumberRequest, RouteSource,
    },
};
use tonic::{transport::Channel, Code};

use crate::helpers::{
    acme_with_own_limit, count, end_request, eventually, reason, route_request, spawn_app_on,
    spawn_on_via, spawn_seeded_app, spawn_seeded_app_with, switchboard_command, PrivateRedis,
    Stack, TestApp,
};

const ACME: &str = "+14155550100";
const ACME_ORG_ID: &str = "00000000-0000-4000-8000-00000000a001";
const GLOBEX: &str = "+13125550100";
const NORTHWIND: &str = "+14155550142";
const UNKNOWN: &str = "+19995550000";
const KNOWN_CALLER: &str = "+14155550123";

async fn explain(
    client: &CallRouterClient<Channel>,
    number: &str,
    region: &str,
    caller: &str,
) -> ExplainRouteResponse {
    client
        .clone()
        .explain_route(ExplainRouteRequest {
            number: number.into(),
            default_region: region.into(),
            caller_number: caller.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("explain {number:?} ({region:?}): {s:?}"))
        .into_inner()
}

/// Nothing preloaded, and "no such number" kept long enough to be seen.
fn cold(config: &mut ServeConfig) {
    config.cache.cache_warm_limit = 0;
    config.cache.cache_negative_ttl = Duration::from_secs(60);
}

/// Live leases of Acme Dental, counted in Redis directly.
async fn acme_leases(app: &TestApp) -> u64 {
    let client = app.stack.redis_client();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ZCARD")
        .arg(format!("{}:v1:leases:{ACME_ORG_ID}", app.db_name))
        .query_async(&mut redis)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_number_in_any_form_is_normalized_and_the_method_named() {
    let app = spawn_seeded_app().await;
    let cases = [
        ("+14155550100", "", "canonical", ""),
        ("+1 (415) 555-0100", "", "separators_stripped", ""),
        ("(415) 555-0100", "US", "national", ""),
        ("011 1 415 555 0100", "", "international_prefix", ""),
        (
            "sip:+14155550100@trunk.example.com;user=phone",
            "",
            "canonical",
            "sip",
        ),
        ("tel:415-555-0100", "us", "national", "tel"),
    ];
    for (raw, region, method, uri_scheme) in cases {
        let answer = explain(&app.client, raw, region, "").await;
        let number = answer.number.unwrap();
        assert_eq!(number.raw, raw);
        assert_eq!(number.e164, ACME, "{raw}");
        assert_eq!(number.method, method, "{raw}");
        assert_eq!(number.uri_scheme, uri_scheme, "{raw}");
        assert!(number.error.is_empty(), "{raw}: {}", number.error);
        assert_eq!(answer.outcome, "ok", "{raw}");
        assert_eq!(answer.outcome_code, "OK");
        assert_eq!(answer.route.unwrap().number, ACME);
    }
    let national = explain(&app.client, "(415) 555-0100", "US", "(415) 555-0123").await;
    assert_eq!(
        national.number.unwrap().description,
        "national format read with region US"
    );
    let caller = national.caller.expect("a caller was given");
    let caller_number = caller.number.unwrap();
    assert_eq!(
        (caller_number.e164.as_str(), caller_number.method.as_str()),
        (KNOWN_CALLER, "national")
    );
    assert_eq!(
        caller.customer.expect("a known customer").name,
        "Dana Whitfield"
    );
}

#[tokio::test]
async fn a_number_routecall_would_refuse_is_explained_with_its_reason_and_message() {
    let mut app = spawn_seeded_app().await;
    let cases = [
        ("(415) 555-0100", "", "invalid_number"),
        ("hello", "US", "invalid_number"),
        ("", "", "invalid_number"),
        ("+1234567890123456", "", "invalid_number"),
        (ACME, "XX", "invalid_region"),
    ];
    for (raw, region, expected) in cases {
        let answer = explain(&app.client, raw, region, KNOWN_CALLER).await;
        let mut call = route_request(raw, "refused");
        call.default_region = region.into();
        let refused = app.client.route_call(call).await.expect_err(raw);
        assert_eq!(reason(&refused), expected, "{raw}");
        assert_eq!(answer.outcome, expected, "{raw}");
        assert_eq!(answer.outcome_code, "INVALID_ARGUMENT", "{raw}");
        assert_eq!(answer.outcome_message, refused.message(), "{raw}");
        let number = answer.number.as_ref().unwrap();
        assert_eq!(number.raw, raw);
        assert!(number.e164.is_empty(), "{raw}");
        assert_eq!(number.method, "none", "{raw}");
        assert_eq!(number.error, refused.message(), "{raw}");
        // nothing to look up
        assert_eq!(answer.source(), RouteSource::Unspecified, "{raw}");
        assert!(answer.binding.is_none() && answer.admission.is_none());
    }
    let needs_region = explain(&app.client, "(415) 555-0100", "", "").await;
    assert!(
        needs_region.outcome_message.contains("default_region"),
        "{}",
        needs_region.outcome_message
    );

    // an unreadable caller routes, without a customer
    let answer = explain(&app.client, ACME, "", "anonymous").await;
    assert_eq!(answer.outcome, "ok");
    let caller = answer.caller.unwrap();
    let caller_number = caller.number.unwrap();
    assert!(caller_number.e164.is_empty());
    assert!(caller_number.error.starts_with("caller_number "));
    assert!(caller.customer.is_none());

    // too long to echo back: refused like RouteCall refuses it
    let long = "1".repeat(300);
    for (number, caller) in [(long.as_str(), ""), (ACME, long.as_str())] {
        let status = app
            .client
            .explain_route(ExplainRouteRequest {
                number: number.into(),
                default_region: String::new(),
                caller_number: caller.into(),
            })
            .await
            .expect_err("too long");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason(&status), "invalid_number");
    }
}

#[tokio::test]
async fn switched_off_parts_and_unknown_numbers_get_routecalls_reasons() {
    let mut app = spawn_seeded_app().await;
    // (number, outcome, (organization, agent, number) active)
    let cases = [
        (ACME, "ok", Some((true, true, true))),
        ("+14155550143", "agent_inactive", Some((true, false, true))),
        ("+14155550144", "number_inactive", Some((true, true, false))),
        (
            "+12125550100",
            "organization_inactive",
            Some((false, true, true)),
        ),
        (UNKNOWN, "number_not_found", None),
    ];
    for (number, outcome, active) in cases {
        let answer = explain(&app.client, number, "", "").await;
        assert_eq!(answer.outcome, outcome, "{number}");
        assert_ne!(answer.source(), RouteSource::Unspecified, "{number}");
        match active {
            Some((org, agent, num)) => {
                let binding = answer.binding.expect(number);
                assert_eq!(
                    (
                        binding.organization_active,
                        binding.agent_active,
                        binding.number_active
                    ),
                    (org, agent, num),
                    "{number}"
                );
                assert_eq!(
                    binding.organization_id,
                    answer
                        .route
                        .as_ref()
                        .unwrap()
                        .organization
                        .as_ref()
                        .unwrap()
                        .id
                );
                assert!(answer.admission.is_some(), "{number}: its org is known");
            }
            None => {
                assert!(answer.binding.is_none() && answer.route.is_none());
                assert!(answer.admission.is_none());
                assert_eq!(answer.outcome_code, "NOT_FOUND");
            }
        }
        if outcome != "ok" {
            let refused = app
                .client
                .route_call(route_request(number, "switched-off"))
                .await
                .expect_err(number);
            assert_eq!(reason(&refused), outcome, "{number}");
            assert_eq!(answer.outcome_message, refused.message(), "{number}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_tier_turned_off_is_skipped() {
    let lookup = |client: &CallRouterClient<Channel>, number: &str| {
        let (mut client, number) = (client.clone(), number.to_string());
        async move {
            client
                .lookup_number(LookupNumberRequest {
                    number,
                    default_region: String::new(),
                })
                .await
                .expect("the route")
                .into_inner()
        }
    };
    // L1 off (capacity 0): a lookup fills L2, and from then on L2 answers
    let l1_off = spawn_seeded_app_with(|c| {
        cold(c);
        c.cache.cache_capacity = 0;
        // about which tier answers, not how fast: a loaded machine must not
        // turn an L2 read into a timeout that falls through to L3
        c.redis.redis_timeout = Duration::from_secs(2);
    })
    .await;
    lookup(&l1_off.client, ACME).await;
    let client = l1_off.client.clone();
    eventually("the fill is in Redis", Duration::from_secs(5), || {
        let client = client.clone();
        async move { explain(&client, ACME, "", "").await.source() == RouteSource::L2 }
    })
    .await;
    for _ in 0..2 {
        let route = lookup(&l1_off.client, ACME).await.route.unwrap();
        assert_eq!(route.agent.unwrap().name, "Reception");
        assert_eq!(
            explain(&l1_off.client, ACME, "", "").await.source(),
            RouteSource::L2
        );
    }

    // L2 off as well (Redis TTL 0), on the same Redis: ACME is there, but
    // PostgreSQL answers every lookup
    let both_off = spawn_on_via(&l1_off, Stack::from_env().pgbouncer_port, |c| {
        cold(c);
        c.cache.cache_capacity = 0;
        c.redis.redis_ttl = Duration::ZERO;
    })
    .await;
    for _ in 0..2 {
        let route = lookup(&both_off.client, ACME).await.route.unwrap();
        assert_eq!(route.agent.unwrap().name, "Reception");
        assert_eq!(
            explain(&both_off.client, ACME, "", "").await.source(),
            RouteSource::L3
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_answering_tier_is_reported_and_explaining_fills_no_cache() {
    let mut first = spawn_seeded_app_with(cold).await;
    // cold: PostgreSQL answers, and a second explain finds nothing cached
    // in L1 or L2
    for _ in 0..2 {
        let answer = explain(&first.client, ACME, "", "").await;
        assert_eq!(answer.source(), RouteSource::L3);
        assert!(!answer.negative_entry && !answer.stale);
        assert_eq!(answer.outcome, "ok");
        let unknown = explain(&first.client, UNKNOWN, "", "").await;
        assert_eq!(unknown.source(), RouteSource::L3);
        assert!(!unknown.negative_entry, "the database is not a cache");
    }

    // lookups fill L1 (and, behind them, L2)
    for number in [ACME, UNKNOWN] {
        let _ = first
            .client
            .lookup_number(LookupNumberRequest {
                number: number.into(),
                default_region: String::new(),
            })
            .await;
    }
    let answer = explain(&first.client, ACME, "", "").await;
    assert_eq!(answer.source(), RouteSource::L1);
    assert!(!answer.negative_entry);
    let unknown = explain(&first.client, UNKNOWN, "", "").await;
    assert_eq!(unknown.source(), RouteSource::L1);
    assert!(unknown.negative_entry);
    assert_eq!(unknown.outcome, "number_not_found");

    // another replica shares L2 but not L1
    let second = spawn_on_via(&first, Stack::from_env().pgbouncer_port, cold).await;
    for (number, negative) in [(ACME, false), (UNKNOWN, true)] {
        let client = second.client.clone();
        eventually(
            "the first replica's fill is in Redis",
            Duration::from_secs(5),
            || {
                let client = client.clone();
                async move { explain(&client, number, "", "").await.source() == RouteSource::L2 }
            },
        )
        .await;
        let answer = explain(&second.client, number, "", "").await;
        assert_eq!(answer.source(), RouteSource::L2, "{number}: L1 not filled");
        assert_eq!(answer.negative_entry, negative, "{number}");
    }
    assert_eq!(
        explain(&second.client, NORTHWIND, "", "").await.source(),
        RouteSource::L3,
        "never looked up anywhere"
    );
}

#[tokio::test]
async fn the_limit_the_live_calls_and_a_refusal_at_the_limit_are_foreseen() {
    let mut app = spawn_seeded_app_with(|c| c.admission.limit_starter = 2).await;
    let admission = explain(&app.client, ACME, "", "").await.admission.unwrap();
    assert_eq!(admission.mode, "enforce");
    assert_eq!(admission.on_redis_down, "admit");
    assert_eq!(
        (admission.limit, admission.limit_source.as_str()),
        (2, "plan_tier")
    );
    assert_eq!(admission.active_calls, Some(0));
    assert_eq!(admission.decision(), AdmissionDecision::Admit);
    let globex = explain(&app.client, GLOBEX, "", "")
        .await
        .admission
        .unwrap();
    assert_eq!(
        (globex.limit, globex.limit_source.as_str()),
        (switchboard::config::DEFAULT_LIMIT_ENTERPRISE, "plan_tier")
    );

    let first = app
        .client
        .route_call(route_request(ACME, "one"))
        .await
        .unwrap()
        .into_inner()
        .call_id;
    app.client
        .route_call(route_request(ACME, "two"))
        .await
        .unwrap();
    let answer = explain(&app.client, ACME, "", "").await;
    let admission = answer.admission.unwrap();
    assert_eq!(admission.active_calls, Some(2));
    assert_eq!(admission.decision(), AdmissionDecision::Refuse);
    assert_eq!(answer.outcome, "concurrency_limit");
    assert_eq!(answer.outcome_code, "RESOURCE_EXHAUSTED");

    // explaining takes no slot: the count is the same however often it asks
    for _ in 0..5 {
        let again = explain(&app.client, ACME, "", KNOWN_CALLER).await;
        assert_eq!(again.admission.unwrap().active_calls, Some(2));
    }
    assert_eq!(acme_leases(&app).await, 2);
    let refused = app
        .client
        .route_call(route_request(ACME, "three"))
        .await
        .expect_err("at the limit");
    assert_eq!(reason(&refused), "concurrency_limit");
    assert_eq!(answer.outcome_message, refused.message());

    app.client.end_call(end_request(&first)).await.unwrap();
    let answer = explain(&app.client, ACME, "", "").await;
    let admission = answer.admission.unwrap();
    assert_eq!(
        (admission.active_calls, admission.decision()),
        (Some(1), AdmissionDecision::Admit)
    );
    assert_eq!(answer.outcome, "ok");
}

#[tokio::test]
async fn an_organizations_own_limit_is_named_as_its_source() {
    let (stack, db_name) = acme_with_own_limit(7).await;
    let app = spawn_app_on(stack, db_name, |_| {}).await;
    let admission = explain(&app.client, ACME, "", "").await.admission.unwrap();
    assert_eq!(
        (admission.limit, admission.limit_source.as_str()),
        (7, "organization")
    );
    let northwind = explain(&app.client, NORTHWIND, "", "")
        .await
        .admission
        .unwrap();
    assert_eq!(northwind.limit_source, "plan_tier");
}

#[tokio::test]
async fn shadow_mode_is_explained_as_admitting_over_the_limit() {
    let mut app = spawn_seeded_app_with(|c| {
        c.admission.admission_mode = AdmissionMode::Shadow;
        c.admission.limit_starter = 1;
    })
    .await;
    app.client
        .route_call(route_request(ACME, "shadow"))
        .await
        .unwrap();
    let answer = explain(&app.client, ACME, "", "").await;
    let admission = answer.admission.unwrap();
    assert_eq!(admission.mode, "shadow");
    assert_eq!(admission.active_calls, Some(1));
    assert_eq!(admission.decision(), AdmissionDecision::AdmitOverLimit);
    assert_eq!(answer.outcome, "ok");
}

#[tokio::test]
async fn with_redis_gone_the_count_is_unknown_and_the_policy_decides() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = spawn_seeded_app_with(|c| {
        c.redis.redis_url = url.into();
        c.admission.admission_on_redis_down = RedisDownPolicy::Reject;
    })
    .await;
    let before = explain(&app.client, ACME, "", "").await.admission.unwrap();
    assert_eq!(before.active_calls, Some(0));
    redis.kill();
    let answer = explain(&app.client, ACME, "", "").await;
    let admission = answer.admission.unwrap();
    assert_eq!(admission.on_redis_down, "reject");
    assert_eq!(admission.active_calls, None, "unknown, not zero");
    assert_eq!(admission.decision(), AdmissionDecision::RefuseUnchecked);
    assert_eq!(answer.outcome, "admission_unavailable");
    assert_eq!(answer.outcome_code, "UNAVAILABLE");
    // the route itself is still known
    assert_eq!(answer.route.unwrap().number, ACME);
}

#[tokio::test]
async fn explaining_takes_no_slot_and_writes_nothing() {
    let app = spawn_seeded_app_with(cold).await;
    for _ in 0..3 {
        for number in [ACME, GLOBEX, NORTHWIND, "+14155550143", UNKNOWN] {
            explain(&app.client, number, "", KNOWN_CALLER).await;
        }
    }
    // L2 fills are written off the call path: give any (wrong) one time to
    // land before looking
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = app.stack.redis_client();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.db_name))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.is_empty(), "no lease, mapping or cache fill: {keys:?}");
    let db = app.direct().await;
    assert_eq!(count(&db, "select count(*) from public.calls").await, 0);
    assert_eq!(
        count(&db, "select count(*) from public.usage_events").await,
        0
    );
    // and the one lookup that follows still goes to the database
    assert_eq!(
        explain(&app.client, ACME, "", "").await.source(),
        RouteSource::L3
    );
}

#[tokio::test]
async fn the_client_subcommand_prints_the_explanation_as_json() {
    let app = spawn_seeded_app().await;
    let addr = format!("http://{}", app.grpc_addr);
    let run = |args: Vec<String>| {
        let mut command = switchboard_command();
        command.args(["client", "--addr", &addr]).args(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let args = [
        "explain",
        "(415) 555-0100",
        "--region",
        "US",
        "--caller",
        KNOWN_CALLER,
    ];
    let output = run(args.map(String::from).to_vec()).await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["number"]["e164"], ACME);
    assert_eq!(json["number"]["method"], "national");
    assert_eq!(json["outcome"], "ok");
    assert_eq!(json["route"]["organization"]["slug"], "acme-dental");
    assert_eq!(json["binding"]["agent_active"], true);
    assert_eq!(json["caller"]["customer"]["name"], "Dana Whitfield");
    assert_eq!(json["admission"]["decision"], "admit");
    assert_eq!(json["admission"]["limit_source"], "plan_tier");
    assert!(
        ["l1", "l2", "l3"].contains(&json["source"].as_str().unwrap()),
        "{json}"
    );

    // a number RouteCall would refuse is still an answer
    let output = run(vec!["explain".into(), "hello".into()]).await.unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["outcome"], "invalid_number");
    assert_eq!(json["source"], "unspecified");
    assert_eq!(json["number"]["method"], "none");
}
