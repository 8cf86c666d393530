//! Checks read from the source tree: every `unsafe` block and `unsafe impl` has a `SAFETY:`
//! comment on its line or in the ten lines before it, and library code (every crate's `src/`
//! but the binary's `main.rs` and `cli/`, up to the file's first `#[cfg(test)]`, test files
//! excluded) calls no `.unwrap()`, `.expect("…")` or `panic!`. A line scan, not a parse: string
//! literals and `//` comments are blanked first (a raw string spanning lines is not).

use super::Check;
use std::path::{Path, PathBuf};

const UNSAFE: &str = "every unsafe block and unsafe impl has a SAFETY comment";
const PANICS: &str = "library code calls no unwrap, expect or panic!";

/// The library crates' source folders, relative to the tree.
const LIBRARY_SOURCES: &[&str] = &[
    "numerics/src",
    "ir/src",
    "frontend/src",
    "passes/src",
    "backends/src",
    "runtime/src",
    "serve/src",
    "capi/src",
    "train/src",
    "src",
];

/// Both scans over the tree at `source`.
pub fn checks(source: Option<&Path>) -> Vec<Check> {
    let Some(root) = source.filter(|r| r.join("Cargo.toml").is_file()) else {
        let why = "no source tree (give --source, the folder with bitnetc's Cargo.toml)";
        return vec![
            Check::not_run("unsafe_documented", UNSAFE, why.into()),
            Check::not_run("no_panics_in_library", PANICS, why.into()),
        ];
    };
    let mut files = Vec::new();
    for dir in LIBRARY_SOURCES {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    let library: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let rel = f.strip_prefix(root).unwrap_or(f);
            rel != Path::new("src/main.rs")
                && !rel.starts_with("src/cli")
                && f.file_name().is_none_or(|n| n != "tests.rs")
        })
        .collect();
    let (mut unsafe_sites, mut undocumented, mut panics) = (0usize, Vec::new(), Vec::new());
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        let lines: Vec<&str> = text.lines().collect();
        let in_library = library.contains(&file);
        let mut in_tests = false;
        for (i, line) in lines.iter().enumerate() {
            let code = code_only(line);
            let code = code.trim_start();
            if code.starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if code.contains("unsafe {") || code.contains("unsafe impl") {
                unsafe_sites += 1;
                let documented = lines[i.saturating_sub(10)..=i]
                    .iter()
                    .any(|l| l.contains("SAFETY:"));
                if !documented {
                    undocumented.push(format!("{rel}:{}", i + 1));
                }
            }
            if in_library
                && !in_tests
                && (code.contains(".unwrap()")
                    || code.contains(".expect(\"\"")
                    || code.contains("panic!("))
            {
                panics.push(format!("{rel}:{}", i + 1));
            }
        }
    }
    let first = |v: &[String]| v.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    vec![
        Check::ran(
            "unsafe_documented",
            UNSAFE,
            undocumented.is_empty(),
            if undocumented.is_empty() {
                format!(
                    "{unsafe_sites} unsafe blocks and impls in {} files, each with a SAFETY comment",
                    files.len()
                )
            } else {
                format!(
                    "{} of {unsafe_sites} without a SAFETY comment: {}",
                    undocumented.len(),
                    first(&undocumented)
                )
            },
        ),
        Check::ran(
            "no_panics_in_library",
            PANICS,
            panics.is_empty(),
            if panics.is_empty() {
                format!(
                    "{} library files scanned (outside their tests): none",
                    library.len()
                )
            } else {
                format!("{} calls: {}", panics.len(), first(&panics))
            },
        ),
    ]
}

/// The line with each string literal's contents removed (`"…"` kept as `""`) and a `//` comment
/// cut off.
fn code_only(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push('"');
            }
            // A char literal of a quote: keep it from opening a string.
            '\'' if chars.peek() == Some(&'"') => {
                out.push_str("'\"");
                chars.next();
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Every `.rs` file under `dir`.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::Status;

    #[test]
    fn strings_and_comments_are_blanked() {
        assert_eq!(
            code_only(r#"let s = "x.unwrap()"; // panic!("no")"#),
            r#"let s = ""; "#
        );
        assert_eq!(code_only(r#"f('"', "a\"b") + g()"#), r#"f('"', "") + g()"#);
    }

    #[test]
    fn an_unwrap_and_an_undocumented_unsafe_block_fail() {
        let root = std::env::temp_dir().join(format!("bitnetc-scan-{}", std::process::id()));
        let src = root.join("ir/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(root.join("Cargo.toml"), "[package]\n").unwrap();
        let lib = "fn a(x: Option<u8>) -> u8 {\n    x.unwrap()\n}\n\n\n\n\n\n\n\n\n\n\n\nfn b(p: *const u8) -> u8 {\n    unsafe { *p }\n}\n// SAFETY: p is valid.\nfn c(p: *const u8) -> u8 { unsafe { *p } }\n#[cfg(test)]\nmod tests { fn t() { None::<u8>.unwrap(); } }\n";
        std::fs::write(src.join("lib.rs"), lib).unwrap();
        let checks = checks(Some(&root));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(checks[0].status, Status::Fail);
        assert!(
            checks[0].evidence.contains("ir/src/lib.rs:16"),
            "{}",
            checks[0].evidence
        );
        assert!(
            !checks[0].evidence.contains(":19"),
            "{}",
            checks[0].evidence
        );
        assert_eq!(checks[1].status, Status::Fail);
        assert_eq!(checks[1].evidence, "1 calls: ir/src/lib.rs:2");
    }
}
