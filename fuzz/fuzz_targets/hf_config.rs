//! config.json text → a per-process temp folder that also holds the packed hf-tiny
//! `model.safetensors` (copied once) → `import_model`. The importer must reject inconsistent configs
//! with `Err`; when it accepts one, the IR it builds must pass the verifier.
#![no_main]

use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("bitnetc-fuzz-hf-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create temp folder");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/hf-tiny/packed/model.safetensors");
        std::fs::copy(&src, d.join("model.safetensors")).expect("copy model.safetensors");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    std::fs::write(d.join("config.json"), data).expect("write config.json");
    if let Ok(m) = import_model(d, &ImportOptions::default()) {
        let diags = bitnet_ir::verify::verify_module(&m.module);
        assert!(diags.is_empty(), "imported IR does not verify: {diags:?}");
    }
});
