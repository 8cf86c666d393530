//! `.bnx` artifact bytes → `artifact::parse` (magic, version, manifest hash and JSON, every
//! section's bounds and hash), twice: on the bytes as given, and on the bytes with a repaired header
//! (magic, version and the manifest's sha256 written over the first 48 bytes, the manifest length
//! clamped to the file) so that mutations of the manifest JSON reach the checks after the hash.
//! When parsing succeeds: every section range lies in the file and has the hash the manifest
//! records; `check_target` and the `chat_template` section's reader return without panicking;
//! re-encoding the manifest with `encode_manifest` (when it accepts it) gives bytes that parse to the
//! same manifest; and `read_ir` (through a temp file, one per process) must not panic. No code is
//! loaded (`load_program` would `dlopen` the code section).
#![no_main]

use bitnet_runtime::artifact::{
    FORMAT_VERSION, HEADER_BYTES, MAGIC, check_target, encode_manifest, parse, read_ir, sha256_hex,
};
use bitnet_runtime::chat::ChatTemplate;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("bitnetc-fuzz-{}.bnx", std::process::id())))
}

/// `data` with a header that passes the magic, version and manifest-hash checks.
fn repaired(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER_BYTES {
        return None;
    }
    let mut v = data.to_vec();
    v[..4].copy_from_slice(&MAGIC);
    v[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut m_len = [0u8; 8];
    m_len.copy_from_slice(&v[8..16]);
    let m_len = u64::from_le_bytes(m_len).min((v.len() - HEADER_BYTES) as u64);
    v[8..16].copy_from_slice(&m_len.to_le_bytes());
    let json = &v[HEADER_BYTES..HEADER_BYTES + m_len as usize];
    let hash = sha256_hex(json);
    let raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).expect("sha256_hex is hex"))
        .collect();
    v[16..48].copy_from_slice(&raw);
    Some(v)
}

fn check(bytes: &[u8]) {
    let Ok(p) = parse(bytes) else {
        return;
    };
    for s in &p.manifest.sections {
        let r = p
            .sections
            .get(&s.name)
            .expect("every manifest section is in the map");
        assert!(
            r.end <= bytes.len(),
            "section {} ends past the file",
            s.name
        );
        assert_eq!(r.len() as u64, s.bytes);
        assert_eq!(sha256_hex(&bytes[r.clone()]), s.sha256);
    }
    assert_eq!(p.sections.len(), p.manifest.sections.len());
    let _ = check_target(&p.manifest.target);
    if let Some(r) = p.sections.get("chat_template") {
        let _ = ChatTemplate::from_section(&bytes[r.clone()], "fuzz.bnx");
    }
    // The writer and the reader agree: what `encode_manifest` writes parses to the same manifest.
    let sections: Vec<(&str, &[u8])> = p
        .manifest
        .sections
        .iter()
        .map(|s| (s.name.as_str(), &bytes[p.sections[&s.name].clone()]))
        .collect();
    if let Ok(again) = encode_manifest(&p.manifest, &sections) {
        match parse(&again) {
            Ok(p2) => assert_eq!(p2.manifest, p.manifest, "re-encoded manifest differs"),
            Err(e) => panic!("re-encoded artifact does not parse: {e}"),
        }
    }
    std::fs::write(path(), bytes).expect("write temp file");
    let _ = read_ir(path());
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(v) = repaired(data) {
        check(&v);
    }
});
