//! Launch labels that say where in the model a launch is, for profiles and errors:
//! `layer 3 q_proj: bit.ternary_matmul → %43`, `lm_head: nn.matmul → %170`.
//!
//! The place comes from the names the op reads: the first weight it reads (through constant ops
//! computed from weights, such as a transpose) names the role (`q_proj`, `input_layernorm`,
//! `attn_q` in a GGUF) and the layer (`model.layers.3.…`, `blk.3.…`); a KV-cache argument
//! (`%k_cache.3`) names the layer of an attention. An op that reads no named weight (rope, an
//! elementwise product) is in the layer of the op before it and is named by its op (`rope`);
//! one whose weight names no layer (the embedding, the final norm, the lm_head) is in none.

use super::blob::is_constant;
use bitnet_ir::module::{Function, Operation, ValueDef};
use bitnet_ir::{OpKind, ValueId};

/// How many constant ops deep a weight is looked for behind an operand.
const MAX_DEPTH: usize = 4;

/// Names the launches of the ops of one function, in order (the layer carries from op to op).
#[derive(Default)]
pub(super) struct Labeler {
    layer: Option<u64>,
}

impl Labeler {
    /// The label of `op`'s launches: `[layer N ]ROLE: dialect.op → %result`.
    pub(super) fn label(&mut self, f: &Function, op: &Operation) -> String {
        let weight = op.operands.iter().find_map(|&v| weight_name(f, v, 0));
        let role = match weight {
            Some(name) => {
                self.layer = layer_of(name);
                role_of(name).to_string()
            }
            None => {
                if let Some(layer) = op.operands.iter().find_map(|&v| arg_layer(f, v)) {
                    self.layer = Some(layer);
                }
                let name = op.kind.name();
                name.rsplit('.').next().unwrap_or(name).to_string()
            }
        };
        let id = op.results.first().map_or(0, |r| r.0);
        let place = self.layer.map_or(String::new(), |n| format!("layer {n} "));
        format!("{place}{role}: {} → %{id}", op.kind.name())
    }
}

/// The name of the weight `v` is, or is computed from at compile time (through at most
/// `MAX_DEPTH` ops on constants alone; the first one found).
fn weight_name(f: &Function, v: ValueId, depth: usize) -> Option<&str> {
    let ValueDef::OpResult { op, .. } = f.value(v).def else {
        return None;
    };
    let o = f.op(op);
    if o.kind == OpKind::Weight {
        return o.attrs.str("name");
    }
    if depth >= MAX_DEPTH || o.kind == OpKind::Constant || !is_constant(f, v) {
        return None;
    }
    o.operands
        .iter()
        .find_map(|&x| weight_name(f, x, depth + 1))
}

/// The layer a KV-cache argument belongs to (`%k_cache.3` → 3).
fn arg_layer(f: &Function, v: ValueId) -> Option<u64> {
    let data = f.value(v);
    match data.def {
        ValueDef::Arg(_) => data.name.as_deref().and_then(layer_of),
        _ => None,
    }
}

/// The layer number in a tensor or argument name: the number after a `layers`, `layer`, `blk`,
/// `h`, `k_cache` or `v_cache` component.
fn layer_of(name: &str) -> Option<u64> {
    let base = name.split('#').next().unwrap_or(name);
    let parts: Vec<&str> = base.split(['.', '/']).collect();
    parts.windows(2).find_map(|w| match w {
        [scope, n]
            if matches!(
                *scope,
                "layers" | "layer" | "blk" | "h" | "k_cache" | "v_cache"
            ) =>
        {
            n.parse().ok()
        }
        _ => None,
    })
}

/// The role a weight plays: its name's last component before the tensor kind (`.weight`,
/// `.weight_scale`, `.bias`, `.scale`) and any derived form (`#packed…`).
fn role_of(name: &str) -> &str {
    let base = name.split('#').next().unwrap_or(name);
    let base = ["weight", "weight_scale", "bias", "scale"]
        .iter()
        .find_map(|kind| base.strip_suffix(kind).and_then(|b| b.strip_suffix('.')))
        .unwrap_or(base);
    base.rsplit(['.', '/']).next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::{layer_of, role_of};

    #[test]
    fn names_layers_and_roles() {
        let hf = "model.layers.12.self_attn.q_proj.weight#packed.b128";
        assert_eq!((layer_of(hf), role_of(hf)), (Some(12), "q_proj"));
        let gguf = "blk.3.attn_q.weight";
        assert_eq!((layer_of(gguf), role_of(gguf)), (Some(3), "attn_q"));
        assert_eq!(layer_of("k_cache.7"), Some(7));
        assert_eq!(
            (layer_of("lm_head.weight"), role_of("lm_head.weight")),
            (None, "lm_head")
        );
        assert_eq!(role_of("model.norm.weight"), "norm");
        assert_eq!(
            role_of("model.layers.0.mlp.down_proj.weight_scale"),
            "down_proj"
        );
    }
}
