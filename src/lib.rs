//! Switchboard: the call-routing daemon of a multi-tenant voice-AI platform.
//!
//! A gateway asks over gRPC "this number was called by that number — which
//! organization, which agent, may the call go ahead?". A request goes:
//!
//! ```text
//! api (tonic: proto ⇄ domain, deadline, status mapping)
//!   └▶ routing::Router (normalize to E.164 → resolve → check active → admit → record)
//!        ├▶ routing::RouteCache (L1) → store::redis::RedisTier (L2) → store::PgStore (L3)
//!        ├▶ admission::Admission: per-org concurrency leases in Redis
//!        └▶ recorder::Recorder: queue → batcher → PostgreSQL, or the spool on disk
//! ```
//!
//! Modules:
//! * [`app`]: builds and runs the daemon (listeners, servers, shutdown);
//! * [`api`]: the gRPC service and the one error → status mapping;
//! * [`domain`]: the vocabulary, importing nothing else from the crate:
//!   `E164`, `Route` and its parts, the `Resolver` and `Directory` traits,
//!   the events the recorder writes;
//! * [`routing`]: the `Router` service and the route cache in front of the
//!   store;
//! * [`admission`]: concurrent-call limits as leases in Redis;
//! * [`recorder`]: call records and usage, written behind the call, spooled
//!   to disk while PostgreSQL is away;
//! * [`store`]: every SQL statement (pooled reads, batched writes,
//!   migrations, seed data), how PostgreSQL connections are opened (TLS by
//!   libpq's `sslmode`), the route cache's Redis commands and the one Redis
//!   connection it shares with admission;
//! * [`admin`]: `/metrics`, `/livez`, `/readyz`;
//! * [`config`], [`telemetry`], [`shutdown`], [`client`] (the CLI client).
//!
//! Invariants:
//! * SQL lives only in `store`; on the pooled path only unnamed, typed
//!   statements (`query_typed`), because a transaction-mode pooler does not
//!   keep prepared statements.
//! * Every wait is bounded (pool checkout, connect, query, request, shutdown).
//! * Internal error detail is logged, never sent to the gateway.

pub mod admin;
pub mod admission;
pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod domain;
pub mod invalidation;
pub mod proto;
pub mod recorder;
pub mod routing;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use app::Application;
