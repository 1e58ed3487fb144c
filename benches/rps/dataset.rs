//! The bench data set: its numbers, organizations and agents, the route the
//! daemon answers for each number, and the mix of numbers a run asks for.

use std::sync::Arc;

use rand::{rngs::SmallRng, Rng, SeedableRng};
use switchboard::domain::{Agent, Organization, Route, E164};
use uuid::Uuid;

use crate::cli::LoadArgs;

pub fn bench_number(i: usize) -> String {
    format!("+1800{i:07}")
}

/// How many numbers nobody provisions the mix draws from.
const UNKNOWN_NUMBERS: usize = 10_000_000;

/// Numbers nobody provisions: same shape, another prefix.
pub fn unknown_number(i: usize) -> String {
    format!("+1899{i:07}")
}

/// Phones of known customers, `+1700` and seven digits: organization `g`'s
/// customer `c` is the `g * per_org + c`-th. Canonical E.164 of the same
/// shape as the bench numbers, so `E164::parse` takes its fast path.
pub fn customer_phone(g: usize, c: usize, per_org: usize) -> String {
    format!("+1700{:07}", g * per_org + c)
}

/// Customer phones the data set has room for: seven digits.
pub const MAX_CUSTOMERS: usize = 10_000_000;

/// Stranger `c` of organization `g`: a caller no customer has, another
/// prefix.
pub fn stranger_phone(g: usize, c: usize, per_org: usize) -> String {
    format!("+1799{:07}", g * per_org + c)
}

/// The bench organizations' concurrent-call limit: high enough that a peak
/// run measures routing, never a refusal for the limit.
pub const BENCH_CONCURRENCY_LIMIT: i32 = 1_000_000;

pub fn bench_org_id(i: usize) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_4000_9000_0000_0000_0000 | i as u128)
}

pub fn bench_agent_id(i: usize) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_4000_a000_0000_0000_0000 | i as u128)
}

pub const BENCH_ORG_SETTINGS: &str =
    r#"{"timezone": "America/New_York", "record_calls": true, "business_hours": "08:00-18:00"}"#;
pub const BENCH_LLM_CONFIG: &str = r#"{"model": "gpt-4o-mini", "temperature": 0.3, "tools": ["book_appointment", "transfer"], "system_prompt": "You answer the phone for a busy clinic. Book, move and cancel appointments; transfer emergencies."}"#;

/// The route of bench number `i`, as the daemon answers it: the no-op
/// server's canned answer has the same size and shape.
pub fn bench_route(i: usize, organizations: usize) -> Route {
    let g = i % organizations;
    let object = |raw: &str| match serde_json::from_str(raw).expect("valid JSON") {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object"),
    };
    Route {
        number: E164::from_canonical(&bench_number(i)).expect("canonical"),
        number_active: true,
        provisioned: switchboard::domain::Provisioned::Number {
            id: Uuid::from_u128(i as u128),
            concurrency_limit: None,
        },
        organization: Arc::new(Organization {
            id: switchboard::domain::OrgId(bench_org_id(g)),
            slug: format!("bench-{g}"),
            name: format!("Bench organization {g}"),
            plan_tier: switchboard::domain::PlanTier::Enterprise,
            settings: object(BENCH_ORG_SETTINGS),
            concurrency_limit: Some(BENCH_CONCURRENCY_LIMIT),
            is_active: true,
            policy: None,
        }),
        agent: Arc::new(Agent {
            id: switchboard::domain::AgentId(bench_agent_id(g)),
            name: format!("Agent {g}"),
            voice_id: "aura-asteria-en".into(),
            llm_config: object(BENCH_LLM_CONFIG),
            is_active: true,
            concurrency_limit: None,
        }),
    }
}

/// Picks numbers by the configured mix: the number, and its index in the
/// data set when it is provisioned.
pub struct NumberMix {
    rng: SmallRng,
    hot: usize,
    hot_share: f64,
    unknown_share: f64,
    numbers: usize,
}

impl NumberMix {
    pub fn new(args: &LoadArgs, seed: u64) -> Self {
        Self::with(
            (args.hot, args.hot_share, args.unknown_share),
            args.data.numbers,
            seed,
        )
    }

    /// The mix of `(hot, hot_share, unknown_share)` over `numbers`.
    pub fn with(
        (hot, hot_share, unknown_share): (usize, f64, f64),
        numbers: usize,
        seed: u64,
    ) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            hot: hot.clamp(1, numbers),
            hot_share,
            unknown_share,
            numbers,
        }
    }

    pub fn next(&mut self) -> (String, Option<usize>) {
        let roll: f64 = self.rng.random();
        if roll < self.unknown_share {
            // a scanner's: drawn from ten million, almost never twice
            let i = self.rng.random_range(0..UNKNOWN_NUMBERS);
            (unknown_number(i), None)
        } else {
            let i = if roll < self.unknown_share + self.hot_share {
                self.rng.random_range(0..self.hot)
            } else {
                self.rng.random_range(0..self.numbers)
            };
            (bench_number(i), Some(i))
        }
    }
}
