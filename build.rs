//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates
//! the tonic server and client into `OUT_DIR`, together with the encoded file
//! descriptor set served by gRPC reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["proto/switchboard/v1/router.proto"];
const INCLUDES: &[&str] = &["proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // migrations are embedded by refinery at compile time
    println!("cargo:rerun-if-changed=migrations");

    let descriptors = protox::compile(PROTOS, INCLUDES)?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("switchboard_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
