//! Models: `bitnetc_model_open` compiles a model for this CPU or loads a `.bnx` artifact through
//! the facade (`bitnetc::compile`), with the executor's threads and context; a model makes one
//! session (it has one KV cache).

use crate::error::{BitnetcStatus, Fail, guard, guard_free, non_null};
use std::ffi::{CStr, c_char};
use std::path::PathBuf;

/// An opened model (opaque). Made by `bitnetc_model_open`, freed by `bitnetc_model_free`.
pub struct BitnetcModel {
    /// The compiled model until its session takes it.
    pub(crate) compiled: Option<bitnetc::Compiled>,
    /// The path it was opened from, for messages.
    pub(crate) path: String,
    vocab: u64,
    context: u64,
}

/// How to open a model: what the executor is built with.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BitnetcModelOptions {
    /// Threads the executor runs on; 0: every core.
    pub threads: usize,
    /// The longest context in tokens; 0: the model's limit. Ignored for an artifact, whose context
    /// was fixed when it was compiled.
    pub context: u64,
}

/// The default model options: every core, the model's context.
#[unsafe(no_mangle)]
pub extern "C" fn bitnetc_model_options_default() -> BitnetcModelOptions {
    BitnetcModelOptions {
        threads: 0,
        context: 0,
    }
}

/// Opens the model at `path` (a `.bnx` artifact, or a Hugging Face folder, `.gguf` or `.onnx`
/// file, compiled for this CPU in memory), with `options` (NULL: the defaults).
///
/// On success `*out_model` is a new model that the caller owns and frees with
/// `bitnetc_model_free`; on failure it is set to NULL and `bitnetc_last_error` names the file and
/// what is wrong with it (`BITNETC_STATUS_LOAD`).
///
/// # Safety
/// `path` is a NUL-terminated string; `options` is NULL or points to a `BitnetcModelOptions`;
/// `out_model` points to writable storage for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_model_open(
    path: *const c_char,
    options: *const BitnetcModelOptions,
    out_model: *mut *mut BitnetcModel,
) -> BitnetcStatus {
    guard(|| {
        const F: &str = "bitnetc_model_open";
        non_null(out_model, F, "out_model")?;
        // SAFETY: `out_model` is non-null and writable (the caller's contract).
        unsafe { *out_model = std::ptr::null_mut() };
        non_null(path, F, "path")?;
        // SAFETY: `path` is non-null and NUL-terminated (the caller's contract).
        let path = unsafe { CStr::from_ptr(path) }.to_str().map_err(|_| {
            Fail::new(
                BitnetcStatus::InvalidArgument,
                format!("{F}: `path` is not UTF-8"),
            )
        })?;
        let opts = if options.is_null() {
            bitnetc_model_options_default()
        } else {
            // SAFETY: non-null, and points to a `BitnetcModelOptions` (the caller's contract).
            unsafe { *options }
        };
        let mut compile = bitnetc::Options {
            context: (opts.context != 0).then_some(opts.context),
            ..bitnetc::Options::default()
        };
        if opts.threads != 0 {
            compile.cpu.threads = opts.threads;
        }
        let compiled = bitnetc::compile(&PathBuf::from(path), &compile)
            .map_err(|e| Fail::new(BitnetcStatus::Load, naming(path, &e.to_string())))?;
        let model = BitnetcModel {
            vocab: compiled.vocab(),
            context: compiled.context(),
            compiled: Some(compiled),
            path: path.to_string(),
        };
        // SAFETY: `out_model` is non-null and writable (checked above).
        unsafe { *out_model = Box::into_raw(Box::new(model)) };
        Ok(())
    })
}

/// Frees a model made by `bitnetc_model_open` (NULL: nothing). A session made from it stays valid.
///
/// # Safety
/// `model` is NULL or a model from `bitnetc_model_open` not yet freed; it is invalid afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_model_free(model: *mut BitnetcModel) {
    if !model.is_null() {
        // SAFETY: made by `Box::into_raw` in `bitnetc_model_open` and not freed (the contract).
        guard_free(|| drop(unsafe { Box::from_raw(model) }));
    }
}

/// The model's vocabulary size (the number of logits per token); 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live model from `bitnetc_model_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_model_vocab(model: *const BitnetcModel) -> u64 {
    // SAFETY: NULL or a live model (the caller's contract).
    unsafe { model.as_ref() }.map_or(0, |m| m.vocab)
}

/// The model's context length in tokens; 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live model from `bitnetc_model_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_model_context(model: *const BitnetcModel) -> u64 {
    // SAFETY: NULL or a live model (the caller's contract).
    unsafe { model.as_ref() }.map_or(0, |m| m.context)
}

/// `message`, prefixed with `path` unless it already names it.
pub(crate) fn naming(path: &str, message: &str) -> String {
    if message.contains(path) {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}
