//! Reading `.bir` IR text with its diagnostics rendered for people (`file:line:col: error:` and the
//! offending line), every one the verifier finds.

use crate::Error;
use bitnet_ir::diagnostic::render_all;
use bitnet_ir::{Module, text, verify};
use std::path::Path;

/// Reads, parses and verifies a `.bir` file.
pub fn load_bir(path: &Path) -> Result<Module, Error> {
    let src = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bir(&src, &path.display().to_string())
}

/// Parses and verifies IR text; `file` is the name diagnostics show.
pub fn parse_bir(src: &str, file: &str) -> Result<Module, Error> {
    let module = text::parse(src, file).map_err(|d| Error::InvalidIr {
        count: 1,
        rendered: d.render(file, Some(src)),
    })?;
    let diags = verify::verify_module(&module);
    if diags.is_empty() {
        Ok(module)
    } else {
        Err(Error::InvalidIr {
            count: diags.len(),
            rendered: render_all(&diags, file, Some(src)),
        })
    }
}
