//! bitnet-runtime: loads artifacts and runs them (executor, sessions, KV cache, sampling,
//! tokenizer, audit log). It depends on no compiler crate.
//!
//! Empty until the CPU backend issue lands; see DESIGN.md.
