//! Rules that recognize BitLinear in every form the importers produce and rewrite it to `(bl …)`.
//!
//! Activation quantization (transformers' `ActQuant`, bitnet.cpp's `quantize_row_i8_s`, the torch
//! exporters' chains): `127 / clip(max|x|, eps)` or `(1/clip(max|x|, eps))·127` is `(as x eps)`;
//! `clamp(round(x·s), -128, 127)` (as a clip, or as max/min) is `(aq x eps)`, unchanged by a round trip
//! through int8; `aq / as` is `(afq x eps)`. Weight ternarization (absmean, `WeightQuant`):
//! `clip(round(W·s_w), -1, 1) / s_w` with `s_w = 1/clip(mean|W|, eps)` is `(wq W)`.
//! A matmul of `afq` (or of `aq`, then rescaled by `1/(ws·s)`) with a ternary weight — a ternary
//! `nn.weight` cast to f32, a {-γ,0,+γ} constant in either orientation, or `wq` of master weights —
//! is `(bl …)`; scalar multipliers and divisors after it fold into its scale.

use crate::bitlang::{BitLang, Meta};
use egg::{EGraph, Id, Pattern, Rewrite, Subst, Var, rewrite};

type Graph = EGraph<BitLang, Meta>;

fn var(name: &str) -> Var {
    name.parse().unwrap_or_else(|_| Var::from_u32(0))
}

/// The class bound to `v` holds one element.
fn is_scalar(v: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| g[s[v]].data.scalar
}

/// The class bound to `v` is a ternary `nn.weight` `[N, K]`.
fn is_ternary_weight(v: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| g[s[v]].data.leaf.is_some_and(|l| l.ternary_weight)
}

/// The class bound to `v` is a rank-2 float constant holding {-γ, 0, +γ}.
fn is_dense_ternary(v: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| g[s[v]].data.leaf.is_some_and(|l| l.dense_ternary.is_some())
}

/// The class bound to `v` is a rank-2 float `nn.weight`.
fn is_float_weight(v: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| g[s[v]].data.leaf.is_some_and(|l| l.float_weight)
}

/// Both classes hold a literal, the first not above the second.
fn are_bounds(lo: &'static str, hi: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let (lo, hi) = (var(lo), var(hi));
    move |g, _, s| {
        let num = |id: Id| {
            g[id].nodes.iter().find_map(|n| match n {
                BitLang::Num(x) => Some(x.value()),
                _ => None,
            })
        };
        matches!((num(s[lo]), num(s[hi])), (Some(a), Some(b)) if a <= b)
    }
}

fn pat(s: &str) -> Pattern<BitLang> {
    s.parse()
        .unwrap_or_else(|_| Pattern::from(&egg::RecExpr::default()))
}

/// The activation-quantization rules.
pub fn activation_rules() -> Vec<Rewrite<BitLang, Meta>> {
    let absmax = "(clip (rmax (abs ?x)) ?e inf)";
    vec![
        Rewrite::new(
            "act-scale-div",
            pat(&format!("(div 127 {absmax})")),
            pat("(as ?x ?e 0)"),
        ),
        Rewrite::new(
            "act-scale-reciprocal",
            pat(&format!("(mul (recip {absmax}) 127)")),
            pat("(as ?x ?e 1)"),
        ),
        Rewrite::new(
            "act-scale-reciprocal-commuted",
            pat(&format!("(mul 127 (recip {absmax}))")),
            pat("(as ?x ?e 1)"),
        ),
        Rewrite::new(
            "act-round-clip",
            pat("(clip (round (mul ?x (as ?x ?e ?f))) -128 127)"),
            pat("(aq ?x ?e ?f)"),
        ),
        Rewrite::new(
            "act-round-clip-commuted",
            pat("(clip (round (mul (as ?x ?e ?f) ?x)) -128 127)"),
            pat("(aq ?x ?e ?f)"),
        ),
        Rewrite::new(
            "act-int8-round-trip",
            pat("(f32 (i8 (aq ?x ?e ?f)))"),
            pat("(aq ?x ?e ?f)"),
        ),
        Rewrite::new(
            "act-fake-quant",
            pat("(div (aq ?x ?e ?f) (as ?x ?e ?f))"),
            pat("(afq ?x ?e ?f)"),
        ),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect()
}

/// Clean-ups that let the other rules see one shape of each chain.
pub fn algebra_rules() -> Vec<Rewrite<BitLang, Meta>> {
    vec![
        rewrite!("max-min-is-clip"; "(min (max ?x ?lo) ?hi)" => "(clip ?x ?lo ?hi)" if are_bounds("?lo", "?hi")),
        rewrite!("mul-by-one"; "(mul ?x 1)" => "?x"),
        rewrite!("one-over-is-reciprocal"; "(div 1 ?y)" => "(recip ?y)"),
    ]
}

/// The weight-ternarization rule (online master weights).
pub fn weight_rules() -> Vec<Rewrite<BitLang, Meta>> {
    let sw = "(recip (clip (rmean (abs ?w)) ?ew inf))";
    vec![Rewrite::new(
        "weight-absmean-ternarize",
        pat(&format!("(div (clip (round (mul ?w {sw})) -1 1) {sw})")),
        pat("(wq ?w ?ew)"),
    )]
    .into_iter()
    .filter_map(Result::ok)
    .collect()
}

/// The matmul rules: which weight forms make a BitLinear, and scale folding.
pub fn matmul_rules() -> Vec<Rewrite<BitLang, Meta>> {
    vec![
        rewrite!("bitlinear-ternary-weight"; "(matmul (afq ?x ?e ?f) (t (f32 ?w)))" => "(bl ?x ?e ?f (tw ?w) 1)" if is_ternary_weight("?w")),
        rewrite!("bitlinear-dense-ternary-nk"; "(matmul (afq ?x ?e ?f) (t ?w))" => "(bl ?x ?e ?f (dnk ?w) 1)" if is_dense_ternary("?w")),
        rewrite!("bitlinear-dense-ternary-kn"; "(matmul (afq ?x ?e ?f) ?w)" => "(bl ?x ?e ?f (dkn ?w) 1)" if is_dense_ternary("?w")),
        rewrite!("bitlinear-master-nk"; "(matmul (afq ?x ?e ?f) (t (wq ?w ?ew)))" => "(bl ?x ?e ?f (mnk ?w ?ew) 1)" if is_float_weight("?w")),
        rewrite!("bitlinear-master-kn"; "(matmul (afq ?x ?e ?f) (wq ?w ?ew))" => "(bl ?x ?e ?f (mkn ?w ?ew) 1)" if is_float_weight("?w")),
        rewrite!("bitlinear-int-ternary-weight"; "(matmul (aq ?x ?e ?f) (t (f32 ?w)))" => "(blq ?x ?e ?f (tw ?w))" if is_ternary_weight("?w")),
        rewrite!("bitlinear-int-dense-ternary-nk"; "(matmul (aq ?x ?e ?f) (t ?w))" => "(blq ?x ?e ?f (dnk ?w))" if is_dense_ternary("?w")),
        rewrite!("bitlinear-int-dense-ternary-kn"; "(matmul (aq ?x ?e ?f) ?w)" => "(blq ?x ?e ?f (dkn ?w))" if is_dense_ternary("?w")),
        rewrite!("bitlinear-int-rescale"; "(div (blq ?x ?e ?f ?W) (mul ?ws (as ?x ?e ?f)))" => "(bl ?x ?e ?f ?W (inv ?ws))" if is_scalar("?ws")),
        rewrite!("bitlinear-int-rescale-commuted"; "(div (blq ?x ?e ?f ?W) (mul (as ?x ?e ?f) ?ws))" => "(bl ?x ?e ?f ?W (inv ?ws))" if is_scalar("?ws")),
        rewrite!("fold-scale-multiply"; "(mul (bl ?x ?e ?f ?W ?s) ?h)" => "(bl ?x ?e ?f ?W (smul ?s ?h))" if is_scalar("?h")),
        rewrite!("fold-scale-multiply-commuted"; "(mul ?h (bl ?x ?e ?f ?W ?s))" => "(bl ?x ?e ?f ?W (smul ?s ?h))" if is_scalar("?h")),
        rewrite!("fold-scale-divide"; "(div (bl ?x ?e ?f ?W ?s) ?h)" => "(bl ?x ?e ?f ?W (smul ?s (inv ?h)))" if is_scalar("?h")),
    ]
}

/// Every rule of this topic.
pub fn all() -> Vec<Rewrite<BitLang, Meta>> {
    let mut rules = algebra_rules();
    rules.extend(activation_rules());
    rules.extend(weight_rules());
    rules.extend(matmul_rules());
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Rewrite::new` rejects malformed rules and the builders skip those, so count them here.
    #[test]
    fn every_rule_builds() {
        assert_eq!(activation_rules().len(), 7);
        assert_eq!(weight_rules().len(), 1);
        assert_eq!(algebra_rules().len(), 3);
        assert_eq!(matmul_rules().len(), 13);
    }
}
