//! What the machine can do, measured: memory read bandwidth (the ceiling of a decode step that
//! streams every weight once) and the process's peak resident memory.

use std::time::Instant;

/// Read bandwidth in bytes per second: `threads` threads each sum their share of a `bytes` buffer,
/// `rounds` times; the fastest round counts. The buffer is written first, so its pages are resident.
pub fn read_bandwidth(bytes: usize, threads: usize, rounds: usize) -> f64 {
    let words = (bytes / 8).max(threads.max(1) * 64);
    let buf: Vec<u64> = (0..words as u64).collect();
    let threads = threads.max(1);
    let chunk = words.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| s.spawn(move || sum_words(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        best = best.min(start.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    (words * 8) as f64 / best
}

/// Sums words with eight independent accumulators (so the loads, not the adds, set the pace).
fn sum_words(part: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut blocks = part.chunks_exact(8);
    for b in &mut blocks {
        for (a, x) in acc.iter_mut().zip(b) {
            *a = a.wrapping_add(*x);
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(0u64, |a, x| a.wrapping_add(*x));
    acc.iter().fold(tail, |a, x| a.wrapping_add(*x))
}

/// The process's peak resident memory in bytes (`VmHWM`), where the OS reports it (Linux).
pub fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// The process's resident memory in bytes now (`VmRSS`), where the OS reports it (Linux).
pub fn current_rss() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// Resets the peak resident memory to the current one (Linux `clear_refs` 5); false where that
/// is not possible, in which case `peak_rss` stays the peak since the process started.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_every_word() {
        let v: Vec<u64> = (1..=21).collect();
        assert_eq!(super::sum_words(&v), 231);
        assert!(super::read_bandwidth(1 << 20, 2, 1) > 0.0);
    }
}
