//! The training loop's state and its step: a batch of random windows through the training function's
//! reverse sweep, the gradients averaged, clipped by their global norm, and AdamW applied to every
//! master weight; the held-out loss over fixed windows.
//!
//! Everything that decides a step (the weights, the moments, the sampler's state, the step number and
//! the options) is in the checkpoint, and the interpreter is deterministic, so a resumed run computes
//! exactly what an uninterrupted one does.

use crate::TrainError;
use crate::checkpoint::{self, ModelShape, TrainerState};
use crate::data::Corpus;
use crate::graph::{qat_spec, step_inputs, training_function};
use crate::optim::{AdamW, Moments, Schedule, clip};
use crate::params::{ParamInfo, Rng, initialize, param_table};
use bitnet_frontend::decoder::DecoderSpec;
use bitnet_ir::autodiff::backward_checkpointed;
use bitnet_ir::frozen::Frozen;
use bitnet_ir::tensor::Data;
use bitnet_ir::weights::{WeightError, WeightStore, load_from_map};
use bitnet_ir::{ElemType, Function, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A run's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Steps to run in all (a resumed run continues to this count).
    pub steps: u64,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup: u64,
    /// The schedule after warmup.
    pub schedule: Schedule,
    /// AdamW's hyperparameters.
    pub adamw: AdamW,
    /// The global gradient norm is clipped to this.
    pub clip: f64,
    /// Seed of the initialization and of the sampler.
    pub seed: u64,
    /// Held-out windows per evaluation.
    pub eval_windows: usize,
    /// Gradient checkpointing per decoder block: keep only each block's input during the forward
    /// pass and recompute the block's values in the reverse sweep (same gradients, less memory).
    #[serde(default)]
    pub checkpoint_blocks: bool,
    /// How a step computes its gradients (a checkpoint resumes with the engine it was made with;
    /// checkpoints made before there was a choice used the interpreter).
    #[serde(default)]
    pub engine: Engine,
}

/// The losses of a run so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// (step, mean training loss of the step's batch).
    pub train: Vec<(u64, f64)>,
    /// (step, held-out loss).
    pub heldout: Vec<(u64, f64)>,
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step's number (1-based).
    pub step: u64,
    /// The batch's mean loss before the update.
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Tokens predicted in the step.
    pub tokens: usize,
    /// The most bytes of values one sequence held at once: its forward values for the interpreter's
    /// sweep; every value the compiled step computed, cotangents included, for `Engine::Compiled`
    /// (not the weight-only values, which the windows share).
    pub peak_value_bytes: u64,
}

/// The master weights as the training function reads them (`nn.weight` by name).
struct ParamStore<'a>(&'a BTreeMap<String, Tensor>);

impl WeightStore for ParamStore<'_> {
    fn describe(&self) -> String {
        "the trained parameters".into()
    }

    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError> {
        load_from_map(self, self.0, name, elem, shape)
    }
}

/// How a step computes its gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// The reverse sweep over interpreted values, in f64 (`Trainer::sweep`).
    #[default]
    Interpreter,
    /// The step function with f32 cotangents (`Trainer::step_function`), lowered for the CPU
    /// (`bitnet_backends::cpu::step`): bit for bit that function interpreted.
    Compiled,
}

/// The training step lowered for the CPU: the step function with f32 cotangents, lowered once for
/// the run's sequence length.
pub struct CompiledStep {
    plan: bitnet_backends::cpu::step::StepPlan,
    /// Each parameter's gradient: its name and the plan's result index.
    weights: Vec<(String, usize)>,
}

impl CompiledStep {
    /// The lowered plan (for its coverage).
    pub fn plan(&self) -> &bitnet_backends::cpu::step::StepPlan {
        &self.plan
    }
}

/// One window's loss, each parameter's gradient by name, and the most bytes of values it held.
pub type WindowGradients = (f64, BTreeMap<String, Vec<f64>>, u64);

/// `WindowGradients` with each gradient in the precision its engine computes it (f64 for the
/// sweep, f32 for the compiled step), summed over the batch without a widened copy.
type EngineGradients = (f64, BTreeMap<String, Data>, u64);

/// Calls `f` on every item, the items split into up to `threads` shares of about equal weight (the
/// first of each pair), each share on its own thread.
fn for_each_share<T: Send>(threads: usize, items: Vec<(u64, T)>, f: &(dyn Fn(T) + Sync)) {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        items.into_iter().for_each(|(_, t)| f(t));
        return;
    }
    let mut shares: Vec<(u64, Vec<T>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    let mut items = items;
    items.sort_by_key(|(w, _)| std::cmp::Reverse(*w));
    for (w, t) in items {
        if let Some(s) = shares.iter_mut().min_by_key(|s| s.0) {
            s.0 += w;
            s.1.push(t);
        }
    }
    std::thread::scope(|scope| {
        for (_, share) in shares {
            scope.spawn(move || share.into_iter().for_each(f));
        }
    });
}

/// The residual stream after each decoder block (the values named `h.N`): where checkpointing cuts.
fn block_outputs(f: &Function) -> Vec<bitnet_ir::ValueId> {
    (0..f.values.len())
        .map(|i| bitnet_ir::ValueId(i as u32))
        .filter(|&v| {
            f.value(v).name.as_deref().is_some_and(|n| {
                n.strip_prefix("h.")
                    .is_some_and(|l| l.parse::<u64>().is_ok())
            })
        })
        .collect()
}

/// A run in progress.
pub struct Trainer {
    /// The model's sizes.
    pub model: ModelShape,
    /// The options.
    pub options: TrainOptions,
    /// The decoder in the `Qat` form.
    pub spec: DecoderSpec,
    /// Every parameter's shape and decay.
    pub table: BTreeMap<String, ParamInfo>,
    /// The master weights.
    pub params: BTreeMap<String, Tensor>,
    /// AdamW's moments.
    pub moments: BTreeMap<String, Moments>,
    /// Steps done.
    pub step: u64,
    /// The sampler.
    pub rng: Rng,
    /// Losses so far.
    pub history: History,
    function: Function,
    /// The residual stream after each block: where checkpointing cuts the sweep.
    block_outputs: Vec<bitnet_ir::ValueId>,
    /// Threads that sweep a batch's windows side by side (results do not depend on it).
    pub threads: usize,
    /// The compiled step, once `Engine::Compiled` has lowered it.
    compiled: Option<CompiledStep>,
    /// The training function lowered the same way, for the held-out loss.
    compiled_forward: Option<bitnet_backends::cpu::step::StepPlan>,
}

fn check_options(model: &ModelShape, o: &TrainOptions) -> Result<(), TrainError> {
    if o.seq == 0 || o.seq as u64 > model.max_positions {
        return Err(TrainError::Options(format!(
            "--seq {} must be between 1 and the model's {} positions",
            o.seq, model.max_positions
        )));
    }
    if o.batch == 0 {
        return Err(TrainError::Options("--batch must be at least 1".into()));
    }
    if !(o.lr.is_finite() && o.lr > 0.0) {
        return Err(TrainError::Options(format!(
            "--lr {} must be positive",
            o.lr
        )));
    }
    if !(o.clip.is_finite() && o.clip > 0.0) {
        return Err(TrainError::Options(format!(
            "--clip {} must be positive",
            o.clip
        )));
    }
    Ok(())
}

/// Every parameter of `table` is in `params` with its shape (`what` names the source).
fn check_params(
    table: &BTreeMap<String, ParamInfo>,
    params: &BTreeMap<String, Tensor>,
    what: &str,
) -> Result<(), TrainError> {
    for (name, info) in table {
        match params.get(name) {
            Some(t) if t.shape == info.shape => {}
            Some(t) => {
                return Err(TrainError::Options(format!(
                    "{what}'s \"{name}\" is {:?}; the model needs {:?}",
                    t.shape, info.shape
                )));
            }
            None => {
                return Err(TrainError::Options(format!("{what} has no \"{name}\"")));
            }
        }
    }
    Ok(())
}

impl Trainer {
    /// A fresh run of `model` with `options` (parameters from the seed).
    pub fn new(model: ModelShape, options: TrainOptions) -> Result<Trainer, TrainError> {
        check_options(&model, &options)?;
        let spec = qat_spec(model.decoder_config(options.seq as u64));
        let table = param_table(&spec);
        let params = initialize(&table, options.seed);
        Trainer::assemble(model, options, spec, table, params, None, 0, None)
    }

    /// A fresh run of `model` from the parameters `params` (`--init`): every parameter the training
    /// graph reads must be there with its shape.
    pub fn with_params(
        model: ModelShape,
        options: TrainOptions,
        params: BTreeMap<String, Tensor>,
    ) -> Result<Trainer, TrainError> {
        check_options(&model, &options)?;
        let spec = qat_spec(model.decoder_config(options.seq as u64));
        let table = param_table(&spec);
        check_params(&table, &params, "the initial model")?;
        Trainer::assemble(model, options, spec, table, params, None, 0, None)
    }

    /// A run continued from the checkpoint `ckpt`, to `steps` steps in all.
    pub fn resume(ckpt: checkpoint::Checkpoint, steps: u64) -> Result<Trainer, TrainError> {
        let mut options = ckpt.state.options.clone();
        options.steps = steps;
        let model = ckpt.state.model.clone();
        check_options(&model, &options)?;
        let spec = qat_spec(model.decoder_config(options.seq as u64));
        let table = param_table(&spec);
        check_params(&table, &ckpt.params, "the checkpoint")?;
        Trainer::assemble(
            model,
            options,
            spec,
            table,
            ckpt.params,
            Some(ckpt.moments),
            ckpt.state.step,
            Some((Rng(ckpt.state.rng), ckpt.state.history)),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        model: ModelShape,
        options: TrainOptions,
        spec: DecoderSpec,
        table: BTreeMap<String, ParamInfo>,
        params: BTreeMap<String, Tensor>,
        moments: Option<BTreeMap<String, Moments>>,
        step: u64,
        sampler: Option<(Rng, History)>,
    ) -> Result<Trainer, TrainError> {
        let function = training_function(&spec)?;
        let block_outputs = block_outputs(&function);
        let moments = moments.unwrap_or_else(|| {
            params
                .iter()
                .map(|(n, t)| {
                    let z = vec![0f32; t.numel()];
                    (n.clone(), Moments { m: z.clone(), v: z })
                })
                .collect()
        });
        let (rng, history) = sampler.unwrap_or_else(|| {
            (
                Rng(options.seed ^ 0xD1B5_4A32_D192_ED03),
                History::default(),
            )
        });
        Ok(Trainer {
            model,
            options,
            spec,
            table,
            params,
            moments,
            step,
            rng,
            history,
            function,
            block_outputs,
            threads: 1,
            compiled: None,
            compiled_forward: None,
        })
    }

    /// The training function (for inspection and tests).
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The loss of one window and the gradient of every parameter.
    pub fn gradients(
        &self,
        tokens: &[u32],
        targets: &[u32],
    ) -> Result<(f64, BTreeMap<String, Vec<f64>>), TrainError> {
        let g = self.sweep(tokens, targets, None)?;
        Ok((g.loss, g.weights))
    }

    /// The training function's values that depend only on the weights (each projection's
    /// absmean-ternary weights, the straight-through sums, the head's transpose), computed once for
    /// every window of a step (`bitnet_ir::frozen`).
    pub fn freeze(&self) -> Result<Frozen, TrainError> {
        Frozen::new(&self.function, &ParamStore(&self.params))
            .map_err(|e| TrainError::Graph(format!("the weights' values: {e}")))
    }

    /// The reverse sweep of one window (checkpointed per block when the options say so), taking
    /// the weight-only values from `frozen` (made by `freeze` with the current weights) when given:
    /// the same result bit for bit.
    pub fn sweep(
        &self,
        tokens: &[u32],
        targets: &[u32],
        frozen: Option<&Frozen>,
    ) -> Result<bitnet_ir::autodiff::Gradients, TrainError> {
        let inputs = step_inputs(&self.spec.config, tokens, targets)?;
        let boundaries: &[bitnet_ir::ValueId] = if self.options.checkpoint_blocks {
            &self.block_outputs
        } else {
            &[]
        };
        backward_checkpointed(
            &self.function,
            &inputs,
            &ParamStore(&self.params),
            0,
            boundaries,
            frozen,
        )
        .map_err(|e| TrainError::Graph(format!("the training step: {e}")))
    }

    /// The training step as IR: the training function's `autodiff::emit_backward_in` with
    /// cotangents of type `elem` (results: the loss, then each parameter's gradient, by name). With
    /// f64, interpreted, it gives `sweep`'s loss and gradients bit for bit; it is what a backend
    /// compiles a training step from.
    pub fn step_function(
        &self,
        elem: ElemType,
    ) -> Result<bitnet_ir::autodiff::Backward, TrainError> {
        let wrt = vec![false; self.function.args.len()];
        bitnet_ir::autodiff::emit_backward_in(&self.function, 0, &wrt, elem)
            .map_err(|e| TrainError::Graph(format!("emitting the training step: {e}")))
    }

    /// One window's loss and gradients through `step_function`'s function, interpreted.
    pub fn emitted_gradients(
        &self,
        step: &bitnet_ir::autodiff::Backward,
        tokens: &[u32],
        targets: &[u32],
    ) -> Result<(f64, BTreeMap<String, Vec<f64>>), TrainError> {
        let inputs = step_inputs(&self.spec.config, tokens, targets)?;
        let out =
            bitnet_ir::interp::run_function(&step.function, &inputs, &ParamStore(&self.params))
                .map_err(|e| TrainError::Graph(format!("the training step: {e}")))?;
        let value = |i: usize| {
            out.get(i)
                .map(|t| t.data.to_f64())
                .ok_or_else(|| TrainError::Graph(format!("internal: the step has no result {i}")))
        };
        let loss = value(0)?.first().copied().unwrap_or(f64::NAN);
        let grads = step
            .weights
            .iter()
            .map(|(n, &i)| Ok((n.clone(), value(i)?)))
            .collect::<Result<_, TrainError>>()?;
        Ok((loss, grads))
    }

    /// The training step lowered for the CPU (`Engine::Compiled`).
    pub fn compile_step(&self) -> Result<CompiledStep, TrainError> {
        let step = self.step_function(ElemType::F32)?;
        let seq = self.options.seq as u64;
        // With checkpointing, the step function's own block outputs (the same names).
        let boundaries: Vec<bitnet_ir::ValueId> = if self.options.checkpoint_blocks {
            block_outputs(&step.function)
        } else {
            Vec::new()
        };
        let plan = bitnet_backends::cpu::step::StepPlan::checkpointed(
            &step.function,
            &[("T", seq)],
            &boundaries,
        )
        .map_err(|e| TrainError::Graph(format!("compiling the training step: {e}")))?;
        Ok(CompiledStep {
            plan,
            weights: step.weights.into_iter().collect(),
        })
    }

    /// The weight-only values of `step` with the current weights (shared by a step's windows).
    pub fn freeze_compiled(&self, step: &CompiledStep) -> Result<Frozen, TrainError> {
        step.plan
            .freeze(&ParamStore(&self.params), self.threads)
            .map_err(|e| TrainError::Graph(format!("the weights' values: {e}")))
    }

    /// One window's loss and gradients through the compiled step, with `frozen` from
    /// `freeze_compiled` when given, and the most bytes of values the window held at once.
    pub fn compiled_gradients(
        &self,
        step: &CompiledStep,
        tokens: &[u32],
        targets: &[u32],
        frozen: Option<&Frozen>,
    ) -> Result<WindowGradients, TrainError> {
        let (loss, grads, peak) = self.compiled_window(step, tokens, targets, frozen)?;
        let grads = grads.into_iter().map(|(n, g)| (n, g.to_f64())).collect();
        Ok((loss, grads, peak))
    }

    /// `compiled_gradients`, each gradient as the step gives it (f32), not widened.
    fn compiled_window(
        &self,
        step: &CompiledStep,
        tokens: &[u32],
        targets: &[u32],
        frozen: Option<&Frozen>,
    ) -> Result<EngineGradients, TrainError> {
        let inputs = step_inputs(&self.spec.config, tokens, targets)?;
        let (mut out, peak) = step
            .plan
            .run_measured(&inputs, frozen, &ParamStore(&self.params))
            .map_err(|e| TrainError::Graph(format!("the compiled training step: {e}")))?;
        let mut take = |i: usize| {
            out.get_mut(i)
                .map(|t| std::mem::replace(&mut t.data, Data::F32(Vec::new())))
                .ok_or_else(|| TrainError::Graph(format!("internal: the step has no result {i}")))
        };
        let loss = take(0)?.to_f64().first().copied().unwrap_or(f64::NAN);
        let grads = step
            .weights
            .iter()
            .map(|(n, i)| Ok((n.clone(), take(*i)?)))
            .collect::<Result<_, TrainError>>()?;
        Ok((loss, grads, peak))
    }

    /// The loss of one window (forward only), from `frozen`'s weight-only values when given.
    pub fn loss(
        &self,
        tokens: &[u32],
        targets: &[u32],
        frozen: Option<&Frozen>,
    ) -> Result<f64, TrainError> {
        let inputs = step_inputs(&self.spec.config, tokens, targets)?;
        let weights = ParamStore(&self.params);
        let out = match frozen {
            Some(fz) => fz.run(&self.function, &inputs, &weights),
            None => bitnet_ir::interp::run_function(&self.function, &inputs, &weights),
        }
        .map_err(|e| TrainError::Graph(format!("the held-out loss: {e}")))?;
        Ok(out
            .first()
            .and_then(|t| t.data.to_f64().first().copied())
            .unwrap_or(f64::NAN))
    }

    /// Applies one update from `grads` (averaged over the batch): clipping, schedule, AdamW.
    pub fn apply(&mut self, mut grads: BTreeMap<String, Vec<f64>>) -> (f64, f64) {
        let norm = clip(&mut grads, self.options.clip);
        let step = self.step + 1;
        let o = &self.options;
        let lr = o.schedule.lr(o.lr, step, o.steps, o.warmup);
        let stage_decays = o.schedule.decays_at(step, o.steps, o.warmup);
        // Each parameter's update is its own: on up to `threads` threads, the same bits.
        let adamw = &o.adamw;
        let table = &self.table;
        let grads = &grads;
        let threads = self.threads;
        let mut moments: BTreeMap<&String, &mut Moments> = self.moments.iter_mut().collect();
        let work: Vec<_> = self
            .params
            .iter_mut()
            .filter_map(|(name, param)| {
                let state = moments.remove(name)?;
                Some((param.numel() as u64, (name, param, state)))
            })
            .collect();
        for_each_share(threads, work, &|(name, param, state): (
            &String,
            &mut Tensor,
            &mut Moments,
        )| {
            let decays = stage_decays && table.get(name).is_some_and(|i| i.decays);
            let zeros;
            let g = match grads.get(name) {
                Some(g) => g.as_slice(),
                None => {
                    zeros = vec![0f64; param.numel()];
                    &zeros
                }
            };
            adamw.update(param, g, state, step, lr, decays);
        });
        self.step = step;
        (norm, lr)
    }

    /// One training step on `batch` random windows of `corpus`.
    pub fn train_step(&mut self, corpus: &Corpus) -> Result<StepReport, TrainError> {
        let (batch, seq) = (self.options.batch, self.options.seq);
        let windows: Vec<(Vec<u32>, Vec<u32>)> = (0..batch)
            .map(|_| corpus.sample(seq, &mut self.rng))
            .collect();
        let results: Vec<EngineGradients> = match self.options.engine {
            Engine::Interpreter => {
                let frozen = self.freeze()?;
                self.each_window(&windows, |t, x, y| {
                    t.sweep(x, y, Some(&frozen)).map(|g| {
                        let weights = g.weights.into_iter().map(|(n, v)| (n, Data::F64(v)));
                        (g.loss, weights.collect(), g.peak_value_bytes)
                    })
                })?
            }
            Engine::Compiled => {
                if self.compiled.is_none() {
                    self.compiled = Some(self.compile_step()?);
                }
                let step = self
                    .compiled
                    .as_ref()
                    .ok_or_else(|| TrainError::Graph("internal: no compiled step".into()))?;
                let frozen = self.freeze_compiled(step)?;
                self.each_window(&windows, |t, x, y| {
                    t.compiled_window(step, x, y, Some(&frozen))
                })?
            }
        };
        // Summed in window order whatever the threads, so the step does not depend on them; each
        // parameter's sum on its own thread.
        let mut loss = 0f64;
        let mut peak = 0u64;
        let mut by_name: BTreeMap<String, Vec<Data>> = BTreeMap::new();
        for (l, weights, held) in results {
            loss += l;
            peak = peak.max(held);
            for (name, g) in weights {
                by_name.entry(name).or_default().push(g);
            }
        }
        let scale = 1.0 / batch as f64;
        let mut total: BTreeMap<String, Vec<f64>> =
            by_name.keys().map(|n| (n.clone(), Vec::new())).collect();
        let work: Vec<_> = total
            .values_mut()
            .zip(by_name.into_values())
            .map(|(acc, parts)| {
                let n = parts.first().map_or(0, Data::len) as u64;
                (n, (acc, parts))
            })
            .collect();
        for_each_share(self.threads, work, &|(acc, parts): (
            &mut Vec<f64>,
            Vec<Data>,
        )| {
            // From −0.0, the sum's identity: the same bits as starting from the first part.
            let mut sum = vec![-0.0f64; parts.first().map_or(0, Data::len)];
            for g in &parts {
                match g {
                    Data::F32(g) => sum.iter_mut().zip(g).for_each(|(a, b)| *a += f64::from(*b)),
                    Data::F64(g) => sum.iter_mut().zip(g).for_each(|(a, b)| *a += b),
                    other => {
                        let g = other.to_f64();
                        sum.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
                    }
                }
            }
            sum.iter_mut().for_each(|v| *v *= scale);
            *acc = sum;
        });
        let loss = loss * scale;
        let (grad_norm, lr) = self.apply(total);
        self.history.train.push((self.step, loss));
        Ok(StepReport {
            step: self.step,
            loss,
            grad_norm,
            lr,
            tokens: batch * seq,
            peak_value_bytes: peak,
        })
    }

    /// The mean loss over the held-out windows; recorded in the history.
    pub fn evaluate(&mut self, corpus: &Corpus) -> Result<f64, TrainError> {
        let windows = corpus.heldout_windows(self.options.seq, self.options.eval_windows);
        let losses = match self.options.engine {
            Engine::Interpreter => {
                let frozen = self.freeze()?;
                self.each_window(&windows, |t, x, y| t.loss(x, y, Some(&frozen)))?
            }
            Engine::Compiled => {
                // The training function lowered the same way: the interpreter's loss, bit for bit.
                if self.compiled_forward.is_none() {
                    let plan = bitnet_backends::cpu::step::StepPlan::new(
                        &self.function,
                        &[("T", self.options.seq as u64)],
                    )
                    .map_err(|e| TrainError::Graph(format!("compiling the held-out loss: {e}")))?;
                    self.compiled_forward = Some(plan);
                }
                let plan = self
                    .compiled_forward
                    .as_ref()
                    .ok_or_else(|| TrainError::Graph("internal: no compiled forward".into()))?;
                let weights = ParamStore(&self.params);
                let frozen = plan
                    .freeze(&weights, self.threads)
                    .map_err(|e| TrainError::Graph(format!("the weights' values: {e}")))?;
                self.each_window(&windows, |t, x, y| {
                    let inputs = step_inputs(&t.spec.config, x, y)?;
                    let out = plan
                        .run(&inputs, Some(&frozen), &ParamStore(&t.params))
                        .map_err(|e| TrainError::Graph(format!("the held-out loss: {e}")))?;
                    Ok(out
                        .first()
                        .and_then(|t| t.data.to_f64().first().copied())
                        .unwrap_or(f64::NAN))
                })?
            }
        };
        let sum: f64 = losses.iter().sum();
        let l = sum / windows.len().max(1) as f64;
        self.history.heldout.push((self.step, l));
        Ok(l)
    }

    /// `f` of every window, in order, on up to `self.threads` threads (contiguous shares).
    fn each_window<T: Send>(
        &self,
        windows: &[(Vec<u32>, Vec<u32>)],
        f: impl Fn(&Trainer, &[u32], &[u32]) -> Result<T, TrainError> + Sync,
    ) -> Result<Vec<T>, TrainError> {
        let threads = self.threads.clamp(1, windows.len().max(1));
        if threads == 1 {
            return windows.iter().map(|(x, y)| f(self, x, y)).collect();
        }
        let share = windows.len().div_ceil(threads);
        let f = &f;
        std::thread::scope(|scope| {
            let handles: Vec<_> = windows
                .chunks(share)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(x, y)| f(self, x, y))
                            .collect::<Result<Vec<T>, TrainError>>()
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(windows.len());
            for h in handles {
                let part = h
                    .join()
                    .map_err(|_| TrainError::Graph("a training thread panicked".into()))??;
                out.extend(part);
            }
            Ok(out)
        })
    }

    /// The state a checkpoint saves.
    pub fn state(&self) -> TrainerState {
        TrainerState {
            format: 1,
            step: self.step,
            rng: self.rng.0,
            model: self.model.clone(),
            options: self.options.clone(),
            history: self.history.clone(),
        }
    }

    /// Writes a checkpoint of this run to `dir` (which must not exist).
    pub fn save(&self, dir: &Path, tokenizer_json: &str) -> Result<(), TrainError> {
        checkpoint::save(
            dir,
            &self.state(),
            &self.params,
            &self.moments,
            tokenizer_json,
        )
    }
}
