//! Switchboard: the call-routing daemon of a multi-tenant voice-AI platform.
//!
//! A gateway asks over gRPC "this number was called by that number — which
//! organization, which agent, may the call go ahead?". A request goes:
//!
//! ```text
//! api (tonic: proto ⇄ domain, deadline, status mapping)
//!   └▶ routing::Router (normalize to E.164 → resolve → check active → call id)
//!        └▶ routing::Resolver  ── implemented by store::PgStore
//!             └▶ PostgreSQL through a transaction-mode pooler
//! ```
//!
//! Modules:
//! * [`app`]: builds and runs the daemon (listeners, servers, shutdown);
//! * [`api`]: the gRPC service and the one error → status mapping;
//! * [`routing`]: the domain: `E164`, `Route`, `Router`, the `Resolver` trait;
//! * [`store`]: every SQL statement (pooled reads, migrations, seed data);
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
pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod invalidation;
pub mod proto;
pub mod routing;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use app::Application;
