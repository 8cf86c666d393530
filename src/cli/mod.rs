//! The commands of the `bitnetc` binary, one module per command (its clap arguments, its body and
//! its audit record), and the pieces several commands share: reading `.bir` files with diagnostics
//! (`bir_file`), writing outputs (`output`), flag parsers (`flags`), the progress spinner
//! (`progress`) and the audit log (`audit_log`).

pub mod audit;
pub mod audit_log;
pub mod bench;
pub mod bench_batch;
pub mod bir_file;
pub mod chat;
pub mod check;
pub mod compile;
pub mod eval;
pub mod flags;
pub mod import;
pub mod inspect;
pub mod logits;
pub mod opt;
pub mod output;
pub mod plan;
pub mod print;
pub mod progress;
pub mod run;
pub mod serve;
pub mod synth;
pub mod validate;
