//! IR text → `text::parse`; when it parses: `verify_module` (must not panic), then
//! print → parse → print, which must succeed and give the same text (docs: `print(parse(print(m)))
//! == print(m)`).
#![no_main]

use bitnet_ir::text::{parse, print_module};
use bitnet_ir::verify::verify_module;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = parse(src, "fuzz.bir") else {
        return;
    };
    let _ = verify_module(&m);
    let p1 = print_module(&m);
    let m2 = match parse(&p1, "printed.bir") {
        Ok(m2) => m2,
        Err(e) => panic!("printed IR does not parse: {e:?}\n--- printed ---\n{p1}"),
    };
    let p2 = print_module(&m2);
    assert_eq!(p1, p2, "print(parse(print(m))) != print(m)");
});
