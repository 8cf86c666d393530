//! Property test: printing is deterministic and print → parse → print is the identity, on random
//! modules that exercise every op name, every attribute kind (extreme integers, every float class,
//! arbitrary Unicode strings), every element type, symbolic dims, names and unnamed values.
//! The modules need not verify: the text layer must round-trip any IR.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::module::{Function, Module};
use bitnet_ir::types::SymbolDecl;
use bitnet_ir::{Attr, Attrs, Dim, ElemType, OpKind, TensorType, text};
use proptest::prelude::*;

const SYMBOLS: [&str; 3] = ["T", "S1", "CTX_LEN"];

fn elem() -> impl Strategy<Value = ElemType> {
    prop::sample::select(ElemType::ALL.to_vec())
}

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        3 => (0u64..5000).prop_map(Dim::Static),
        1 => any::<u64>().prop_map(Dim::Static),
        1 => prop::sample::select(SYMBOLS.to_vec()).prop_map(|s| Dim::Sym(s.to_string())),
    ]
}

fn tensor_type() -> impl Strategy<Value = TensorType> {
    (prop::collection::vec(dim(), 0..5), elem())
        .prop_map(|(dims, elem)| TensorType::new(dims, elem))
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(1e-5),
        Just(f64::MIN_POSITIVE / 3.0),
        (-1000i32..1000).prop_map(f64::from),
    ]
    // NaN prints as `nan` and compares unequal to itself; it is covered, but keep the sign out of it.
    .prop_map(|v| if v.is_nan() { f64::NAN } else { v })
}

fn attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        any::<i64>().prop_map(Attr::Int),
        float().prop_map(Attr::Float),
        any::<bool>().prop_map(Attr::Bool),
        any::<String>().prop_map(Attr::Str),
        elem().prop_map(Attr::Type),
        prop::collection::vec(any::<i64>(), 0..6).prop_map(Attr::Ints),
        prop::collection::vec(float(), 1..6).prop_map(Attr::Floats),
    ]
}

fn attrs() -> impl Strategy<Value = Attrs> {
    prop::collection::btree_map("[a-z_][a-z0-9_]{0,8}", attr(), 0..4).prop_map(Attrs)
}

fn value_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![1 => Just(None), 2 => "[A-Za-z0-9_.]{1,8}".prop_map(Some)]
}

/// One op: which kind, operand picks (indices into the values so far), attributes, result types/names.
#[derive(Debug, Clone)]
struct OpPlan {
    kind: usize,
    operands: Vec<prop::sample::Index>,
    attrs: Attrs,
    results: Vec<(TensorType, Option<String>)>,
}

fn op_plan() -> impl Strategy<Value = OpPlan> {
    (
        0..OpKind::ALL.len(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        attrs(),
        prop::collection::vec((tensor_type(), value_name()), 1..4),
    )
        .prop_map(|(kind, operands, attrs, results)| OpPlan {
            kind,
            operands,
            attrs,
            results,
        })
}

#[derive(Debug, Clone)]
struct FuncPlan {
    name: String,
    symbols: Vec<(usize, u64)>,
    args: Vec<(TensorType, Option<String>)>,
    ops: Vec<OpPlan>,
    returns: Vec<prop::sample::Index>,
    result_types: Vec<TensorType>,
}

fn func_plan() -> impl Strategy<Value = FuncPlan> {
    (
        "[A-Za-z0-9_.]{1,10}",
        prop::collection::vec((0..SYMBOLS.len(), any::<u64>()), 0..3),
        prop::collection::vec((tensor_type(), value_name()), 0..4),
        prop::collection::vec(op_plan(), 0..12),
        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        prop::collection::vec(tensor_type(), 0..3),
    )
        .prop_map(
            |(name, symbols, args, ops, returns, result_types)| FuncPlan {
                name,
                symbols,
                args,
                ops,
                returns,
                result_types,
            },
        )
}

fn build(plan: &FuncPlan) -> Function {
    let mut f = Function::new(&plan.name);
    for &(s, max) in &plan.symbols {
        f.symbols.push(SymbolDecl {
            name: SYMBOLS[s].to_string(),
            max,
        });
    }
    // Names must be unique within a function for the text to parse back; drop repeats.
    let mut used = std::collections::HashSet::new();
    let mut keep = |n: &Option<String>| n.clone().filter(|n| used.insert(n.clone()));
    for (ty, name) in &plan.args {
        let n = keep(name);
        f.add_arg(n.as_deref(), ty.clone());
    }
    for op in &plan.ops {
        let n_values = f.values.len();
        let operands = if n_values == 0 {
            Vec::new()
        } else {
            op.operands
                .iter()
                .map(|i| bitnet_ir::ValueId(i.index(n_values) as u32))
                .collect()
        };
        let types = op.results.iter().map(|(t, _)| t.clone()).collect();
        let ids = f.push_op(OpKind::ALL[op.kind], operands, op.attrs.clone(), types);
        for (id, (_, name)) in ids.iter().zip(&op.results) {
            f.values[id.index()].name = keep(name);
        }
    }
    if !f.values.is_empty() {
        f.returns = plan
            .returns
            .iter()
            .map(|i| bitnet_ir::ValueId(i.index(f.values.len()) as u32))
            .collect();
    }
    f.result_types = plan.result_types.clone();
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn print_parse_print_is_identity(plans in prop::collection::vec(func_plan(), 1..3)) {
        let mut module = Module::default();
        let mut names = std::collections::HashSet::new();
        for p in &plans {
            if names.insert(p.name.clone()) {
                module.functions.push(build(p));
            }
        }
        let printed = text::print_module(&module);
        prop_assert_eq!(&printed, &text::print_module(&module), "printing is not deterministic");
        let parsed = match text::parse(&printed, "roundtrip.bir") {
            Ok(m) => m,
            Err(d) => return Err(TestCaseError::fail(format!("{}\n{printed}", d.render("roundtrip.bir", Some(&printed))))),
        };
        let again = text::print_module(&parsed);
        prop_assert_eq!(printed, again);
    }
}
