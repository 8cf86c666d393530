//! safetensors bytes → a temp file (one path per process, rewritten each run) →
//! `SafetensorsStore::open` → `read` of every tensor. Errors are fine; panics are not.
#![no_main]

use bitnet_frontend::SafetensorsStore;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        std::env::temp_dir().join(format!("bitnetc-fuzz-{}.safetensors", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write temp file");
    let Ok(store) = SafetensorsStore::open(p) else {
        return;
    };
    for name in store.names() {
        if let Ok(t) = store.read(&name) {
            assert_eq!(t.shape, store.info(&name).expect("listed").shape);
        }
    }
});
