//! What the recorder writes: call and usage events, each carrying its own
//! key so that writing it twice changes nothing.
//!
//! Events are also the spool's record format (MessagePack of [`Event`]):
//! variants and fields may be added at the end, never removed or reordered,
//! or a spool written by an older build stops decoding.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AgentId, CallId, OrgId};

/// One thing that happened to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// `RouteCall` admitted a call. Keyed by the call id.
    CallOpened(CallOpened),
    /// `EndCall`. Keyed by the call id: the first outcome recorded wins.
    CallEnded(CallEnded),
    /// One metered quantity from `RecordUsage`. Keyed by its own id.
    Usage(Usage),
}

impl Event {
    /// The call the event belongs to.
    pub fn call_id(&self) -> CallId {
        match self {
            Event::CallOpened(e) => e.call_id,
            Event::CallEnded(e) => e.call_id,
            Event::Usage(e) => e.call_id,
        }
    }

    /// The organization the event belongs to.
    pub fn org_id(&self) -> OrgId {
        match self {
            Event::CallOpened(e) => e.org_id,
            Event::CallEnded(e) => e.org_id,
            Event::Usage(e) => e.org_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallOpened {
    pub call_id: CallId,
    pub org_id: OrgId,
    pub agent_id: AgentId,
    /// The caller, when they are a known customer.
    pub customer_id: Option<Uuid>,
    pub gateway_call_id: String,
    /// E.164.
    pub called_number: String,
    /// E.164 when the caller id could be read, else `None`.
    pub caller_number: Option<String>,
    pub started_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEnded {
    pub call_id: CallId,
    pub org_id: OrgId,
    pub reason: EndReason,
    pub answered_at: Option<SystemTime>,
    pub ended_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Derived from the call, the gateway's idempotency key and the metric.
    pub id: Uuid,
    pub org_id: OrgId,
    pub call_id: CallId,
    pub metric: Metric,
    pub quantity: f64,
    pub occurred_at: SystemTime,
}

/// Why a call ended (`calls.end_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum EndReason {
    CallerHangup,
    AgentHangup,
    Transferred,
    Timeout,
    NoAnswer,
    Busy,
    Failed,
}

impl EndReason {
    /// As stored in `calls.end_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller_hangup",
            EndReason::AgentHangup => "agent_hangup",
            EndReason::Transferred => "transferred",
            EndReason::Timeout => "timeout",
            EndReason::NoAnswer => "no_answer",
            EndReason::Busy => "busy",
            EndReason::Failed => "failed",
        }
    }

    /// The call's final `calls.status`.
    pub fn status(self) -> &'static str {
        match self {
            EndReason::NoAnswer | EndReason::Busy | EndReason::Failed => "failed",
            _ => "completed",
        }
    }
}

/// A metered quantity (`usage_events.metric`; the table's check constraint
/// lists the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    CallSeconds,
    LlmTokensIn,
    LlmTokensOut,
    TtsCharacters,
    SttSeconds,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::CallSeconds,
        Metric::LlmTokensIn,
        Metric::LlmTokensOut,
        Metric::TtsCharacters,
        Metric::SttSeconds,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CallSeconds => "call_seconds",
            Metric::LlmTokensIn => "llm_tokens_in",
            Metric::LlmTokensOut => "llm_tokens_out",
            Metric::TtsCharacters => "tts_characters",
            Metric::SttSeconds => "stt_seconds",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// Encodes an event as a spool record.
pub fn encode(event: &Event) -> Vec<u8> {
    rmp_serde::to_vec(event).expect("events always encode")
}

/// Decodes a spool record.
pub fn decode(record: &[u8]) -> Result<Event, rmp_serde::decode::Error> {
    rmp_serde::from_slice(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip() {
        for metric in Metric::ALL {
            assert_eq!(Metric::parse(metric.as_str()), Some(metric));
        }
        assert_eq!(Metric::parse("minutes"), None);
    }

    #[test]
    fn events_round_trip_through_the_record_format() {
        let event = Event::CallEnded(CallEnded {
            call_id: crate::domain::CallId(Uuid::from_u128(7)),
            org_id: crate::domain::OrgId(Uuid::from_u128(8)),
            reason: EndReason::Busy,
            answered_at: None,
            ended_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
        });
        assert_eq!(decode(&encode(&event)).unwrap(), event);
        assert!(decode(b"\xc1 not msgpack").is_err());
    }
}
