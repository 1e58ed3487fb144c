//! Scale-out on a real Redis Cluster whose processes the tests kill: calls
//! keep routing through a failover, and the daemon follows the new topology
//! without a restart.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::AsyncCommands;
use switchboard::{proto::LookupNumberRequest, store};

use crate::helpers::{
    acme_with_own_limit, end_request, eventually, route_request, spawn_app_on, PrivateRedisCluster,
};

const ACME: &str = "+14155550100";
const ACME_ORG: &str = "00000000-0000-4000-8000-00000000a001";
const NUMBERS: [&str; 3] = ["+14155550100", "+14155550142", "+13125550100"];

/// Calls routed, and calls that failed, by the load below.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Kills the master that holds Acme's leases while eight clients route and
/// end calls and look numbers up, every lookup reading L2 (the L1 TTL is a
/// millisecond). No request fails while the replica takes over (L2 falls
/// through to PostgreSQL, admission admits by its Redis-down policy); once
/// it has, new calls hold their leases on the promoted master, on the same
/// daemon.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_killed_under_load_is_replaced_and_calls_keep_routing() {
    let cluster = PrivateRedisCluster::start().await;
    // a limit no burst reaches: every refusal would be a failure
    let (stack, db_name) = acme_with_own_limit(1_000).await;
    let app = spawn_app_on(stack, db_name, |c| {
        cluster.apply(c);
        c.cache.cache_ttl = Duration::from_millis(1);
        c.cache.cache_warm_limit = 0;
        c.admission.admission_timeout = Duration::from_millis(500);
    })
    .await;
    app.connected_to_redis().await;
    let leases = format!("{}:v1:leases:{ACME_ORG}", app.db_name);
    let master = cluster.master_of(&leases, 1).await.expect("a master");
    let asking = if master == 1 { 2 } else { 1 };

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load: Vec<_> = (0..8)
        .map(|worker| {
            let (stop, tally, mut client) = (stop.clone(), tally.clone(), app.client.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let routed = client
                        .route_call(route_request(ACME, &format!("load-{worker}-{i}")))
                        .await;
                    let ended = match &routed {
                        Ok(reply) => client
                            .end_call(end_request(&reply.get_ref().call_id))
                            .await
                            .map(|_| ()),
                        Err(status) => Err(status.clone()),
                    };
                    let looked_up = client
                        .lookup_number(LookupNumberRequest {
                            number: NUMBERS[(i % 3) as usize].into(),
                            default_region: String::new(),
                        })
                        .await;
                    for outcome in [ended.is_ok(), looked_up.is_ok()] {
                        let counter = if outcome { &tally.ok } else { &tally.failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(status) = ended.and(looked_up.map(|_| ())) {
                        eprintln!("failed during the failover: {status:?}");
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally.ok.load(Ordering::Relaxed);
    cluster.kill(master);
    eventually(
        "a replica takes the slot over",
        Duration::from_secs(15),
        || async {
            cluster
                .master_of(&leases, asking)
                .await
                .is_some_and(|node| node != master)
        },
    )
    .await;
    cluster
        .wait_until_whole(asking, Duration::from_secs(15))
        .await;
    let promoted = cluster.master_of(&leases, asking).await.expect("promoted");
    // and the load runs on a while against the new topology
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > before, "the load ran through the failover");

    // the daemon takes leases on the promoted master, without a restart
    let mut client = app.client.clone();
    let mut redis = cluster.connection().await;
    eventually(
        "a new call's lease on the promoted master",
        Duration::from_secs(10),
        || {
            let (leases, mut client, mut redis) = (leases.clone(), client.clone(), redis.clone());
            async move {
                let call_id = client
                    .route_call(route_request(ACME, &uuid::Uuid::new_v4().to_string()))
                    .await
                    .expect("routed")
                    .into_inner()
                    .call_id;
                let held: Option<f64> = redis.zscore(&leases, &call_id).await.unwrap();
                held.is_some()
            }
        },
    )
    .await;
    // and the killed node comes back as a replica of its successor
    cluster.restart(master).await;
    cluster
        .wait_until_whole(master, Duration::from_secs(15))
        .await;
    assert_eq!(cluster.master_of(&leases, master).await, Some(promoted));
    let _: () = redis.del(&leases).await.unwrap();
    let reply = client.route_call(route_request(ACME, "after-rejoin")).await;
    assert!(reply.is_ok(), "{reply:?}");
}

/// Live leases in Acme's organization set, at Redis server time.
async fn live_leases(redis: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    let now: (u64, u64) = redis::cmd("TIME").query_async(redis).await.unwrap();
    let now_ms = now.0 * 1000 + now.1 / 1000;
    redis
        .zcount(key, format!("({now_ms}"), "+inf")
        .await
        .unwrap()
}

/// Redis keeps leases of calls that ended (their releases were lost while
/// it was frozen), then loses every lease (killed and started again, empty):
/// each time the leases converge to the open calls in PostgreSQL within a
/// few reconciliation intervals, and the limit holds exactly again.
#[tokio::test(flavor = "multi_thread")]
async fn leases_are_rebuilt_from_the_call_records_after_redis_loses_them() {
    let mut redis_server = crate::helpers::PrivateRedis::start().await;
    let url = redis_server.url();
    let (stack, db_name) = acme_with_own_limit(5).await;
    let app = spawn_app_on(stack, db_name, move |c| {
        c.redis.redis_url = secrecy::SecretString::from(url);
        c.admission.lease_reconcile_interval = Duration::from_millis(300);
        c.admission.admission_timeout = Duration::from_millis(300);
    })
    .await;
    app.connected_to_redis().await;
    let leases = format!("{}:v1:leases:{ACME_ORG}", app.db_name);
    let mut client = app.client.clone();
    let mut calls = Vec::new();
    for i in 0..5 {
        let reply = client
            .route_call(route_request(ACME, &format!("held-{i}")))
            .await
            .expect("under the limit");
        calls.push(reply.into_inner().call_id);
    }
    let db = app.direct().await;
    let open_calls = "select count(*) from public.calls \
                      where gateway_call_id like 'held-%' and ended_at is null";
    eventually(
        "five open calls recorded",
        Duration::from_secs(10),
        || async { crate::helpers::count(&db, open_calls).await == 5 },
    )
    .await;
    let redis_client = redis::Client::open(redis_server.url()).unwrap();
    let mut redis = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(live_leases(&mut redis, &leases).await, 5);

    // two calls end while Redis answers nothing: recorded, not released
    redis_server.freeze(true);
    for call_id in &calls[..2] {
        client
            .end_call(end_request(call_id))
            .await
            .expect("EndCall is recorded without Redis");
    }
    redis_server.freeze(false);
    eventually(
        "the ended calls' leases removed",
        Duration::from_secs(10),
        || {
            let (mut redis, leases) = (redis.clone(), leases.clone());
            async move { live_leases(&mut redis, &leases).await == 3 }
        },
    )
    .await;

    // Redis restarted empty: every lease lost
    redis_server.kill();
    redis_server.resume_process().await;
    let mut redis = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(live_leases(&mut redis, &leases).await, 0);
    eventually(
        "the open calls' leases given back",
        Duration::from_secs(10),
        || {
            let (mut redis, leases) = (redis.clone(), leases.clone());
            async move { live_leases(&mut redis, &leases).await == 3 }
        },
    )
    .await;
    // the limit is exact again: two more, not five
    for i in 0..2 {
        client
            .route_call(route_request(ACME, &format!("after-{i}")))
            .await
            .expect("under the limit");
    }
    let refused = client
        .route_call(route_request(ACME, "one-too-many"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        crate::helpers::trailer(&refused, "switchboard-active-calls"),
        "5"
    );
    // a given-back lease is released by its EndCall, at every level
    client.end_call(end_request(&calls[2])).await.unwrap();
    assert_eq!(live_leases(&mut redis, &leases).await, 4);
    let agent_sets: Vec<String> = redis.keys(format!("{{{leases}}}:a:*")).await.unwrap();
    assert_eq!(agent_sets.len(), 1, "{agent_sets:?}");
    assert_eq!(live_leases(&mut redis, &agent_sets[0]).await, 4);
    let (_, metrics) = app.admin_get("/metrics").await;
    for kind in ["missing", "ended"] {
        assert!(
            metrics.contains(&format!("switchboard_lease_drift_total{{kind=\"{kind}\"}}")),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_listener_relays_every_change_to_a_fleet() {
    one_listener_relays_every_change_to_a_fleet_on(crate::helpers::Topology::Standalone).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_listener_relays_every_change_to_a_fleet_on_a_redis_cluster() {
    one_listener_relays_every_change_to_a_fleet_on(crate::helpers::Topology::Cluster).await;
}

/// The `LISTEN` sessions the daemon holds on `db`.
async fn listen_sessions(db: &tokio_postgres::Client, db_name: &str) -> i64 {
    db.query_one(
        "select count(*) from pg_stat_activity where application_name = $1 and datname = $2",
        &[&switchboard::invalidation::APPLICATION_NAME, &db_name],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until every replica answers `agent` for Acme's number.
async fn every_replica_answers(replicas: &[&crate::helpers::TestApp], agent: &str) {
    for replica in replicas {
        let client = replica.client.clone();
        eventually(
            &format!("{agent} answered by every replica"),
            Duration::from_secs(2),
            || {
                let mut client = client.clone();
                async move {
                    client
                        .lookup_number(LookupNumberRequest {
                            number: ACME.into(),
                            default_region: String::new(),
                        })
                        .await
                        .is_ok_and(|r| r.into_inner().route.unwrap().agent.unwrap().name == agent)
                }
            },
        )
        .await;
    }
}

/// Four replicas with `SWITCHBOARD_INVALIDATION_LISTENERS=1` hold one
/// `LISTEN` session between them, and every change reaches all four within
/// two seconds; when the listener stops, another replica takes its turn
/// and changes keep arriving.
async fn one_listener_relays_every_change_to_a_fleet_on(topology: crate::helpers::Topology) {
    let (stack, db_name) = acme_with_own_limit(10).await;
    let pooler = stack.pgbouncer_port;
    let relayed = move |c: &mut switchboard::config::ServeConfig| {
        topology.apply(c);
        c.cache.invalidation_listeners = 1;
    };
    let first = spawn_app_on(stack, db_name.clone(), relayed).await;
    let mut fleet = vec![first];
    for _ in 0..3 {
        fleet.push(crate::helpers::spawn_on_via(&fleet[0], pooler, relayed).await);
    }
    let db = fleet[0].direct().await;
    eventually(
        "one LISTEN session for the fleet",
        Duration::from_secs(10),
        || async { listen_sessions(&db, &db_name).await == 1 },
    )
    .await;
    let agent = "update agents set name = $1 where id = '00000000-0000-4000-8000-00000000b001'";
    db.execute(agent, &[&"Reception desk"]).await.unwrap();
    every_replica_answers(&fleet.iter().collect::<Vec<_>>(), "Reception desk").await;

    // the listener stops: another replica takes its turn
    let mut listener = None;
    for (i, replica) in fleet.iter().enumerate() {
        if replica
            .admin_get("/readyz")
            .await
            .1
            .contains("relay: listening")
        {
            listener = Some(i);
        }
    }
    let listener = fleet.remove(listener.expect("one replica listens"));
    listener.stop().await.unwrap();
    eventually(
        "another replica listens",
        Duration::from_secs(15),
        || async {
            let mut listening = 0;
            for replica in &fleet {
                if replica
                    .admin_get("/readyz")
                    .await
                    .1
                    .contains("relay: listening")
                {
                    listening += 1;
                }
            }
            listening == 1 && listen_sessions(&db, &db_name).await == 1
        },
    )
    .await;
    db.execute(agent, &[&"Front desk"]).await.unwrap();
    every_replica_answers(&fleet.iter().collect::<Vec<_>>(), "Front desk").await;
    let (_, metrics) = fleet[0].admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"switchboard_invalidation_relay_publishes_total{outcome="published"}"#),
        "{metrics}"
    );
}

/// Many more open calls than one read of the records holds: a Redis that
/// lost everything gets every lease back (page after page, in one pass),
/// leases lost while Redis kept its record of the last pass come back by
/// the sweep through the open calls, and every lease goes once its call is
/// recorded ended.
#[tokio::test(flavor = "multi_thread")]
async fn leases_of_more_calls_than_a_page_are_reconciled() {
    // more pages than a pass of the sweep reads, and a short one
    const CALLS: i64 = 7_500;
    let redis_server = crate::helpers::PrivateRedis::start().await;
    let url = redis_server.url();
    let (stack, db_name) = acme_with_own_limit(5).await;
    let db = store::connect_direct(&stack.direct_url(&db_name))
        .await
        .unwrap();
    // calls that started an hour ago, three at a time in the same
    // microsecond (a page may end between two of them)
    db.execute(
        "insert into public.calls (org_id, gateway_call_id, called_number, caller_number, \
                                   status, started_at) \
         select $1::text::uuid, 'old-' || i, $2, '+14155559999', 'in_progress', \
                now() - interval '1 hour' + (i / 3) * interval '1 microsecond' \
           from generate_series(1, $3::int8) i",
        &[&ACME_ORG, &ACME, &CALLS],
    )
    .await
    .unwrap();
    let app = spawn_app_on(stack, db_name, move |c| {
        c.redis.redis_url = secrecy::SecretString::from(url);
        c.admission.lease_reconcile_interval = Duration::from_millis(300);
    })
    .await;
    app.connected_to_redis().await;
    let leases = format!("{}:v1:leases:{ACME_ORG}", app.db_name);
    let redis_client = redis::Client::open(redis_server.url()).unwrap();
    let redis = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let live_are = |expected: u64| {
        let (redis, leases) = (redis.clone(), leases.clone());
        move || {
            let (mut redis, leases) = (redis.clone(), leases.clone());
            async move { live_leases(&mut redis, &leases).await == expected }
        }
    };

    // no pass on record: every open call's lease, in one pass
    eventually(
        "every open call's lease given back",
        Duration::from_secs(20),
        live_are(CALLS as u64),
    )
    .await;
    let marker = format!("{}:v1:reconciled", app.db_name);
    eventually("the pass on record", Duration::from_secs(10), || {
        let (mut redis, marker) = (redis.clone(), marker.clone());
        async move { redis.exists::<_, bool>(&marker).await.unwrap() }
    })
    .await;
    let mut direct = redis.clone();

    // the leases lost, the record of the last pass kept (a failover): the
    // sweep finds them, a page per pass
    let _: () = direct.del(&leases).await.unwrap();
    eventually(
        "the swept calls' leases given back",
        Duration::from_secs(20),
        live_are(CALLS as u64),
    )
    .await;

    // Redis lost everything while a full pass that had got as far as the
    // 6,000th call was failing: the next pass goes on from there (a
    // record of a pass and fewer leases than calls, at once), and the
    // sweep that follows gives back the rest
    let cursor: String = db
        .query_one(
            "select (extract(epoch from started_at) * 1000000)::bigint || ':' || id
               from public.calls where ended_at is null
              order by started_at, id offset 5999 limit 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let full = format!("{}:v1:reconcile-full", app.db_name);
    let _: () = redis::pipe()
        .atomic()
        .del(&leases)
        .del(&marker)
        .set(&full, &cursor)
        .query_async(&mut direct)
        .await
        .unwrap();
    eventually(
        "the resumed pass on record",
        Duration::from_secs(10),
        || {
            let (mut redis, marker) = (redis.clone(), marker.clone());
            async move { redis.exists::<_, bool>(&marker).await.unwrap() }
        },
    )
    .await;
    let given_back = live_leases(&mut direct, &leases).await;
    assert!(
        (1_500..CALLS as u64).contains(&given_back),
        "the resumed pass read from the 6,000th call on: {given_back} leases"
    );
    assert!(
        !direct.exists::<_, bool>(&full).await.unwrap(),
        "a finished pass forgets its cursor"
    );
    eventually(
        "the rest given back by the sweep",
        Duration::from_secs(20),
        live_are(CALLS as u64),
    )
    .await;

    // every call ended (their releases lost): no lease left
    db.execute(
        "update public.calls set ended_at = now(), status = 'completed' \
          where gateway_call_id like 'old-%'",
        &[],
    )
    .await
    .unwrap();
    eventually(
        "the ended calls' leases removed",
        Duration::from_secs(20),
        live_are(0),
    )
    .await;
}

/// A Redis Cluster that loses every lease (all masters emptied) gets them
/// back from the call records, each in its organization's slot, and the
/// limit is exact again.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_cluster_that_lost_its_leases_gets_them_back() {
    let cluster = PrivateRedisCluster::start().await;
    let (stack, db_name) = acme_with_own_limit(4).await;
    let app = spawn_app_on(stack, db_name, |c| {
        cluster.apply(c);
        c.admission.lease_reconcile_interval = Duration::from_millis(300);
        c.admission.admission_timeout = Duration::from_millis(500);
    })
    .await;
    app.connected_to_redis().await;
    let mut client = app.client.clone();
    for i in 0..4 {
        client
            .route_call(route_request(ACME, &format!("held-{i}")))
            .await
            .expect("under the limit");
    }
    let db = app.direct().await;
    eventually("four open calls recorded", Duration::from_secs(10), || async {
        crate::helpers::count(
            &db,
            "select count(*) from public.calls where gateway_call_id like 'held-%' and ended_at is null",
        )
        .await
            == 4
    })
    .await;
    cluster.flush().await;
    let leases = format!("{}:v1:leases:{ACME_ORG}", app.db_name);
    let redis = cluster.connection().await;
    eventually("the leases given back", Duration::from_secs(10), || {
        let (mut redis, leases) = (redis.clone(), leases.clone());
        async move { redis.zcard::<_, u64>(&leases).await.unwrap_or(0) == 4 }
    })
    .await;
    let refused = client
        .route_call(route_request(ACME, "one-too-many"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
}
