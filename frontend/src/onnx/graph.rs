//! The import driver: checks the opset and the op set, registers the initializers, turns graph
//! inputs into the arguments of `@main` (ONNX `dim_param`s become bounded IR symbols), converts the
//! nodes in order and returns the graph outputs. Every error names the node (index, name and op
//! type) or the initializer or input it is about; the caller adds the file.

use super::convert::{SUPPORTED, convert};
use super::node::NodeCx;
use super::proto::{GraphProto, ValueInfoProto, type_proto};
use super::tensor_proto;
use super::values::{H, Importer};
use super::weights::OnnxWeights;
use super::wire::{RawInitializer, split_model};
use super::{ImportOptions, OnnxModel};
use bitnet_ir::tensor::checked_numel;
use bitnet_ir::{Dim, Module, TensorType};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// The oldest default-domain opset the importer accepts.
pub const MIN_OPSET: i64 = 13;

/// `node 3 'Mul_3' (Mul)`.
fn describe_node(index: usize, name: &str, op: &str) -> String {
    if name.is_empty() {
        format!("node {index} ({op})")
    } else {
        format!("node {index} '{name}' ({op})")
    }
}

/// Imports the model mapped in `map`.
pub(crate) fn import(path: &Path, map: Mmap, opts: &ImportOptions) -> Result<OnnxModel, String> {
    let split = split_model(&map)?;
    let model = split.model;
    check_opset(&model.opset_import)?;
    let graph = model.graph.unwrap_or_default();
    if split.sparse > 0 {
        return Err("sparse initializers are not supported".into());
    }
    check_ops(&graph)?;
    let mut imp = Importer::new(opts, OnnxWeights::new(path, map));
    let mut names: HashMap<String, H> = HashMap::new();
    add_initializers(&mut imp, &mut names, &split.initializers)?;
    let mut symbols = Symbols::default();
    let mut inputs = Vec::new();
    for vi in &graph.input {
        let name = vi.name();
        if names.contains_key(name) {
            continue; // An initializer listed as an input (IR version < 4): a weight, not an argument.
        }
        let h = match opts.freeze_inputs.get(name) {
            Some(t) => imp.known_tensor(t.clone(), Some(name.to_string())),
            None => {
                let ty = symbols
                    .value_type(&mut imp, vi, opts)
                    .map_err(|m| format!("graph input '{name}': {m}"))?;
                inputs.push(name.to_string());
                imp.arg(name, ty)
            }
        };
        names.insert(name.to_string(), h);
    }
    for (index, node) in graph.node.iter().enumerate() {
        let where_ = describe_node(index, node.name(), node.op_type());
        let inputs =
            node.input
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        Ok(None)
                    } else {
                        names.get(n).copied().map(Some).ok_or_else(|| {
                            format!("{where_}: input '{n}' is not defined before it")
                        })
                    }
                })
                .collect::<Result<Vec<_>, String>>()?;
        let cx = NodeCx {
            op: node.op_type(),
            inputs,
            outputs: &node.output,
            attrs: &node.attribute,
        };
        let outs = convert(&mut imp, &cx).map_err(|m| format!("{where_}: {m}"))?;
        for (k, out) in node.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            let h = outs
                .get(k)
                .copied()
                .flatten()
                .ok_or_else(|| format!("{where_}: output {k} ('{out}') is not supported"))?;
            imp.name(h, out);
            names.insert(out.clone(), h);
        }
    }
    let mut returns = Vec::new();
    let mut outputs = Vec::new();
    for vi in &graph.output {
        let name = vi.name();
        let h = *names
            .get(name)
            .ok_or_else(|| format!("graph output '{name}' is not computed by any node"))?;
        check_output(&imp.ty(h), vi).map_err(|m| format!("graph output '{name}': {m}"))?;
        returns.push(imp.materialize(h)?);
        outputs.push(name.to_string());
    }
    let function = imp.b.finish(&returns);
    let diags = bitnet_ir::verify::verify_function(&function);
    if let Some(d) = diags.first() {
        return Err(format!(
            "the imported IR does not verify ({} error(s)); the first: {}",
            diags.len(),
            d.message
        ));
    }
    Ok(OnnxModel {
        module: Module {
            functions: vec![function],
            source_name: Some(path.display().to_string()),
        },
        weights: imp.weights,
        inputs,
        outputs,
    })
}

fn check_opset(opsets: &[super::proto::OperatorSetIdProto]) -> Result<(), String> {
    let default = opsets
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .ok_or("the model imports no opset of the default ONNX domain")?;
    let v = default.version();
    if v < MIN_OPSET {
        return Err(format!(
            "opset {v} of the default ONNX domain is too old: bitnetc imports opset {MIN_OPSET} and \
             newer (convert the model with onnx.version_converter)"
        ));
    }
    Ok(())
}

/// Lists every node whose op is not supported, grouped by op, in one error.
fn check_ops(graph: &GraphProto) -> Result<(), String> {
    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        let domain = n.domain();
        let supported = matches!(domain, "" | "ai.onnx") && SUPPORTED.contains(&n.op_type());
        if !supported {
            let op = if matches!(domain, "" | "ai.onnx") {
                n.op_type().to_string()
            } else {
                format!("{domain}.{}", n.op_type())
            };
            let at = if n.name().is_empty() {
                format!("node {i}")
            } else {
                format!("node {i} '{}'", n.name())
            };
            unknown.entry(op).or_default().push(at);
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|(op, at)| format!("{op} ({})", at.join(", ")))
        .collect();
    Err(format!(
        "unsupported ONNX op(s): {}; supported: {}",
        list.join("; "),
        SUPPORTED.join(" ")
    ))
}

/// Registers the initializers: small ones become constants known at import, large ones weights.
fn add_initializers(
    imp: &mut Importer,
    names: &mut HashMap<String, H>,
    inits: &[RawInitializer],
) -> Result<(), String> {
    for init in inits {
        let name = init.meta.name().to_string();
        let fail = |m: String| format!("initializer '{name}': {m}");
        if name.is_empty() {
            return Err("an initializer has no name".into());
        }
        imp.weights.add_initializer(init).map_err(fail)?;
        let (elem, shape, _) = tensor_proto::layout(&init.meta).map_err(fail)?;
        let numel = checked_numel(&shape).unwrap_or(usize::MAX);
        let h = if numel <= imp.opts.literal_max {
            let t = imp.weights.read(&name).map_err(|e| fail(e.to_string()))?;
            imp.known_tensor(t, Some(name.clone()))
        } else {
            let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            imp.weight(&name, TensorType::of(&dims, elem))
        };
        names.insert(name, h);
    }
    Ok(())
}

/// ONNX `dim_param`s and the IR symbols they became.
#[derive(Default)]
struct Symbols {
    by_param: HashMap<String, String>,
    taken: HashSet<String>,
}

/// `batch_size` → `BATCH_SIZE`; `s0` → `S0`; a leading non-letter gets a `D` in front.
fn symbol_name(param: &str) -> String {
    let mut s: String = param
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_uppercase()) {
        s.insert(0, 'D');
    }
    s
}

impl Symbols {
    fn symbol(&mut self, imp: &mut Importer, param: &str, opts: &ImportOptions) -> Dim {
        if let Some(s) = self.by_param.get(param) {
            return Dim::Sym(s.clone());
        }
        let base = symbol_name(param);
        let mut name = base.clone();
        let mut k = 2;
        while self.taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        let max = opts
            .symbol_bounds
            .get(param)
            .or_else(|| opts.symbol_bounds.get(&name))
            .copied()
            .unwrap_or(opts.symbol_max);
        self.taken.insert(name.clone());
        self.by_param.insert(param.to_string(), name.clone());
        imp.b.symbol(&name, max)
    }

    /// The IR type of a graph input.
    fn value_type(
        &mut self,
        imp: &mut Importer,
        vi: &ValueInfoProto,
        opts: &ImportOptions,
    ) -> Result<TensorType, String> {
        let Some(type_proto::Value::TensorType(t)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err("only tensor inputs are supported".into());
        };
        let elem = tensor_proto::elem_type(t.elem_type())?;
        let shape = t
            .shape
            .as_ref()
            .ok_or("the input has no shape (rank unknown)")?;
        let mut dims = Vec::with_capacity(shape.dim.len());
        for (axis, d) in shape.dim.iter().enumerate() {
            use super::proto::tensor_shape_proto::dimension::Value;
            dims.push(match &d.value {
                Some(Value::DimValue(v)) => {
                    Dim::Static(u64::try_from(*v).map_err(|_| format!("negative dimension {v}"))?)
                }
                Some(Value::DimParam(p)) if !p.is_empty() => self.symbol(imp, p, opts),
                _ => self.symbol(imp, &format!("{}_{axis}", vi.name()), opts),
            });
        }
        Ok(TensorType::new(dims, elem))
    }
}

/// Checks a graph output's declared type against the computed one where both are known.
fn check_output(actual: &TensorType, vi: &ValueInfoProto) -> Result<(), String> {
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    if t.elem_type() != 0 {
        let elem = tensor_proto::elem_type(t.elem_type())?;
        if elem != actual.elem {
            return Err(format!("declared {elem}, computed {actual}"));
        }
    }
    if let Some(shape) = &t.shape {
        use super::proto::tensor_shape_proto::dimension::Value;
        if shape.dim.len() != actual.rank() {
            return Err(format!(
                "declared rank {}, computed {actual}",
                shape.dim.len()
            ));
        }
        for (d, a) in shape.dim.iter().zip(&actual.dims) {
            if let (Some(Value::DimValue(v)), Dim::Static(s)) = (&d.value, a)
                && u64::try_from(*v).ok() != Some(*s)
            {
                return Err(format!("declared dimension {v}, computed {actual}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::symbol_name;

    #[test]
    fn symbol_names_are_sanitized() {
        assert_eq!(symbol_name("batch_size"), "BATCH_SIZE");
        assert_eq!(symbol_name("s0"), "S0");
        assert_eq!(symbol_name("0seq"), "D0SEQ");
        assert_eq!(symbol_name("unk__12"), "UNK__12");
        assert_eq!(symbol_name("a-b"), "A_B");
    }
}
