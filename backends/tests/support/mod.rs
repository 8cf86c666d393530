//! Harness shared by the kernel tests: deterministic random data, uneven row splits, a launcher that
//! checks no row outside the computed ranges was written, and bitwise comparison.

#![allow(dead_code)] // Each test binary uses a different subset.

use bitnet_runtime::KernelFn;

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)]
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// A value of varied magnitude, sometimes ±0.
    pub fn value(&mut self) -> f32 {
        match self.next() % 64 {
            0 => 0.0,
            1 => -0.0,
            _ => self.unit() * 2f32.powi(self.range(0, 8) as i32 - 4),
        }
    }
    pub fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

/// Row ranges covering `0..rows`: 1–3 uneven pieces (some possibly empty), in shuffled order.
pub fn splits(rng: &mut Rng, rows: usize) -> Vec<(usize, usize)> {
    let pieces = rng.range(1, 3);
    let mut cuts: Vec<usize> = (1..pieces).map(|_| rng.range(0, rows)).collect();
    cuts.sort_unstable();
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(rows);
    let mut ranges: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    for i in (1..ranges.len()).rev() {
        let j = rng.range(0, i);
        ranges.swap(i, j);
    }
    ranges
}

/// An output buffer to watch: its elements and, for each element, the row that writes it.
pub struct Watch<'a> {
    /// The buffer.
    pub data: *const f32,
    /// Its length in f32.
    pub len: usize,
    /// The row that writes each element.
    pub owner: &'a dyn Fn(usize) -> Option<usize>,
}

/// Calls `f` on `ranges` in order; after each call, checks that every watched element whose row has
/// not been computed yet is unchanged.
pub fn launch(
    f: KernelFn,
    bufs: &[*mut u8],
    scalars: [i64; 2],
    rows: usize,
    ranges: &[(usize, usize)],
    watch: &[Watch],
) {
    let before: Vec<Vec<u32>> = watch
        .iter()
        .map(|w| {
            // SAFETY: the caller's buffer of `len` f32.
            unsafe { std::slice::from_raw_parts(w.data, w.len) }
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect();
    let mut done = vec![false; rows];
    for &(b, e) in ranges {
        // SAFETY: the buffers match the kernel's documented layout for these scalars.
        unsafe { f(bufs.as_ptr(), scalars.as_ptr(), b as i64, e as i64) };
        done[b..e].iter_mut().for_each(|d| *d = true);
        for (w, old) in watch.iter().zip(&before) {
            // SAFETY: as above.
            let now = unsafe { std::slice::from_raw_parts(w.data, w.len) };
            for (i, (x, &o)) in now.iter().zip(old).enumerate() {
                if (w.owner)(i).is_none_or(|r| !done[r]) {
                    assert_eq!(
                        x.to_bits(),
                        o,
                        "element {i} changed though its row was not computed"
                    );
                }
            }
        }
    }
}

/// Bitwise equality (any NaN equals any NaN).
pub fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {i}: kernel {g:e} ({:#010x}) vs interpreter {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}
