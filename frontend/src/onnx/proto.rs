//! The ONNX protobuf messages, generated at build time by prost from the vendored `onnx.proto`
//! (onnx 1.23.2, IR version 13).

#![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

/// The trait that encodes and decodes these messages (re-exported so that users of the types need
/// no direct dependency on prost).
pub use prost::Message;
