//! Checks of the architecture's shape that the compiler does not make: no import cycle between
//! sibling modules of a crate, and a `main.rs` that only parses and dispatches.
//!
//! An import cycle here is two modules with the same parent that each name something inside the
//! other (`crate::…`, `super::…` or `self::…` paths, `use` lists included), directly or through
//! other siblings: such modules cannot be read, tested or moved one at a time. A module naming an
//! item of an ancestor (a child using its parent's types) is not a cycle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules must not import each other in a cycle (every library crate).
const CRATES: [&str; 8] = [
    "numerics", "ir", "frontend", "passes", "backends", "runtime", "serve", ".",
];

/// The most lines `src/main.rs` may have: it parses the command line and dispatches to
/// `src/cli/<command>.rs`, where each command's arguments, body and audit record live.
const MAIN_RS_MAX_LINES: usize = 150;

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file relative to its crate's `src/` (`cpu/kernels/emit.rs` →
/// `[cpu, kernels, emit]`; `lib.rs`, `main.rs` and `mod.rs` name their folder).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_string());
    }
    parts
}

/// Source text without comments and string literals (so paths in docs are not counted).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A char literal such as '{' (lifetimes have no closing quote two bytes on).
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The identifier starting at byte `i` of `s`, if any.
fn ident_at(s: &str, i: usize) -> Option<&str> {
    let rest = s.get(i..)?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The paths in `code` that start at `crate::`, `super::` or `self::`, each as its segments
/// (a `{a, b::c}` group after a prefix gives one path per member, its first segment only).
fn relative_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let begin = from + at;
            from = begin + start.len();
            let before = code[..begin].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut segs = vec![start.trim_end_matches("::").to_string()];
            let mut i = from;
            loop {
                if let Some(id) = ident_at(code, i) {
                    segs.push(id.to_string());
                    i += id.len();
                    if code[i..].starts_with("::") {
                        i += 2;
                        continue;
                    }
                } else if code[i..].starts_with('{') {
                    let close = code[i..].find('}').map_or(code.len(), |c| i + c);
                    for member in code[i + 1..close].split(',') {
                        let m = member.trim();
                        if let Some(id) = ident_at(m, 0) {
                            let mut p = segs.clone();
                            p.push(id.to_string());
                            paths.push(p);
                        }
                    }
                    segs.clear();
                }
                break;
            }
            if !segs.is_empty() {
                paths.push(segs);
            }
        }
    }
    paths
}

/// `path` (starting with `crate`, `super` or `self`) as an absolute module path, seen from the
/// module at `here`.
fn resolve(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = here.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// For each parent module, the edges between its child modules: child a → child b when a file
/// under a names something under b.
type SiblingEdges = BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>>;

fn sibling_edges(src: &Path) -> SiblingEdges {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(src, f)).collect();
    let mut edges = SiblingEdges::new();
    for file in &files {
        let here = module_path(src, file);
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for path in relative_paths(&code) {
            let Some(target) = resolve(&here, &path) else {
                continue;
            };
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            // Both sides must be child modules of the common parent (not an item in it).
            let (Some(a), Some(b)) = (here.get(common), target.get(common)) else {
                continue;
            };
            let parent = here[..common].to_vec();
            let mut sibling = parent.clone();
            sibling.push(b.clone());
            if !modules.contains(&sibling) {
                continue;
            }
            edges
                .entry(parent)
                .or_default()
                .entry(a.clone())
                .or_default()
                .insert(b.clone());
        }
    }
    edges
}

/// The cycles (strongly connected sets of two or more modules) of one parent's child graph.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for node in graph.keys() {
        let from = reach(node);
        let scc: BTreeSet<String> = from
            .iter()
            .filter(|m| *m != node && reach(m).contains(node))
            .cloned()
            .chain(std::iter::once(node.clone()))
            .collect();
        if scc.len() > 1 && !found.contains(&scc) {
            found.push(scc);
        }
    }
    found
}

#[test]
fn no_import_cycle_between_sibling_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        for (parent, graph) in sibling_edges(&src) {
            for scc in cycles(&graph) {
                let at = if parent.is_empty() {
                    "the crate root".to_string()
                } else {
                    parent.join("::")
                };
                let names: Vec<&str> = scc.iter().map(String::as_str).collect();
                problems.push(format!(
                    "{}: modules {} of {at} import each other",
                    src.display(),
                    names.join(", ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker finds a cycle between siblings and ignores a child using its parent's items.
#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let dir = std::env::temp_dir().join(format!("bitnetc-arch-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("cpu")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod cpu;\npub struct Top;\n").unwrap();
    std::fs::write(
        src.join("cpu/mod.rs"),
        "mod emit; mod jit;\npub struct Kind;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("cpu/emit.rs"),
        "use super::jit::signature; use crate::Top; use super::Kind;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("cpu/jit.rs"),
        "// crate::cpu::emit in a comment is not an import\nuse super::{emit::build, Kind};\n",
    )
    .unwrap();
    let edges = sibling_edges(&src);
    let found = cycles(&edges[&vec!["cpu".to_string()]]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        vec![BTreeSet::from(["emit".to_string(), "jit".to_string()])]
    );
}

#[test]
fn main_rs_only_parses_and_dispatches() {
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs");
    let lines = std::fs::read_to_string(&main).unwrap().lines().count();
    assert!(
        lines < MAIN_RS_MAX_LINES,
        "{} has {lines} lines; each command's arguments, body and audit record belong in \
         src/cli/<command>.rs",
        main.display()
    );
}
