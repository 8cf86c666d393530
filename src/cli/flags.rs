//! Value parsers for the flags several commands share.

/// Parses `--head-dtype` (`auto`, `f16`, `i8`).
pub fn parse_head_dtype(s: &str) -> Result<bitnet_backends::cpu::HeadDtype, String> {
    bitnet_backends::cpu::HeadDtype::parse(s)
        .ok_or_else(|| format!("{s:?}: expected auto (bf16 when exact, else f32), f16 or i8"))
}
