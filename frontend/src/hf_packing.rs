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
    let len = out
        .checked_mul(cols)
        .ok_or_else(|| format!("[{out}, {cols}] ternary values overflow the address space"))?;
    let mut w = vec![0i8; len];
    // Row `row` is quarter `k = row / R` of packed row `r = row mod R`: one shift for the whole
    // row, and no branch per value, so the loop runs on vectors; a code 3 is looked for only once
    // the row shows one.
    for (row, dst) in w.chunks_exact_mut(cols.max(1)).enumerate() {
        let (r, k) = (row % rows_packed, row / rows_packed);
        let src = &packed[r * cols..(r + 1) * cols];
        let shift = 2 * k as u32;
        let mut invalid = false;
        for (t, &byte) in dst.iter_mut().zip(src) {
            let code = (byte >> shift) & 3;
            invalid |= code == 3;
            *t = code as i8 - 1;
        }
        if invalid {
            let c = src
                .iter()
                .position(|&byte| (byte >> shift) & 3 == 3)
                .unwrap_or_default();
            return Err(format!(
                "invalid 2-bit code 3 at packed [{r}, {c}] (bits {}..{})",
                2 * k,
                2 * k + 1
            ));
        }
    }
    Ok(w)
}

/// Packs rows `r, r + R, r + 2R, r + 3R` (`quarters`, code `t + 1` in bits `2k..2k+1`; a missing or
/// short row packs as zeros) into packed row `r`: one step of `pack`.
pub fn pack_group(quarters: &[&[i8]; 4], out: &mut [u8]) {
    for (c, byte) in out.iter_mut().enumerate() {
        *byte = quarters.iter().enumerate().fold(0u8, |b, (k, row)| {
            let code = row.get(c).map_or(1, |&t| (t + 1) as u8 & 3);
            b | (code << (2 * k))
        });
    }
}

/// Packs an `out × cols` ternary matrix into uint8 `[ceil(out/4), cols]`: the inverse of `unpack`.
/// Values outside {-1, 0, +1} are an error naming the first one.
pub fn pack(w: &[i8], out: usize, cols: usize) -> Result<Vec<u8>, String> {
    if Some(w.len()) != out.checked_mul(cols) {
        return Err(format!("{} values for a [{out}, {cols}] matrix", w.len()));
    }
    if let Some(i) = w.iter().position(|t| !(-1..=1).contains(t)) {
        return Err(format!(
            "element [{}, {}] is {}, not ternary",
            i / cols.max(1),
            i % cols.max(1),
            w[i]
        ));
    }
    let rows = out.div_ceil(4);
    let mut packed = vec![0u8; rows * cols];
    let row = |r: usize| -> &[i8] { w.get(r * cols..(r + 1) * cols).unwrap_or(&[]) };
    for (r, dst) in packed.chunks_mut(cols.max(1)).enumerate().take(rows) {
        let quarters = [row(r), row(r + rows), row(r + 2 * rows), row(r + 3 * rows)];
        pack_group(&quarters, dst);
    }
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_inverts_unpack() {
        // [7, 3]: out not a multiple of 4, every value in every quarter.
        let w: Vec<i8> = (0..21).map(|i| (i * 7 % 3) as i8 - 1).collect();
        let p = pack(&w, 7, 3).unwrap();
        assert_eq!(p.len(), 2 * 3);
        assert_eq!(unpack(&p, 2, 3, 7).unwrap(), w);
        assert!(pack(&[2], 1, 1).unwrap_err().contains("not ternary"));
    }

    #[test]
    fn docstring_example() {
        // transformers' docstring: byte 0b10100001 at [0][0] decodes to 0, -1, +1, +1 for rows 0, R, 2R, 3R.
        let w = unpack(&[0b1010_0001], 1, 1, 4).unwrap();
        assert_eq!(w, vec![0, -1, 1, 1]);
    }

    #[test]
    fn rejects_code_3_and_bad_sizes() {
        assert!(unpack(&[0b11], 1, 1, 4).unwrap_err().contains("code 3"));
        // The first code 3 is named: packed row 1, column 2, third quarter (rows 2R..3R).
        let mut p = vec![0b0101_0101u8; 2 * 3];
        p[3 + 2] = 0b0111_0101;
        assert_eq!(
            unpack(&p, 2, 3, 7).unwrap_err(),
            "invalid 2-bit code 3 at packed [1, 2] (bits 4..5)"
        );
        assert_eq!(unpack(&[], 0, 0, 0).unwrap(), Vec::<i8>::new());
        assert_eq!(unpack(&[], 1, 0, 3).unwrap(), Vec::<i8>::new());
        assert!(unpack(&[0; 3], 1, 4, 4).is_err());
        assert!(unpack(&[0; 4], 2, 2, 4).is_err());
    }
}
