use jiff::{civil::date, tz::TimeZone, Timestamp};
use proptest::prelude::*;
use uuid::Uuid;

use super::{split, *};
use crate::domain::{AgentId, CallId, E164};

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

const OFFICE: u128 = 100;
const BLOCKED: u128 = 200;
const VIPS: u128 = 201;
const NUMBER: u128 = 300;
const RANGE: u128 = 301;

fn rule(n: u128, action: &str) -> RuleDoc {
    RuleDoc {
        id: id(n),
        name: format!("rule {n}"),
        position: n as i32,
        action: action.into(),
        agent_id: (action == "agent").then(|| id(1000 + n)),
        transfer_to: (action == "transfer").then(|| "+14155550199".into()),
        reject_reason: (action == "reject").then(|| "busy".into()),
        split: if action == "split" {
            vec![(id(1), 90), (id(2), 10)]
        } else {
            Vec::new()
        },
        ..RuleDoc::default()
    }
}

/// Monday to Friday 09:00–17:00 in New York; closed on 2026-12-25, and
/// 09:00–12:00 on 2026-12-24.
fn office() -> ScheduleDoc {
    ScheduleDoc {
        id: id(OFFICE),
        name: "Office".into(),
        time_zone: "America/New_York".into(),
        windows: (1..=5).map(|day| (day, 9 * 3600, 17 * 3600)).collect(),
        exceptions: vec![
            (date(2026, 12, 24), Some(9 * 3600), Some(12 * 3600)),
            (date(2026, 12, 25), None, None),
        ],
    }
}

fn lists() -> Vec<CallerListDoc> {
    vec![
        CallerListDoc {
            id: id(BLOCKED),
            numbers: vec!["+12025550666".into()],
            prefixes: vec!["+1900".into()],
        },
        CallerListDoc {
            id: id(VIPS),
            numbers: vec!["+14155550123".into()],
            prefixes: Vec::new(),
        },
    ]
}

fn policy(rules: Vec<RuleDoc>) -> Policy {
    Policy::compile(PolicyDoc {
        rules,
        schedules: vec![office()],
        caller_lists: lists(),
    })
    .unwrap()
}

fn e164(raw: &str) -> E164 {
    E164::from_canonical(raw).unwrap()
}

/// Tuesday 2026-12-08 10:00 in New York (15:00 UTC): the office is open.
fn open_hours() -> Timestamp {
    "2026-12-08T15:00:00Z".parse().unwrap()
}

/// Tuesday 2026-12-08 20:00 in New York.
fn after_hours() -> Timestamp {
    "2026-12-09T01:00:00Z".parse().unwrap()
}

/// A call's facts, varied by the scenarios below.
struct Call {
    caller: Option<&'static str>,
    known: Option<bool>,
    agent_active: bool,
    now: Timestamp,
}

impl Default for Call {
    fn default() -> Self {
        Call {
            caller: Some("+14155550100"),
            known: Some(false),
            agent_active: true,
            now: open_hours(),
        }
    }
}

/// The first rule matching `call`, for a number with id NUMBER: its id.
fn first_match(policy: &Policy, call: &Call, refused: Option<LimitLevel>) -> Option<Uuid> {
    let caller = call.caller.map(e164);
    let facts = CallFacts::new(caller.as_ref(), call.known, call.agent_active, call.now);
    policy
        .rules_for(Some(id(NUMBER)), None)
        .find(|rule| rule.check(policy, &facts, refused).is_ok())
        .map(|rule| rule.id)
}

fn with(mut doc: RuleDoc, edit: impl FnOnce(&mut RuleDoc)) -> RuleDoc {
    edit(&mut doc);
    doc
}

#[test]
fn each_condition_matches_only_the_calls_it_names() {
    type Edit = fn(&mut RuleDoc);
    let cases: Vec<(&str, Edit, Call, bool)> = vec![
        ("no condition", |_| {}, Call::default(), true),
        (
            "blocked number",
            |r| r.caller_in_list = Some(id(BLOCKED)),
            Call {
                caller: Some("+12025550666"),
                ..Call::default()
            },
            true,
        ),
        (
            "blocked prefix",
            |r| r.caller_in_list = Some(id(BLOCKED)),
            Call {
                caller: Some("+19005550100"),
                ..Call::default()
            },
            true,
        ),
        (
            "not on the block list",
            |r| r.caller_in_list = Some(id(BLOCKED)),
            Call::default(),
            false,
        ),
        (
            "a withheld caller is on no list",
            |r| r.caller_in_list = Some(id(BLOCKED)),
            Call {
                caller: None,
                ..Call::default()
            },
            false,
        ),
        (
            "not in the VIP list",
            |r| r.caller_not_in_list = Some(id(VIPS)),
            Call::default(),
            true,
        ),
        (
            "a VIP is excluded",
            |r| r.caller_not_in_list = Some(id(VIPS)),
            Call {
                caller: Some("+14155550123"),
                ..Call::default()
            },
            false,
        ),
        (
            "a caller from GB",
            |r| r.caller_countries = Some(vec!["GB".into(), "IE".into()]),
            Call {
                caller: Some("+442079460123"),
                ..Call::default()
            },
            true,
        ),
        (
            "a US caller is not from GB",
            |r| r.caller_countries = Some(vec!["GB".into()]),
            Call::default(),
            false,
        ),
        (
            "a Canadian number in +1 is from CA",
            |r| r.caller_countries = Some(vec!["CA".into()]),
            Call {
                caller: Some("+14165550100"),
                ..Call::default()
            },
            true,
        ),
        (
            "a withheld caller has no country",
            |r| r.caller_countries = Some(vec!["US".into()]),
            Call {
                caller: None,
                ..Call::default()
            },
            false,
        ),
        (
            "known customer",
            |r| r.caller_known = Some(true),
            Call {
                known: Some(true),
                ..Call::default()
            },
            true,
        ),
        (
            "a stranger is not known",
            |r| r.caller_known = Some(true),
            Call::default(),
            false,
        ),
        (
            "strangers only",
            |r| r.caller_known = Some(false),
            Call::default(),
            true,
        ),
        (
            "withheld",
            |r| r.caller_withheld = Some(true),
            Call {
                caller: None,
                ..Call::default()
            },
            true,
        ),
        (
            "a caller with a number is not withheld",
            |r| r.caller_withheld = Some(true),
            Call::default(),
            false,
        ),
        (
            "open",
            |r| (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(true)),
            Call::default(),
            true,
        ),
        (
            "closed, after hours",
            |r| (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(false)),
            Call {
                now: after_hours(),
                ..Call::default()
            },
            true,
        ),
        (
            "closed, but open now",
            |r| (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(false)),
            Call::default(),
            false,
        ),
        (
            "the agent is off",
            |r| r.when_agent_inactive = Some(true),
            Call {
                agent_active: false,
                ..Call::default()
            },
            true,
        ),
        (
            "the agent is on",
            |r| r.when_agent_inactive = Some(true),
            Call::default(),
            false,
        ),
        (
            "an overflow rule before admission",
            |r| r.when_at_limit = Some("organization".into()),
            Call::default(),
            false,
        ),
        (
            "all conditions together",
            |r| {
                r.caller_not_in_list = Some(id(BLOCKED));
                r.caller_countries = Some(vec!["US".into()]);
                (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(true));
            },
            Call::default(),
            true,
        ),
        (
            "all but one",
            |r| {
                r.caller_not_in_list = Some(id(BLOCKED));
                r.caller_countries = Some(vec!["US".into()]);
                (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(true));
            },
            Call {
                now: after_hours(),
                ..Call::default()
            },
            false,
        ),
    ];
    for (what, edit, call, matches) in cases {
        let policy = policy(vec![with(rule(1, "reject"), edit)]);
        assert_eq!(
            first_match(&policy, &call, None).is_some(),
            matches,
            "{what}"
        );
    }
}

#[test]
fn a_mismatch_says_which_condition_failed() {
    let policy = policy(vec![with(rule(1, "reject"), |r| {
        (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(false));
    })]);
    let facts = CallFacts::new(None, None, true, open_hours());
    let mismatch = policy.rules()[0].check(&policy, &facts, None).unwrap_err();
    assert_eq!(
        mismatch.to_string(),
        "schedule \"Office\" is open at 2026-12-08T10:00:00 local time"
    );
}

#[test]
fn the_numbers_own_rules_come_first_then_the_organizations_by_position() {
    let policy = policy(vec![
        with(rule(1, "reject"), |_| {}),
        with(rule(2, "transfer"), |r| r.number_id = Some(id(NUMBER))),
        with(rule(3, "agent"), |r| r.number_id = Some(id(999))),
        with(rule(4, "reject"), |r| r.range_id = Some(id(RANGE))),
    ]);
    let order: Vec<u128> = policy
        .rules_for(Some(id(NUMBER)), None)
        .map(|r| r.id.as_u128())
        .collect();
    assert_eq!(order, [2, 1], "the number's rule, then the organization's");
    let order: Vec<u128> = policy
        .rules_for(None, Some(id(RANGE)))
        .map(|r| r.id.as_u128())
        .collect();
    assert_eq!(
        order,
        [4, 1],
        "a range number: the range's, then the organization's"
    );
    assert_eq!(first_match(&policy, &Call::default(), None), Some(id(2)));
}

#[test]
fn overflow_rules_match_only_for_the_level_that_refused() {
    let policy = policy(vec![
        with(rule(1, "transfer"), |r| {
            r.when_at_limit = Some("organization".into())
        }),
        with(rule(2, "agent"), |r| r.when_at_limit = Some("agent".into())),
        rule(3, "split"),
    ]);
    let call = Call::default();
    assert_eq!(first_match(&policy, &call, None), Some(id(3)), "first pass");
    for (level, expected) in [
        (LimitLevel::Organization, Some(id(1))),
        (LimitLevel::Agent, Some(id(2))),
        (LimitLevel::Number, None),
    ] {
        assert_eq!(
            first_match(&policy, &call, Some(level)),
            expected,
            "{level:?}"
        );
    }
}

#[test]
fn targets_are_read_as_stored() {
    let policy = policy(vec![
        with(rule(1, "transfer"), |r| {
            r.transfer_to = Some("sip:desk@pbx.example.com".into())
        }),
        with(rule(2, "reject"), |r| {
            r.reject_reason = Some("decline".into())
        }),
        rule(3, "agent"),
        rule(4, "split"),
    ]);
    let actions: Vec<&Action> = policy.rules().iter().map(|r| &r.action).collect();
    assert_eq!(
        actions,
        [
            &Action::Transfer(Destination::SipUri("sip:desk@pbx.example.com".into())),
            &Action::Reject(RejectReason::Decline),
            &Action::Agent(AgentId(id(1003))),
            &Action::Split(vec![(AgentId(id(1)), 90), (AgentId(id(2)), 10)]),
        ]
    );
    assert_eq!(
        [
            RejectReason::Busy,
            RejectReason::Decline,
            RejectReason::Unavailable
        ]
        .map(|r| r.sip_code()),
        [486, 603, 480]
    );
}

#[test]
fn a_rule_this_version_cannot_read_is_refused_with_its_id() {
    for (edit, problem) in [
        (
            (|r: &mut RuleDoc| r.action = "voicemail".into()) as fn(&mut RuleDoc),
            "unknown action \"voicemail\"",
        ),
        (
            |r| r.when_at_limit = Some("planet".into()),
            "unknown limit level \"planet\"",
        ),
        (|r| r.split.clear(), "a split without agents"),
    ] {
        let error = Policy::compile(PolicyDoc {
            rules: vec![with(rule(7, "split"), edit)],
            ..PolicyDoc::default()
        })
        .unwrap_err();
        assert_eq!(error.rule, id(7));
        assert_eq!(error.problem, problem);
    }
}

#[test]
fn a_policy_round_trips_through_messagepack_and_json() {
    let policy = policy(vec![
        with(rule(1, "reject"), |r| {
            r.caller_in_list = Some(id(BLOCKED));
            (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(false));
        }),
        rule(2, "split"),
    ]);
    let packed = rmp_serde::to_vec(&policy).unwrap();
    let unpacked: Policy = rmp_serde::from_slice(&packed).unwrap();
    assert_eq!(unpacked, policy);
    assert_eq!(unpacked.rules(), policy.rules());
    let json = serde_json::to_value(&policy).unwrap();
    let back: Policy = serde_json::from_value(json).unwrap();
    assert_eq!(back.rules(), policy.rules());
}

#[test]
fn the_database_form_is_read() {
    // as switchboard.routing_policy returns it (tests/pgtap/17_…)
    let json = serde_json::json!({
        "rules": [{"id": id(1), "name": "Closed", "number_id": null, "range_id": null,
                   "position": 0, "caller_in_list": null, "caller_not_in_list": null,
                   "caller_countries": null, "caller_known": null, "caller_withheld": null,
                   "schedule_id": id(OFFICE), "schedule_open": false,
                   "when_agent_inactive": null, "when_at_limit": null, "action": "reject",
                   "agent_id": null, "transfer_to": null, "reject_reason": "unavailable",
                   "split": []}],
        "schedules": [{"id": id(OFFICE), "name": "Office", "time_zone": "Europe/London",
                       "windows": [[1, 32400, 61200]],
                       "exceptions": [["2026-12-25", null, null]]}],
        "caller_lists": []
    });
    let policy = Policy::compile(serde_json::from_value(json).unwrap()).unwrap();
    let schedule = policy.schedule(id(OFFICE)).unwrap();
    let state = |at: &str| match schedule.state_at(at.parse().unwrap()) {
        ScheduleState::Known { open, .. } => open,
        ScheduleState::UnknownTimeZone => panic!("London is known"),
    };
    // Monday 2026-12-07: 09:00 GMT is 09:00 UTC
    assert!(!state("2026-12-07T08:59:59Z"));
    assert!(state("2026-12-07T09:00:00Z"));
    assert!(!state("2026-12-07T17:00:00Z"));
    // Christmas is a Friday, and closed anyway; 2026-12-28 is a Monday
    assert!(!state("2026-12-25T10:00:00Z"));
    assert!(state("2026-12-28T10:00:00Z"));
}

mod schedules_and_splits;
