//! The C API driven from Rust through its `extern "C"` functions, as a C program calls them: the
//! tokens, text and logits are the facade's (`bitnetc::compile`, `Session`), on the hf-tiny
//! fixture compiled in memory and, when a C compiler driver can link one, as a `.bnx` artifact;
//! every NULL argument and bad input is a status with a message naming it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnetc_runtime::*;
use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

const PROMPT: &str = "Return a new sorted list from the items in iterable.";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny/packed")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnetc-capi-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn last_error() -> String {
    // SAFETY: the library's NUL-terminated string, read before the next call.
    unsafe { CStr::from_ptr(bitnetc_last_error()) }
        .to_str()
        .unwrap()
        .to_string()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Opens `path` with 2 threads; the status and the model (NULL on failure).
fn open(path: &Path) -> (BitnetcStatus, *mut BitnetcModel) {
    let c = cstr(path.to_str().unwrap());
    let options = BitnetcModelOptions {
        threads: 2,
        ..bitnetc_model_options_default()
    };
    let mut model = null_mut();
    // SAFETY: valid string, options and out pointer.
    let status = unsafe { bitnetc_model_open(c.as_ptr(), &options, &mut model) };
    (status, model)
}

fn session(path: &Path) -> *mut BitnetcSession {
    let (status, model) = open(path);
    assert_eq!(status, BitnetcStatus::Ok, "{}", last_error());
    let mut session = null_mut();
    // SAFETY: a live model, default options, a valid out pointer.
    let status = unsafe { bitnetc_session_new(model, null(), &mut session) };
    assert_eq!(status, BitnetcStatus::Ok, "{}", last_error());
    // SAFETY: the model is freed once; the session does not borrow it.
    unsafe { bitnetc_model_free(model) };
    session
}

fn tokenize(session: *mut BitnetcSession, text: &str) -> Vec<u32> {
    let text = cstr(text);
    let mut n = 0;
    // SAFETY: a live session, a valid string, no buffer with capacity 0.
    let status = unsafe { bitnetc_tokenize(session, text.as_ptr(), null_mut(), 0, &mut n) };
    assert_eq!(status, BitnetcStatus::BufferTooSmall, "{}", last_error());
    let mut ids = vec![0u32; n];
    // SAFETY: room for `n` ids.
    let status = unsafe { bitnetc_tokenize(session, text.as_ptr(), ids.as_mut_ptr(), n, &mut n) };
    assert_eq!(status, BitnetcStatus::Ok, "{}", last_error());
    assert_eq!(n, ids.len());
    ids
}

/// What the callback saw: tokens and text; it asks to stop once it has seen `stop_after` tokens.
#[derive(Default)]
struct Streamed {
    tokens: Vec<i64>,
    text: Vec<u8>,
    stop_after: Option<usize>,
}

unsafe extern "C" fn on_token(
    user: *mut c_void,
    token: i64,
    text: *const c_char,
    len: usize,
) -> i32 {
    // SAFETY: `user` is the `Streamed` the test passed; `text` is `len` bytes and a NUL.
    let (streamed, bytes) = unsafe {
        (
            &mut *user.cast::<Streamed>(),
            std::slice::from_raw_parts(text.cast::<u8>(), len + 1),
        )
    };
    assert_eq!(bytes[len], 0, "the text is NUL-terminated");
    streamed.tokens.push(token);
    streamed.text.extend_from_slice(&bytes[..len]);
    let seen = streamed.tokens.iter().filter(|&&t| t >= 0).count();
    i32::from(streamed.stop_after.is_some_and(|n| seen >= n))
}

/// Greedy generation through the C API: (tokens, streamed text, stop).
fn generate(
    session: *mut BitnetcSession,
    prompt: &[u32],
    max: usize,
) -> (Vec<u32>, String, BitnetcStop) {
    generate_stopping(session, prompt, max, None)
}

/// As `generate`, with a callback that asks to stop after `stop_after` tokens.
fn generate_stopping(
    session: *mut BitnetcSession,
    prompt: &[u32],
    max: usize,
    stop_after: Option<usize>,
) -> (Vec<u32>, String, BitnetcStop) {
    let mut streamed = Streamed {
        stop_after,
        ..Streamed::default()
    };
    let mut out = vec![0u32; max];
    let (mut n, mut stop) = (usize::MAX, BitnetcStop::ContextFull);
    // SAFETY: valid pointers and sizes; the callback reads `Streamed`.
    let status = unsafe {
        bitnetc_generate(
            session,
            prompt.as_ptr(),
            prompt.len(),
            max,
            Some(on_token),
            (&raw mut streamed).cast(),
            out.as_mut_ptr(),
            max,
            &mut n,
            &mut stop,
        )
    };
    assert_eq!(status, BitnetcStatus::Ok, "{}", last_error());
    out.truncate(n);
    let ids: Vec<i64> = streamed
        .tokens
        .iter()
        .copied()
        .filter(|&t| t >= 0)
        .collect();
    assert_eq!(ids, out.iter().map(|&t| i64::from(t)).collect::<Vec<_>>());
    (out, String::from_utf8(streamed.text).unwrap(), stop)
}

/// Generation, text and logits through the C API equal the facade's, for `path`.
fn same_as_facade(path: &Path) {
    let options = bitnetc::Options {
        cpu: bitnetc::CpuOptions::with_threads(2),
        ..bitnetc::Options::default()
    };
    let mut reference = bitnetc::compile(path, &options).unwrap().session().unwrap();
    let ids = reference.encode(PROMPT).unwrap();
    let params = bitnetc::GenerateParams {
        max_tokens: 16,
        ..bitnetc::GenerateParams::default()
    };
    let want = reference.generate(&ids, &params, &mut |_, _| {}).unwrap();
    reference.reset();
    let want_logits = reference.forward(&ids).unwrap().to_vec();

    let s = session(path);
    assert_eq!(tokenize(s, PROMPT), ids);
    let (tokens, text, stop) = generate(s, &ids, 16);
    assert_eq!(tokens, want.tokens, "{}", path.display());
    assert_eq!(text, want.text);
    assert_eq!(stop, BitnetcStop::MaxTokens);
    // Continuing with no prompt runs the pending token first, as the facade does.
    assert_eq!(generate(s, &[], 2).0.len(), 2);
    // A callback that returns non-zero stops the generation before its next step.
    // SAFETY: a live session.
    assert_eq!(unsafe { bitnetc_session_reset(s) }, BitnetcStatus::Ok);
    let (cut, _, stop) = generate_stopping(s, &ids, 16, Some(3));
    assert_eq!(
        (&cut[..], stop),
        (&want.tokens[..3], BitnetcStop::Cancelled)
    );

    let mut detok = null_mut();
    // SAFETY: valid ids and out pointer; the string is freed below.
    let status = unsafe { bitnetc_detokenize(s, tokens.as_ptr(), tokens.len(), &mut detok) };
    assert_eq!(status, BitnetcStatus::Ok, "{}", last_error());
    // SAFETY: a NUL-terminated string from the library, freed once.
    let detok_text = unsafe { CStr::from_ptr(detok) }
        .to_str()
        .unwrap()
        .to_string();
    unsafe { bitnetc_string_free(detok) };
    assert_eq!(detok_text, want.text);

    // SAFETY: a live session; logits are read before the next call on it.
    unsafe {
        assert_eq!(bitnetc_session_reset(s), BitnetcStatus::Ok);
        let (mut logits, mut n) = (null(), 0);
        let status = bitnetc_forward(s, ids.as_ptr(), ids.len(), &mut logits, &mut n);
        assert_eq!(status, BitnetcStatus::Ok, "{}", last_error());
        assert_eq!(n, ids.len() * bitnetc_session_vocab(s) as usize);
        assert_eq!(std::slice::from_raw_parts(logits, n), &want_logits[..]);
        bitnetc_session_free(s);
    }
}

#[test]
fn jit_model_matches_the_facade() {
    same_as_facade(&fixture());
}

#[test]
fn artifact_matches_the_facade() {
    let mut m = bitnetc::OpenOptions::default().open(&fixture()).unwrap();
    let bytes = match bitnetc::compile_cpu_object(&mut m, &bitnetc::ArtifactOptions::default())
        .and_then(|o| o.link(None))
    {
        Ok(bytes) => bytes,
        Err(e) => {
            println!("skipped: no artifact without a linker ({e})");
            return;
        }
    };
    let path = scratch("artifact").join("hf-tiny.bnx");
    std::fs::write(&path, bytes).unwrap();
    same_as_facade(&path);
}

#[test]
fn missing_and_bad_files_are_load_errors_naming_them() {
    let dir = scratch("bad");
    let missing = dir.join("missing.bnx");
    let (status, model) = open(&missing);
    assert_eq!((status, model), (BitnetcStatus::Load, null_mut()));
    let msg = last_error();
    assert!(msg.contains("missing.bnx"), "{msg}");
    assert!(
        !msg.starts_with(&format!("{0}: {0}", missing.display())),
        "{msg}"
    );

    // An artifact cut short after its magic, and a file that is no model at all.
    let mut full = [0u8; 64];
    full[..4].copy_from_slice(&bitnetc::runtime::artifact::MAGIC);
    let junk = std::fs::read(fixture().join("config.json")).unwrap();
    for (name, bytes) in [("short.bnx", &full[..]), ("junk.bnx", &junk[..20])] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (status, model) = open(&path);
        assert_eq!((status, model), (BitnetcStatus::Load, null_mut()), "{name}");
        let msg = last_error();
        println!("{name}: {msg}");
        assert!(msg.contains(name), "{name}: {msg}");
    }
}

#[test]
fn null_arguments_and_bad_values_are_refused_by_name() {
    let expect = |status: BitnetcStatus, want: BitnetcStatus, needle: &str| {
        assert_eq!(status, want, "{}", last_error());
        let msg = last_error();
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    };
    let null_arg = BitnetcStatus::NullArgument;
    let path = cstr(fixture().to_str().unwrap());
    let mut model = null_mut();
    let mut session = null_mut();
    let (mut n, mut logits) = (0usize, null());
    let mut text = null_mut();
    // SAFETY: every call gets a NULL where the test says, valid pointers elsewhere.
    unsafe {
        expect(
            bitnetc_model_open(null(), null(), &mut model),
            null_arg,
            "`path`",
        );
        expect(
            bitnetc_model_open(path.as_ptr(), null(), null_mut()),
            null_arg,
            "`out_model`",
        );
        expect(
            bitnetc_session_new(null_mut(), null(), &mut session),
            null_arg,
            "`model`",
        );
        expect(
            bitnetc_tokenize(null_mut(), path.as_ptr(), null_mut(), 0, &mut n),
            null_arg,
            "`session`",
        );
        expect(
            bitnetc_session_reset(null_mut()),
            null_arg,
            "bitnetc_session_reset",
        );
        assert_eq!(bitnetc_session_vocab(null()), 0);
        assert_eq!(bitnetc_model_context(null()), 0);
        bitnetc_model_free(null_mut());
        bitnetc_session_free(null_mut());
        bitnetc_string_free(null_mut());

        assert_eq!(
            bitnetc_model_open(path.as_ptr(), null(), &mut model),
            BitnetcStatus::Ok
        );
        assert_eq!(bitnetc_model_vocab(model), 1000);
        let bad = BitnetcSessionOptions {
            top_p: 0.0,
            ..bitnetc_session_options_default()
        };
        expect(
            bitnetc_session_new(model, &bad, &mut session),
            BitnetcStatus::InvalidArgument,
            "top-p",
        );
        assert_eq!(
            bitnetc_session_new(model, null(), &mut session),
            BitnetcStatus::Ok
        );
        let mut second = null_mut();
        expect(
            bitnetc_session_new(model, null(), &mut second),
            BitnetcStatus::State,
            "already made its session",
        );
        assert!(second.is_null());
        bitnetc_model_free(model);

        let s = session;
        expect(
            bitnetc_tokenize(s, null(), null_mut(), 0, &mut n),
            null_arg,
            "`text`",
        );
        expect(
            bitnetc_tokenize(s, path.as_ptr(), null_mut(), 4, &mut n),
            null_arg,
            "`out_ids`",
        );
        expect(
            bitnetc_tokenize(s, path.as_ptr(), null_mut(), 0, null_mut()),
            null_arg,
            "`out_len`",
        );
        expect(
            bitnetc_detokenize(s, null(), 3, &mut text),
            null_arg,
            "`ids`",
        );
        expect(
            bitnetc_forward(s, null(), 1, &mut logits, &mut n),
            null_arg,
            "`ids`",
        );
        expect(
            bitnetc_forward(s, [1u32].as_ptr(), 1, null_mut(), &mut n),
            null_arg,
            "`out_logits`",
        );
        expect(
            bitnetc_forward(s, null(), 0, &mut logits, &mut n),
            BitnetcStatus::Runtime,
            "bitnetc_forward",
        );
        expect(
            bitnetc_forward(s, [5000u32].as_ptr(), 1, &mut logits, &mut n),
            BitnetcStatus::Runtime,
            "5000",
        );
        let mut out = [0u32; 2];
        let status = bitnetc_generate(
            s,
            [1u32].as_ptr(),
            1,
            4,
            None,
            null_mut(),
            out.as_mut_ptr(),
            2,
            null_mut(),
            null_mut(),
        );
        expect(status, BitnetcStatus::InvalidArgument, "out_capacity 2");
        let status = bitnetc_generate(
            s,
            null(),
            0,
            4,
            None,
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            null_mut(),
        );
        expect(status, BitnetcStatus::Runtime, "bitnetc_generate");
        let long = vec![1u32; 600];
        let status = bitnetc_generate(
            s,
            long.as_ptr(),
            long.len(),
            1,
            None,
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            null_mut(),
        );
        expect(status, BitnetcStatus::Runtime, "512");
        bitnetc_session_free(s);
    }
    assert!(
        !unsafe { CStr::from_ptr(bitnetc_version()) }
            .to_bytes()
            .is_empty()
    );
}
