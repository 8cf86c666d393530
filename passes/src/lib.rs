//! bitnet-passes: the pass manager and the passes that turn `nn.*` IR into planned `bit.*` IR.
//!
//! A pass has a kebab-case name, runs on a whole module, reads configuration (and, when it must look
//! at weight values, a read-only weight store) from the `PassContext`, does no I/O, and reports whether
//! it changed anything. `PassManager` runs a pipeline, verifying after every pass in debug builds and
//! tests, timing each pass, and keeping the IR after the passes asked for.

pub mod bitlang;
pub mod canonicalize;
pub mod cost;
pub mod dense_baseline;
pub mod differentiate;
pub mod fuse_norm_quant;
pub mod fuse_relu2_mul;
pub mod fuse_residual;
pub mod fuse_silu_mul;
mod gated_product;
pub mod lower_bitlinear;
pub mod manager;
pub mod pack_weights;
pub mod plan_memory;
pub mod rules;

pub use manager::{Overlay, PassContext, PassError, PassManager, PassRun, PrintAfter};

use bitnet_ir::Module;

/// One transformation of a module.
pub trait Pass {
    /// The kebab-case name used in pipelines (`-p canonicalize,lower-bitlinear`).
    fn name(&self) -> &'static str;

    /// One line saying what the pass does.
    fn summary(&self) -> &'static str;

    /// Runs the pass; returns whether the module changed.
    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError>;
}

/// Runs a fusion over every function (`fuse` returns how many it fused), notes the count as
/// `<pass> @<function>: fused <n> <what>` and deletes the ops the fusion left dead.
pub(crate) fn fuse_each_function(
    module: &mut Module,
    cx: &mut PassContext,
    pass: &str,
    what: &str,
    fuse: fn(&mut bitnet_ir::Function) -> usize,
) -> bool {
    let mut changed = false;
    for f in &mut module.functions {
        let fused = fuse(f);
        if fused > 0 {
            cx.notes
                .push(format!("{pass} @{}: fused {fused} {what}", f.name));
            f.remove_dead_ops();
            changed = true;
        }
    }
    changed
}

/// Every pass, by name.
pub fn all_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(canonicalize::Canonicalize),
        Box::new(lower_bitlinear::LowerBitLinear),
        Box::new(fuse_norm_quant::FuseNormQuant),
        Box::new(fuse_relu2_mul::FuseRelu2Mul),
        Box::new(fuse_silu_mul::FuseSiluMul),
        Box::new(fuse_residual::FuseResidual),
        Box::new(pack_weights::PackWeights),
        Box::new(dense_baseline::DenseBaseline),
        Box::new(plan_memory::PlanMemory),
        Box::new(differentiate::Differentiate),
    ]
}

/// The pass called `name`.
pub fn pass_by_name(name: &str) -> Option<Box<dyn Pass>> {
    all_passes().into_iter().find(|p| p.name() == name)
}

/// The default (`-O`) pipeline.
pub const DEFAULT_PIPELINE: &str = concat!(
    "canonicalize,lower-bitlinear,fuse-norm-quant,fuse-relu2-mul,fuse-silu-mul,",
    "fuse-residual,canonicalize"
);

/// The full-precision baseline pipeline (benchmarks only): `lower-bitlinear` finds the projections
/// and `dense-baseline` turns each back into a dense matmul on dequantized bf16 weights with
/// unquantized activations; the squared-ReLU and SiLU gates still fuse (they are f32 either way).
pub const DENSE_BASELINE_PIPELINE: &str =
    "canonicalize,lower-bitlinear,dense-baseline,fuse-relu2-mul,fuse-silu-mul,canonicalize";

/// Builds the passes of a comma-separated pipeline; the error lists the unknown names and the known ones.
pub fn parse_pipeline(spec: &str) -> Result<Vec<Box<dyn Pass>>, PassError> {
    let mut passes = Vec::new();
    let mut unknown = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match pass_by_name(name) {
            Some(p) => passes.push(p),
            None => unknown.push(name.to_string()),
        }
    }
    if !unknown.is_empty() {
        let known: Vec<&str> = all_passes().iter().map(|p| p.name()).collect();
        return Err(PassError::UnknownPass {
            names: unknown,
            known: known.join(", "),
        });
    }
    Ok(passes)
}
