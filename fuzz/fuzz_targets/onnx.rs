//! ONNX bytes → a temp file (one path per process) → `onnx::import_onnx`; when it succeeds, the IR
//! must pass the verifier. Errors are fine; panics are not.
#![no_main]

use bitnet_frontend::onnx::import_onnx;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("bitnetc-fuzz-onnx-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create temp folder");
        d.join("model.onnx")
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write temp file");
    if let Ok(m) = import_onnx(p) {
        let diags = bitnet_ir::verify::verify_module(&m.module);
        assert!(diags.is_empty(), "imported IR does not verify: {diags:?}");
    }
});
