//! `include/bitnetc.h` is what cbindgen generates from the crate now: a change to the C API that
//! is not in the committed header fails here. `BITNETC_BLESS=1` rewrites the header instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .unwrap()
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/bitnetc.h");
    if std::env::var_os("BITNETC_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        println!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not what cbindgen generates from capi/src: run \
         `BITNETC_BLESS=1 cargo test -p bitnetc-capi --test header` and commit it",
        path.display()
    );
}
