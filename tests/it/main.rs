//! Integration tests: one binary, real PostgreSQL, real PgBouncer in
//! transaction mode, the daemon in-process on port 0. See `helpers`.

// Tests and benches stop at the first surprise: unwrapping is how they say so.
#![allow(clippy::unwrap_used)]

mod helpers;

mod admin;
mod admission;
mod adoption;
mod cache;
mod callers;
mod calls;
mod case_study;
mod cli;
mod crash;
mod durability;
mod explain;
mod failures;
mod grpc_surface;
mod legacy_data;
mod migrations;
mod outage_logs;
mod overload;
mod pooler;
mod prometheus;
mod recovery;
mod routing;
mod scale_out;
mod security;
mod tls;
mod workflows;
