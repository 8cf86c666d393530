//! Sessions: a model's KV cache and tokenizer with the sampling choices, driven from C. Text in
//! and out (`bitnetc_tokenize`, `bitnetc_detokenize`), logits of prefill and decode steps
//! (`bitnetc_forward`), and generation with sampled tokens streamed through a callback
//! (`bitnetc_generate`): the same calls as `bitnetc::Session`.

use crate::error::{BitnetcStatus, Fail, guard, guard_free, non_null};
use crate::model::{BitnetcModel, naming};
use bitnetc::{Cancel, GenerateParams, SamplingParams, StopReason};
use std::ffi::{CStr, CString, c_char, c_void};

/// A session (opaque): the KV cache, the context so far, the tokenizer and the sampling choices.
/// Made by `bitnetc_session_new`, freed by `bitnetc_session_free`.
pub struct BitnetcSession {
    session: bitnetc::Session,
    sampling: SamplingParams,
    ignore_eos: bool,
}

/// How a session chooses tokens in `bitnetc_generate`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BitnetcSessionOptions {
    /// 0: greedy; otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// CTRL repetition penalty (1: none).
    pub repetition_penalty: f32,
    /// The seed of the random generator.
    pub seed: u64,
    /// Do not stop at the model's end-of-sequence ids.
    pub ignore_eos: bool,
}

/// Why `bitnetc_generate` stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitnetcStop {
    /// `max_tokens` new tokens were produced.
    MaxTokens = 0,
    /// A stop token (the model's end-of-sequence) was produced; it is the last token.
    StopToken = 1,
    /// A stop string was found in the text.
    StopString = 2,
    /// The context is full.
    ContextFull = 3,
    /// The callback returned non-zero.
    Cancelled = 4,
}

/// Called by `bitnetc_generate` for each new token with the text it completed, then once with
/// `token` -1 for text held back until the end (only if there is some). `text` is `text_len` bytes
/// of UTF-8 followed by a NUL; it belongs to the library and is valid during the call only.
/// Return 0 to go on; non-zero stops the generation before its next step (`BITNETC_STOP_CANCELLED`;
/// the tokens so far stay in the context). The value returned for the final call is ignored.
pub type BitnetcTokenCallback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        token: i64,
        text: *const c_char,
        text_len: usize,
    ) -> i32,
>;

/// The default session options: greedy decoding, no penalty, seed 0, stop at end-of-sequence.
#[unsafe(no_mangle)]
pub extern "C" fn bitnetc_session_options_default() -> BitnetcSessionOptions {
    let s = SamplingParams::greedy();
    BitnetcSessionOptions {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
        ignore_eos: false,
    }
}

/// Makes the session of `model` with `options` (NULL: the defaults). A model makes one session (it
/// has one KV cache): a second call is `BITNETC_STATUS_STATE`. The session does not borrow the
/// model, which may be freed before it.
///
/// On success `*out_session` is a new session that the caller owns and frees with
/// `bitnetc_session_free`; on failure it is set to NULL.
///
/// # Safety
/// `model` is a live model from `bitnetc_model_open`; `options` is NULL or points to a
/// `BitnetcSessionOptions`; `out_session` points to writable storage for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_session_new(
    model: *mut BitnetcModel,
    options: *const BitnetcSessionOptions,
    out_session: *mut *mut BitnetcSession,
) -> BitnetcStatus {
    guard(|| {
        const F: &str = "bitnetc_session_new";
        non_null(out_session, F, "out_session")?;
        // SAFETY: non-null and writable (the caller's contract).
        unsafe { *out_session = std::ptr::null_mut() };
        non_null(model, F, "model")?;
        // SAFETY: non-null and a live model, not used elsewhere during the call (the contract).
        let model = unsafe { &mut *model };
        let opts = if options.is_null() {
            bitnetc_session_options_default()
        } else {
            // SAFETY: non-null, and points to a `BitnetcSessionOptions` (the caller's contract).
            unsafe { *options }
        };
        let sampling = SamplingParams {
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            repetition_penalty: opts.repetition_penalty,
            seed: opts.seed,
        };
        sampling
            .validate()
            .map_err(|e| Fail::new(BitnetcStatus::InvalidArgument, format!("{F}: {e}")))?;
        let compiled = model.compiled.as_ref().ok_or_else(|| {
            Fail::new(
                BitnetcStatus::State,
                format!(
                    "{F}: {} already made its session (a model has one KV cache)",
                    model.path
                ),
            )
        })?;
        // Built here so that a tokenizer that cannot be read leaves the model as it was.
        compiled
            .tokenizer()
            .map_err(|e| Fail::new(BitnetcStatus::Load, naming(&model.path, &e.to_string())))?;
        let session = match model.compiled.take() {
            Some(c) => c
                .session()
                .map_err(|e| Fail::new(BitnetcStatus::Load, naming(&model.path, &e.to_string())))?,
            None => return Err(Fail::new(BitnetcStatus::State, F)),
        };
        let session = BitnetcSession {
            session,
            sampling,
            ignore_eos: opts.ignore_eos,
        };
        // SAFETY: non-null and writable (checked above).
        unsafe { *out_session = Box::into_raw(Box::new(session)) };
        Ok(())
    })
}

/// Frees a session made by `bitnetc_session_new` (NULL: nothing).
///
/// # Safety
/// `session` is NULL or a session not yet freed; it is invalid afterwards, and so is every logits
/// pointer it returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_session_free(session: *mut BitnetcSession) {
    if !session.is_null() {
        // SAFETY: made by `Box::into_raw` in `bitnetc_session_new` and not freed (the contract).
        guard_free(|| drop(unsafe { Box::from_raw(session) }));
    }
}

/// The vocabulary size (logits per token); 0 if `session` is NULL.
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_session_vocab(session: *const BitnetcSession) -> u64 {
    // SAFETY: NULL or a live session (the caller's contract).
    unsafe { session.as_ref() }.map_or(0, |s| s.session.vocab())
}

/// The context length in tokens; 0 if `session` is NULL.
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_session_context(session: *const BitnetcSession) -> u64 {
    // SAFETY: NULL or a live session (the caller's contract).
    unsafe { session.as_ref() }.map_or(0, |s| s.session.context())
}

/// Forgets the context (a new conversation).
///
/// # Safety
/// `session` is a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_session_reset(session: *mut BitnetcSession) -> BitnetcStatus {
    guard(|| {
        // SAFETY: checked for NULL by `session_mut`; a live session otherwise (the contract).
        let s = unsafe { session_mut(session, "bitnetc_session_reset") }?;
        s.session.reset();
        Ok(())
    })
}

/// Encodes `text` (NUL-terminated UTF-8) with the model's tokenizer, with its special tokens (such
/// as a leading BOS). Writes the number of ids to `*out_len` and, when they fit in `capacity`, the
/// ids to `out_ids`; otherwise returns `BITNETC_STATUS_BUFFER_TOO_SMALL` (call again with room for
/// `*out_len`). `out_ids` may be NULL when `capacity` is 0.
///
/// # Safety
/// `session` is a live session; `text` is NUL-terminated; `out_ids` is NULL or has room for
/// `capacity` ids; `out_len` points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_tokenize(
    session: *mut BitnetcSession,
    text: *const c_char,
    out_ids: *mut u32,
    capacity: usize,
    out_len: *mut usize,
) -> BitnetcStatus {
    guard(|| {
        const F: &str = "bitnetc_tokenize";
        // SAFETY: checked for NULL by `session_mut`; a live session otherwise (the contract).
        let s = unsafe { session_mut(session, F) }?;
        non_null(text, F, "text")?;
        non_null(out_len, F, "out_len")?;
        if capacity > 0 {
            non_null(out_ids, F, "out_ids")?;
        }
        // SAFETY: non-null and NUL-terminated (the caller's contract).
        let text = unsafe { CStr::from_ptr(text) }.to_str().map_err(|_| {
            Fail::new(
                BitnetcStatus::InvalidArgument,
                format!("{F}: `text` is not UTF-8"),
            )
        })?;
        let ids = s
            .session
            .encode(text)
            .map_err(|e| Fail::new(BitnetcStatus::Runtime, format!("{F}: {e}")))?;
        // SAFETY: non-null and writable (checked above).
        unsafe { *out_len = ids.len() };
        if ids.len() > capacity {
            return Err(Fail::new(
                BitnetcStatus::BufferTooSmall,
                format!("{F}: {} ids do not fit in {capacity}", ids.len()),
            ));
        }
        if !ids.is_empty() {
            // SAFETY: `out_ids` has room for `capacity` ≥ `ids.len()` ids and does not overlap
            // `ids`, which this call allocated.
            unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), out_ids, ids.len()) };
        }
        Ok(())
    })
}

/// Decodes `n_ids` token ids to text (special tokens left out). On success `*out_text` is a new
/// NUL-terminated UTF-8 string that the caller owns and frees with `bitnetc_string_free`; on
/// failure it is set to NULL. `ids` may be NULL when `n_ids` is 0.
///
/// # Safety
/// `session` is a live session; `ids` points to `n_ids` ids; `out_text` points to writable storage
/// for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_detokenize(
    session: *mut BitnetcSession,
    ids: *const u32,
    n_ids: usize,
    out_text: *mut *mut c_char,
) -> BitnetcStatus {
    guard(|| {
        const F: &str = "bitnetc_detokenize";
        non_null(out_text, F, "out_text")?;
        // SAFETY: non-null and writable (the caller's contract).
        unsafe { *out_text = std::ptr::null_mut() };
        // SAFETY: checked for NULL by `session_mut`; a live session otherwise (the contract).
        let s = unsafe { session_mut(session, F) }?;
        // SAFETY: `ids` points to `n_ids` ids (the caller's contract); NULL is checked there.
        let ids = unsafe { slice(ids, n_ids, F, "ids") }?;
        let tokenizer = s.session.tokenizer().ok_or_else(|| {
            Fail::new(
                BitnetcStatus::Runtime,
                format!("{F}: the model carries no tokenizer"),
            )
        })?;
        let text = tokenizer
            .decode(ids, true)
            .map_err(|e| Fail::new(BitnetcStatus::Runtime, format!("{F}: {e}")))?;
        let text = CString::new(text).map_err(|_| {
            Fail::new(
                BitnetcStatus::Runtime,
                format!("{F}: the text holds a NUL byte"),
            )
        })?;
        // SAFETY: non-null and writable (checked above).
        unsafe { *out_text = text.into_raw() };
        Ok(())
    })
}

/// Frees a string returned by `bitnetc_detokenize` (NULL: nothing).
///
/// # Safety
/// `text` is NULL or a string from `bitnetc_detokenize` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_string_free(text: *mut c_char) {
    if !text.is_null() {
        // SAFETY: made by `CString::into_raw` in `bitnetc_detokenize` and not freed (the contract).
        guard_free(|| drop(unsafe { CString::from_raw(text) }));
    }
}

/// Runs `n_ids` tokens after the context (a prefill, or a decode step with one token; a token
/// sampled by `bitnetc_generate` and not yet run goes first) and points `*out_logits` at their
/// logits: `n_ids × vocab` floats, row by row, `*out_len` of them. The logits belong to the
/// session and stay valid until the next call that takes it (or its free).
///
/// # Safety
/// `session` is a live session; `ids` points to `n_ids` ids; `out_logits` and `out_len` point to
/// writable storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bitnetc_forward(
    session: *mut BitnetcSession,
    ids: *const u32,
    n_ids: usize,
    out_logits: *mut *const f32,
    out_len: *mut usize,
) -> BitnetcStatus {
    guard(|| {
        const F: &str = "bitnetc_forward";
        non_null(out_logits, F, "out_logits")?;
        non_null(out_len, F, "out_len")?;
        // SAFETY: both non-null and writable (the caller's contract).
        unsafe {
            *out_logits = std::ptr::null();
            *out_len = 0;
        }
        // SAFETY: checked for NULL by `session_mut`; a live session otherwise (the contract).
        let s = unsafe { session_mut(session, F) }?;
        // SAFETY: `ids` points to `n_ids` ids (the caller's contract); NULL is checked there.
        let ids = unsafe { slice(ids, n_ids, F, "ids") }?;
        let logits = s
            .session
            .forward(ids)
            .map_err(|e| Fail::new(BitnetcStatus::Runtime, format!("{F}: {e}")))?;
        // SAFETY: both non-null and writable (checked above).
        unsafe {
            *out_logits = logits.as_ptr();
            *out_len = logits.len();
        }
        Ok(())
    })
}

/// Runs `n_prompt` prompt tokens after the context, then samples (with the session's options) and
/// feeds one token at a time until `max_tokens` new tokens, an end-of-sequence token or a full
/// context, or until `callback` returns non-zero. `callback` (may be NULL) is called with each
/// token and its text as it comes. If
/// `out_tokens` is not NULL it receives the new tokens and must have room for `max_tokens` of them
/// (`out_capacity`); `*out_len` (if not NULL) is their number and `*out_stop` (if not NULL) why it
/// stopped. The last sampled token is run at the start of the next call, so a session continues
/// where it left off; `prompt` may then be NULL with `n_prompt` 0.
///
/// # Safety
/// `session` is a live session; `prompt` points to `n_prompt` ids; `out_tokens` is NULL or has
/// room for `out_capacity` ids; `out_len` and `out_stop` are NULL or writable; `callback` is NULL
/// or a function safe to call with `user_data`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bitnetc_generate(
    session: *mut BitnetcSession,
    prompt: *const u32,
    n_prompt: usize,
    max_tokens: usize,
    callback: BitnetcTokenCallback,
    user_data: *mut c_void,
    out_tokens: *mut u32,
    out_capacity: usize,
    out_len: *mut usize,
    out_stop: *mut BitnetcStop,
) -> BitnetcStatus {
    guard(|| {
        const F: &str = "bitnetc_generate";
        if !out_len.is_null() {
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *out_len = 0 };
        }
        // SAFETY: checked for NULL by `session_mut`; a live session otherwise (the contract).
        let s = unsafe { session_mut(session, F) }?;
        // SAFETY: `prompt` points to `n_prompt` ids (the caller's contract); NULL is checked there.
        let prompt = unsafe { slice(prompt, n_prompt, F, "prompt") }?;
        if !out_tokens.is_null() && out_capacity < max_tokens {
            return Err(Fail::new(
                BitnetcStatus::InvalidArgument,
                format!("{F}: out_capacity {out_capacity} is less than max_tokens {max_tokens}"),
            ));
        }
        let cancel = Cancel::new();
        let params = GenerateParams {
            max_tokens,
            sampling: s.sampling.clone(),
            ignore_eos: s.ignore_eos,
            cancel: Some(cancel.clone()),
            ..GenerateParams::default()
        };
        let mut piece = Vec::new();
        let out = s
            .session
            .generate(prompt, &params, &mut |id, text| {
                if let Some(cb) = callback {
                    piece.clear();
                    piece.extend_from_slice(text.as_bytes());
                    piece.push(0);
                    let token = id.map_or(-1, i64::from);
                    // SAFETY: the callback is safe to call with `user_data` (the caller's
                    // contract); `piece` is `text.len()` bytes and a NUL, alive during the call.
                    let stop = unsafe { cb(user_data, token, piece.as_ptr().cast(), text.len()) };
                    if stop != 0 {
                        cancel.cancel();
                    }
                }
            })
            .map_err(|e| Fail::new(BitnetcStatus::Runtime, format!("{F}: {e}")))?;
        let n = out.tokens.len().min(max_tokens);
        if !out_tokens.is_null() && n > 0 {
            // SAFETY: `out_tokens` has room for `out_capacity` ≥ `max_tokens` ≥ `n` ids (checked
            // above) and does not overlap `out.tokens`, which this call allocated.
            unsafe { std::ptr::copy_nonoverlapping(out.tokens.as_ptr(), out_tokens, n) };
        }
        if !out_len.is_null() {
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *out_len = n };
        }
        if !out_stop.is_null() {
            let stop = match out.stop {
                StopReason::MaxTokens => BitnetcStop::MaxTokens,
                StopReason::StopToken(_) => BitnetcStop::StopToken,
                StopReason::StopString(_) => BitnetcStop::StopString,
                StopReason::ContextFull => BitnetcStop::ContextFull,
                StopReason::Cancelled => BitnetcStop::Cancelled,
            };
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *out_stop = stop };
        }
        Ok(())
    })
}

/// The session behind `session`, or an error naming `function` if it is NULL.
///
/// # Safety
/// `session` is NULL or a live session not used elsewhere for the returned borrow's life.
unsafe fn session_mut<'a>(
    session: *mut BitnetcSession,
    function: &str,
) -> Result<&'a mut BitnetcSession, Fail> {
    non_null(session, function, "session")?;
    // SAFETY: non-null; live and unaliased (the caller's contract).
    Ok(unsafe { &mut *session })
}

/// `n` ids at `ids` as a slice (empty when `n` is 0, even for NULL); an error if `ids` is NULL
/// with `n` > 0.
///
/// # Safety
/// `ids` is NULL or points to `n` readable ids that outlive the returned slice.
unsafe fn slice<'a>(
    ids: *const u32,
    n: usize,
    function: &str,
    argument: &str,
) -> Result<&'a [u32], Fail> {
    if n == 0 {
        return Ok(&[]);
    }
    non_null(ids, function, argument)?;
    // SAFETY: non-null and `n` readable ids (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts(ids, n) })
}
