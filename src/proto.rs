//! Generated protobuf types and gRPC stubs for `switchboard.v1` (built into
//! `OUT_DIR` by `build.rs` from `proto/switchboard/v1/router.proto`), and the
//! encoded descriptors served by gRPC reflection.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("switchboard.v1");

/// Encoded `FileDescriptorSet` of `switchboard.v1` and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchboard_descriptor.bin"));
