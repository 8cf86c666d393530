//! The commands of the `bitnetc` binary, one module per command (its clap arguments, its body and
//! its audit record), and the pieces several commands share: reading `.bir` files with diagnostics
//! (`bir_file`), writing outputs (`output`), flag parsers (`flags`), the progress spinner
//! (`progress`), errors as one line (`message`), the audit log (`audit_log`) and the `--preset`
//! checkpoints (`preset`). The binary's global allocator is the library's counting one, so that
//! `profile` can count the allocations of its decode steps.

/// Counts heap allocations while `bitnetc::alloc_count::count_allocations` asks it to.
#[global_allocator]
static GLOBAL: bitnetc::alloc_count::CountingAllocator = bitnetc::alloc_count::CountingAllocator;

pub mod audit;
pub mod audit_log;
pub mod bench;
pub mod bench_batch;
#[cfg(feature = "cuda-runtime")]
pub mod bench_cuda;
pub mod bir_file;
pub mod chat;
pub mod check;
pub mod compile;
pub mod compliance;
pub mod eval;
pub mod export;
pub mod flags;
pub mod import;
pub mod inspect;
pub mod logits;
pub mod message;
pub mod opt;
pub mod output;
pub mod plan;
pub mod preset;
pub mod print;
pub mod profile;
pub mod progress;
pub mod run;
pub mod serve;
pub mod synth;
pub mod train;
pub mod validate;
