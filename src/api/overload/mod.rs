//! Overload control at the edge: the [`Gate`] every routing request passes
//! when its task first runs, before its body is read or decoded.
//!
//! The server spawns each HTTP/2 stream's task through [`StreamExecutor`],
//! which stamps it with the moment the connection accepted the stream: the
//! gate sees how long the request waited in the runtime's queue, the queue
//! a saturated CPU builds ([`limit`] turns those waits into the adaptive
//! limit). A request that waited past what the limiter allows now, or that
//! finds the limit taken, is refused on the spot, the cheapest way HTTP/2
//! allows (see [`Refusal`]); one under both is stamped with its
//! [`Arrival`] and goes on to its handler. Health checks and reflection are
//! not gated.

mod early;
pub mod limit;
pub mod received;
mod unread;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use hyper::body::Body;
use tower::{Layer, Service};

pub use limit::{LimitSettings, Limiter};
use received::Received;
pub use received::{stamp_receipts, StampedTcp};
use unread::{Drain, Unread};

use crate::{
    routing::RouteError,
    telemetry::series::{Rpc, ShedReason},
};
use strum::VariantNames;

/// When a request reached the host (or, where the kernel gives no receive
/// stamp, when its connection accepted it), before the runtime ran its
/// task: the time in between is time spent queued, in the socket and in
/// the runtime's queue.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// How a stream was handed over: when it reached the host, when its
/// connection accepted it, and whether it was refused then and there.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    at: Instant,
    spawned: Instant,
    refused: Option<ShedReason>,
}

/// A stream as its connection handed it over.
struct Accepted {
    stamp: Stamp,
    /// Where its refusal leaves the rest of its request.
    drain: Drain,
}

tokio::task_local! {
    /// How the stream whose task this is was handed over.
    static ACCEPTED: Accepted;
}

/// Spawns each HTTP/2 stream's task (hyper hands it over as the
/// connection accepts the stream), stamped for the gate with the moment
/// the kernel received the bytes the connection read last ([`received`]),
/// or with the moment it is accepted where there is no such stamp.
///
/// While requests are being refused (the last to reach the gate waited
/// longer than allowed now, or the limit is taken), a stream is not
/// spawned: its future is polled once, here, on the connection's task, and
/// the gate refuses it in that poll, so that a refusal costs no task, no
/// wait in the queue and no scheduling. (Dropping at enqueue on the queue
/// delay seen lately, as PIE does, where the gate drops at dequeue, as
/// CoDel does.) A stream the gate does not refuse (health checks) goes on
/// in a task of its own.
#[derive(Clone)]
pub struct StreamExecutor {
    limiter: Arc<Limiter>,
    /// The connection's receive stamps; one executor per connection.
    received: Option<Received>,
    drain: Drain,
}

impl StreamExecutor {
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter,
            received: None,
            drain: Drain::default(),
        }
    }

    /// The executor of one connection, whose reads keep `received`.
    pub fn for_connection(&self, received: Received) -> Self {
        Self {
            limiter: self.limiter.clone(),
            received: Some(received),
            drain: Drain::default(),
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let now = Instant::now();
        let refused = self.limiter.refusing(now);
        let at = self
            .received
            .as_ref()
            .and_then(|received| received.arrival(now))
            .unwrap_or(now);
        let accepted = Accepted {
            stamp: Stamp {
                at,
                spawned: now,
                refused,
            },
            drain: self.drain.clone(),
        };
        if refused.is_none() {
            self.limiter.spawned();
            tokio::spawn(ACCEPTED.scope(accepted, stream));
            return;
        }
        let mut stream = Box::pin(ACCEPTED.scope(accepted, stream));
        let mut here = Context::from_waker(Waker::noop());
        if stream.as_mut().poll(&mut here).is_pending() {
            // not refused (not gated), or its answer could not be sent at
            // once: the rest in a task of its own, which polls it again
            tokio::spawn(stream);
        }
    }
}

/// The paths the gate admits or refuses: the routing API's.
const GATED_PREFIX: &str = "/switchboard.v1.CallRouter/";

/// How a request over the limit is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Refusal {
    /// A trailers-only gRPC answer: `UNAVAILABLE` with the reason
    /// `overloaded`, as the handler's own shedding answers. Every gRPC
    /// client reads it; it costs one HEADERS frame.
    Status,
    /// `RST_STREAM` with `REFUSED_STREAM`: HTTP/2's "not processed, safe
    /// to retry", which gRPC clients that retry transparently send again
    /// (possibly to another replica) without the application seeing it;
    /// others see `UNAVAILABLE` without a reason.
    Reset,
}

/// The gate's layer, wrapped around the server's routes (`app::grpc`).
#[derive(Clone)]
pub struct GateLayer {
    limiter: Arc<Limiter>,
    refusal: Refusal,
    /// The trailers-only answer's headers, made once.
    refused: Arc<HeaderMap>,
    metrics: Arc<GateMetrics>,
}

/// The gate's metric handles, registered once: a refusal must cost next
/// to nothing, and finding a metric by name costs more than recording.
///
/// The limiter's own state (requests in flight, the limit, whether a queue
/// stands) is read off it when `/metrics` is scraped, not kept twice.
struct GateMetrics {
    queue_delay: metrics::Histogram,
    /// `switchboard_grpc_shed_total`, by RPC: over the limit, and queued
    /// too long.
    shed: Vec<(&'static str, metrics::Counter, metrics::Counter)>,
}

impl GateMetrics {
    fn new() -> Self {
        let shed = Rpc::VARIANTS
            .iter()
            .map(|&rpc| {
                let counter = |reason: ShedReason| {
                    metrics::counter!(
                        "switchboard_grpc_shed_total",
                        "rpc" => rpc,
                        "reason" => <&str>::from(reason)
                    )
                };
                (
                    rpc,
                    counter(ShedReason::Concurrency),
                    counter(ShedReason::QueueDelay),
                )
            })
            .collect();
        Self {
            queue_delay: metrics::histogram!("switchboard_grpc_queue_delay_seconds"),
            shed,
        }
    }

    /// Counts a request to `method` refused at the gate; an unknown
    /// method (answered UNIMPLEMENTED when admitted) with the lookups.
    fn shed(&self, method: &str, reason: ShedReason) {
        let named = |name: &str| self.shed.iter().find(|(rpc, ..)| *rpc == name);
        let Some((_, concurrency, queue_delay)) =
            named(method).or_else(|| named(<&str>::from(Rpc::LookupNumber)))
        else {
            return;
        };
        match reason {
            ShedReason::Concurrency => concurrency.increment(1),
            ShedReason::QueueDelay => queue_delay.increment(1),
        }
    }
}

impl GateLayer {
    pub fn new(limiter: Arc<Limiter>, refusal: Refusal) -> Self {
        let metrics = GateMetrics::new();
        let (parts, ()) = tonic::Status::from(RouteError::Overloaded)
            .into_http::<()>()
            .into_parts();
        Self {
            limiter,
            refusal,
            refused: Arc::new(parts.headers),
            metrics: Arc::new(metrics),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

/// Admits a routing request under the limit, or refuses it at once.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

/// `RST_STREAM(REFUSED_STREAM)`: hyper resets a stream with the HTTP/2
/// reason it finds in its service's error.
#[derive(Debug, thiserror::Error)]
#[error("refused: overloaded")]
struct Refused(#[source] h2::Error);

impl<S, B> Service<Request<B>> for Gate<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Error: Into<tower::BoxError>,
    B: Body + Unpin + Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let stamp = ACCEPTED.try_with(|accepted| accepted.stamp).ok();
        if stamp.is_some_and(|stamp| stamp.refused.is_none()) {
            // its task was spawned, and runs now
            self.layer.limiter.running();
        }
        let path = request.uri().path();
        let Some(method) = path.strip_prefix(GATED_PREFIX) else {
            return GateFuture::Ungated {
                inner: self.inner.call(request),
            };
        };
        let layer = &self.layer;
        let limiter = &layer.limiter;
        let now = Instant::now();
        let accepted = stamp.unwrap_or(Stamp {
            at: now,
            spawned: now,
            refused: None,
        });
        let refused = if accepted.refused.is_some() {
            // refused as it was accepted: it did not queue, and says
            // nothing about the queue
            accepted.refused
        } else {
            // The runtime's queue is what the limiter watches and the
            // target bounds: refusals drain it. The socket's wait counts
            // only against the whole budget: under a flood of clients that
            // send again the moment they are refused, every request waits
            // in the socket behind the others' refusals, and a target on
            // that wait would refuse them all.
            let queued = now.saturating_duration_since(accepted.spawned);
            let waited = now.saturating_duration_since(accepted.at);
            layer.metrics.queue_delay.record(waited.as_secs_f64());
            limiter.observe(queued, now);
            if queued > limiter.max_queue_delay() || waited > limiter.budget() {
                Some(ShedReason::QueueDelay)
            } else if !limiter.try_acquire() {
                Some(ShedReason::Concurrency)
            } else {
                None
            }
        };
        if let Some(reason) = refused {
            layer.metrics.shed(method, reason);
            let answer = match layer.refusal {
                Refusal::Status => {
                    let mut response = Response::new(tonic::body::Body::empty());
                    *response.headers_mut() = HeaderMap::clone(&layer.refused);
                    Ok(response)
                }
                Refusal::Reset => Err(Refused(h2::Reason::REFUSED_STREAM.into()).into()),
            };
            // the rest of the request, read before the stream is let go;
            // it has nearly always arrived
            let mut unread = Unread::new(request.into_body());
            let mut here = Context::from_waker(Waker::noop());
            if Pin::new(&mut unread).poll(&mut here).is_pending() {
                let _ = ACCEPTED.try_with(move |accepted| accepted.drain.hand_over(unread));
            }
            return GateFuture::Refused {
                answer: Some(answer),
            };
        }
        let permit = Permit(limiter.clone());
        request.extensions_mut().insert(Arrival(accepted.at));
        GateFuture::Admitted {
            inner: self.inner.call(request),
            _permit: permit,
        }
    }
}

/// A slot under the limit, given back when the answer is ready or the
/// request is dropped (its client gave up).
struct Permit(Arc<Limiter>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

pin_project_lite::pin_project! {
    /// The gate's answer: the service's, holding its slot, or a refusal.
    #[project = GateProj]
    pub enum GateFuture<F> {
        Admitted { #[pin] inner: F, _permit: Permit },
        Ungated { #[pin] inner: F },
        Refused { answer: Option<Result<Response<tonic::body::Body>, tower::BoxError>> },
    }
}

impl<F, E> Future for GateFuture<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>>,
    E: Into<tower::BoxError>,
{
    type Output = Result<Response<tonic::body::Body>, tower::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GateProj::Admitted { inner, .. } | GateProj::Ungated { inner } => {
                inner.poll(cx).map_err(Into::into)
            }
            GateProj::Refused { answer } => Poll::Ready(
                answer
                    .take()
                    .unwrap_or_else(|| Err("polled after completion".into())),
            ),
        }
    }
}
