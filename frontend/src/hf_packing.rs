//! transformers' 2-bit packing of ternary weights (`pack_weights` / `unpack_weights`, formats.md §1.6):
//! a `[out, in]` ternary matrix is stored as uint8 `[R, in]` with `R = ceil(out/4)`, and
//! `W[r + k·R, c] = ((packed[r, c] >> 2k) & 3) − 1` for `k = 0..3` (code `t + 1`; code 3 is never
//! written and is rejected here).

/// Unpacks `packed` (`rows_packed × cols` bytes) into `out × cols` ternary values.
/// The error names the first invalid position.
pub fn unpack(
    packed: &[u8],
    rows_packed: usize,
    cols: usize,
    out: usize,
) -> Result<Vec<i8>, String> {
    if rows_packed != out.div_ceil(4) {
        return Err(format!(
            "{rows_packed} packed rows cannot hold {out} ternary rows (expected {})",
            out.div_ceil(4)
        ));
    }
    if Some(packed.len()) != rows_packed.checked_mul(cols) {
        return Err(format!(
            "{} bytes for a [{rows_packed}, {cols}] packed tensor",
            packed.len()
        ));
    }
    let mut w = vec![0i8; out * cols];
    for row in 0..out {
        let (r, k) = (row % rows_packed, row / rows_packed);
        for c in 0..cols {
            let code = (packed[r * cols + c] >> (2 * k)) & 3;
            if code == 3 {
                return Err(format!(
                    "invalid 2-bit code 3 at packed [{r}, {c}] (bits {}..{})",
                    2 * k,
                    2 * k + 1
                ));
            }
            w[row * cols + c] = code as i8 - 1;
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docstring_example() {
        // transformers' docstring: byte 0b10100001 at [0][0] decodes to 0, -1, +1, +1 for rows 0, R, 2R, 3R.
        let w = unpack(&[0b1010_0001], 1, 1, 4).unwrap();
        assert_eq!(w, vec![0, -1, 1, 1]);
    }

    #[test]
    fn rejects_code_3_and_bad_sizes() {
        assert!(unpack(&[0b11], 1, 1, 4).unwrap_err().contains("code 3"));
        assert!(unpack(&[0; 3], 1, 4, 4).is_err());
        assert!(unpack(&[0; 4], 2, 2, 4).is_err());
    }
}
