//! Weighted splits between agents, deterministic per call.
//!
//! A call's side is a pure function of its call id (itself derived from the
//! gateway's call id) and the rule's id: every replica, and every retry,
//! sends the same call to the same agent, with nothing shared. Mixing in the
//! rule's id keeps two splits of one organization independent of each
//! other (a call on the 10 % side of one is not on the 10 % side of all).

use uuid::Uuid;

use crate::domain::{AgentId, CallId};

/// A point in `[0, 2^64)` for this call and rule, uniformly spread.
pub fn draw(call_id: CallId, rule_id: Uuid) -> u64 {
    let (call_hi, call_lo) = call_id.0.as_u64_pair();
    let (rule_hi, rule_lo) = rule_id.as_u64_pair();
    mix(mix(call_hi ^ rule_hi) ^ call_lo ^ rule_lo)
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The agent a call goes to among `agents` (with their weights), skipping
/// those `eligible` refuses (switched off): the weights of the others are
/// shared out again. `None` when no eligible agent has any weight.
pub fn pick(
    agents: &[(AgentId, u32)],
    eligible: impl Fn(AgentId) -> bool,
    draw: u64,
) -> Option<AgentId> {
    let total: u64 = agents
        .iter()
        .filter(|(agent, _)| eligible(*agent))
        .map(|&(_, weight)| u64::from(weight))
        .sum();
    if total == 0 {
        return None;
    }
    // the draw scaled to [0, total): the high bits of a 128-bit product,
    // without the bias of a modulo
    let mut point = ((u128::from(draw) * u128::from(total)) >> 64) as u64;
    for &(agent, weight) in agents {
        if !eligible(agent) {
            continue;
        }
        let weight = u64::from(weight);
        if point < weight {
            return Some(agent);
        }
        point -= weight;
    }
    None
}
