//! The route cache kept fresh by the database's change log: every replica
//! sees each kind of change within milliseconds, and a change committed
//! while a replica's listener is down still reaches it.

use std::time::{Duration, Instant};

use switchboard::proto::{LookupNumberRequest, LookupNumberResponse};
use tonic::transport::Channel;

use crate::helpers::{eventually, spawn_on_via, spawn_seeded_app_with, Stack, TestApp, Topology};

type Client = switchboard::proto::call_router_client::CallRouterClient<Channel>;

fn request(number: &str) -> LookupNumberRequest {
    LookupNumberRequest {
        number: number.into(),
        default_region: String::new(),
    }
}

async fn lookup(client: &mut Client, number: &str) -> LookupNumberResponse {
    client
        .lookup_number(request(number))
        .await
        .expect("lookup")
        .into_inner()
}

/// Runs `change` and waits until every app's answer for `number` satisfies
/// `applied`; returns the slowest replica's delay after the commit.
async fn time_until_applied(
    apps: &[&TestApp],
    number: &str,
    change: &str,
    applied: impl Fn(&LookupNumberResponse) -> bool,
) -> Duration {
    let db = apps[0].direct().await;
    db.batch_execute(change).await.expect(change);
    let committed = Instant::now();
    for app in apps {
        let mut client = app.client.clone();
        loop {
            if applied(&lookup(&mut client, number).await) {
                break;
            }
            // Far below the cache TTL (minutes): only the push invalidation
            // can make this pass.
            assert!(
                committed.elapsed() < Duration::from_secs(2),
                "{change} not applied"
            );
            tokio::task::yield_now().await;
        }
    }
    committed.elapsed()
}

#[tokio::test]
async fn every_kind_of_change_reaches_two_replicas() {
    every_kind_of_change_reaches_two_replicas_on(Topology::Standalone).await;
}

#[tokio::test]
async fn every_kind_of_change_reaches_two_replicas_on_a_redis_cluster() {
    every_kind_of_change_reaches_two_replicas_on(Topology::Cluster).await;
}

async fn every_kind_of_change_reaches_two_replicas_on(topology: Topology) {
    let first = spawn_seeded_app_with(|c| topology.apply(c)).await;
    let second = spawn_on_via(&first, Stack::from_env().pgbouncer_port, |c| {
        topology.apply(c)
    })
    .await;
    let number = "+14155550142";
    for app in [&first, &second] {
        let mut client = app.client.clone();
        assert_eq!(
            lookup(&mut client, number)
                .await
                .route
                .unwrap()
                .agent
                .unwrap()
                .name,
            "Leasing"
        );
    }
    let apps = [&first, &second];
    let agent_name = |r: &LookupNumberResponse| r.route.clone().unwrap().agent.unwrap().name;
    let org_name = |r: &LookupNumberResponse| r.route.clone().unwrap().organization.unwrap().name;
    type Check = Box<dyn Fn(&LookupNumberResponse) -> bool>;
    let changes: [(&str, Check); 3] = [
        (
            "update agents set name = 'Leasing desk' where id = '00000000-0000-4000-8000-00000000b002'",
            Box::new(move |r| agent_name(r) == "Leasing desk"),
        ),
        (
            "update organizations set name = 'Northwind Homes' where slug = 'northwind-realty'",
            Box::new(move |r| org_name(r) == "Northwind Homes"),
        ),
        (
            "update agents set is_active = true where name = 'After hours';
             update phone_numbers set agent_id = '00000000-0000-4000-8000-00000000b003'
              where number = '+14155550142'",
            Box::new(move |r| agent_name(r) == "After hours"),
        ),
    ];
    let mut lags = Vec::new();
    for (change, applied) in &changes {
        lags.push(time_until_applied(&apps, number, change, applied).await);
    }
    // a new number: its cached "not found" must not outlive the insert
    let unknown = "+14155550177";
    let mut client = first.client.clone();
    assert!(client.lookup_number(request(unknown)).await.is_err());
    let db = first.direct().await;
    db.batch_execute(
        "insert into phone_numbers (org_id, agent_id, number) values
         ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000b001', '+14155550177')",
    )
    .await
    .unwrap();
    eventually(
        "a new number is routable at once",
        Duration::from_secs(2),
        || {
            let mut client = client.clone();
            async move { client.lookup_number(request(unknown)).await.is_ok() }
        },
    )
    .await;
    println!("invalidation lag (commit → both replicas answer anew): {lags:?}");

    // each applied change is in the lag histogram, whose buckets resolve
    // the few milliseconds around its target
    let (_, metrics) = first.admin_get("/metrics").await;
    let bounds: Vec<f64> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("switchboard_invalidation_lag_seconds_bucket{le=\"")?;
            rest.split_once('"')?.0.parse().ok()
        })
        .filter(|bound: &f64| bound.is_finite())
        .collect();
    assert_eq!(
        bounds,
        switchboard::telemetry::INVALIDATION_LAG_BUCKETS,
        "lag buckets in:\n{metrics}"
    );
    let applied = crate::helpers::metric(
        first.admin_addr,
        "switchboard_invalidation_lag_seconds_count",
    )
    .await;
    assert!(applied >= changes.len() as f64, "{applied} lags recorded");
}

#[tokio::test]
async fn a_change_committed_while_the_listener_is_down_is_replayed() {
    // Entries stay trusted for an hour while unconfirmed: only the replay
    // of the change log can bring the new value.
    let app = spawn_seeded_app_with(|config| {
        config.cache.cache_unconfirmed_ttl = Duration::from_secs(3600)
    })
    .await;
    let mut client = app.client.clone();
    let number = "+13125550100";
    assert_eq!(
        lookup(&mut client, number)
            .await
            .route
            .unwrap()
            .agent
            .unwrap()
            .name,
        "Triage"
    );

    let db = app.direct().await;
    let killed: i64 = db
        .query_one(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity
              where datname = current_database() and application_name = $1",
            &[&switchboard::invalidation::APPLICATION_NAME],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one listener session");
    db.batch_execute("update agents set name = 'Night triage' where name = 'Triage'")
        .await
        .unwrap();

    eventually(
        "the change is applied after the listener reconnects",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                lookup(&mut client, number)
                    .await
                    .route
                    .unwrap()
                    .agent
                    .unwrap()
                    .name
                    == "Night triage"
            }
        },
    )
    .await;
    let admin = app.admin_addr;
    eventually(
        "ready again after the reconnect",
        Duration::from_secs(5),
        || async move { crate::helpers::http_get(admin, "/readyz").await.0 == 200 },
    )
    .await;
}

/// L2 is shared: a route one replica read from PostgreSQL is served to
/// another replica from Redis even when that replica cannot reach
/// PostgreSQL at all.
#[tokio::test]
async fn a_second_replica_is_served_from_redis() {
    a_second_replica_is_served_from_redis_on(Topology::Standalone).await;
}

#[tokio::test]
async fn a_second_replica_is_served_from_a_redis_cluster() {
    a_second_replica_is_served_from_redis_on(Topology::Cluster).await;
}

async fn a_second_replica_is_served_from_redis_on(topology: Topology) {
    // no warm start: the first lookup must go through L2 to PostgreSQL
    let first = spawn_seeded_app_with(|config| {
        topology.apply(config);
        config.cache.cache_warm_limit = 0;
    })
    .await;
    // Redis is connected in the background: fills wait for it
    first.connected_to_redis().await;
    let mut client = first.client.clone();
    lookup(&mut client, "+13125550100").await;

    let stack = crate::helpers::Stack::from_env();
    let mut bouncer = crate::helpers::PrivateBouncer::start(&stack).await;
    let second = crate::helpers::spawn_on_via(&first, bouncer.port, |config| {
        topology.apply(config);
        config.cache.cache_warm_limit = 0; // its L1 starts empty
    })
    .await;
    second.connected_to_redis().await;
    bouncer.kill();
    // the first replica fills Redis off its call path: wait for it
    let client = second.client.clone();
    eventually(
        "the second replica answers from Redis",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move {
                let reply = client.lookup_number(request("+13125550100")).await;
                reply.is_ok_and(|r| r.into_inner().route.unwrap().agent.unwrap().name == "Triage")
            }
        },
    )
    .await;
    let (_, metrics) = second.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"switchboard_cache_hits_total{tier="l2"}"#),
        "{metrics}"
    );
}

/// A changed agent is swapped for its new version read by the listener on
/// its own session: with the pooler gone, every lookup of its number,
/// from clients asking all along, is still answered, in the old version
/// and then only in the new one.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_agent_is_swapped_in_by_the_listener_while_the_pooler_is_down() {
    let stack = crate::helpers::Stack::from_env();
    let mut bouncer = crate::helpers::PrivateBouncer::start(&stack).await;
    let app = crate::helpers::spawn_seeded_app_via(bouncer.port, |_| {}).await;
    let number = "+14155550142";
    let name = |reply: LookupNumberResponse| reply.route.unwrap().agent.unwrap().name;
    let mut client = app.client.clone();
    assert_eq!(name(lookup(&mut client, number).await), "Leasing");
    bouncer.kill();
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut seen: Vec<String> = Vec::new();
                // until the new version has answered 50 times in a row
                while !(seen.len() >= 50
                    && seen[seen.len() - 50..].iter().all(|n| n == "Leasing desk"))
                {
                    assert!(Instant::now() < deadline, "not swapped in: {seen:?}");
                    let reply = client.lookup_number(request(number)).await;
                    let reply =
                        reply.unwrap_or_else(|e| panic!("refused with the pooler down: {e}"));
                    let agent = name(reply.into_inner());
                    if seen.last() != Some(&agent) || agent == "Leasing desk" {
                        seen.push(agent);
                    }
                }
                seen.dedup();
                seen
            })
        })
        .collect();
    app.direct()
        .await
        .batch_execute(
            "update agents set name = 'Leasing desk'
              where id = '00000000-0000-4000-8000-00000000b002'",
        )
        .await
        .unwrap();
    for asker in askers {
        let seen = asker.await.expect("asker");
        assert!(
            seen == ["Leasing", "Leasing desk"] || seen == ["Leasing desk"],
            "answers went back to the old version: {seen:?}"
        );
    }
}

/// Redis going away costs latency, never a call.
#[tokio::test]
async fn calls_keep_routing_when_redis_dies() {
    let mut redis = crate::helpers::PrivateRedis::start().await;
    let url = redis.url();
    let app = spawn_seeded_app_with(move |config| {
        config.redis.redis_url = secrecy::SecretString::from(url);
        config.cache.cache_ttl = Duration::from_millis(1); // every lookup refreshes through L2
        config.cache.cache_warm_limit = 0;
    })
    .await;
    let mut client = app.client.clone();
    let numbers = [
        "+14155550100",
        "+14155550142",
        "+13125550100",
        "+442079460123",
    ];
    // the last is looked up for the first time with Redis gone
    for number in &numbers[..3] {
        lookup(&mut client, number).await;
    }
    redis.kill();
    for _ in 0..5 {
        for number in numbers {
            let reply = client.lookup_number(request(number)).await;
            assert!(reply.is_ok(), "{number} failed with Redis down: {reply:?}");
        }
    }
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(
        metrics.contains("switchboard_redis_fallbacks_total"),
        "{metrics}"
    );
}

/// Stale-if-error: with the database unreachable, a cached route past its
/// TTL is still served, up to the maximum age and no further.
#[tokio::test]
async fn stale_routes_are_served_during_an_outage_up_to_the_maximum_age() {
    let stack = crate::helpers::Stack::from_env();
    for (max_stale, served) in [
        (Duration::from_secs(3600), true),
        (Duration::from_millis(1), false),
    ] {
        let mut bouncer = crate::helpers::PrivateBouncer::start(&stack).await;
        let mut redis = crate::helpers::PrivateRedis::start().await;
        let redis_url = redis.url();
        let app = crate::helpers::spawn_seeded_app_via(bouncer.port, |config| {
            config.redis.redis_url = secrecy::SecretString::from(redis_url);
            config.cache.cache_ttl = Duration::from_millis(1); // every entry due a refresh
            config.cache.cache_max_stale = max_stale;
        })
        .await;
        let mut client = app.client.clone();
        lookup(&mut client, "+14155550100").await;
        // nothing but L1 left
        bouncer.kill();
        redis.kill();
        tokio::time::sleep(Duration::from_millis(5)).await; // age the entry past max_stale
        let reply = client.lookup_number(request("+14155550100")).await;
        assert_eq!(reply.is_ok(), served, "max_stale {max_stale:?}: {reply:?}");
        if served {
            // answered from L1 at once; its refresh behind the answer fails,
            // and until the next try the copy is served as stale, counted
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let reply = client.lookup_number(request("+14155550100")).await;
                assert!(reply.is_ok(), "{reply:?}");
                let (_, metrics) = app.admin_get("/metrics").await;
                if metrics.contains("switchboard_cache_stale_served_total") {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no stale route counted:\n{metrics}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            assert_eq!(reply.unwrap_err().code(), tonic::Code::Unavailable);
        }
    }
}

/// Warm start: a replica reports ready with every active route already in
/// L1, so even the first call for a number needs no database.
#[tokio::test]
async fn warm_start_preloads_every_active_route_before_ready() {
    let stack = crate::helpers::Stack::from_env();
    for (limit, preloaded) in [(100_000, true), (0, false)] {
        let mut bouncer = crate::helpers::PrivateBouncer::start(&stack).await;
        let app = crate::helpers::spawn_seeded_app_via(bouncer.port, |config| {
            config.cache.cache_warm_limit = limit;
        })
        .await; // returns once /readyz says ready
        bouncer.kill();
        let mut client = app.client.clone();
        let reply = client.lookup_number(request("+13125550100")).await;
        assert_eq!(reply.is_ok(), preloaded, "warm limit {limit}: {reply:?}");
    }
}

/// Numbers nobody provisioned (a SIP scanner's) are answered from the
/// directory: with the database paused they still get NOT_FOUND, at once
/// and all together; a number provisioned afterwards is routed, the change
/// log having added it.
#[tokio::test(flavor = "multi_thread")]
async fn numbers_nobody_provisioned_are_answered_from_memory() {
    let stack = Stack::from_env();
    let bouncer = crate::helpers::PrivateBouncer::start(&stack).await;
    let app = crate::helpers::spawn_seeded_app_via(bouncer.port, |_| {}).await;
    eventually(
        "the directory is loaded",
        Duration::from_secs(10),
        || async {
            app.admin_get("/readyz")
                .await
                .1
                .contains("provisioned numbers")
        },
    )
    .await;
    bouncer.admin(&format!("PAUSE {}", app.db_name)).await;
    let scans: Vec<_> = (0..200)
        .map(|i| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .lookup_number(request(&format!("+1999777{i:04}")))
                    .await
            })
        })
        .collect();
    for scan in scans {
        let status = scan.await.unwrap().expect_err("nobody provisioned it");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        assert_eq!(crate::helpers::reason(&status), "number_not_found");
    }
    bouncer.admin(&format!("RESUME {}", app.db_name)).await;

    let added = "+14155550178";
    let mut client = app.client.clone();
    assert!(client.lookup_number(request(added)).await.is_err());
    app.direct()
        .await
        .batch_execute(
            "insert into phone_numbers (org_id, agent_id, number) values
             ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000b001', '+14155550178')",
        )
        .await
        .unwrap();
    eventually(
        "a number provisioned later is routed",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move { client.lookup_number(request(added)).await.is_ok() }
        },
    )
    .await;
}
