//! Generates the ONNX protobuf types (`onnx.rs` in `OUT_DIR`) from the vendored
//! `src/onnx/onnx.proto` (onnx 1.23.2). protox parses the file in pure Rust, so no `protoc` binary is
//! needed; prost-build writes the Rust types from the descriptors.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let proto_dir = "src/onnx";
    let proto = "src/onnx/onnx.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile([proto], [proto_dir])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
