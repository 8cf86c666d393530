//! Sizes read from a file are checked before anything is allocated: for each format, a count or
//! length field set near `usize::MAX`, to `u32::MAX` and to just past the end of the file must give
//! a clear error naming the file (exit 1), never a panic, an abort or an attempt to allocate it.
//!
//! The CLI runs under a 3 GiB address-space limit (`ulimit -v`), so an allocation of a size taken
//! from the file on trust (4 GiB for `u32::MAX`, more near `usize::MAX`) fails and aborts the
//! process, which the test sees as a crash rather than exit 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use support::{Scratch, root};

/// The three hostile values for a field in a file of `len` bytes.
fn hostile(len: usize) -> [(&'static str, u64); 3] {
    [
        ("near usize::MAX", u64::MAX - 7),
        ("u32::MAX", u64::from(u32::MAX)),
        ("just past the end", len as u64 + 1),
    ]
}

/// Runs `bitnetc ARGS` under the address-space limit; asserts a clean failure naming `named`.
fn fails_cleanly(what: &str, args: &[&str], named: &Path) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "ulimit -v 3145728; exec '{}' {}",
        env!("CARGO_BIN_EXE_bitnetc"),
        quoted.join(" ")
    );
    let o = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("BITNETC_AUDIT_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: expected a clean error (exit 1), got {:?}: {err}",
        o.status
    );
    let name = named.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(name.as_ref()),
        "{what}: the error does not name {name}: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

fn patched(bytes: &[u8], at: usize, value: u64, width: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    b
}

#[test]
fn gguf_counts_and_lengths() {
    let dir = Scratch::create("hostile-gguf");
    let base = std::fs::read(root().join("tests/fixtures/gguf-tiny/tiny-tq2_0.gguf")).unwrap();
    // Header: magic, version (u32), tensor count (u64 at 8), key/value count (u64 at 16), then the
    // first key's length (u64 at 24).
    for (field, at) in [
        ("tensor count", 8),
        ("key/value count", 16),
        ("first key length", 24),
    ] {
        for (size, value) in hostile(base.len()) {
            let path = dir.join(format!("{}-{}.gguf", field.replace(['/', ' '], "_"), value));
            std::fs::write(&path, patched(&base, at, value, 8)).unwrap();
            fails_cleanly(
                &format!("gguf {field} {size}"),
                &["inspect", path.to_str().unwrap()],
                &path,
            );
        }
    }
}

#[test]
fn safetensors_header_length() {
    let src = root().join("tests/fixtures/hf-tiny/packed");
    let base = std::fs::read(src.join("model.safetensors")).unwrap();
    for (size, value) in hostile(base.len()) {
        let dir = Scratch::create(&format!("hostile-st-{value}"));
        for entry in std::fs::read_dir(&src).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() && p.file_name().unwrap() != "model.safetensors" {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        let path = dir.join("model.safetensors");
        std::fs::write(&path, patched(&base, 0, value, 8)).unwrap();
        fails_cleanly(
            &format!("safetensors header length {size}"),
            &["inspect", dir.to_str().unwrap()],
            &path,
        );
    }
}

#[test]
fn artifact_manifest_length() {
    if !support::have_cc("artifact_manifest_length") {
        return;
    }
    let dir = Scratch::create("hostile-bnx");
    let good = dir.join("good.bnx");
    let o = support::bitnetc(&[
        "compile",
        root()
            .join("tests/fixtures/hf-tiny/packed")
            .to_str()
            .unwrap(),
        "-o",
        good.to_str().unwrap(),
        "--context",
        "8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A whole artifact given to a command that reads models is named as an artifact.
    let o = support::bitnetc(&["inspect", good.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1)
            && err.contains("a compiled bitnetc artifact (.bnx), not a model"),
        "{err}"
    );
    let base = std::fs::read(&good).unwrap();
    // Header: magic, format version (u32), manifest length (u64 at 8).
    for (size, value) in hostile(base.len()) {
        let path = dir.join(format!("manifest-{value}.bnx"));
        std::fs::write(&path, patched(&base, 8, value, 8)).unwrap();
        fails_cleanly(
            &format!("artifact manifest length {size}"),
            &["run", path.to_str().unwrap(), "--tokens", "1", "-n", "1"],
            &path,
        );
    }
}

#[test]
fn onnx_length_prefixes() {
    let dir = Scratch::create("hostile-onnx");
    // ir_version 7, then field 7 (graph, length-delimited) whose length varint is hostile.
    for (size, value) in hostile(16) {
        let mut bytes = vec![0x08, 0x07, 0x3a];
        let mut v = value;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                bytes.push(byte);
                break;
            }
            bytes.push(byte | 0x80);
        }
        bytes.extend_from_slice(&[0x0a, 0x01, b'x']);
        let path = dir.join(format!("graph-{value}.onnx"));
        std::fs::write(&path, &bytes).unwrap();
        fails_cleanly(
            &format!("onnx graph length {size}"),
            &["inspect", path.to_str().unwrap()],
            &path,
        );
    }
}

#[test]
fn npy_header_length_and_shape() {
    use bitnet_frontend::npy;
    // A valid version-2 header (u32 length at 8), then the same with hostile lengths and shapes.
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    let mut pad = header.to_string();
    while !(12 + pad.len() + 1).is_multiple_of(64) {
        pad.push(' ');
    }
    pad.push('\n');
    let mut base = b"\x93NUMPY\x02\x00".to_vec();
    base.extend_from_slice(&(pad.len() as u32).to_le_bytes());
    base.extend_from_slice(pad.as_bytes());
    base.extend_from_slice(&[0u8; 8]);
    assert!(npy::decode(&base).is_ok(), "the base file must decode");
    for (size, value) in hostile(base.len()) {
        let value = u32::try_from(value).unwrap_or(u32::MAX - 3);
        let bytes = patched(&base, 8, u64::from(value), 4);
        assert!(npy::decode(&bytes).is_err(), "npy header length {size}");
    }
    for dim in [u64::MAX - 7, u64::from(u32::MAX), 3] {
        let h = header.replace("(2,)", &format!("({dim},)"));
        let mut p = h.clone();
        while !(12 + p.len() + 1).is_multiple_of(64) {
            p.push(' ');
        }
        p.push('\n');
        let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
        bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
        bytes.extend_from_slice(p.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        assert!(npy::decode(&bytes).is_err(), "npy shape ({dim},)");
    }
}
