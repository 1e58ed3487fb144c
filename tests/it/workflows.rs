//! Call workflows end to end: the demo's workflow numbers answer their
//! decisions, a policy change reaches every replica as fast as an agent
//! change, overflow routes a call elsewhere instead of refusing it, and
//! limits per agent and per number hold under concurrent calls on two
//! replicas and are released by EndCall and by expiry.

use std::time::{Duration, Instant};

use futures::future::join_all;
use switchboard::{
    admission::AdmissionMode,
    config::ServeConfig,
    proto::{decision::Action, ExplainRouteRequest, RouteCallRequest, RouteCallResponse},
    store::seed::{DEMO_BLOCKED_CALLER, DEMO_VIP_CALLER},
};
use tonic::{Code, Status};

use crate::helpers::{
    end_request, eventually, reason, spawn_on, spawn_on_via, spawn_seeded_app,
    spawn_seeded_app_with, trailer, TestApp,
};

fn call(called: &str, caller: &str, gateway_call_id: &str) -> RouteCallRequest {
    RouteCallRequest {
        called_number: called.into(),
        caller_number: caller.into(),
        gateway_call_id: gateway_call_id.into(),
        default_region: String::new(),
    }
}

async fn route(app: &TestApp, request: RouteCallRequest) -> Result<RouteCallResponse, Status> {
    let mut client = app.client.clone();
    client.route_call(request).await.map(|r| r.into_inner())
}

/// What a call does, in a word: the agent's name, `transfer <to>` or
/// `reject <reason> <sip code>`.
fn decided(response: &RouteCallResponse) -> String {
    match response.decision.as_ref().and_then(|d| d.action.as_ref()) {
        Some(Action::Agent(agent)) => agent.agent.as_ref().unwrap().name.clone(),
        Some(Action::Transfer(t)) => format!("transfer {}", t.destination),
        Some(Action::Reject(r)) => format!("reject {} {}", r.reason, r.sip_code),
        None => "no decision".into(),
    }
}

fn rule_name(response: &RouteCallResponse) -> String {
    (response.decision.as_ref())
        .and_then(|d| d.rule.as_ref())
        .map(|rule| rule.name.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn each_workflow_of_the_demo_answers_its_decision() {
    // thousands of calls, none ended: no limit in the way
    let app = spawn_seeded_app_with(|c| c.admission.admission_mode = AdmissionMode::Off).await;
    // a caller on the block list, by number and by prefix
    for (i, caller) in ["+19005550100", DEMO_BLOCKED_CALLER].iter().enumerate() {
        let blocked = route(&app, call("+14155550145", caller, &format!("blocked-{i}")))
            .await
            .unwrap();
        assert_eq!(decided(&blocked), "reject decline 603", "{caller}");
        assert_eq!(rule_name(&blocked), "Block list");
        assert!(
            blocked.route.is_none(),
            "no agent for an old client to start"
        );
    }
    let allowed = route(&app, call("+14155550145", "+14155550123", "allowed"))
        .await
        .unwrap();
    assert_eq!(decided(&allowed), "Leasing");
    assert_eq!(rule_name(&allowed), "", "the number's own agent: no rule");
    assert_eq!(allowed.route.unwrap().agent.unwrap().name, "Leasing");

    // the VIP goes to the concierge, with the route an old client reads
    let vip = route(&app, call("+13125550151", DEMO_VIP_CALLER, "vip"))
        .await
        .unwrap();
    assert_eq!(decided(&vip), "Concierge");
    assert_eq!(
        vip.route.as_ref().unwrap().agent.as_ref().unwrap().name,
        "Concierge"
    );
    assert_eq!(vip.customer.unwrap().name, "Sam Okafor");
    let other = route(&app, call("+13125550151", "+13125550100", "not-vip"))
        .await
        .unwrap();
    assert_eq!(decided(&other), "Triage");

    // a number of the range, not provisioned on its own
    let ranged = route(&app, call("+16465550123", "", "range"))
        .await
        .unwrap();
    assert_eq!(decided(&ranged), "Leasing");
    assert_eq!(ranged.route.unwrap().number, "+16465550123");
    let outside = route(&app, call("+16465560123", "", "outside"))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::NotFound);

    // the split: 90/10 over 2,000 calls, the same side for a retry
    let mut small = 0;
    for i in 0..2_000 {
        let id = format!("split-{i}");
        let first = decided(&route(&app, call("+13125550150", "", &id)).await.unwrap());
        if i % 50 == 0 {
            let retry = decided(&route(&app, call("+13125550150", "", &id)).await.unwrap());
            assert_eq!(first, retry, "a retried call lands on the same side");
        }
        match first.as_str() {
            "Triage (new prompt)" => small += 1,
            "Triage" => {}
            other => panic!("split to {other}"),
        }
    }
    // sd of the share over 2,000 calls: sqrt(0.1 * 0.9 / 2000) = 0.67 %;
    // 5 sd either side
    let share = small as f64 / 2_000.0;
    assert!((0.066..=0.134).contains(&share), "10 % side got {share}");
}

#[tokio::test]
async fn after_hours_a_call_goes_to_voicemail_and_a_schedule_change_reaches_two_replicas() {
    // every probe below is a call that stays up: more than Acme's five
    let roomy = |c: &mut switchboard::config::ServeConfig| c.admission.limit_starter = 1_000;
    let first = spawn_seeded_app_with(roomy).await;
    let second = spawn_on_via(
        &first,
        crate::helpers::Stack::from_env().pgbouncer_port,
        roomy,
    )
    .await;
    let db = first.direct().await;
    let number = "+14155550150";
    let apps = [&first, &second];
    // open around the clock, then never: whatever the time, the answer
    // follows the schedule
    let changes = [
        (
            // office hours out first: windows of one day may not overlap
            "delete from public.schedule_windows
              where schedule_id = '00000000-0000-4000-8000-00000000e001';
             delete from public.schedule_exceptions
              where schedule_id = '00000000-0000-4000-8000-00000000e001';
             insert into public.schedule_windows (org_id, schedule_id, weekday, opens, closes)
             select '00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000e001',
                    d, '00:00', '24:00' from generate_series(1, 7) d",
            "Reception",
        ),
        (
            "delete from public.schedule_windows
              where schedule_id = '00000000-0000-4000-8000-00000000e001'",
            "Voicemail",
        ),
    ];
    for (i, (change, expected)) in changes.iter().enumerate() {
        db.batch_execute(change).await.unwrap();
        let committed = Instant::now();
        for app in apps {
            let mut n = 0;
            loop {
                n += 1;
                let answer = route(app, call(number, "", &format!("hours-{i}-{n}")))
                    .await
                    .unwrap();
                if decided(&answer) == *expected {
                    break;
                }
                // far below the cache TTL: only the change log does this
                assert!(
                    committed.elapsed() < Duration::from_secs(2),
                    "{expected} not answered after change {i}: {}",
                    decided(&answer)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let closed = route(&second, call(number, "", "closed")).await.unwrap();
    assert_eq!(rule_name(&closed), "After hours to voicemail");
}

#[tokio::test]
async fn a_new_rule_and_a_new_range_reach_two_replicas_as_fast_as_an_agent_change() {
    let first = spawn_seeded_app().await;
    let second = spawn_on(&first).await;
    let db = first.direct().await;
    for app in [&first, &second] {
        assert_eq!(
            decided(
                &route(app, call("+14155550100", "", "before"))
                    .await
                    .unwrap()
            ),
            "Reception"
        );
        assert_eq!(
            route(app, call("+17185550100", "", "before-range"))
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
    }
    db.batch_execute(
        "insert into public.routing_rules (org_id, position, name, action, reject_reason)
         values ('00000000-0000-4000-8000-00000000a001', 5, 'Closed for renovation', 'reject', 'unavailable');
         insert into public.number_ranges (org_id, agent_id, prefix)
         values ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000b001', '+1718555')",
    )
    .await
    .unwrap();
    for app in [&first, &second] {
        eventually(
            "the rule and the range apply",
            Duration::from_secs(2),
            || async {
                let rule = route(app, call("+14155550100", "", "after")).await;
                let ranged = route(app, call("+17185550100", "", "after-range")).await;
                matches!(rule, Ok(ref r) if decided(r) == "reject unavailable 480")
                    && matches!(ranged, Ok(ref r) if decided(r) == "reject unavailable 480")
            },
        )
        .await;
    }
}

#[tokio::test]
async fn overflow_transfers_the_call_instead_of_refusing_it() {
    let app = spawn_seeded_app().await;
    let number = "+14155550151"; // one call at a time
    let first = route(&app, call(number, "", "first")).await.unwrap();
    assert_eq!(decided(&first), "Reception");
    let second = route(&app, call(number, "", "second")).await.unwrap();
    assert_eq!(decided(&second), "transfer +14155550199");
    let rule = second.decision.unwrap().rule.unwrap();
    assert_eq!(
        (rule.name.as_str(), rule.overflow_level.as_str()),
        ("Overflow to the front desk", "number")
    );
    // a transferred call holds no slot and has no record
    let mut client = app.client.clone();
    let ended = client
        .end_call(end_request(&second.call_id))
        .await
        .unwrap_err();
    assert_eq!(
        (ended.code(), reason(&ended)),
        (Code::NotFound, "call_not_found".into())
    );
    // the first call's end frees the number for the next
    client.end_call(end_request(&first.call_id)).await.unwrap();
    let third = route(&app, call(number, "", "third")).await.unwrap();
    assert_eq!(decided(&third), "Reception");
}

/// Acme's organization limit raised out of the way, its Reception agent
/// limited to `agent_limit`, on two replicas with leases that expire after
/// `lease`.
async fn two_replicas(agent_limit: i32, lease: Duration) -> (TestApp, TestApp) {
    let tweak = move |c: &mut ServeConfig| {
        c.admission.max_call_duration = lease;
        // the subject is exactness, not latency
        c.admission.admission_timeout = Duration::from_secs(2);
    };
    let first = spawn_seeded_app_with(tweak).await;
    first
        .direct()
        .await
        .batch_execute(
            "update public.organizations set concurrency_limit = 1000 where slug = 'acme-dental'",
        )
        .await
        .unwrap();
    first
        .direct()
        .await
        .execute(
            "update public.agents set concurrency_limit = $1
              where id = '00000000-0000-4000-8000-00000000b001'",
            &[&agent_limit],
        )
        .await
        .unwrap();
    let second = spawn_on_via(&first, first.stack.pgbouncer_port, tweak).await;
    (first, second)
}

/// `n` concurrent calls to `number`, alternating between the replicas.
async fn burst(
    apps: [&TestApp; 2],
    number: &str,
    tag: &str,
    n: usize,
) -> Vec<Result<RouteCallResponse, Status>> {
    join_all((0..n).map(|i| route(apps[i % 2], call(number, "", &format!("{tag}-{i}"))))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agents_limit_holds_across_its_numbers_and_replicas_and_end_call_on_either_frees_it() {
    let (first, second) = two_replicas(3, Duration::from_secs(3600)).await;
    // Reception answers +14155550100 and +14155550150 (in office hours or
    // not, the rule sends only closed calls elsewhere: open it for good)
    first
        .direct()
        .await
        .batch_execute(
            "update public.routing_rules set is_active = false
              where id = '00000000-0000-4000-8000-00000000e201'",
        )
        .await
        .unwrap();
    eventually("the rule is off", Duration::from_secs(2), || async {
        let answer = route(&second, call("+14155550150", "", "probe")).await;
        let admitted = matches!(answer, Ok(ref r) if decided(r) == "Reception");
        if let Ok(r) = &answer {
            let mut client = second.client.clone();
            client.end_call(end_request(&r.call_id)).await.unwrap();
        }
        admitted
    })
    .await;
    let (a, b) = tokio::join!(
        burst([&first, &second], "+14155550100", "agent-a", 60),
        burst([&second, &first], "+14155550150", "agent-b", 60),
    );
    let results: Vec<_> = a.into_iter().chain(b).collect();
    let admitted: Vec<&RouteCallResponse> =
        results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        admitted.len(),
        3,
        "exactly the agent's limit, over both numbers"
    );
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(reason(refused), "concurrency_limit");
        assert_eq!(trailer(refused, "switchboard-limit-scope"), "agent");
        assert_eq!(trailer(refused, "switchboard-limit"), "3");
    }
    // ended on the other replica than the one that admitted it: freed
    let mut client = second.client.clone();
    client
        .end_call(end_request(&admitted[0].call_id))
        .await
        .unwrap();
    let next = burst([&first, &second], "+14155550100", "agent-next", 10).await;
    assert_eq!(next.iter().filter(|r| r.is_ok()).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_numbers_limit_holds_under_concurrency_and_its_leases_expire() {
    let (first, second) = two_replicas(1000, Duration::from_secs(2)).await;
    first
        .direct()
        .await
        .batch_execute(
            "update public.phone_numbers set concurrency_limit = 2 where number = '+14155550100'",
        )
        .await
        .unwrap();
    let rounds = std::sync::atomic::AtomicUsize::new(0);
    let tag = |what: &str| {
        let round = rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{what}-{round}")
    };
    eventually(
        "the number's limit applies",
        Duration::from_secs(2),
        || async {
            let probe = burst([&first, &second], "+14155550100", &tag("probe"), 6).await;
            probe.iter().filter(|r| r.is_ok()).count() <= 2
        },
    )
    .await;
    // the probes hold the number's slots until their leases expire; each
    // round ends what it was admitted, so that only the probes' leases
    // stand between a round and both slots (a round's own calls, holding
    // a slot for a lease's life, would keep the next rounds from ever
    // finding both free at once)
    eventually(
        "the probes' leases expire",
        Duration::from_secs(10),
        || async {
            let results = burst([&first, &second], "+14155550100", &tag("after"), 40).await;
            let admitted = results.iter().filter(|r| r.is_ok()).count();
            assert!(admitted <= 2, "{admitted} admitted over a limit of 2");
            for refused in results.iter().filter_map(|r| r.as_ref().err()) {
                assert_eq!(trailer(refused, "switchboard-limit-scope"), "number");
            }
            let mut client = first.client.clone();
            for call in results.iter().filter_map(|r| r.as_ref().ok()) {
                client.end_call(end_request(&call.call_id)).await.unwrap();
            }
            admitted == 2
        },
    )
    .await;
}

#[tokio::test]
async fn explain_shows_the_rules_the_local_time_and_every_level() {
    let app = spawn_seeded_app().await;
    let mut client = app.client.clone();
    let explained = client
        .explain_route(ExplainRouteRequest {
            number: "+14155550145".into(),
            default_region: String::new(),
            caller_number: DEMO_BLOCKED_CALLER.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.outcome, "ok");
    let decision = explained.decision.unwrap();
    assert!(matches!(decision.action, Some(Action::Reject(ref r)) if r.sip_code == 603));
    assert_eq!(explained.rules.len(), 1);
    assert!(explained.rules[0].matched);
    assert_eq!(explained.rules[0].list, "number");
    // another caller: the rule is considered and passed over, and why
    let explained = client
        .explain_route(ExplainRouteRequest {
            number: "+14155550150".into(),
            default_region: String::new(),
            caller_number: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.schedules.len(), 1);
    let schedule = &explained.schedules[0];
    assert_eq!(schedule.time_zone, "America/Los_Angeles");
    assert!(!schedule.local_time.is_empty());
    let rule = &explained.rules[0];
    assert_eq!(rule.name, "After hours to voicemail");
    // the rule matches exactly when the schedule is closed
    assert_eq!(rule.matched, !schedule.open, "{rule:?} {schedule:?}");
    if !rule.matched {
        assert!(rule.reason.contains("is open at"), "{}", rule.reason);
    }
    let levels: Vec<(String, Option<u32>)> = explained
        .admission
        .unwrap()
        .levels
        .iter()
        .map(|l| (l.level.clone(), l.limit))
        .collect();
    assert_eq!(
        levels
            .iter()
            .map(|(level, _)| level.as_str())
            .collect::<Vec<_>>(),
        ["organization", "agent", "number"]
    );
    assert!(levels[0].1.is_some(), "an organization always has a limit");
    assert_eq!(
        (levels[1].1, levels[2].1),
        (None, None),
        "the demo's agent and number have none"
    );
}
