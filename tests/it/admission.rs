//! Concurrent-call limits: leases in Redis, exact under concurrency, released
//! by EndCall, reaped after the maximum call duration, and an explicit
//! answer when Redis is gone.

use std::time::Duration;

use futures::future::join_all;
use switchboard::admission::{AdmissionMode, RedisDownPolicy};
use tonic::Code;

use crate::helpers::{
    acme_with_own_limit, count, end_request, eventually, metric, reason, route_request,
    spawn_app_on, spawn_on_via, spawn_seeded_app_with, trailer, PrivateRedis, Topology,
};
use switchboard::config::ServeConfig;

const ACME: &str = "+14155550100";

#[tokio::test(flavor = "multi_thread")]
async fn exactly_the_limit_holds_across_three_replicas() {
    exactly_the_limit_holds_across_three_replicas_on(Topology::Standalone).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_the_limit_holds_across_three_replicas_on_a_redis_cluster() {
    exactly_the_limit_holds_across_three_replicas_on(Topology::Cluster).await;
}

/// 210 concurrent calls spread over three replicas admit exactly the limit;
/// each admitted call ended on another replica than the one that admitted it
/// frees its slot, and a second burst again admits exactly the limit.
async fn exactly_the_limit_holds_across_three_replicas_on(topology: Topology) {
    // Acme is a starter organization (5) with its own limit of 7
    let (stack, db_name) = acme_with_own_limit(7).await;
    let pooler = stack.pgbouncer_port;
    // the subject is exactness, not latency: no fail-open on a loaded machine
    let patient = |c: &mut ServeConfig| {
        topology.apply(c);
        c.admission.admission_timeout = Duration::from_secs(2);
    };
    let first = spawn_app_on(stack, db_name, patient).await;
    let second = spawn_on_via(&first, pooler, patient).await;
    let third = spawn_on_via(&first, pooler, patient).await;
    let replicas = [&first, &second, &third];
    for replica in replicas {
        replica.connected_to_redis().await;
    }
    let burst = |name: &'static str| {
        join_all((0..210).map(move |i| {
            let replica = i % 3;
            let mut client = replicas[replica].client.clone();
            async move {
                let reply = client
                    .route_call(route_request(ACME, &format!("{name}-{i}")))
                    .await;
                (replica, reply)
            }
        }))
    };
    let results = burst("burst").await;
    let admitted: Vec<(usize, String)> = results
        .iter()
        .filter_map(|(replica, r)| Some((*replica, r.as_ref().ok()?.get_ref().call_id.clone())))
        .collect();
    assert_eq!(admitted.len(), 7, "exactly the limit is admitted");
    for refused in results.iter().filter_map(|(_, r)| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(reason(refused), "concurrency_limit");
        assert_eq!(trailer(refused, "switchboard-limit-scope"), "organization");
        assert_eq!(trailer(refused, "switchboard-limit"), "7");
        assert_eq!(trailer(refused, "switchboard-active-calls"), "7");
    }
    let db = first.direct().await;
    eventually(
        "admitted calls recorded",
        Duration::from_secs(10),
        || async {
            count(
                &db,
                "select count(*) from public.calls where gateway_call_id like 'burst-%'",
            )
            .await
                == 7
        },
    )
    .await;
    assert_eq!(
        count(
            &db,
            "select count(*) from public.calls where gateway_call_id like 'burst-%'"
        )
        .await,
        7,
        "refused calls open no record"
    );

    // every call ends on the next replica round
    join_all(admitted.iter().map(|(replica, call_id)| {
        let mut client = replicas[(replica + 1) % 3].client.clone();
        async move {
            client
                .end_call(end_request(call_id))
                .await
                .expect("EndCall on another replica");
        }
    }))
    .await;
    let again = burst("again").await;
    let admitted = again.iter().filter(|(_, r)| r.is_ok()).count();
    assert_eq!(admitted, 7, "every slot was freed, and no more than that");
}

#[tokio::test]
async fn end_call_releases_the_slot_idempotently() {
    let mut app = spawn_seeded_app_with(|c| c.admission.limit_starter = 2).await;
    let a = app
        .client
        .route_call(route_request(ACME, "a"))
        .await
        .unwrap()
        .into_inner()
        .call_id;
    app.client
        .route_call(route_request(ACME, "b"))
        .await
        .unwrap();
    let refused = app
        .client
        .route_call(route_request(ACME, "c"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // ending the same call twice frees one slot, not two
    app.client.end_call(end_request(&a)).await.unwrap();
    app.client.end_call(end_request(&a)).await.unwrap();
    app.client
        .route_call(route_request(ACME, "c"))
        .await
        .expect("a slot was freed");
    let refused = app
        .client
        .route_call(route_request(ACME, "d"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(trailer(&refused, "switchboard-active-calls"), "2");
}

#[tokio::test]
async fn a_lease_without_end_call_expires_after_the_maximum_duration() {
    let mut app = spawn_seeded_app_with(|c| {
        c.admission.max_call_duration = Duration::from_secs(2);
        c.admission.limit_starter = 1;
    })
    .await;
    app.client
        .route_call(route_request(ACME, "lost-end"))
        .await
        .unwrap();
    let refused = app
        .client
        .route_call(route_request(ACME, "next"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let client = app.client.clone();
    eventually(
        "the lost call's lease expired",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move { client.route_call(route_request(ACME, "next")).await.is_ok() }
        },
    )
    .await;
}

#[tokio::test]
async fn shadow_mode_admits_everything_and_counts_what_it_would_refuse() {
    let mut app = spawn_seeded_app_with(|c| {
        c.admission.admission_mode = AdmissionMode::Shadow;
        c.admission.limit_starter = 1;
    })
    .await;
    let before = metric(
        app.admin_addr,
        r#"switchboard_admission_decisions_total{outcome="shadow_refused"}"#,
    )
    .await;
    let mut last_error = None;
    for i in 0..4 {
        if let Err(status) = app
            .client
            .route_call(route_request(ACME, &format!("shadow-{i}")))
            .await
        {
            last_error = Some(status);
        }
    }
    assert!(
        last_error.is_none(),
        "shadow mode refuses nothing: {last_error:?}"
    );
    let after = metric(
        app.admin_addr,
        r#"switchboard_admission_decisions_total{outcome="shadow_refused"}"#,
    )
    .await;
    assert!(
        after - before >= 3.0,
        "{before} → {after}: the calls over the limit are counted"
    );
}

#[tokio::test]
async fn with_redis_gone_the_policy_decides() {
    for (policy, admitted) in [
        (RedisDownPolicy::Admit, true),
        (RedisDownPolicy::Reject, false),
    ] {
        let mut redis = PrivateRedis::start().await;
        let url = redis.url();
        let mut app = spawn_seeded_app_with(|c| {
            c.redis.redis_url = url.into();
            c.admission.admission_on_redis_down = policy;
        })
        .await;
        app.client
            .route_call(route_request(ACME, "before"))
            .await
            .expect("admitted while Redis is up");
        redis.kill();
        let answer = app.client.route_call(route_request(ACME, "during")).await;
        match (admitted, answer) {
            (true, Ok(_)) => {}
            (false, Err(status)) => {
                assert_eq!(status.code(), Code::Unavailable);
                assert_eq!(reason(&status), "admission_unavailable");
            }
            (_, other) => panic!("{policy:?}: {other:?}"),
        }
        let outcome = if admitted {
            "redis_down_admitted"
        } else {
            "redis_down_refused"
        };
        assert!(
            metric(
                app.admin_addr,
                &format!(r#"switchboard_admission_decisions_total{{outcome="{outcome}"}}"#)
            )
            .await
                >= 1.0
        );
    }
}
