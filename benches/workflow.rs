//! What a call workflow adds to a hot `RouteCall`'s own work: the route
//! from L1 and the decision, for a number without a policy (`plain`) and
//! for a number of a range whose organization has a realistic policy
//! (`workflow`: a block list of 1,000 numbers and a prefix, a VIP list,
//! a country rule, an after-hours schedule with holidays, then a 90/10
//! split), in the same run. Both are answered from memory, as in the
//! daemon once warm; the split's agents come from L1 too.
//!
//! Runs alone (no stack): `cargo bench --bench workflow`. With
//! `SWITCHBOARD_BENCH_COUNT=N` it instead answers each case N times in a
//! function of its own and exits, for callgrind's instruction counts
//! (`deploy/local/workflow-cost`).

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]

use std::{hint::black_box, sync::Arc};

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::{
    domain::{
        policy::{CallFacts, CallerListDoc, Policy, PolicyDoc, RuleDoc, ScheduleDoc},
        Agent, AgentId, CallId, Customer, NumberRange, OrgId, Organization, PlanTier, Provisioned,
        ResolveError, Resolver, Route, E164,
    },
    routing::{decide, CacheSettings, CallDecision, RouteCache, Walk},
};
use tokio::runtime::Runtime;
use uuid::Uuid;

const PLAIN: &str = "+14155550100";
/// A number of the workflow organization's range `+1646555`.
const IN_RANGE: &str = "+16465550123";
const CALLER: &str = "+14155550123";

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn agent(n: u128) -> Arc<Agent> {
    Arc::new(Agent {
        id: AgentId(id(n)),
        name: format!("Agent {n}"),
        voice_id: "aura-asteria-en".into(),
        llm_config: Default::default(),
        is_active: true,
        concurrency_limit: None,
    })
}

fn organization(n: u128, policy: Option<Policy>) -> Arc<Organization> {
    Arc::new(Organization {
        id: OrgId(id(n)),
        slug: format!("org-{n}"),
        name: format!("Organization {n}"),
        plan_tier: PlanTier::Pro,
        settings: Default::default(),
        concurrency_limit: None,
        is_active: true,
        policy: policy.map(Arc::new),
    })
}

/// A policy as an organization would write it: org-wide rules, checked in
/// this order, the split last (the one that decides a usual call).
fn realistic_policy() -> Policy {
    let rule = |n: u128, action: &str| RuleDoc {
        id: id(500 + n),
        name: format!("rule {n}"),
        position: n as i32 * 10,
        action: action.into(),
        ..RuleDoc::default()
    };
    let blocked = id(600);
    let vips = id(601);
    let office = id(700);
    Policy::compile(PolicyDoc {
        rules: vec![
            RuleDoc {
                caller_in_list: Some(blocked),
                reject_reason: Some("decline".into()),
                ..rule(1, "reject")
            },
            RuleDoc {
                caller_in_list: Some(vips),
                agent_id: Some(id(12)),
                ..rule(2, "agent")
            },
            RuleDoc {
                caller_countries: Some(vec!["GB".into(), "IE".into()]),
                transfer_to: Some("sip:uk-desk@pbx.example.com".into()),
                ..rule(3, "transfer")
            },
            RuleDoc {
                schedule_id: Some(office),
                schedule_open: Some(false),
                agent_id: Some(id(13)),
                ..rule(4, "agent")
            },
            RuleDoc {
                when_at_limit: Some("organization".into()),
                transfer_to: Some("+14155550199".into()),
                ..rule(5, "transfer")
            },
            RuleDoc {
                split: vec![(id(10), 90), (id(11), 10)],
                ..rule(6, "split")
            },
        ],
        schedules: vec![ScheduleDoc {
            id: office,
            name: "Office".into(),
            time_zone: "America/New_York".into(),
            // open around the clock on weekdays and weekends alike, so the
            // split decides whenever the bench runs
            windows: (1..=7).map(|day| (day, 0, 86_400)).collect(),
            exceptions: vec![(jiff::civil::date(2026, 12, 25), None, None)],
        }],
        caller_lists: vec![
            CallerListDoc {
                id: blocked,
                numbers: (0..1_000).map(|i| format!("+1900555{i:04}")).collect(),
                prefixes: vec!["+1900".into(), "+1976".into()],
            },
            CallerListDoc {
                id: vips,
                numbers: vec!["+13125550199".into()],
                prefixes: Vec::new(),
            },
        ],
    })
    .unwrap()
}

/// The next tier down, in memory: the plain route, the workflow
/// organization's range, and every agent.
struct Memory {
    plain: Route,
    range: NumberRange,
    agents: Vec<Arc<Agent>>,
    workflow_org: Arc<Organization>,
}

impl Resolver for Memory {
    type Source = Self;

    fn source(&self) -> &Self {
        self
    }

    async fn resolve(&self, number: &E164) -> Result<Option<Route>, ResolveError> {
        Ok((number == &self.plain.number).then(|| self.plain.clone()))
    }

    async fn resolve_agent(&self, id: AgentId) -> Result<Option<Arc<Agent>>, ResolveError> {
        Ok(self.agents.iter().find(|a| a.id == id).cloned())
    }

    async fn resolve_organization(
        &self,
        id: OrgId,
    ) -> Result<Option<Arc<Organization>>, ResolveError> {
        Ok([&self.plain.organization, &self.workflow_org]
            .into_iter()
            .find(|o| o.id == id)
            .cloned())
    }

    async fn ranges(&self) -> Result<Vec<NumberRange>, ResolveError> {
        Ok(vec![self.range.clone()])
    }

    async fn resolve_caller(
        &self,
        _: OrgId,
        _: &E164,
    ) -> Result<Option<Arc<Customer>>, ResolveError> {
        Ok(None)
    }
}

fn cache() -> Arc<RouteCache<Memory>> {
    let agents: Vec<Arc<Agent>> = (1..=13).map(agent).collect();
    let memory = Memory {
        plain: Route {
            number: E164::from_canonical(PLAIN).unwrap(),
            number_active: true,
            provisioned: Provisioned::Number {
                id: id(900),
                concurrency_limit: None,
            },
            organization: organization(1, None),
            agent: agents[0].clone(),
        },
        range: NumberRange {
            id: id(901),
            prefix: "+1646555".into(),
            org_id: OrgId(id(2)),
            agent_id: AgentId(id(10)),
            is_active: true,
            concurrency_limit: None,
        },
        workflow_org: organization(2, Some(realistic_policy())),
        agents,
    };
    let cache = RouteCache::new(
        memory,
        CacheSettings {
            capacity: 1_000,
            ttl: std::time::Duration::from_secs(3_600),
            negative_ttl: std::time::Duration::from_secs(3_600),
            unconfirmed_ttl: std::time::Duration::from_secs(3_600),
            max_stale: std::time::Duration::from_secs(3_600),
        },
    );
    cache.set_confirmed(true);
    cache
}

/// One call's route and decision, as `RouteCall` makes them before
/// admission.
async fn route_and_decide(
    cache: &RouteCache<Memory>,
    number: &E164,
    caller: &E164,
    call_id: CallId,
) -> CallDecision {
    let route = cache.resolve(number).await.unwrap().unwrap();
    let mut walk = Walk {
        route: &route,
        facts: CallFacts::new(
            Some(caller),
            None,
            route.agent.is_active,
            jiff::Timestamp::now(),
        ),
        call_id,
        steps: None,
        peek: false,
    };
    decide(cache, &mut walk, None).await.unwrap().unwrap()
}

/// Call ids as `RouteCall` makes them, varied so the split draws both sides.
fn call_id(i: u64) -> CallId {
    CallId(Uuid::from_u64_pair(0x5b0d_6c4e_2f7a_4c1e, i))
}

#[inline(never)]
fn count_plain(runtime: &Runtime, cache: &RouteCache<Memory>, n: u64) {
    let (number, caller) = (
        E164::from_canonical(PLAIN).unwrap(),
        E164::from_canonical(CALLER).unwrap(),
    );
    runtime.block_on(async {
        for i in 0..n {
            black_box(route_and_decide(cache, &number, &caller, call_id(i)).await);
        }
    });
}

#[inline(never)]
fn count_workflow(runtime: &Runtime, cache: &RouteCache<Memory>, n: u64) {
    let (number, caller) = (
        E164::from_canonical(IN_RANGE).unwrap(),
        E164::from_canonical(CALLER).unwrap(),
    );
    runtime.block_on(async {
        for i in 0..n {
            black_box(route_and_decide(cache, &number, &caller, call_id(i)).await);
        }
    });
}

fn warmed() -> (Runtime, Arc<RouteCache<Memory>>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = cache();
    let (plain, ranged, caller) = (
        E164::from_canonical(PLAIN).unwrap(),
        E164::from_canonical(IN_RANGE).unwrap(),
        E164::from_canonical(CALLER).unwrap(),
    );
    runtime.block_on(async {
        // every tier filled: the number, the range, the parts, the split's
        // agents; and the decisions are what they should be
        let plain = route_and_decide(&cache, &plain, &caller, call_id(0)).await;
        assert!(matches!(plain, CallDecision::Agent { rule: None, .. }));
        let mut sides = Vec::new();
        for i in 0..50 {
            match route_and_decide(&cache, &ranged, &caller, call_id(i)).await {
                CallDecision::Agent {
                    agent,
                    rule: Some(rule),
                } => {
                    assert_eq!(&*rule.name, "rule 6", "the split decides");
                    sides.push(agent.name.clone());
                }
                other => panic!("the split decides, not {other:?}"),
            }
        }
        assert!(sides.iter().any(|s| s == "Agent 10") && sides.iter().any(|s| s == "Agent 11"));
    });
    (runtime, cache)
}

fn workflow(c: &mut Criterion) {
    let (runtime, cache) = warmed();
    if let Ok(n) = std::env::var("SWITCHBOARD_BENCH_COUNT") {
        let n: u64 = n.parse().expect("SWITCHBOARD_BENCH_COUNT is a count");
        count_plain(&runtime, &cache, n);
        count_workflow(&runtime, &cache, n);
        return;
    }
    let mut group = c.benchmark_group("route_and_decide");
    let (plain, ranged, caller) = (
        E164::from_canonical(PLAIN).unwrap(),
        E164::from_canonical(IN_RANGE).unwrap(),
        E164::from_canonical(CALLER).unwrap(),
    );
    let mut i = 0u64;
    group.bench_function("plain", |b| {
        b.iter(|| {
            i += 1;
            runtime.block_on(route_and_decide(&cache, &plain, &caller, call_id(i)))
        })
    });
    group.bench_function("workflow", |b| {
        b.iter(|| {
            i += 1;
            runtime.block_on(route_and_decide(&cache, &ranged, &caller, call_id(i)))
        })
    });
    group.finish();
}

criterion_group!(benches, workflow);
criterion_main!(benches);
