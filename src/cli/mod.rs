//! The commands of the `bitnetc` binary that run models, `run` and `bench`, with the progress
//! display they share and the audit log's location.

pub mod audit_log;
pub mod bench;
pub mod cuda;
pub mod progress;
pub mod run;

/// Parses `--head-dtype` (`auto`, `f16`, `i8`).
pub fn parse_head_dtype(s: &str) -> Result<bitnet_backends::cpu::HeadDtype, String> {
    bitnet_backends::cpu::HeadDtype::parse(s)
        .ok_or_else(|| format!("{s:?}: expected auto (bf16 when exact, else f32), f16 or i8"))
}
