//! The commands of the `bitnetc` binary that run models, `run` and `bench`, with the progress
//! display they share and the audit log's location.

pub mod audit_log;
pub mod bench;
pub mod progress;
pub mod run;
