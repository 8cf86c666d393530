//! Reading a `.bir` file for a command: its diagnostics go to stderr, followed by
//! `FILE: N error(s)`, and the command exits with status 1.

use anyhow::Result;
use std::path::Path;

/// Loads a `.bir` file; `None` after its diagnostics were printed (the caller exits with 1).
pub fn load_or_report(file: &Path) -> Result<Option<bitnet_ir::Module>> {
    match bitnetc::load_bir(file) {
        Ok(m) => Ok(Some(m)),
        Err(bitnetc::Error::InvalidIr { count, rendered }) => {
            eprint!("{rendered}");
            eprintln!("{}: {count} error(s)", file.display());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
