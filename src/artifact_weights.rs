//! Reading the weights an artifact carries back as tensors, for the reference interpreter
//! (`bitnetc logits --backend interp` on a `.bnx`): the weight index says where each weight is, and
//! weights the CPU backend stored in its paired row layout are put back in index order.

use bitnet_ir::{Data, ElemType, Tensor};
use std::path::PathBuf;

/// The weights of an artifact, read through its weight index (`bitnet_runtime::artifact::read_ir`).
pub struct ArtifactWeights {
    /// The artifact, for diagnostics.
    pub path: PathBuf,
    /// Weight name → where its bytes are in `bytes`.
    pub index: bitnet_runtime::artifact::WeightIndex,
    /// The weights section.
    pub bytes: Vec<u8>,
}

impl bitnet_ir::WeightStore for ArtifactWeights {
    fn describe(&self) -> String {
        format!("{} (weights section)", self.path.display())
    }

    fn load(
        &self,
        name: &str,
        elem: ElemType,
        shape: &[usize],
    ) -> Result<Tensor, bitnet_ir::WeightError> {
        let read = |reason: String| bitnet_ir::WeightError::Read {
            name: name.to_string(),
            store: self.describe(),
            reason,
        };
        let w = self
            .index
            .get(name)
            .ok_or_else(|| bitnet_ir::WeightError::Missing {
                name: name.to_string(),
                store: self.describe(),
            })?;
        let stored = ElemType::from_name(&w.elem)
            .ok_or_else(|| read(format!("unknown element type {:?}", w.elem)))?;
        let range = usize::try_from(w.offset)
            .ok()
            .zip(usize::try_from(w.offset.saturating_add(w.bytes)).ok())
            .and_then(|(start, end)| self.bytes.get(start..end))
            .ok_or_else(|| read("outside the weights section".into()))?;
        let unpaired;
        let range = match w.layout.as_deref() {
            None => range,
            Some(bitnet_runtime::artifact::PAIRED_LAYOUT) => {
                let k = w.shape.last().map_or(1, |&k| k.max(1) as usize);
                unpaired = unpair_rows(range, k, stored.bits().div_ceil(8).max(1) as usize)
                    .ok_or_else(|| read("paired rows are not whole rows".into()))?;
                &unpaired[..]
            }
            Some(other) => return Err(read(format!("unknown layout {other:?}"))),
        };
        let data = Data::from_le_bytes(stored, range)
            .ok_or_else(|| read(format!("{} bytes are not whole {stored} elements", w.bytes)))?;
        let stored_shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
        let tensor = Tensor::new(stored_shape, data)
            .ok_or_else(|| read(format!("{} bytes do not hold shape {:?}", w.bytes, w.shape)))?;
        bitnet_ir::weights::finish_load(self, name, tensor, elem, shape)
    }
}

/// Rows of `k` elements of `size` bytes from `matmul_half::layout` order (per group of eight,
/// elements l and 4 + l side by side, then the last `k mod 8` in order) back to index order.
fn unpair_rows(bytes: &[u8], k: usize, size: usize) -> Option<Vec<u8>> {
    let row = k.checked_mul(size)?;
    if row == 0 || !bytes.len().is_multiple_of(row) {
        return None;
    }
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
        for g in 0..k / 8 {
            for i in 0..8 {
                // Stored position i of the group holds element i / 2 (even i) or 4 + i / 2.
                let e = if i % 2 == 0 { i / 2 } else { 4 + i / 2 };
                let (s, d) = ((g * 8 + i) * size, (g * 8 + e) * size);
                dst.get_mut(d..d + size)?
                    .copy_from_slice(src.get(s..s + size)?);
            }
        }
        let tail = k / 8 * 8 * size;
        dst.get_mut(tail..)?.copy_from_slice(src.get(tail..)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    /// `unpair_rows` undoes the CPU backend's paired row order, for row lengths around 8.
    #[test]
    fn unpair_rows_inverts_the_paired_layout() {
        for k in [1usize, 7, 8, 9, 16, 21] {
            let w: Vec<f32> = (0..3 * k)
                .map(|i| f32::from_bits((i as u32 + 1) << 16))
                .collect();
            let paired = bitnet_backends::kernel::layout::layout_exact(
                &w,
                k,
                bitnet_backends::kernel::HalfFormat::Bf16,
            )
            .unwrap();
            let bytes: Vec<u8> = paired.iter().flat_map(|h| h.to_le_bytes()).collect();
            let back = super::unpair_rows(&bytes, k, 2).unwrap();
            let want: Vec<u8> = w
                .iter()
                .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
                .collect();
            assert_eq!(back, want, "k {k}");
        }
    }
}
