//! `.npy` bytes → `npy::decode`; when it succeeds, `encode` must give bytes that decode again to a
//! tensor that encodes to the same bytes (the writer and reader agree).
#![no_main]

use bitnet_frontend::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = npy::decode(data) else {
        return;
    };
    let bytes = npy::encode(&t);
    let t2 = npy::decode(&bytes).expect("re-decoding encode()'s output");
    assert_eq!(t.shape, t2.shape);
    assert_eq!(npy::encode(&t2), bytes);
});
