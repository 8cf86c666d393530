//! The reference interpreter: runs a function on concrete tensors, op by op, with each op's naive
//! `eval`. It is the numerical oracle every backend is tested against.
//!
//! It verifies the function first, binds each dimension symbol from the argument shapes (checking it
//! against its declared bound), evaluates the ops in block order and checks every result against its
//! declared type with the symbols substituted.

use crate::error::IrError;
use crate::module::{Function, Module, ValueDef};
use crate::ops::EvalCtx;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use crate::verify::verify_function;
use crate::weights::WeightStore;
use std::collections::HashMap;

/// The most elements one tensor may have in the interpreter (2^31: 8 GiB of f32). The verifier allows
/// types up to 2^40 elements, which compiled code can stream; the naive interpreter materializes every
/// value, so it refuses larger ones with an error instead of exhausting memory.
pub const MAX_INTERP_ELEMENTS: usize = 1 << 31;

/// Runs function `name` of `module` on `inputs`.
pub fn run(
    module: &Module,
    name: &str,
    inputs: &[Tensor],
    weights: &dyn WeightStore,
) -> Result<Vec<Tensor>, IrError> {
    let f = module
        .function(name)
        .ok_or_else(|| IrError::NoFunction(name.to_string()))?;
    run_function(f, inputs, weights)
}

/// The concrete shape of `ty` under `bindings`.
fn concrete(ty: &TensorType, bindings: &HashMap<String, u64>) -> Option<Vec<usize>> {
    ty.dims
        .iter()
        .map(|d| match d {
            Dim::Static(n) => usize::try_from(*n).ok(),
            Dim::Sym(s) => bindings.get(s).and_then(|&n| usize::try_from(n).ok()),
        })
        .collect()
}

/// Binds the symbols of `f` from the shapes of `inputs`, checking static dims and bounds.
pub fn bind_symbols(f: &Function, inputs: &[Tensor]) -> Result<HashMap<String, u64>, IrError> {
    if inputs.len() != f.args.len() {
        return Err(IrError::InputCount {
            func: f.name.clone(),
            expected: f.args.len(),
            found: inputs.len(),
        });
    }
    let mut bindings: HashMap<String, u64> = HashMap::new();
    for (&arg, t) in f.args.iter().zip(inputs) {
        let ty = f.ty(arg);
        let name = f
            .value(arg)
            .name
            .clone()
            .unwrap_or_else(|| arg.0.to_string());
        let bad = |message: String| IrError::Input {
            name: name.clone(),
            message,
        };
        if t.elem() != ty.elem || t.shape.len() != ty.rank() {
            return Err(bad(format!("expected {ty}, given {}", t.ty())));
        }
        for (d, &n) in ty.dims.iter().zip(&t.shape) {
            match d {
                Dim::Static(s) if *s != n as u64 => {
                    return Err(bad(format!("expected {ty}, given {}", t.ty())));
                }
                Dim::Static(_) => {}
                Dim::Sym(s) => {
                    let max = f.symbols.iter().find(|x| &x.name == s).map_or(0, |x| x.max);
                    if n as u64 > max {
                        return Err(bad(format!("{s} = {n} exceeds its bound {s}<={max}")));
                    }
                    if let Some(&prev) = bindings.get(s)
                        && prev != n as u64
                    {
                        return Err(bad(format!(
                            "{s} is {n} here but {prev} in an earlier input"
                        )));
                    }
                    bindings.insert(s.clone(), n as u64);
                }
            }
        }
    }
    Ok(bindings)
}

/// Runs `f` on `inputs`.
pub fn run_function(
    f: &Function,
    inputs: &[Tensor],
    weights: &dyn WeightStore,
) -> Result<Vec<Tensor>, IrError> {
    let env = evaluate(f, inputs, weights)?;
    returned(f, inputs, &env)
}

/// The values `f` returns, from the values `evaluate` computed.
pub fn returned(
    f: &Function,
    inputs: &[Tensor],
    env: &[Option<Tensor>],
) -> Result<Vec<Tensor>, IrError> {
    // A value may be returned more than once (passes merge equal values), so results are cloned.
    f.returns
        .iter()
        .map(|v| {
            env.get(v.index())
                .cloned()
                .flatten()
                .or_else(|| match f.value(*v).def {
                    ValueDef::Arg(i) => inputs.get(i as usize).cloned(),
                    ValueDef::OpResult { .. } | ValueDef::Undefined => None,
                })
                .ok_or_else(|| IrError::Eval {
                    op: "return",
                    at: "return".into(),
                    message: "a returned value has no value".into(),
                })
        })
        .collect()
}

/// Where op `op` of `f` is, for messages: its line, else its first result's name.
pub fn op_location(f: &Function, op: &crate::module::Operation) -> String {
    let names = crate::text::printer::Names::new(f);
    match op.loc {
        Some(l) => format!("line {}", l.line),
        None => match op.results.first() {
            Some(r) => format!("result %{}", names.get(*r)),
            None => "no location".to_string(),
        },
    }
}

/// Runs `f` on `inputs` and keeps every value it computed, indexed by `ValueId` (arguments
/// included): what a reverse sweep (`autodiff`) needs.
pub fn evaluate(
    f: &Function,
    inputs: &[Tensor],
    weights: &dyn WeightStore,
) -> Result<Vec<Option<Tensor>>, IrError> {
    let (bindings, mut env) = prepare(f, inputs)?;
    for id in f.op_order() {
        eval_op(f, id, &mut env, &bindings, weights)?;
    }
    Ok(env)
}

/// What evaluating `f` op by op needs: its symbols bound from `inputs` (after verifying it) and the
/// value table with the arguments in place.
pub type Prepared = (HashMap<String, u64>, Vec<Option<Tensor>>);

/// Verifies `f`, binds its symbols from `inputs` and places them in a fresh value table.
pub fn prepare(f: &Function, inputs: &[Tensor]) -> Result<Prepared, IrError> {
    let diags = verify_function(f);
    if !diags.is_empty() {
        return Err(IrError::Invalid(diags));
    }
    let bindings = bind_symbols(f, inputs)?;
    let mut env: Vec<Option<Tensor>> = vec![None; f.values.len()];
    for (&arg, t) in f.args.iter().zip(inputs) {
        env[arg.index()] = Some(t.clone());
    }
    Ok((bindings, env))
}

/// Evaluates op `id` of `f` from the values in `env`, storing its results there (checked against
/// their declared types).
pub fn eval_op(
    f: &Function,
    id: crate::module::OpId,
    env: &mut [Option<Tensor>],
    bindings: &HashMap<String, u64>,
    weights: &dyn WeightStore,
) -> Result<(), IrError> {
    {
        let op = f.op(id);
        let name = op.kind.name();
        // The location is only worked out for an error (naming values walks the whole function).
        let fail = |message: String| IrError::Eval {
            op: name,
            at: op_location(f, op),
            message,
        };
        let inputs: Vec<&Tensor> = op
            .operands
            .iter()
            .map(|v| {
                env[v.index()]
                    .as_ref()
                    .ok_or_else(|| fail("operand has no value".into()))
            })
            .collect::<Result<_, _>>()?;
        let types: Vec<&TensorType> = op.results.iter().map(|r| f.ty(*r)).collect();
        let shapes: Vec<Vec<usize>> = types
            .iter()
            .map(|t| concrete(t, bindings).ok_or_else(|| fail(format!("cannot make {t} concrete"))))
            .collect::<Result<_, _>>()?;
        if let Some(big) = shapes
            .iter()
            .find(|s| crate::tensor::checked_numel(s).is_none_or(|n| n > MAX_INTERP_ELEMENTS))
        {
            return Err(fail(format!(
                "a result of shape {big:?} has more than 2^31 elements, too many for the reference interpreter"
            )));
        }
        let elems: Vec<_> = types.iter().map(|t| t.elem).collect();
        let cx = EvalCtx {
            inputs: &inputs,
            attrs: &op.attrs,
            result_shapes: &shapes,
            result_elems: &elems,
            weights,
        };
        let outs = op.kind.eval(&cx).map_err(fail)?;
        if outs.len() != op.results.len() {
            return Err(fail(format!(
                "produced {} results, expected {}",
                outs.len(),
                op.results.len()
            )));
        }
        for ((r, t), (shape, elem)) in op.results.iter().zip(outs).zip(shapes.iter().zip(&elems)) {
            if &t.shape != shape || t.elem() != *elem {
                return Err(fail(format!(
                    "produced {} where {} was declared",
                    t.ty(),
                    f.ty(*r)
                )));
            }
            env[r.index()] = Some(t);
        }
    }
    Ok(())
}
