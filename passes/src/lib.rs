//! bitnet-passes: the pass manager and the passes that turn `nn.*` IR into planned `bit.*` IR
//! (e-graph lowering of BitLinear, fusion, weight packing, scheduling, memory planning).
//!
//! Empty until the Passes issue lands; see DESIGN.md.
