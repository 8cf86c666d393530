//! The C API of bitnetc (`libbitnetc_runtime`, header `include/bitnetc.h`): open a model or a
//! `.bnx` artifact, make a session with sampling options, tokenize and detokenize, run prefill and
//! decode steps for their logits, generate with the tokens and text streamed through a callback.
//! Every function calls the Rust facade (`bitnetc::compile`, `Compiled::session`,
//! `Session::{encode, forward, generate, reset}`).
//!
//! Conventions (the header repeats them per function):
//! - A fallible function returns `BitnetcStatus`; on failure `bitnetc_last_error()` is a message
//!   naming the function, argument or file. No panic crosses the boundary: one is caught and
//!   reported as `BITNETC_STATUS_INTERNAL`.
//! - Every pointer argument is checked for NULL (an error naming the argument), except where a
//!   function says NULL is allowed.
//! - What a `*_open`/`*_new`/`bitnetc_detokenize` call returns is the caller's and is freed with
//!   the matching `*_free`; everything else returned (logits, last error, callback text) is
//!   borrowed from the library, valid for as long as each function says.
//! - A session is used from one thread at a time.

mod error;
mod model;
mod session;

pub use error::{BitnetcStatus, bitnetc_last_error};
pub use model::{
    BitnetcModel, BitnetcModelOptions, bitnetc_model_context, bitnetc_model_free,
    bitnetc_model_open, bitnetc_model_options_default, bitnetc_model_vocab,
};
pub use session::{
    BitnetcSession, BitnetcSessionOptions, BitnetcStop, BitnetcTokenCallback, bitnetc_detokenize,
    bitnetc_forward, bitnetc_generate, bitnetc_session_context, bitnetc_session_free,
    bitnetc_session_new, bitnetc_session_options_default, bitnetc_session_reset,
    bitnetc_session_vocab, bitnetc_string_free, bitnetc_tokenize,
};

/// The library's version, a static NUL-terminated string (never freed).
#[unsafe(no_mangle)]
pub extern "C" fn bitnetc_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
