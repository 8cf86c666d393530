//! Artifacts (`.bnx`): a compiled model in one file, and loading one into an `Executor`.
//!
//! Layout (all integers little endian):
//!
//! | bytes | what |
//! |---|---|
//! | 0..4 | magic `BNX1` |
//! | 4..8 | format version (u32, `FORMAT_VERSION`) |
//! | 8..16 | manifest length `m` (u64) |
//! | 16..48 | sha256 of the manifest |
//! | 48..48+m | the manifest: JSON (`Manifest`), keys in a fixed (sorted) order, no timestamps |
//! | from `data_start` | the sections, each at a 64-byte aligned offset, zero padding between |
//!
//! `data_start` is the first multiple of 64 at or after `48 + m`; each section's offset in the
//! manifest is relative to it, so the weights land 64-byte aligned in the file (and in a mapping of
//! it). Sections: `code` (an ELF shared library holding the kernels), `weights` (the blob the launches
//! index), `tokenizer` (the model's `tokenizer.json`, when it has one, with `tokenizer_special`: JSON
//! `{"bos": id|null, "eos": [ids]}`, which `tokenizer.json` does not record), `chat_template` (the
//! model's chat template, when it has one: JSON, `chat::ChatTemplate::to_section`) and `ir` (the compiled IR as text;
//! with the manifest's weight index, which says where each weight it names is in `weights`, it lets a
//! reference interpreter run what the artifact contains: `read_ir`). The manifest records each
//! section's sha256; loading checks the magic, the format version, the manifest hash, the target
//! (architecture, OS and every CPU feature the code was compiled for), and every section's bounds and
//! hash before anything runs.
//!
//! Math functions: the code section exports one pointer-sized, writable slot per runtime math function
//! it calls (`Manifest::imports`); its calls go through a hidden trampoline that loads the slot. The
//! loader writes the runtime's own function (`crate::math`) into each slot before any kernel runs, so
//! the library needs no symbol from the process that loads it and computes exactly what JIT code does.
//!
//! Loading an artifact runs its code: load only artifacts you trust, as with any shared library.

use crate::AlignedBytes;
use crate::error::RuntimeError;
pub use crate::error::{ArtifactError, ArtifactProblem};
use crate::executor::Executor;
use crate::program::{BufRef, KernelFn, Launch, Program, Region, Rows};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The first four bytes of every artifact.
pub const MAGIC: [u8; 4] = *b"BNX1";
/// The format version this runtime writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the manifest.
pub const HEADER_BYTES: usize = 48;
/// Alignment of the data area and of every section in it.
pub const SECTION_ALIGN: u64 = 64;

/// The manifest. Fields are declared in alphabetical order (JSON keys come out sorted); maps are
/// `BTreeMap`s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The compiler that wrote it (`bitnetc 0.1.0`).
    pub compiler: String,
    /// Code generation settings (Cranelift's shared flags), name → value.
    pub flags: BTreeMap<String, String>,
    /// The format version (also in the header).
    pub format_version: u32,
    /// Runtime math functions the code calls, and the slots that must hold them.
    pub imports: Vec<Import>,
    /// The model files it was compiled from.
    pub inputs: Vec<InputFile>,
    /// sha256 of the optimized IR (printed) that was compiled.
    pub ir_sha256: String,
    /// The kernels, by index.
    pub kernels: Vec<KernelEntry>,
    /// The launch plan, in order.
    pub launches: Vec<LaunchEntry>,
    /// A summary of the memory plan.
    pub memory: MemorySummary,
    /// The pass pipeline, in order.
    pub passes: Vec<String>,
    /// Sizes, inputs and outputs of the program.
    pub program: ProgramInfo,
    /// The sections after the manifest.
    pub sections: Vec<Section>,
    /// What the code runs on.
    pub target: TargetInfo,
    /// Every weight the `ir` section names: where its bytes are in the `weights` section.
    #[serde(default)]
    pub weights: WeightIndex,
}

/// Weight name → where its bytes are in the `weights` section.
pub type WeightIndex = BTreeMap<String, WeightEntry>;

/// A named weight in the `weights` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightEntry {
    /// Its length in bytes.
    pub bytes: u64,
    /// The element type of the stored bytes (`f32`, `u8`, …; little endian).
    pub elem: String,
    /// Its byte offset in the `weights` section.
    pub offset: u64,
    /// Its shape.
    pub shape: Vec<u64>,
    /// How each row (the last axis) is ordered: absent for index order, `PAIRED_LAYOUT` for the
    /// CPU backend's paired order (per group of eight, elements l and 4 + l side by side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
}

/// `WeightEntry::layout` of rows in the CPU backend's paired order (`matmul_half::layout`).
pub const PAIRED_LAYOUT: &str = "pairs8";

/// A runtime math function the code calls through a slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Import {
    /// The library's exported data symbol that must hold the function's address.
    pub slot: String,
    /// The runtime math function (`crate::math`), by symbol name.
    pub symbol: String,
}

/// A model file and its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    /// Size in bytes.
    pub bytes: u64,
    /// The file name (relative to the model folder, or the model file's own name).
    pub name: String,
    /// Its sha256, hex.
    pub sha256: String,
}

/// A kernel of the code section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelEntry {
    /// What it computes (the backend's description, for people).
    pub kind: String,
    /// Its exported symbol.
    pub symbol: String,
}

/// A buffer of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufEntry {
    /// Size in bytes at the largest T.
    pub bytes: u64,
    /// Byte offset in its region.
    pub offset: u64,
    /// The region.
    pub region: RegionEntry,
}

/// A region, as the manifest spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionEntry {
    /// The activation arena.
    Arena,
    /// The weights section.
    Weights,
    /// The KV cache.
    Kv,
}

/// Rows of a launch, as the manifest spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowsEntry {
    /// A fixed count.
    Static(u64),
    /// T × this.
    PerToken(u64),
}

/// One launch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchEntry {
    /// Its buffers, in the kernel's order.
    pub bufs: Vec<BufEntry>,
    /// The CUDA grid of this launch, in a CUDA artifact (`crate::cuda`); absent in CPU artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<crate::cuda::CudaLaunch>,
    /// Index into `Manifest::kernels`.
    pub kernel: usize,
    /// What it computes.
    pub label: String,
    /// `Launch::last_token`: per buffer, the bytes between two tokens' rows, on the launches that
    /// `forward_last` runs for the last token alone (absent elsewhere, and in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_token: Option<Vec<u64>>,
    /// `Launch::per_sequence`: per buffer, the bytes between two tokens' rows, on the launches that
    /// depend on the sequence (absent elsewhere, and in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_sequence: Option<Vec<u64>>,
    /// The rows it covers.
    pub rows: RowsEntry,
    /// `Launch::row_group` (absent when 1, and in older manifests).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub row_group: u64,
}

/// The default of `LaunchEntry::row_group`.
fn one() -> u64 {
    1
}

/// Whether a `LaunchEntry::row_group` is the default (not written).
fn is_one(n: &u64) -> bool {
    *n == 1
}

/// The memory plan, summarized.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySummary {
    /// Arena size.
    pub arena_bytes: u64,
    /// Arena buffers.
    pub buffers: u64,
    /// Bytes of constants computed from weights at compile time.
    pub constant_bytes: u64,
    /// KV-cache size.
    pub kv_bytes: u64,
    /// KV-cache slots.
    pub kv_slots: u64,
    /// The lower bound on the arena (the largest set of simultaneously live values).
    pub lower_bound_bytes: u64,
    /// The arena without reuse (every value its own bytes).
    pub naive_bytes: u64,
    /// Ops in the schedule.
    pub schedule_length: u64,
}

/// Sizes, inputs and outputs of the program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramInfo {
    /// Arena size in bytes.
    pub arena_bytes: u64,
    /// `Program::batchable` (false in older manifests).
    #[serde(default)]
    pub batchable: bool,
    /// The largest T.
    pub context: u64,
    /// KV-cache size in bytes.
    pub kv_bytes: u64,
    /// Where the logits come from (f32 [T, vocab]).
    pub logits: BufEntry,
    /// Where the token ids go (i64 `[T]`).
    pub tokens: BufEntry,
    /// Vocabulary size.
    pub vocab: u64,
    /// Size of the weights section.
    pub weights_bytes: u64,
}

/// A section of the data area.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// Its size.
    pub bytes: u64,
    /// `code`, `weights`, `tokenizer` or `ir`.
    pub name: String,
    /// Its offset from the start of the data area (a multiple of 64).
    pub offset: u64,
    /// Its sha256, hex.
    pub sha256: String,
}

/// The target the code was compiled for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The architecture, as `std::env::consts::ARCH` names it (`x86_64`, `aarch64`).
    pub arch: String,
    /// CPU features the code may use, as `is_x86_feature_detected!` / `is_aarch64_feature_detected!`
    /// name them; the loader requires every one.
    pub features: Vec<String>,
    /// The ISA settings Cranelift compiled with, name → value.
    pub isa_flags: BTreeMap<String, String>,
    /// The operating system, as `std::env::consts::OS` names it.
    pub os: String,
    /// The target triple.
    pub triple: String,
}

impl From<BufRef> for BufEntry {
    fn from(b: BufRef) -> BufEntry {
        BufEntry {
            bytes: b.bytes,
            offset: b.offset,
            region: match b.region {
                Region::Arena => RegionEntry::Arena,
                Region::Weights => RegionEntry::Weights,
                Region::Kv => RegionEntry::Kv,
            },
        }
    }
}

impl From<BufEntry> for BufRef {
    fn from(b: BufEntry) -> BufRef {
        BufRef {
            region: match b.region {
                RegionEntry::Arena => Region::Arena,
                RegionEntry::Weights => Region::Weights,
                RegionEntry::Kv => Region::Kv,
            },
            offset: b.offset,
            bytes: b.bytes,
        }
    }
}

impl From<Rows> for RowsEntry {
    fn from(r: Rows) -> RowsEntry {
        match r {
            Rows::Static(n) => RowsEntry::Static(n),
            Rows::PerToken(n) => RowsEntry::PerToken(n),
        }
    }
}

impl From<RowsEntry> for Rows {
    fn from(r: RowsEntry) -> Rows {
        match r {
            RowsEntry::Static(n) => Rows::Static(n),
            RowsEntry::PerToken(n) => Rows::PerToken(n),
        }
    }
}

impl From<&Launch> for LaunchEntry {
    fn from(l: &Launch) -> LaunchEntry {
        LaunchEntry {
            bufs: l.bufs.iter().map(|&b| b.into()).collect(),
            cuda: None,
            kernel: l.kernel,
            label: l.label.clone(),
            rows: l.rows.into(),
            last_token: l.last_token.clone(),
            per_sequence: l.per_sequence.clone(),
            row_group: l.row_group,
        }
    }
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The size and sha256 (lowercase hex) of the file at `path`, read in a stream.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((bytes, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn align(n: u64) -> u64 {
    n.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}

/// Writes an artifact: the header, `manifest` (with `format_version` and `sections` filled in here) and
/// `sections` (name, bytes) in order. The same arguments give the same bytes.
pub fn encode(manifest: &Manifest, sections: &[(&str, &[u8])]) -> Result<Vec<u8>, ArtifactProblem> {
    let mut out = Vec::new();
    encode_to(manifest, sections, &mut out)?;
    Ok(out)
}

/// `encode`, written to `w` as it goes (a model's weights are not copied into one buffer with the
/// rest of the file first); returns the bytes written.
pub fn encode_to(
    manifest: &Manifest,
    sections: &[(&str, &[u8])],
    w: &mut dyn std::io::Write,
) -> Result<u64, ArtifactProblem> {
    let mut m = manifest.clone();
    m.format_version = FORMAT_VERSION;
    m.sections.clear();
    let mut offset = 0u64;
    for (name, bytes) in sections {
        m.sections.push(Section {
            bytes: bytes.len() as u64,
            name: (*name).to_string(),
            offset,
            sha256: sha256_hex(bytes),
        });
        offset = align(offset + bytes.len() as u64);
    }
    encode_manifest_to(&m, sections, w)
}

/// Writes an artifact exactly as `manifest` describes it (sections at its recorded offsets, its
/// recorded version), without filling anything in: for tests that need an inconsistent file.
pub fn encode_manifest(
    manifest: &Manifest,
    sections: &[(&str, &[u8])],
) -> Result<Vec<u8>, ArtifactProblem> {
    let mut out = Vec::new();
    encode_manifest_to(manifest, sections, &mut out)?;
    Ok(out)
}

/// `encode_manifest`, written to `w`; returns the bytes written.
fn encode_manifest_to(
    manifest: &Manifest,
    sections: &[(&str, &[u8])],
    w: &mut dyn std::io::Write,
) -> Result<u64, ArtifactProblem> {
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| ArtifactProblem::Manifest(e.to_string()))?;
    let data_start = align((HEADER_BYTES + json.len()) as u64);
    let mut header = Vec::with_capacity(HEADER_BYTES + json.len());
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&manifest.format_version.to_le_bytes());
    header.extend_from_slice(&(json.len() as u64).to_le_bytes());
    header.extend_from_slice(&Sha256::digest(&json));
    header.extend_from_slice(&json);
    w.write_all(&header)?;
    let mut written = header.len() as u64;
    for (s, (_, bytes)) in manifest.sections.iter().zip(sections) {
        let at = data_start
            .checked_add(s.offset)
            .ok_or_else(|| ArtifactProblem::Manifest("section offset too large".into()))?;
        if written > at {
            return Err(ArtifactProblem::Manifest(format!(
                "section {} overlaps the one before it",
                s.name
            )));
        }
        // Zero padding up to the section.
        written += std::io::copy(
            &mut std::io::Read::take(std::io::repeat(0), at - written),
            w,
        )?;
        w.write_all(bytes)?;
        written += bytes.len() as u64;
    }
    Ok(written)
}

/// A parsed and checked artifact: its manifest and where each section is in `bytes`.
#[derive(Debug)]
pub struct Parsed {
    /// The manifest.
    pub manifest: Manifest,
    /// Each section's byte range in the file, by name.
    pub sections: BTreeMap<String, std::ops::Range<usize>>,
}

/// Parses `bytes` (a whole artifact) and checks the magic, the format version, the manifest's hash
/// and every section's bounds and hash. It does not check the target (`check_target`).
pub fn parse(bytes: &[u8]) -> Result<Parsed, ArtifactProblem> {
    let len = bytes.len() as u64;
    if bytes.len() < 4 || bytes[..4] != MAGIC {
        return Err(ArtifactProblem::Magic);
    }
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or(ArtifactProblem::Truncated {
            part: "header".into(),
            start: 0,
            end: HEADER_BYTES as u64,
            len,
        })?;
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if version != FORMAT_VERSION {
        return Err(ArtifactProblem::FormatVersion {
            found: version,
            reads: FORMAT_VERSION,
        });
    }
    let mut m_len = [0u8; 8];
    m_len.copy_from_slice(&header[8..16]);
    let m_len = u64::from_le_bytes(m_len);
    let m_end = (HEADER_BYTES as u64).saturating_add(m_len);
    if m_end > len {
        return Err(ArtifactProblem::Truncated {
            part: "manifest".into(),
            start: HEADER_BYTES as u64,
            end: m_end,
            len,
        });
    }
    let json = &bytes[HEADER_BYTES..m_end as usize];
    let actual = sha256_hex(json);
    let expected = hex(&header[16..48]);
    if actual != expected {
        return Err(ArtifactProblem::Checksum {
            part: "manifest".into(),
            expected,
            actual,
        });
    }
    let manifest: Manifest =
        serde_json::from_slice(json).map_err(|e| ArtifactProblem::Manifest(e.to_string()))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(ArtifactProblem::FormatVersion {
            found: manifest.format_version,
            reads: FORMAT_VERSION,
        });
    }
    let data_start = align(m_end);
    let mut sections = BTreeMap::new();
    for s in &manifest.sections {
        let part = format!("{} section", s.name);
        if s.offset % SECTION_ALIGN != 0 {
            return Err(ArtifactProblem::Manifest(format!(
                "the {part} is at offset {}, not a multiple of {SECTION_ALIGN}",
                s.offset
            )));
        }
        let start = data_start.saturating_add(s.offset);
        let end = start.saturating_add(s.bytes);
        if end > len {
            return Err(ArtifactProblem::Truncated {
                part,
                start,
                end,
                len,
            });
        }
        let range = start as usize..end as usize;
        let actual = sha256_hex(&bytes[range.clone()]);
        if actual != s.sha256 {
            return Err(ArtifactProblem::Checksum {
                part,
                expected: s.sha256.clone(),
                actual,
            });
        }
        if sections.insert(s.name.clone(), range).is_some() {
            return Err(ArtifactProblem::Manifest(format!(
                "two sections named {}",
                s.name
            )));
        }
    }
    Ok(Parsed { manifest, sections })
}

/// Reads the compiled IR an artifact carries, for running it with a reference interpreter: the IR
/// text (the `ir` section), the weight index and the `weights` section. Checks what `parse` checks
/// (magic, version, the manifest's and every section's hash) and that every indexed weight lies inside
/// the weights section; it does not check the target and loads no code.
pub fn read_ir(path: &Path) -> Result<(String, WeightIndex, Vec<u8>), RuntimeError> {
    let err = |problem: ArtifactProblem| -> RuntimeError {
        ArtifactError {
            path: path.to_path_buf(),
            problem,
        }
        .into()
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.into()))?;
    let parsed = parse(&bytes).map_err(err)?;
    let m = &parsed.manifest;
    let section = |name: &str| {
        parsed.sections.get(name).cloned().ok_or_else(|| {
            err(ArtifactProblem::Manifest(format!(
                "no {name} section (compiled by an older bitnetc? recompile it to run it on the interpreter)"
            )))
        })
    };
    let ir = String::from_utf8(bytes[section("ir")?].to_vec()).map_err(|_| {
        err(ArtifactProblem::Manifest(
            "the ir section is not UTF-8".into(),
        ))
    })?;
    let weights = bytes[section("weights")?].to_vec();
    if weights.len() as u64 != m.program.weights_bytes {
        return Err(err(ArtifactProblem::Manifest(format!(
            "the weights section has {} bytes, the program expects {}",
            weights.len(),
            m.program.weights_bytes
        ))));
    }
    for (name, w) in &m.weights {
        if w.offset
            .checked_add(w.bytes)
            .is_none_or(|end| end > weights.len() as u64)
        {
            return Err(err(ArtifactProblem::Manifest(format!(
                "weight {name:?} at {} + {} bytes is outside the weights section of {} bytes",
                w.offset,
                w.bytes,
                weights.len()
            ))));
        }
    }
    Ok((ir, parsed.manifest.weights, weights))
}

/// Whether this CPU has `feature` (a name `TargetInfo::features` uses); `None` for a name this
/// runtime does not know how to check.
pub fn host_has_feature(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        Some(match feature {
            "sse2" => has!("sse2"),
            "sse3" => has!("sse3"),
            "ssse3" => has!("ssse3"),
            "sse4.1" => has!("sse4.1"),
            "sse4.2" => has!("sse4.2"),
            "cmpxchg16b" => has!("cmpxchg16b"),
            "popcnt" => has!("popcnt"),
            "avx" => has!("avx"),
            "avx2" => has!("avx2"),
            "fma" => has!("fma"),
            "bmi1" => has!("bmi1"),
            "bmi2" => has!("bmi2"),
            "lzcnt" => has!("lzcnt"),
            "avxvnni" => has!("avxvnni"),
            "avx512f" => has!("avx512f"),
            "avx512vl" => has!("avx512vl"),
            "avx512dq" => has!("avx512dq"),
            "avx512bw" => has!("avx512bw"),
            "avx512vbmi" => has!("avx512vbmi"),
            "avx512bitalg" => has!("avx512bitalg"),
            "avx512vnni" => has!("avx512vnni"),
            "avx512fp16" => has!("avx512fp16"),
            _ => return None,
        })
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        Some(match feature {
            "neon" => has!("neon"),
            "lse" => has!("lse"),
            "paca" => has!("paca"),
            "fp16" => has!("fp16"),
            "dotprod" => has!("dotprod"),
            "i8mm" => has!("i8mm"),
            "bti" => has!("bti"),
            "sve" => has!("sve"),
            _ => return None,
        })
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = feature;
        None
    }
}

/// Checks that the code of `target` runs here: the architecture, the OS and every CPU feature.
pub fn check_target(target: &TargetInfo) -> Result<(), ArtifactProblem> {
    check_target_on(
        target,
        std::env::consts::ARCH,
        std::env::consts::OS,
        &host_has_feature,
    )
}

/// `check_target` for a machine described by `arch`, `os` and `has` (what `host_has_feature` says).
pub fn check_target_on(
    target: &TargetInfo,
    arch: &str,
    os: &str,
    has: &dyn Fn(&str) -> Option<bool>,
) -> Result<(), ArtifactProblem> {
    if crate::cuda::is_cuda_target(&target.os) {
        return Err(ArtifactProblem::Target(format!(
            "compiled for a CUDA GPU ({}, {}): the CPU runtime cannot run PTX; compile the model for this CPU with --target native",
            target.triple,
            target.features.join(",")
        )));
    }
    if target.arch != arch || target.os != os {
        return Err(ArtifactProblem::Target(format!(
            "compiled for {} ({}-{}), but this machine is {arch}-{os}: compile it with --target native here",
            target.triple, target.arch, target.os
        )));
    }
    for f in &target.features {
        match has(f) {
            Some(true) => {}
            Some(false) => {
                return Err(ArtifactProblem::Target(format!(
                    "compiled for a CPU with {f}, which this CPU lacks: compile it here with --target native, or for a portable baseline with --target {}",
                    target.triple
                )));
            }
            None => {
                return Err(ArtifactProblem::Target(format!(
                    "requires CPU feature {f:?}, which this runtime cannot check"
                )));
            }
        }
    }
    Ok(())
}

/// True if `path` is a file that starts with the artifact magic.
pub fn is_artifact(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == MAGIC
}

/// A loaded artifact: the program's parts and the manifest. `into_executor` prepares it to run.
pub struct Loaded {
    /// The manifest.
    pub manifest: Manifest,
    /// The program.
    pub program: Program,
    /// The `tokenizer.json` it carries, if any.
    pub tokenizer: Option<Vec<u8>>,
    /// Its special ids (`{"bos": id|null, "eos": [ids]}`), if recorded.
    pub tokenizer_special: Option<Vec<u8>>,
    /// The model's chat template (`chat::ChatTemplate::to_section`), if it has one.
    pub chat_template: Option<Vec<u8>>,
}

/// Keeps the loaded library (and so the kernels' code) alive as long as the program; never read.
struct LibraryCode(#[allow(dead_code)] libloading::Library);

/// Loads the artifact at `path` and prepares it to run on `threads` threads.
pub fn load(path: &Path, threads: usize) -> Result<Executor, RuntimeError> {
    let loaded = load_program(path)?;
    Executor::new(loaded.program, threads).map_err(|e| {
        ArtifactError {
            path: path.to_path_buf(),
            problem: ArtifactProblem::Manifest(format!(
                "the launch plan does not fit the program: {e}"
            )),
        }
        .into()
    })
}

/// Loads the artifact at `path`: maps it, checks everything (`parse`, `check_target`, the launch plan
/// against the sections), loads the code section as a shared library and resolves every kernel.
pub fn load_program(path: &Path) -> Result<Loaded, ArtifactError> {
    let err = |problem: ArtifactProblem| ArtifactError {
        path: path.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.into()))?;
    // SAFETY: the map is read only; an artifact must not be modified while it is being loaded (a
    // concurrent edit is caught by the hashes at worst after the bytes were read).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(e.into()))?;
    let parsed = parse(&map).map_err(err)?;
    let m = &parsed.manifest;
    check_target(&m.target).map_err(err)?;
    let section = |name: &str| {
        parsed
            .sections
            .get(name)
            .cloned()
            .ok_or_else(|| err(ArtifactProblem::Manifest(format!("no {name} section"))))
    };
    let code = &map[section("code")?];
    let weights_range = section("weights")?;
    if weights_range.len() as u64 != m.program.weights_bytes {
        return Err(err(ArtifactProblem::Manifest(format!(
            "the weights section has {} bytes, the program expects {}",
            weights_range.len(),
            m.program.weights_bytes
        ))));
    }
    let tokenizer = parsed
        .sections
        .get("tokenizer")
        .map(|r| map[r.clone()].to_vec());
    let tokenizer_special = parsed
        .sections
        .get("tokenizer_special")
        .map(|r| map[r.clone()].to_vec());
    let chat_template = parsed
        .sections
        .get("chat_template")
        .map(|r| map[r.clone()].to_vec());
    let library = open_library(code).map_err(|e| err(ArtifactProblem::Library(e)))?;
    for import in &m.imports {
        let f = crate::math::symbols()
            .into_iter()
            .find(|(name, _)| *name == import.symbol)
            .map(|(_, f)| f)
            .ok_or_else(|| {
                err(ArtifactProblem::Manifest(format!(
                    "the code calls {}, which this runtime does not provide",
                    import.symbol
                )))
            })?;
        // SAFETY: the slot is a pointer-sized writable data symbol the compiler defined for exactly
        // this (see the module doc); no kernel runs before it is written.
        unsafe {
            let slot = library
                .get::<*mut *const u8>(import.slot.as_bytes())
                .map_err(|e| err(ArtifactProblem::Library(format!("{}: {e}", import.slot))))?;
            let slot: *mut *const u8 = *slot;
            if slot.is_null() {
                return Err(err(ArtifactProblem::Library(format!(
                    "{} is null",
                    import.slot
                ))));
            }
            slot.write(f);
        }
    }
    let mut kernels = Vec::with_capacity(m.kernels.len());
    for k in &m.kernels {
        // SAFETY: every kernel symbol of the code section is defined with the C ABI of `KernelFn`.
        let f: KernelFn = unsafe {
            *library
                .get::<KernelFn>(k.symbol.as_bytes())
                .map_err(|e| err(ArtifactProblem::Library(format!("{}: {e}", k.symbol))))?
        };
        kernels.push((k.symbol.clone(), f));
    }
    let launches = m
        .launches
        .iter()
        .map(|l| Launch {
            kernel: l.kernel,
            bufs: l.bufs.iter().map(|&b| b.into()).collect(),
            rows: l.rows.into(),
            label: l.label.clone(),
            last_token: l.last_token.clone(),
            per_sequence: l.per_sequence.clone(),
            row_group: l.row_group,
        })
        .collect();
    // Sections are 64-byte aligned in the file and the mapping starts on a page, so the weights
    // are used where they are mapped; a copy only where that does not hold.
    let weights = if map[weights_range.clone()].as_ptr().align_offset(64) == 0 {
        AlignedBytes::from_mapped(map, weights_range).ok_or_else(|| {
            err(ArtifactProblem::Manifest(
                "the weights section is outside the file".into(),
            ))
        })?
    } else {
        AlignedBytes::from_slice(&map[weights_range])
    };
    let p = &m.program;
    let program = Program {
        kernels,
        launches,
        arena_bytes: p.arena_bytes,
        kv_bytes: p.kv_bytes,
        weights,
        context: p.context,
        vocab: p.vocab,
        tokens: p.tokens.into(),
        logits: p.logits.into(),
        batchable: p.batchable,
        code: Box::new(LibraryCode(library)),
    };
    Ok(Loaded {
        manifest: parsed.manifest,
        program,
        tokenizer,
        tokenizer_special,
        chat_template,
    })
}

/// Writes `code` to a private temporary file, loads it, and removes the file (the mapping stays).
fn open_library(code: &[u8]) -> Result<libloading::Library, String> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    let tag = sha256_hex(code);
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "bitnet-{}-{n}-{}.so",
            std::process::id(),
            &tag[..16]
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o700);
        }
        let mut file = match options.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let written = file.write_all(code).and_then(|()| file.sync_all());
        drop(file);
        let result = written
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|()| {
                // SAFETY: the library holds only the compiler's kernels and data; it has no
                // initializers (it is linked without the C runtime), so loading runs no code.
                unsafe { libloading::Library::new(&path) }.map_err(|e| {
                    format!(
                        "{e} (the library was written to {}; is the temp directory mounted noexec? set TMPDIR)",
                        dir.display()
                    )
                })
            });
        let _ = std::fs::remove_file(&path);
        return result;
    }
    Err(format!(
        "{}: could not create a temporary file",
        dir.display()
    ))
}
