//! bitnet-serve: an OpenAI-compatible HTTP server over compiled models (`bitnetc serve`).
//!
//! The server (`server`) binds, answers `/health` while it loads the models, then serves
//! `/v1/chat/completions`, `/v1/completions`, `/v1/models` and `/metrics` (`api`). Each model has
//! an engine (`engine`): one thread driving a fixed set of slots, each a sibling executor over the
//! same compiled program with its own KV cache, one token per slot per step, prompts fed in
//! chunks, requests waiting in a bounded queue. A request's tokens do not depend on what else runs.
//!
//! The gateway under `/v1/bitnetc/` (`api::models`, `api::jobs`, `api::audit`) lists, inspects,
//! loads and unloads models at run time (`loading`), runs compile jobs (`jobs`), and reads and
//! verifies the audit log (`audit`), which records every request, load, unload and compile.
//!
//! The crate depends on the runtime only: the caller loads or compiles the models (`Loader` for
//! those given at start, a `Toolchain` for the gateway's), so the server runs artifacts without
//! the compiler.

pub mod api;
pub mod audit;
pub mod chat_prompt;
pub mod engine;
pub mod error;
pub mod jobs;
pub mod loading;
pub mod metrics;
pub mod server;
pub mod state;
pub mod toolchain;

pub use engine::{Feed, SlotBatch, StepModel, StepOut};
pub use error::{ApiError, ServeError};
pub use server::{GatewayConfig, ServeConfig, Server};
pub use state::Phase;
pub use toolchain::{
    CompileRequest, Compiled, ComplianceRequest, LoadedModel, Loader, ModelInfo, ModelSource,
    ProfileRequest, Toolchain, ValidateRequest, write_new_atomic, write_new_atomic_with,
};
