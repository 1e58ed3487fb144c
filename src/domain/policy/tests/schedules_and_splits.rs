//! Schedules across DST changes, and splits: determinism, proportions,
//! independence.

use super::*;

fn is_open(schedule: &Schedule, at: &str) -> bool {
    match schedule.state_at(at.parse().unwrap()) {
        ScheduleState::Known { open, .. } => open,
        ScheduleState::UnknownTimeZone => panic!("unknown zone"),
    }
}

fn office_schedule() -> Schedule {
    let doc = office();
    Schedule::new(doc.name, doc.time_zone, &doc.windows, &doc.exceptions)
}

#[test]
fn opening_hours_follow_local_time_across_dst_changes() {
    let office = office_schedule();
    // Friday 2026-03-06, EST (UTC-5): opens 14:00 UTC
    assert!(!is_open(&office, "2026-03-06T13:59:59Z"));
    assert!(is_open(&office, "2026-03-06T14:00:00Z"));
    assert!(is_open(&office, "2026-03-06T21:59:59Z"));
    assert!(!is_open(&office, "2026-03-06T22:00:00Z"));
    // Monday 2026-03-09, the day after the clocks went forward, EDT
    // (UTC-4): opens at 13:00 UTC, an hour earlier in UTC
    assert!(!is_open(&office, "2026-03-09T12:59:59Z"));
    assert!(is_open(&office, "2026-03-09T13:00:00Z"));
    assert!(!is_open(&office, "2026-03-09T21:00:00Z"));
    // Monday 2026-11-02, the day after they went back: EST again
    assert!(!is_open(&office, "2026-11-02T13:59:59Z"));
    assert!(is_open(&office, "2026-11-02T14:00:00Z"));
    // the exceptions, read in local dates: Christmas Eve closes at noon
    assert!(is_open(&office, "2026-12-24T16:59:59Z"));
    assert!(!is_open(&office, "2026-12-24T17:00:00Z"));
    // 2026-12-25 20:00 in New York is already the 26th in UTC
    assert!(!is_open(&office, "2026-12-25T15:00:00Z"));
}

#[test]
fn a_window_in_the_hour_that_does_not_exist_never_opens_and_the_repeated_hour_opens_twice() {
    // Sunday windows 02:00–03:00 local; 2026-03-08 02:00 does not exist in
    // New York, 2026-11-01 01:00–02:00 happens twice
    let night = Schedule::new(
        "Night".into(),
        "America/New_York".into(),
        &[(7, 2 * 3600, 3 * 3600), (7, 3600, 2 * 3600)],
        &[],
    );
    let tz = TimeZone::get("America/New_York").unwrap();
    let spring_gap = date(2026, 3, 8)
        .at(1, 59, 59, 0)
        .to_zoned(tz.clone())
        .unwrap();
    let open_before_gap = night.state_at(spring_gap.timestamp());
    assert!(matches!(
        open_before_gap,
        ScheduleState::Known { open: true, .. }
    ));
    // one second later the clock reads 03:00 EDT: past both windows
    let after_gap = spring_gap.timestamp() + jiff::SignedDuration::from_secs(1);
    assert!(matches!(
        night.state_at(after_gap),
        ScheduleState::Known { open: false, .. }
    ));
    // 01:30 EDT (05:30 UTC) and 01:30 EST (06:30 UTC) are both 01:30 local
    assert!(is_open(&night, "2026-11-01T05:30:00Z"));
    assert!(is_open(&night, "2026-11-01T06:30:00Z"));
}

#[test]
fn a_time_zone_this_daemon_does_not_know_never_matches_and_says_why() {
    let policy = Policy::compile(PolicyDoc {
        rules: vec![with(rule(1, "reject"), |r| {
            (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(true));
        })],
        schedules: vec![ScheduleDoc {
            time_zone: "Mars/Olympus_Mons".into(),
            ..office()
        }],
        caller_lists: Vec::new(),
    })
    .unwrap();
    assert_eq!(policy.unknown_time_zones().count(), 1);
    let facts = CallFacts::new(None, None, true, open_hours());
    let mismatch = policy.rules()[0].check(&policy, &facts, None).unwrap_err();
    assert!(matches!(mismatch, Mismatch::UnknownTimeZone { .. }));
    // nor does the closed side: unknown is neither
    let closed = Policy::compile(PolicyDoc {
        rules: vec![with(rule(1, "reject"), |r| {
            (r.schedule_id, r.schedule_open) = (Some(id(OFFICE)), Some(false));
        })],
        schedules: vec![ScheduleDoc {
            time_zone: "Mars/Olympus_Mons".into(),
            ..office()
        }],
        caller_lists: Vec::new(),
    })
    .unwrap();
    assert!(closed.rules()[0].check(&closed, &facts, None).is_err());
}

/// Zones with DST rules of every kind: northern and southern hemisphere, a
/// half-hour shift (Lord Howe), none at all.
const ZONES: &[&str] = &[
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Asia/Kolkata",
];

proptest! {
    /// At any instant, the schedule is open exactly when the local
    /// wall-clock time (from the time zone database) falls in a window of
    /// the local weekday: checked against a plain scan of the windows, at
    /// instants spread over 30 years (DST changes included).
    #[test]
    fn a_schedule_is_open_exactly_in_its_local_windows(
        zone in 0..ZONES.len(),
        seconds in 946_684_800i64..1_893_456_000,
        windows in prop::collection::vec((1u8..=7, 0u32..86_400, 1u32..=86_400), 0..6),
    ) {
        let windows: Vec<(u8, u32, u32)> = windows
            .into_iter()
            .map(|(day, a, b)| (day, a.min(b), a.max(b)))
            .filter(|(_, a, b)| a < b)
            .collect();
        let schedule = Schedule::new("s".into(), ZONES[zone].into(), &windows, &[]);
        let now = Timestamp::from_second(seconds).unwrap();
        let local = now.to_zoned(TimeZone::get(ZONES[zone]).unwrap()).datetime();
        let weekday = local.weekday().to_monday_one_offset() as u8;
        let second = local.hour() as u32 * 3600 + local.minute() as u32 * 60 + local.second() as u32;
        let expected = windows
            .iter()
            .any(|&(day, opens, closes)| day == weekday && opens <= second && second < closes);
        let ScheduleState::Known { open, .. } = schedule.state_at(now) else {
            panic!("{} is known", ZONES[zone]);
        };
        prop_assert_eq!(open, expected);
    }

    /// Around every DST change of New York and Sydney in 2020–2040, a
    /// weekday window opening at 09:00 opens at 09:00 local: the instant
    /// before is closed, the instant itself open, whatever the offset.
    #[test]
    fn a_window_opens_at_its_local_time_on_any_day(
        zone in prop::sample::select(vec!["America/New_York", "Australia/Sydney", "Europe/London"]),
        days in 0i64..(20 * 365),
    ) {
        let tz = TimeZone::get(zone).unwrap();
        let day = date(2020, 1, 1) + jiff::Span::new().days(days);
        let weekday = day.weekday().to_monday_one_offset() as u8;
        let schedule = Schedule::new("s".into(), zone.into(), &[(weekday, 9 * 3600, 17 * 3600)], &[]);
        let opens = day.at(9, 0, 0, 0).to_zoned(tz.clone()).unwrap().timestamp();
        let closes = day.at(17, 0, 0, 0).to_zoned(tz).unwrap().timestamp();
        let state = |t: Timestamp| matches!(schedule.state_at(t), ScheduleState::Known { open: true, .. });
        let second = jiff::SignedDuration::from_secs(1);
        prop_assert!(!state(opens - second));
        prop_assert!(state(opens));
        prop_assert!(state(closes - second));
        prop_assert!(!state(closes));
    }

    /// A call's side of a split depends only on its id and the rule: the
    /// same call lands on the same agent every time, on every replica.
    #[test]
    fn a_split_sends_a_call_to_the_same_agent_every_time(call in any::<u128>(), rule in any::<u128>()) {
        let agents = [(AgentId(id(1)), 90), (AgentId(id(2)), 10)];
        let first = split::pick(&agents, |_| true, split::draw(CallId(Uuid::from_u128(call)), id(rule)));
        let again = split::pick(&agents, |_| true, split::draw(CallId(Uuid::from_u128(call)), id(rule)));
        prop_assert!(first.is_some());
        prop_assert_eq!(first, again);
    }
}

/// Calls as the router makes their ids: UUIDv5 of gateway call ids.
fn call_ids(n: usize) -> impl Iterator<Item = CallId> {
    let namespace = Uuid::from_u128(0x5b0d_6c4e_2f7a_4c1e_9d3b_8a61_f0e2_c457);
    (0..n).map(move |i| CallId(Uuid::new_v5(&namespace, format!("CA{i:032x}").as_bytes())))
}

#[test]
fn a_split_shares_calls_in_proportion_to_the_weights() {
    // 100,000 calls: the 10 % side's share has a standard deviation of
    // sqrt(0.1 * 0.9 / 100000) = 0.095 %; 5 standard deviations is 0.47 %
    let agents = [(AgentId(id(1)), 90), (AgentId(id(2)), 10)];
    for rule in [id(7), id(8)] {
        let small = call_ids(100_000)
            .filter(|&call| {
                split::pick(&agents, |_| true, split::draw(call, rule)) == Some(AgentId(id(2)))
            })
            .count();
        let share = small as f64 / 100_000.0;
        assert!(
            (share - 0.10).abs() < 0.0047,
            "rule {rule}: 10 % side got {share}"
        );
    }
    // three ways, 50/30/20
    let agents = [
        (AgentId(id(1)), 5),
        (AgentId(id(2)), 3),
        (AgentId(id(3)), 2),
    ];
    let mut counts = [0usize; 3];
    for call in call_ids(100_000) {
        let agent = split::pick(&agents, |_| true, split::draw(call, id(9))).unwrap();
        counts[agent.0.as_u128() as usize - 1] += 1;
    }
    for (count, share) in counts.iter().zip([0.5, 0.3, 0.2]) {
        let sd = (share * (1.0 - share) / 100_000f64).sqrt();
        assert!(
            ((*count as f64 / 100_000.0) - share).abs() < 5.0 * sd,
            "{counts:?}"
        );
    }
}

#[test]
fn two_splits_of_one_organization_are_independent() {
    // the 10 % side of one split is not the 10 % side of another: about
    // 1 % of calls are on both
    let agents = [(AgentId(id(1)), 90), (AgentId(id(2)), 10)];
    let small = |call, rule| {
        split::pick(&agents, |_| true, split::draw(call, rule)) == Some(AgentId(id(2)))
    };
    let both = call_ids(100_000)
        .filter(|&call| small(call, id(7)) && small(call, id(8)))
        .count() as f64
        / 100_000.0;
    let sd = (0.01f64 * 0.99 / 100_000.0).sqrt();
    assert!(
        (both - 0.01).abs() < 5.0 * sd,
        "on both small sides: {both}"
    );
}

#[test]
fn a_switched_off_agent_gives_its_share_to_the_others_and_a_drained_one_gets_none() {
    let agents = [
        (AgentId(id(1)), 90),
        (AgentId(id(2)), 10),
        (AgentId(id(3)), 0),
    ];
    for call in call_ids(2_000) {
        let draw = split::draw(call, id(7));
        assert_eq!(
            split::pick(&agents, |a| a != AgentId(id(1)), draw),
            Some(AgentId(id(2)))
        );
        assert_ne!(split::pick(&agents, |_| true, draw), Some(AgentId(id(3))));
        // a call on the big side stays there when the small side goes
        if split::pick(&agents, |_| true, draw) == Some(AgentId(id(1))) {
            assert_eq!(
                split::pick(&agents, |a| a != AgentId(id(2)), draw),
                Some(AgentId(id(1)))
            );
        }
    }
    assert_eq!(
        split::pick(&agents, |a| a == AgentId(id(3)), 0),
        None,
        "only weight 0 left"
    );
}
