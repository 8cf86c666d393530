//! What the micro-kernels' unit tests share: a deterministic generator of test data and the bit
//! patterns that "the same results bit for bit" compares.

/// Xorshift64 from `seed` (non-zero): the same sequence on every run and machine.
pub(super) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// The bit patterns of `v`, so that −0.0 and 0.0 (or two NaNs) are told apart.
pub(super) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
