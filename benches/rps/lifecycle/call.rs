//! One call's life as a gateway lives it: RouteCall, RecordUsage every
//! `--usage-every` while it holds, EndCall; and the plan of each call,
//! drawn on the pacer's thread so that a run's calls are the same whatever
//! the server does.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use switchboard::{
    domain::Metric,
    proto::{
        call_router_client::CallRouterClient, EndCallRequest, EndReason, RecordUsageRequest,
        RouteCallRequest, RouteCallResponse, UsageItem,
    },
};
use tonic::{transport::Channel, Code, Status};
use uuid::Uuid;

use super::{tally::is_shed, Shared};
use crate::{
    calls::CallerMix,
    cli::LifecycleArgs,
    client::{end_call, record_usage, route_call},
    dataset::NumberMix,
};

/// Every call ends this way: a `completed` call.
pub const END_REASON: EndReason = EndReason::CallerHangup;
/// `calls.end_reason` and `calls.status` of such a call.
pub const END_REASON_STORED: &str = "caller_hangup";
pub const END_STATUS_STORED: &str = "completed";

/// A call before it is placed.
pub struct Plan {
    pub due: Instant,
    /// Started in the measured window: its latencies count.
    pub counted: bool,
    pub request: RouteCallRequest,
    pub provisioned: bool,
    pub hold: Duration,
    /// The k-th report's items, in thousandths of their unit; due `k + 1`
    /// times `--usage-every` after the call.
    pub usage: Vec<Vec<(Metric, u64)>>,
}

/// Draws the plans: numbers, callers, holding times, usage.
pub struct Planner {
    numbers: NumberMix,
    callers: CallerMix,
    rng: SmallRng,
    prefix: String,
    hold_mean: f64,
    hold_max: Duration,
    usage_every: Duration,
}

impl Planner {
    pub fn new(args: &LifecycleArgs, run_id: &str) -> Self {
        let mix = (args.hot, args.hot_share, args.unknown_share);
        Self {
            numbers: NumberMix::with(mix, args.data.numbers, 0),
            callers: CallerMix::new(&args.callers, &args.data, 0),
            rng: SmallRng::seed_from_u64(0x11fe),
            prefix: run_id.to_string(),
            hold_mean: args.hold_mean.as_secs_f64(),
            hold_max: args.hold_max,
            usage_every: args.usage_every,
        }
    }

    pub fn plan(&mut self, i: u32, due: Instant, counted: bool) -> Plan {
        let (number, index) = self.numbers.next();
        let request = RouteCallRequest {
            called_number: number,
            caller_number: self.callers.next(index),
            gateway_call_id: gateway_call_id(&self.prefix, i),
            default_region: String::new(),
        };
        // exponential by its inverse distribution function, capped
        let u: f64 = self.rng.random();
        let hold = Duration::from_secs_f64(-self.hold_mean * (1.0 - u).ln()).min(self.hold_max);
        let every = self.usage_every.max(Duration::from_millis(1));
        let reports = (1..).take_while(|k| every * *k < hold).count();
        let usage = (0..reports).map(|_| self.items()).collect();
        Plan {
            due,
            counted,
            request,
            provisioned: index.is_some(),
            hold,
            usage,
        }
    }

    /// One report: the seconds since the last, and half the time one other
    /// metric, in whole units. Thousandths, so that sums are exact in
    /// `numeric` as here.
    fn items(&mut self) -> Vec<(Metric, u64)> {
        let mut items = vec![(Metric::CallSeconds, self.usage_every.as_millis() as u64)];
        if self.rng.random_bool(0.5) {
            let others = &Metric::ALL[1..];
            let metric = others[self.rng.random_range(0..others.len())];
            items.push((metric, self.rng.random_range(1..=2000) * 1000));
        }
        items
    }
}

/// The gateway call id of a run's `i`-th call.
pub fn gateway_call_id(run_id: &str, i: u32) -> String {
    format!("{run_id}-{i}")
}

/// The idempotency key of a call's `k`-th report: unique within the call,
/// which is the key's scope.
pub fn idempotency_key(k: usize) -> String {
    format!("usage-{k}")
}

/// What became of a call.
pub struct CallOutcome {
    pub gateway_call_id: String,
    pub due: Instant,
    pub counted: bool,
    /// The call's id and organization, or the code RouteCall failed with.
    pub routed: Result<(Uuid, Uuid), Code>,
    /// RouteCall's latency from when it was due, when it was answered well.
    pub route_latency: Option<Duration>,
    /// RouteCall was refused as overloaded.
    pub shed: bool,
    /// Reports planned, and those sent with whether each was acknowledged.
    pub usage_planned: usize,
    pub usage: Vec<(Vec<(Metric, u64)>, bool)>,
    /// EndCall sent, and whether it was acknowledged.
    pub ended: Option<bool>,
}

/// Places the planned call and lives it to its end.
pub async fn live(
    shared: Arc<Shared>,
    mut client: CallRouterClient<Channel>,
    plan: Plan,
) -> CallOutcome {
    let answer = route_call(&mut client, plan.request.clone(), shared.deadline).await;
    let latency = plan.due.elapsed();
    shared
        .route
        .answer(&answer, plan.provisioned, plan.due, plan.counted);
    let good = answer.is_ok()
        || (answer.as_ref().is_err_and(|s| s.code() == Code::NotFound) && !plan.provisioned);
    let mut outcome = CallOutcome {
        gateway_call_id: plan.request.gateway_call_id.clone(),
        due: plan.due,
        counted: plan.counted,
        routed: answer.as_ref().map(call_of).map_err(Status::code),
        route_latency: good.then_some(latency),
        shed: answer.as_ref().is_err_and(is_shed),
        usage_planned: plan.usage.len(),
        usage: Vec::new(),
        ended: None,
    };
    let Ok((call_id, _)) = outcome.routed else {
        return outcome;
    };
    let live = shared.live.fetch_add(1, Ordering::AcqRel) + 1;
    shared.peak.fetch_max(live, Ordering::AcqRel);
    let answered_at = SystemTime::now();
    let call_id = call_id.to_string();
    // each report leaves at its time whatever the others' answers, as the
    // end does: a gateway does not wait for one report to send the next
    let reports = plan.usage.into_iter().enumerate().map(|(k, items)| {
        let (mut client, shared, call_id) = (client.clone(), shared.clone(), call_id.clone());
        let due = plan.due + shared.usage_every * (k as u32 + 1);
        async move {
            tokio::time::sleep_until(due.into()).await;
            let request = RecordUsageRequest {
                call_id,
                items: items.iter().map(|&(m, q)| usage_item(m, q)).collect(),
                idempotency_key: idempotency_key(k),
            };
            let answer = record_usage(&mut client, request, shared.deadline).await;
            shared.usage.answer(&answer, true, due, plan.counted);
            (items, answer.is_ok())
        }
    });
    let reports: Vec<_> = reports.collect();
    let end = async {
        let due = plan.due + plan.hold;
        tokio::time::sleep_until(due.into()).await;
        let request = EndCallRequest {
            call_id: call_id.clone(),
            end_reason: END_REASON as i32,
            ended_at: Some(SystemTime::now().into()),
            answered_at: Some(answered_at.into()),
        };
        let answer = end_call(&mut client, request, shared.deadline).await;
        shared.end.answer(&answer, true, due, plan.counted);
        shared.live.fetch_sub(1, Ordering::AcqRel);
        answer.is_ok()
    };
    let (usage, ended) = futures::join!(futures::future::join_all(reports), end);
    outcome.usage = usage;
    outcome.ended = Some(ended);
    outcome
}

/// The call's id and its organization's, from RouteCall's answer (nil
/// where the answer has none, as the no-op's).
fn call_of(answer: &RouteCallResponse) -> (Uuid, Uuid) {
    let org = answer
        .route
        .as_ref()
        .and_then(|r| r.organization.as_ref())
        .and_then(|o| o.id.parse().ok());
    (
        answer.call_id.parse().unwrap_or_default(),
        org.unwrap_or_default(),
    )
}

fn usage_item(metric: Metric, thousandths: u64) -> UsageItem {
    UsageItem {
        metric: metric.as_str().to_string(),
        quantity: thousandths as f64 / 1000.0,
    }
}
