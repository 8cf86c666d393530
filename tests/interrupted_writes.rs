//! Files bitnetc writes appear whole or not at all: `bitnetc compile` killed (SIGKILL) at 50
//! moments never leaves a partial artifact at the output path, the temporaries a killed process
//! leaves are cleaned by the next write and never block it, and a missing folder is named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Instant;
use support::{Scratch, have_cc, root};

fn compile(out: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"));
    c.args(["compile"])
        .arg(root().join("tests/fixtures/hf-tiny/packed"))
        .arg("-o")
        .arg(out)
        .args(["--context", "16"])
        .env("BITNETC_AUDIT_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

#[test]
fn a_killed_compile_never_leaves_a_partial_artifact() {
    if !have_cc("a_killed_compile_never_leaves_a_partial_artifact") {
        return;
    }
    let dir = Scratch::create("killed-compile");
    let out = dir.join("model.bnx");
    // How long a whole compile takes here, to spread the kills over it.
    let start = Instant::now();
    assert!(compile(&out).status().unwrap().success());
    let whole = start.elapsed();
    let expected = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut whole_files, mut none) = (0, 0);
    for _ in 0..50 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = whole.mul_f64((rng % 1000) as f64 / 1000.0 * 1.2);
        let mut child = compile(&out).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        if out.exists() {
            assert_eq!(
                std::fs::read(&out).unwrap(),
                expected,
                "a partial or different artifact"
            );
            whole_files += 1;
            std::fs::remove_file(&out).unwrap();
        } else {
            none += 1;
        }
    }
    println!("50 kills: {whole_files} finished artifacts, {none} with nothing written");
    // The next compile to the path works and leaves no temporary behind.
    assert!(compile(&out).status().unwrap().success());
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    let left: Vec<String> = std::fs::read_dir(&*dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "model.bnx")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_stale_temporary_is_cleaned_and_a_missing_folder_is_named() {
    if !have_cc("a_stale_temporary_is_cleaned_and_a_missing_folder_is_named") {
        return;
    }
    let dir = Scratch::create("stale-temporary");
    let out = dir.join("model.bnx");
    // What a process killed mid-write leaves (pid 999999999 does not exist).
    let stale = dir.join(".model.bnx.999999999.partial");
    std::fs::write(&stale, b"half an artifact").unwrap();
    let o = compile(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.is_file() && !stale.exists());
    let missing = dir.join("no/such/folder/model.bnx");
    let o = compile(&missing)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains("the folder")
            && e.contains("does not exist")
            && !e.contains("may already exist"),
        "{e}"
    );
}

#[test]
fn a_full_disk_leaves_nothing_at_the_output_path() {
    if !have_cc("a_full_disk_leaves_nothing_at_the_output_path") {
        return;
    }
    let dir = Scratch::create("full-disk");
    let out = dir.join("model.bnx");
    // The file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes a write past 1000 blocks
    // (512 KB or 1000 KB, by the shell) fail with EFBIG, as a full disk makes it fail with ENOSPC:
    // the same path through the writer. The linked kernels fit under it, the 1.3 MB artifact not.
    let c = compile(&out);
    let args: Vec<String> = c
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let script = format!(
        "trap '' XFSZ; ulimit -f 1000; exec '{}' {}",
        env!("CARGO_BIN_EXE_bitnetc"),
        args.join(" ")
    );
    let o = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("BITNETC_AUDIT_LOG", "off")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the limited compile succeeded: {e}");
    assert!(e.contains("model.bnx") && e.contains("cannot write"), "{e}");
    assert!(!out.exists(), "a partial artifact at the output path");
    let left: Vec<_> = std::fs::read_dir(&*dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // With room again, the same command works.
    assert!(compile(&out).status().unwrap().success());
    assert!(std::fs::metadata(&out).unwrap().len() > 1000 * 1024);
}
