//! GGUF bytes → `GgufFile::from_bytes`; on success every tensor is dequantized and read as ternary,
//! and the tokenizer metadata is read. Any of these may return `Err`; none may panic, overflow or
//! allocate beyond what the file justifies.
#![no_main]

use bitnet_frontend::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    let names: Vec<String> = f.tensors().iter().map(|t| t.name.clone()).collect();
    for name in &names {
        if let Ok(t) = f.dequantize(name) {
            assert_eq!(t.shape, f.tensor_info(name).expect("listed").shape());
        }
        let _ = f.ternary(name);
        let info = f.tensor_info(name).expect("listed");
        assert_eq!(f.tensor_bytes(info).len(), info.n_bytes);
    }
    let _ = f.tokenizer();
});
