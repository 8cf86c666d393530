//! Running a pass pipeline on a model's IR in place, verifying after each pass, with what the passes
//! report (`bitnetc plan`, `bitnetc logits -O`, tests that look at lowered IR).

use crate::{Error, Model};

/// Which passes to run, and how.
#[derive(Clone, Debug)]
pub struct OptimizeOptions {
    /// Comma-separated pass names (default: the `-O` pipeline, `bitnet_passes::DEFAULT_PIPELINE`).
    pub pipeline: String,
    /// Record, for each lowered layer, the rewrite rules that fired (in `Optimized::notes`).
    pub explain: bool,
}

impl Default for OptimizeOptions {
    fn default() -> OptimizeOptions {
        OptimizeOptions {
            pipeline: bitnet_passes::DEFAULT_PIPELINE.to_string(),
            explain: false,
        }
    }
}

impl OptimizeOptions {
    /// The options that run `pipeline`, without explanations.
    pub fn passes(pipeline: &str) -> OptimizeOptions {
        OptimizeOptions {
            pipeline: pipeline.to_string(),
            explain: false,
        }
    }
}

/// The outcome of running a pass pipeline on a model.
pub struct Optimized {
    /// The pass runs (names, timing, whether each changed the module).
    pub runs: Vec<bitnet_passes::PassRun>,
    /// Notes from the passes (e-graph stop reasons, lowering counts, `explain` lines).
    pub notes: Vec<String>,
    /// Weights the passes derived; the module refers to them by name.
    pub derived: bitnet_ir::MemoryWeights,
    /// Memory plans, when the pipeline ran `plan-memory`.
    pub plans: Vec<bitnet_passes::plan_memory::MemoryPlan>,
}

/// Runs `options.pipeline` on `model.module` in place, verifying after each pass.
pub fn optimize(model: &mut Model, options: &OptimizeOptions) -> Result<Optimized, Error> {
    let mut pm = bitnet_passes::PassManager::new(bitnet_passes::parse_pipeline(&options.pipeline)?);
    pm.verify_each = true;
    let mut cx = bitnet_passes::PassContext::new(Some(model.weights.as_ref()));
    cx.explain = options.explain;
    let runs = pm.run(&mut model.module, &mut cx)?;
    Ok(Optimized {
        runs,
        notes: cx.notes,
        derived: cx.derived,
        plans: cx.plans,
    })
}
