//! `bitnetc compile --profile`: named presets of the flags a build sets (docs/presets.md). A
//! profile sets `--target`, `--emit` and `--head-dtype`, so it cannot be given with them.
//!
//! - `development`: this CPU, the IR before and after the passes kept beside the artifact
//!   (`--emit ir,opt-ir`), the lm_head as the weights are (`auto`: exact);
//! - `production`: the architecture's portable target (runs on every CPU of it, not only this
//!   one), the lm_head exact;
//! - `inference`: this CPU and the int8 lm_head (the fastest head; its accuracy cost is what
//!   `bitnetc validate` measures);
//! - `training`: refused: it comes with quantization-aware training and export (issue 18).

use super::CompileArgs;
use anyhow::{Result, bail};
use bitnet_backends::cpu::HeadDtype;

/// The profiles, by name.
pub const PROFILES: &[&str] = &["development", "production", "inference", "training"];

/// The portable target of this machine's architecture.
fn portable_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

/// `args` with its profile's flags set (unchanged without one).
pub fn apply(args: &CompileArgs) -> Result<CompileArgs> {
    let mut a = args.clone();
    match args.profile.as_deref() {
        None => {}
        Some("development") => {
            a.target = "native".into();
            a.emit = vec!["ir".into(), "opt-ir".into()];
            a.precision.head_dtype = HeadDtype::Auto;
        }
        Some("production") => {
            a.target = portable_target().into();
            a.emit = Vec::new();
            a.precision.head_dtype = HeadDtype::Auto;
        }
        Some("inference") => {
            a.target = "native".into();
            a.emit = Vec::new();
            a.precision.head_dtype = HeadDtype::I8;
        }
        Some("training") => bail!(
            "--profile training: not available yet; it comes with quantization-aware training and export (issue 18)"
        ),
        Some(other) => bail!("--profile {other}: expected one of {}", PROFILES.join(", ")),
    }
    Ok(a)
}
