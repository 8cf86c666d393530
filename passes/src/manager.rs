//! The pass manager: runs passes in order, verifies after each one (when asked: always in debug builds
//! and tests), times them, and keeps the IR printed after the passes the user asked to see.

use crate::Pass;
use bitnet_ir::diagnostic::render_all;
use bitnet_ir::{Diagnostic, MemoryWeights, Module, WeightStore, text, verify};
use std::time::{Duration, Instant};

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A pipeline named passes that do not exist.
    #[error("unknown pass(es) {names:?}; known passes: {known}")]
    UnknownPass {
        /// The unknown names.
        names: Vec<String>,
        /// The known names.
        known: String,
    },
    /// A pass produced IR that does not verify: a compiler bug.
    #[error("internal error: the IR does not verify after pass `{pass}`:\n{rendered}")]
    Invalid {
        /// The pass.
        pass: &'static str,
        /// The diagnostics.
        diagnostics: Vec<Diagnostic>,
        /// The diagnostics rendered against the printed IR.
        rendered: String,
    },
    /// A pass could not do its work (for example a weight it must read is missing).
    #[error("pass `{pass}`: {message}")]
    Failed {
        /// The pass.
        pass: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Which passes to print the IR after.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PrintAfter {
    /// None.
    #[default]
    None,
    /// The passes with these names.
    Passes(Vec<String>),
    /// Every pass.
    All,
}

/// What the passes read and write besides the module.
pub struct PassContext<'a> {
    /// The model's weights, read-only, for passes that must look at values (is this constant ternary?).
    pub weights: Option<&'a dyn WeightStore>,
    /// Weights the passes derive (ternarized master weights, packed layouts), by name. The weights a
    /// module refers to are `weights` overlaid with these.
    pub derived: MemoryWeights,
    /// Human-readable notes: e-graph stop reasons, and per lowered layer the rules that fired.
    pub notes: Vec<String>,
    /// Record which rules fired for each lowered layer (`--explain`).
    pub explain: bool,
    /// The packed weight layout `pack-weights` produces (a backend sets its kernel's layout).
    pub pack_layout: crate::pack_weights::PackLayout,
    /// The memory plans `plan-memory` made, one per function.
    pub plans: Vec<crate::plan_memory::MemoryPlan>,
}

impl<'a> PassContext<'a> {
    /// A context over `weights` (or none).
    pub fn new(weights: Option<&'a dyn WeightStore>) -> Self {
        PassContext {
            weights,
            derived: MemoryWeights::default(),
            notes: Vec::new(),
            explain: false,
            pack_layout: crate::pack_weights::PackLayout::DEFAULT,
            plans: Vec::new(),
        }
    }
}

/// The weights a module refers to after passes ran: the derived ones over the model's own.
pub struct Overlay<'a> {
    /// Weights derived by passes.
    pub derived: &'a MemoryWeights,
    /// The model's weights.
    pub base: Option<&'a dyn WeightStore>,
}

impl WeightStore for Overlay<'_> {
    fn describe(&self) -> String {
        match self.base {
            Some(b) => format!("{} (with weights derived by passes)", b.describe()),
            None => "the weights derived by passes".into(),
        }
    }

    fn load(
        &self,
        name: &str,
        elem: bitnet_ir::ElemType,
        shape: &[usize],
    ) -> Result<bitnet_ir::Tensor, bitnet_ir::WeightError> {
        if self.derived.contains(name) {
            return self.derived.load_via(self, name, elem, shape);
        }
        match self.base {
            Some(b) => b.load(name, elem, shape),
            None => Err(bitnet_ir::WeightError::Missing {
                name: name.to_string(),
                store: self.describe(),
            }),
        }
    }

    fn visit_stored(&self, name: &str, f: &mut dyn FnMut(bitnet_ir::ElemType, &[u8])) -> bool {
        !self.derived.contains(name) && self.base.is_some_and(|b| b.visit_stored(name, f))
    }

    fn stored_file(&self, name: &str) -> Option<bitnet_ir::StoredFile> {
        if self.derived.contains(name) {
            return None;
        }
        self.base.and_then(|b| b.stored_file(name))
    }
}

impl PassContext<'_> {
    /// The weights the module refers to now.
    pub fn weights_after(&self) -> Overlay<'_> {
        Overlay {
            derived: &self.derived,
            base: self.weights,
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassRun {
    /// The pass.
    pub name: &'static str,
    /// Whether it changed the module.
    pub changed: bool,
    /// How long it took.
    pub elapsed: Duration,
    /// The IR after it, if it was asked for.
    pub ir_after: Option<String>,
}

/// Runs a pipeline.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    /// Verify after every pass (default: on in debug builds).
    pub verify_each: bool,
    /// Which passes to print the IR after.
    pub print_after: PrintAfter,
}

impl PassManager {
    /// A manager for `passes`.
    pub fn new(passes: Vec<Box<dyn Pass>>) -> Self {
        PassManager {
            passes,
            verify_each: cfg!(debug_assertions),
            print_after: PrintAfter::None,
        }
    }

    /// The pass names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass on `module`.
    pub fn run(
        &self,
        module: &mut Module,
        cx: &mut PassContext,
    ) -> Result<Vec<PassRun>, PassError> {
        let mut runs = Vec::with_capacity(self.passes.len());
        for pass in &self.passes {
            let start = Instant::now();
            let changed = pass.run(module, cx)?;
            let elapsed = start.elapsed();
            if self.verify_each {
                let diagnostics = verify::verify_module(module);
                if !diagnostics.is_empty() {
                    let printed = text::print_module(module);
                    let rendered = render_all(&diagnostics, "<ir>", Some(&printed));
                    return Err(PassError::Invalid {
                        pass: pass.name(),
                        diagnostics,
                        rendered,
                    });
                }
            }
            let print = match &self.print_after {
                PrintAfter::None => false,
                PrintAfter::All => true,
                PrintAfter::Passes(names) => names.iter().any(|n| n == pass.name()),
            };
            let ir_after = print.then(|| text::print_module(module));
            runs.push(PassRun {
                name: pass.name(),
                changed,
                elapsed,
                ir_after,
            });
        }
        Ok(runs)
    }
}
