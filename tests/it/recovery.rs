//! Dependencies that stop, freeze and come back under load: real Redis and
//! PostgreSQL processes of the test's own. What is served meanwhile, and how
//! soon the daemon uses them again.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::future::join_all;
use switchboard::{admission::RedisDownPolicy, proto::LookupNumberRequest, store};
use tonic::{Code, Request};

use crate::helpers::{
    create_database, end_request, eventually, metric, reason, route_request, spawn_app_on,
    spawn_seeded_app_with, PrivateBouncer, PrivatePostgres, PrivateRedis, Stack, TestApp,
};

const ACME: &str = "+14155550100";
/// Looked up before PostgreSQL stops.
const CACHED: &str = "+14155550100";
/// Never looked up before PostgreSQL stops.
const UNCACHED: &str = "+14155550142";

/// How soon a Redis that answers again must be in use again. The daemon
/// retries every 250 ms; the rest is room for a loaded test machine. (The
/// client's own back-off used to leave it unused for about two minutes.)
const REDIS_BACK_WITHIN: Duration = Duration::from_secs(5);

/// How one routed-and-ended call went: the code and reason of a refusal.
type Answer = Result<(), (Code, String)>;

/// Calls routed (and ended) in a loop by a few tasks, each answer kept,
/// until stopped.
struct CallLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
}

impl CallLoad {
    fn start(app: &TestApp, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let tasks = (0..tasks)
            .map(|_| {
                let (stop, next, mut client) = (stop.clone(), next.clone(), app.client.clone());
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("load-{}", next.fetch_add(1, Ordering::Relaxed));
                        let mut request = Request::new(route_request(ACME, &id));
                        request.set_timeout(Duration::from_secs(1));
                        match client.route_call(request).await {
                            Ok(routed) => {
                                let call_id = routed.into_inner().call_id;
                                let ended = client.end_call(end_request(&call_id)).await;
                                answers.push(ended.map(|_| ()).map_err(|s| (s.code(), reason(&s))));
                            }
                            Err(status) => answers.push(Err((status.code(), reason(&status)))),
                        }
                    }
                    answers
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the load; every answer it got.
    async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        join_all(self.tasks)
            .await
            .into_iter()
            .flat_map(|answers| answers.expect("load task"))
            .collect()
    }
}

/// Whether a call is admitted now (with Redis down, `reject` refuses it).
async fn admitted(app: &TestApp, id: &str) -> bool {
    let mut client = app.client.clone();
    client.route_call(route_request(ACME, id)).await.is_ok()
}

/// A daemon that refuses calls while Redis cannot be asked, so that every
/// answer shows whether it uses Redis.
async fn fail_closed_on(redis: &PrivateRedis) -> TestApp {
    let url = redis.url();
    spawn_seeded_app_with(|c| {
        c.redis.redis_url = url.into();
        c.admission.admission_on_redis_down = RedisDownPolicy::Reject;
        // the subject is reconnecting, not a loaded machine's slow answer
        c.admission.admission_timeout = Duration::from_millis(250);
        // nor the limit: Acme's calls are never refused for it here
        c.admission.limit_starter = 100_000;
    })
    .await
}

/// Every answer was either a call routed and ended, or the Redis-down
/// refusal: nothing hung into its deadline, nothing failed otherwise.
fn only_routed_or_refused_for_redis(answers: &[Answer]) {
    assert!(!answers.is_empty());
    let unexpected: Vec<_> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().err())
        .filter(|(code, why)| (*code, why.as_str()) != (Code::Unavailable, "admission_unavailable"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} of {} answers were neither: {:?}",
        unexpected.len(),
        answers.len(),
        &unexpected[..unexpected.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_redis_is_used_again_within_moments_under_load() {
    let mut redis = PrivateRedis::start().await;
    let app = fail_closed_on(&redis).await;
    eventually("calls admitted with Redis up", REDIS_BACK_WITHIN, || {
        admitted(&app, "before")
    })
    .await;
    let load = CallLoad::start(&app, 8);

    redis.kill();
    eventually(
        "calls refused while Redis is down",
        REDIS_BACK_WITHIN,
        || async { !admitted(&app, "during").await },
    )
    .await;

    redis.resume_process().await;
    eventually(
        "calls admitted again once Redis answers",
        REDIS_BACK_WITHIN,
        || admitted(&app, "after"),
    )
    .await;
    only_routed_or_refused_for_redis(&load.finish().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_is_down_at_start_is_used_as_soon_as_it_answers() {
    let mut redis = PrivateRedis::on_free_port();
    let app = fail_closed_on(&redis).await;
    assert!(!admitted(&app, "before").await, "no Redis yet");
    let load = CallLoad::start(&app, 4);

    redis.resume_process().await;
    eventually(
        "calls admitted once Redis answers",
        REDIS_BACK_WITHIN,
        || admitted(&app, "after"),
    )
    .await;
    only_routed_or_refused_for_redis(&load.finish().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_redis_is_found_out_and_used_again_once_it_thaws() {
    let redis = PrivateRedis::start().await;
    let app = fail_closed_on(&redis).await;
    eventually("calls admitted with Redis up", REDIS_BACK_WITHIN, || {
        admitted(&app, "before")
    })
    .await;
    let load = CallLoad::start(&app, 8);

    // SIGSTOP: connections stay open, nothing answers. (Whether the health
    // check has dropped the connection is not asserted here: the
    // `switchboard_redis_connected` gauge is shared by every daemon in this
    // test process.)
    redis.freeze(true);
    eventually(
        "calls refused while Redis is frozen",
        REDIS_BACK_WITHIN,
        || async { !admitted(&app, "during").await },
    )
    .await;

    redis.freeze(false);
    eventually(
        "calls admitted again once Redis thaws",
        REDIS_BACK_WITHIN,
        || admitted(&app, "after"),
    )
    .await;
    only_routed_or_refused_for_redis(&load.finish().await);
}

fn lookup(number: &str) -> Request<LookupNumberRequest> {
    let mut request = Request::new(LookupNumberRequest {
        number: number.into(),
        default_region: String::new(),
    });
    request.set_timeout(Duration::from_secs(1));
    request
}

/// A PostgreSQL of the test's own with the demo data, behind a PgBouncer of
/// its own: the database's name, and a direct session on it.
async fn seeded_private_postgres() -> (
    PrivatePostgres,
    PrivateBouncer,
    String,
    tokio_postgres::Client,
) {
    let pg = PrivatePostgres::start(&Stack::from_env()).await;
    let bouncer = PrivateBouncer::start(&pg.stack()).await;
    let db_name = create_database(&pg.stack()).await;
    let mut db = store::connect_direct(&pg.stack().direct_url(&db_name))
        .await
        .unwrap();
    store::seed::demo(&mut db).await.unwrap();
    (pg, bouncer, db_name, db)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_concurrent_lookup_of_a_cached_number_is_served_while_postgres_is_stopped() {
    // PostgreSQL of its own, behind a PgBouncer of its own that stays up:
    // the pooler answers, the database behind it does not, and the LISTEN
    // connection drops with it
    let (pg, bouncer, db_name, db) = seeded_private_postgres().await;
    drop(db);
    let stack = Stack {
        pgbouncer_port: bouncer.port,
        ..pg.stack()
    };
    let app = spawn_app_on(stack, db_name, |c| {
        c.cache.cache_warm_limit = 0; // keep UNCACHED uncached
                                      // with the invalidation feed down, every lookup rereads first
        c.cache.cache_unconfirmed_ttl = Duration::from_millis(1);
        // from PostgreSQL itself: no copy in Redis to fall back on
        c.redis.redis_ttl = Duration::ZERO;
    })
    .await;
    let mut client = app.client.clone();
    client.lookup_number(lookup(CACHED)).await.expect("healthy");

    pg.stop();
    let failures = Arc::new(Mutex::new(Vec::new()));
    for _round in 0..15 {
        // past the pause after a failed reread (1 s), so that this round's
        // lookups find the entry due a reread again
        tokio::time::sleep(Duration::from_millis(1100)).await;
        join_all((0..20).map(|_| {
            let (mut client, failures) = (app.client.clone(), failures.clone());
            async move {
                if let Err(status) = client.lookup_number(lookup(CACHED)).await {
                    failures.lock().unwrap().push(status);
                }
            }
        }))
        .await;
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of 300 lookups of a cached number failed: {:?}",
        failures.len(),
        failures.first()
    );
    // every one of them answered from L1's stale copy
    assert!(metric(app.admin_addr, "switchboard_cache_stale_served_total").await >= 300.0);
    let status = client.lookup_number(lookup(UNCACHED)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    pg.resume_process();
    // PgBouncer retries a failed server login only every
    // `server_login_retry` (1 s here, 15 s by default): the bound of this
    // wait, with room for a loaded machine
    eventually(
        "uncached numbers are routed again after PostgreSQL returns",
        Duration::from_secs(10),
        || {
            let mut client = app.client.clone();
            async move { client.lookup_number(lookup(UNCACHED)).await.is_ok() }
        },
    )
    .await;
    eventually("ready again", Duration::from_secs(10), || async {
        app.admin_get("/readyz").await.0 == 200
    })
    .await;
}

/// A replica stopped while the database was up, a change committed after,
/// then PostgreSQL stopped and a replica started on the same volume: it
/// restores its last-known-good routes, reports ready (degraded) and serves
/// them to concurrent clients, `UNAVAILABLE` for any other number; when
/// PostgreSQL returns it replays the change log from the copy's position
/// and answers the change.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_restarted_during_a_database_outage_serves_its_last_known_good_routes() {
    let (pg, bouncer, db_name, db) = seeded_private_postgres().await;
    let stack = || Stack {
        pgbouncer_port: bouncer.port,
        ..pg.stack()
    };
    let volume = tempfile::tempdir().unwrap();
    let spool = volume.path().to_path_buf();
    let configure = move |c: &mut switchboard::config::ServeConfig| {
        c.spool.spool_dir = spool.clone();
        c.cache.cache_warm_limit = 0; // keep UNCACHED uncached
        c.cache.cache_snapshot_interval = Duration::from_millis(200);
        // from PostgreSQL itself: no copy in Redis to fall back on
        c.redis.redis_ttl = Duration::ZERO;
    };
    let first = spawn_app_on(stack(), db_name.clone(), configure.clone()).await;
    let mut client = first.client.clone();
    // numbers of their own (UNCACHED stays uncached)
    let cached = ["+14155550100", "+13125550100", "+442079460123"];
    for number in cached {
        client.lookup_number(lookup(number)).await.expect("healthy");
    }
    // written while it runs, not only at shutdown
    let copy = volume
        .path()
        .join(switchboard::routing::snapshot::FILE_NAME);
    eventually("a copy on the volume", Duration::from_secs(5), || async {
        copy.exists()
    })
    .await;
    first.stop().await.unwrap();
    db.batch_execute(
        "update agents set name = 'Reception desk' where id = '00000000-0000-4000-8000-00000000b001'",
    )
    .await
    .unwrap();
    drop(db);
    pg.stop();

    // ready, degraded, because it holds routes to serve
    let second = spawn_app_on(stack(), db_name, configure).await;
    let (code, body) = second.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("degraded"), "{body}");
    assert!(body.contains("numbers restored at start"), "{body}");
    let answers = join_all((0..200).map(|i| {
        let mut client = second.client.clone();
        async move {
            let number = cached[i % cached.len()];
            (number, client.lookup_number(lookup(number)).await)
        }
    }))
    .await;
    for (number, answer) in &answers {
        let route = answer.as_ref().unwrap_or_else(|status| {
            panic!("{number} was served before the restart, not after: {status:?}")
        });
        if *number == "+14155550100" {
            // what it served before: the change came after the copy
            let agent = route
                .get_ref()
                .route
                .as_ref()
                .unwrap()
                .agent
                .as_ref()
                .unwrap();
            assert_eq!(agent.name, "Reception");
        }
    }
    let status = second
        .client
        .clone()
        .lookup_number(lookup(UNCACHED))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    pg.resume_process();
    let client = second.client.clone();
    eventually(
        "the change made during the outage is answered once PostgreSQL returns",
        Duration::from_secs(15),
        || {
            let mut client = client.clone();
            async move {
                client
                    .lookup_number(lookup("+14155550100"))
                    .await
                    .is_ok_and(|r| {
                        r.into_inner().route.unwrap().agent.unwrap().name == "Reception desk"
                    })
            }
        },
    )
    .await;
    eventually("fully ready again", Duration::from_secs(10), || async {
        second.admin_get("/readyz").await.1.starts_with("ready\n")
    })
    .await;
}
