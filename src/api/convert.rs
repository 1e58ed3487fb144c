//! Domain ⇄ protobuf conversion.

use prost_types::{value::Kind, ListValue, Struct, Value as ProtoValue};
use serde_json::{Map, Number, Value};

use crate::{
    domain::{self, policy::Destination, EndReason},
    proto,
    routing::CallDecision,
};

/// Every end reason this build knows, both ways; `UNSPECIFIED` has no
/// domain counterpart.
const END_REASONS: [(proto::EndReason, EndReason); 7] = [
    (proto::EndReason::CallerHangup, EndReason::CallerHangup),
    (proto::EndReason::AgentHangup, EndReason::AgentHangup),
    (proto::EndReason::Transferred, EndReason::Transferred),
    (proto::EndReason::Timeout, EndReason::Timeout),
    (proto::EndReason::NoAnswer, EndReason::NoAnswer),
    (proto::EndReason::Busy, EndReason::Busy),
    (proto::EndReason::Failed, EndReason::Failed),
];

impl From<EndReason> for proto::EndReason {
    fn from(reason: EndReason) -> Self {
        END_REASONS
            .iter()
            .find(|(_, domain)| *domain == reason)
            .map(|(wire, _)| *wire)
            .expect("every end reason has a wire value")
    }
}

impl TryFrom<proto::EndReason> for EndReason {
    /// `UNSPECIFIED`.
    type Error = ();

    fn try_from(reason: proto::EndReason) -> Result<Self, ()> {
        END_REASONS
            .iter()
            .find(|(wire, _)| *wire == reason)
            .map(|(_, domain)| *domain)
            .ok_or(())
    }
}

impl From<&domain::Route> for proto::Route {
    fn from(route: &domain::Route) -> Self {
        route_with(route, &route.agent)
    }
}

/// A route answered by `agent`.
fn route_with(route: &domain::Route, agent: &domain::Agent) -> proto::Route {
    let org = &route.organization;
    proto::Route {
        number: route.number.to_string(),
        organization: Some(proto::Organization {
            id: org.id.to_string(),
            slug: org.slug.clone(),
            name: org.name.clone(),
            plan_tier: org.plan_tier.as_str().to_string(),
            settings: Some(json_to_struct(&org.settings)),
        }),
        agent: Some(proto::Agent::from(agent)),
    }
}

impl From<&domain::Agent> for proto::Agent {
    fn from(agent: &domain::Agent) -> Self {
        proto::Agent {
            id: agent.id.to_string(),
            name: agent.name.clone(),
            voice_id: agent.voice_id.clone(),
            llm_config: Some(json_to_struct(&agent.llm_config)),
        }
    }
}

/// `RouteCallResponse.route`: the route with the agent that answers, or
/// none when no agent does (a client unaware of decisions must not start
/// one).
pub(super) fn decided_route(
    route: &domain::Route,
    decision: &CallDecision,
) -> Option<proto::Route> {
    match decision {
        CallDecision::Agent { agent, .. } => Some(route_with(route, agent)),
        CallDecision::Transfer { .. } | CallDecision::Reject { .. } => None,
    }
}

impl From<&CallDecision> for proto::Decision {
    fn from(decision: &CallDecision) -> Self {
        use proto::decision::Action;
        let action = match decision {
            CallDecision::Agent { agent, .. } => Action::Agent(proto::AgentDecision {
                agent: Some(proto::Agent::from(&**agent)),
            }),
            CallDecision::Transfer { to, .. } => Action::Transfer(proto::TransferDecision {
                destination: to.as_str().to_string(),
                kind: match to {
                    Destination::Number(_) => "e164",
                    Destination::SipUri(_) => "sip_uri",
                }
                .to_string(),
            }),
            CallDecision::Reject { reason, .. } => Action::Reject(proto::RejectDecision {
                reason: reason.as_str().to_string(),
                sip_code: u32::from(reason.sip_code()),
            }),
        };
        proto::Decision {
            action: Some(action),
            rule: decision.rule().map(|rule| proto::MatchedRule {
                id: rule.id.to_string(),
                name: rule.name.to_string(),
                overflow_level: rule
                    .overflow
                    .map(|level| level.as_str().to_string())
                    .unwrap_or_default(),
            }),
        }
    }
}

impl From<&domain::Customer> for proto::Customer {
    fn from(customer: &domain::Customer) -> Self {
        proto::Customer {
            id: customer.id.to_string(),
            phone: customer.phone.to_string(),
            name: customer.name.clone().unwrap_or_default(),
            email: customer.email.clone().unwrap_or_default(),
        }
    }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn json_to_struct(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        // Struct numbers are doubles (as in JSON itself); integers beyond
        // 2^53 lose precision, which is why ids never go into settings.
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    ProtoValue { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as a JSON object (for the CLI client).
pub fn struct_to_json(s: &Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(value: &ProtoValue) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

fn number_to_json(n: f64) -> Value {
    // Whole numbers print as integers, as they were most likely written.
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn every_end_reason_crosses_the_wire_and_back() {
        for &reason in EndReason::value_variants() {
            let wire = proto::EndReason::from(reason);
            assert_ne!(wire, proto::EndReason::Unspecified);
            assert_eq!(EndReason::try_from(wire), Ok(reason));
        }
        assert_eq!(EndReason::try_from(proto::EndReason::Unspecified), Err(()));
    }

    #[test]
    fn nested_json_survives_the_round_trip() {
        let original = json!({
            "model": "gpt-4o", "temperature": 0.25, "max_tokens": 512,
            "tools": ["a", {"b": [true, null]}], "nested": {"deep": {"x": -3}}
        });
        let map = original.as_object().unwrap();
        assert_eq!(
            Value::Object(struct_to_json(&json_to_struct(map))),
            original
        );
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1_000_000i64..1_000_000).prop_map(|n| json!(n)),
            "[a-z ]{0,12}".prop_map(Value::String),
        ]
    }

    proptest! {
        #[test]
        fn any_json_object_round_trips(
            map in prop::collection::btree_map("[a-z_]{1,8}", json_leaf().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            }), 0..6)
        ) {
            let map: Map<String, Value> = map.into_iter().collect();
            prop_assert_eq!(struct_to_json(&json_to_struct(&map)), map);
        }
    }
}
