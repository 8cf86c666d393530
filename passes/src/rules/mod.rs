//! Rewrite rules for the e-graph passes, one file per topic. Rules are named (kebab-case), one-way,
//! and each states in its doc what it recognizes; conditions look at e-class facts (`bitlang::Facts`).

pub mod bitlinear;
