//! What a run's outcomes say the database must hold: every acknowledged
//! record, and the unacknowledged ones that may or may not be there.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::call::{idempotency_key, CallOutcome};

/// Namespace of usage event ids: `USAGE_ID_NAMESPACE` in
/// src/routing/mod.rs, which derives an event's id from
/// `"{call_id}/{idempotency_key}/{metric}"`. Must stay equal to it.
const USAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7e21_94b3_0c58_4d6f_a1e7_3b9c_52d8_e06a);

/// The id the daemon gives a usage item.
pub fn usage_id(call_id: Uuid, k: usize, metric: &str) -> Uuid {
    let key = format!("{call_id}/{}/{metric}", idempotency_key(k));
    Uuid::new_v5(&USAGE_ID_NAMESPACE, key.as_bytes())
}

/// One usage item: its organization, metric and thousandths of a unit.
#[derive(Debug, Clone)]
pub struct UsageKey {
    pub org: Uuid,
    pub metric: String,
    pub thousandths: i64,
}

#[derive(Debug, Default)]
pub struct Expected {
    /// Acknowledged RouteCalls: gateway call id → call id.
    pub opened: HashMap<String, Uuid>,
    /// Failed RouteCalls, by gateway call id.
    pub unopened: HashSet<String>,
    /// Calls whose EndCall was acknowledged, and those whose EndCall failed.
    pub ended: HashSet<Uuid>,
    pub unended: HashSet<Uuid>,
    /// Usage items by the id the daemon derives: acknowledged, and failed.
    pub usage: HashMap<Uuid, UsageKey>,
    pub unacked_usage: HashMap<Uuid, UsageKey>,
}

impl Expected {
    pub fn of(outcomes: &[CallOutcome]) -> Self {
        let mut expected = Self::default();
        for outcome in outcomes {
            let Ok((call_id, org)) = outcome.routed else {
                expected.unopened.insert(outcome.gateway_call_id.clone());
                continue;
            };
            expected
                .opened
                .insert(outcome.gateway_call_id.clone(), call_id);
            match outcome.ended {
                Some(true) => expected.ended.insert(call_id),
                Some(false) => expected.unended.insert(call_id),
                None => false,
            };
            for (k, (items, acked)) in outcome.usage.iter().enumerate() {
                let into = if *acked {
                    &mut expected.usage
                } else {
                    &mut expected.unacked_usage
                };
                for &(metric, thousandths) in items {
                    let key = UsageKey {
                        org,
                        metric: metric.as_str().to_string(),
                        thousandths: thousandths as i64,
                    };
                    into.insert(usage_id(call_id, k, metric.as_str()), key);
                }
            }
        }
        expected
    }
}
