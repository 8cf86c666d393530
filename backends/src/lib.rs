//! bitnet-backends: code generators that turn a planned module into a `Program`
//! (Cranelift for CPUs; LLVM NVPTX for CUDA behind the `cuda` feature).
//!
//! Empty until the CPU backend issue lands; see DESIGN.md.
