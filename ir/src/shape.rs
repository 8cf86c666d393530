//! Shape arithmetic shared by the ops: broadcasting, axis normalization and index maps.

use crate::types::Dim;

/// Numpy-style broadcast of two symbolic shapes (aligned on the right; a static 1 stretches).
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.len()).checked_sub(rank).map(|j| &a[j]);
        let db = (i + b.len()).checked_sub(rank).map(|j| &b[j]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if x.is_one() => y.clone(),
            (Some(x), Some(y)) if y.is_one() => x.clone(),
            (Some(x), Some(y)) => {
                return Err(format!(
                    "dimensions {x} and {y} do not broadcast (axis {i} of the result)"
                ));
            }
            (None, None) => Dim::Static(1),
        };
        out.push(d);
    }
    Ok(out)
}

/// Numpy-style broadcast of two concrete shapes.
pub fn broadcast_concrete(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let da: Vec<Dim> = a.iter().map(|&d| Dim::Static(d as u64)).collect();
    let db: Vec<Dim> = b.iter().map(|&d| Dim::Static(d as u64)).collect();
    Ok(broadcast(&da, &db)?
        .iter()
        .map(|d| d.as_static().unwrap_or(1) as usize)
        .collect())
}

/// For each element of `out_shape` (row-major), the index of the element of a tensor of `in_shape`
/// that broadcasts to it. `in_shape` must broadcast to `out_shape`.
pub fn broadcast_index_map(out_shape: &[usize], in_shape: &[usize]) -> Vec<usize> {
    let total: usize = out_shape.iter().product();
    let in_total: usize = in_shape.iter().product();
    // The common cases first: the same shape (identity) and one element (all zeros).
    if in_total == total
        && in_shape
            .iter()
            .filter(|&&d| d != 1)
            .eq(out_shape.iter().filter(|&&d| d != 1))
    {
        return (0..total).collect();
    }
    if in_total == 1 {
        return vec![0; total];
    }
    let rank = out_shape.len();
    let offset = rank - in_shape.len().min(rank);
    let in_strides = crate::tensor::strides(in_shape);
    // The input stride of each output axis (0 where the input is broadcast along it).
    let stride: Vec<usize> = (0..rank)
        .map(|k| {
            k.checked_sub(offset)
                .filter(|&j| in_shape[j] != 1)
                .map_or(0, |j| in_strides[j])
        })
        .collect();
    let mut map = Vec::with_capacity(total);
    let Some((&last, outer_shape)) = out_shape.split_last() else {
        return vec![0; total];
    };
    let last_stride = stride[rank - 1];
    let mut idx = vec![0usize; rank - 1];
    let rows = total.checked_div(last).unwrap_or(0);
    for _ in 0..rows {
        let base: usize = idx.iter().zip(&stride).map(|(i, s)| i * s).sum();
        map.extend((0..last).map(|i| base + i * last_stride));
        for k in (0..outer_shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < outer_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    map
}

/// Maps a possibly negative axis into `0..rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Normalizes a list of axes, rejecting duplicates.
pub fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank)?;
        if out.contains(&n) {
            return Err(format!("axis {a} appears twice"));
        }
        out.push(n);
    }
    Ok(out)
}

/// True if two symbolic shapes certainly have the same number of elements: the products of their
/// static dims are equal and they use the same symbols the same number of times.
pub fn same_numel(a: &[Dim], b: &[Dim]) -> bool {
    fn split(d: &[Dim]) -> (Option<u64>, Vec<&str>) {
        let mut prod = Some(1u64);
        let mut syms = Vec::new();
        for x in d {
            match x {
                Dim::Static(n) => prod = prod.and_then(|p| p.checked_mul(*n)),
                Dim::Sym(s) => syms.push(s.as_str()),
            }
        }
        syms.sort_unstable();
        (prod, syms)
    }
    let (pa, sa) = split(a);
    let (pb, sb) = split(b);
    pa.is_some() && pa == pb && (sa == sb || pa == Some(0))
}

/// Iterates over all multi-indices of `shape` in row-major order, calling `f` with each.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..total {
        f(&idx);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

#[cfg(test)]
mod broadcast_tests {
    use super::broadcast_index_map;

    /// The definition: each output index, its trailing axes matched to the input's, broadcast axes
    /// read at 0.
    fn naive(out_shape: &[usize], in_shape: &[usize]) -> Vec<usize> {
        let rank = out_shape.len();
        let offset = rank - in_shape.len();
        let strides = crate::tensor::strides(in_shape);
        let mut map = Vec::new();
        super::for_each_index(out_shape, |idx| {
            let src = (offset..rank)
                .filter(|&k| in_shape[k - offset] != 1)
                .map(|k| idx[k] * strides[k - offset])
                .sum();
            map.push(src);
        });
        map
    }

    #[test]
    fn the_fast_paths_give_the_definition() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[3, 4], &[3, 4]),
            (&[3, 4], &[4]),
            (&[3, 4], &[3, 1]),
            (&[3, 4], &[1]),
            (&[3, 4], &[]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 3, 4], &[2, 1, 4]),
            (&[2, 1, 4], &[1, 1, 4]),
            (&[1, 5], &[5]),
            (&[5, 1], &[5, 1]),
            (&[], &[]),
            (&[0, 3], &[3]),
        ];
        for (out, inp) in cases {
            assert_eq!(
                broadcast_index_map(out, inp),
                naive(out, inp),
                "{out:?} <- {inp:?}"
            );
        }
    }
}
