//! Integration tests: one binary, real PostgreSQL, real PgBouncer in
//! transaction mode, the daemon in-process on port 0. See `helpers`.

mod helpers;

mod admin;
mod adoption;
mod cache;
mod cli;
mod failures;
mod grpc_surface;
mod migrations;
mod pooler;
mod routing;
