//! The one cost model of the e-graph passes: a lowered BitLinear (`bl`) and its operands are nearly
//! free, every other node costs something, and a float matmul costs the most, so extraction always
//! prefers a lowered form when one exists and otherwise keeps the original program.

use crate::bitlang::BitLang;
use egg::{CostFunction, Id, Language};

/// Cost per node kind.
pub struct BitCost;

impl CostFunction<BitLang> for BitCost {
    type Cost = u64;

    fn cost<C>(&mut self, enode: &BitLang, mut costs: C) -> u64
    where
        C: FnMut(Id) -> u64,
    {
        let own: u64 = match enode {
            BitLang::BitLinear(_)
            | BitLang::TernaryW(_)
            | BitLang::DenseNK(_)
            | BitLang::DenseKN(_)
            | BitLang::MasterNK(_)
            | BitLang::MasterKN(_)
            | BitLang::Inv(_)
            | BitLang::ScaleMul(_)
            | BitLang::Num(_)
            | BitLang::Leaf(_) => 1,
            BitLang::MatMul(_) => 10_000,
            _ => 100,
        };
        enode.fold(own, |acc, id| acc.saturating_add(costs(id)))
    }
}
