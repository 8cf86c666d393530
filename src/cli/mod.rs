//! The commands of the `bitnetc` binary that run models, `run` and `bench`, with the progress
//! display they share and the audit log's location.

pub mod audit_log;
pub mod bench;
pub mod cuda;
pub mod progress;
pub mod run;

/// Parses `--head-dtype` (`auto`, `f16`, `i8`).
pub fn parse_head_dtype(s: &str) -> Result<bitnet_backends::cpu::HeadDtype, String> {
    bitnet_backends::cpu::HeadDtype::parse(s)
        .ok_or_else(|| format!("{s:?}: expected auto (bf16 when exact, else f32), f16 or i8"))
}

/// Writes a new file; an existing file is an error, never overwritten.
pub fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "{}: cannot create (it may already exist; bitnetc does not overwrite files)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .with_context(|| format!("{}: write failed", path.display()))?;
    Ok(())
}

/// What `bitnetc compile` writes: the artifact, and for each `--emit` kind asked for, `STEM.EXT`
/// beside it.
pub struct Outputs<'a> {
    stem: String,
    output: &'a std::path::Path,
    emit: &'a [String],
}

impl<'a> Outputs<'a> {
    /// Checks `emit` against `kinds` (kind → extension; `for_target` is said in the error, e.g.
    /// "with --target cuda, ") and that none of the files exists yet: nothing is overwritten.
    pub fn check(
        output: &'a std::path::Path,
        emit: &'a [String],
        kinds: &[(&str, &str)],
        for_target: &str,
    ) -> anyhow::Result<Outputs<'a>> {
        use anyhow::Context as _;
        for e in emit {
            if !kinds.iter().any(|(k, _)| k == e) {
                let known: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
                anyhow::bail!(
                    "--emit {e}: {for_target}expected one of {}",
                    known.join(", ")
                );
            }
        }
        let stem = output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("{}: not a file name", output.display()))?;
        let out = Outputs { stem, output, emit };
        let mut paths = vec![output.to_path_buf()];
        paths.extend(
            kinds
                .iter()
                .filter(|(k, _)| out.wanted(k))
                .map(|(_, ext)| out.side(ext)),
        );
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            anyhow::bail!(
                "{}: already exists (bitnetc does not overwrite files)",
                p.display()
            );
        }
        Ok(out)
    }

    /// Whether `--emit` asked for `kind`.
    pub fn wanted(&self, kind: &str) -> bool {
        self.emit.iter().any(|e| e == kind)
    }

    /// The side file with extension `ext`.
    pub fn side(&self, ext: &str) -> std::path::PathBuf {
        self.output.with_file_name(format!("{}.{ext}", self.stem))
    }
}
