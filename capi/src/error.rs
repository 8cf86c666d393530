//! Status codes, the per-thread last error message, and the guard every exported function runs
//! its body in: a Rust error becomes a status and a message, a panic is caught (none crosses into
//! C), and a null pointer argument is an error naming the argument.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a call returns: `BITNETC_STATUS_OK`, or why it failed (`bitnetc_last_error` says more).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitnetcStatus {
    /// The call succeeded.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument was out of range or malformed (not UTF-8, a sampling value out of range, …).
    InvalidArgument = 2,
    /// The model or artifact could not be opened (missing file, damaged or foreign artifact, …).
    Load = 3,
    /// Running the model failed (empty prompt, context overflow, no tokenizer, …).
    Runtime = 4,
    /// An output buffer was too small; the needed length was written where the call says.
    BufferTooSmall = 5,
    /// The call does not fit the object's state (a model's one session was already made).
    State = 6,
    /// An internal error (a caught panic): a bug in bitnetc, reported rather than aborting.
    Internal = 7,
}

/// A failed call: its status and its message.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) status: BitnetcStatus,
    pub(crate) message: String,
}

impl Fail {
    /// A failure with `status` and `message`.
    pub(crate) fn new(status: BitnetcStatus, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error (a NUL inside it is shown as `\0`).
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last call that failed on this thread ("" if none has). The string belongs to
/// the library; it stays valid until the next call on this thread fails.
#[unsafe(no_mangle)]
pub extern "C" fn bitnetc_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs `body`, turning its error into a status and this thread's last error, and a panic into
/// `BitnetcStatus::Internal`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Fail>) -> BitnetcStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => BitnetcStatus::Ok,
        Ok(Err(fail)) => {
            set_last_error(&fail.message);
            fail.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            set_last_error(&format!(
                "internal error in bitnetc (please report): {what}"
            ));
            BitnetcStatus::Internal
        }
    }
}

/// Runs a function that frees something: a panic while dropping is caught and recorded.
pub(crate) fn guard_free(body: impl FnOnce()) {
    let _ = guard(|| {
        body();
        Ok(())
    });
}

/// An error if `ptr` is NULL, naming the argument of `function`.
pub(crate) fn non_null<T>(ptr: *const T, function: &str, argument: &str) -> Result<(), Fail> {
    if ptr.is_null() {
        return Err(Fail::new(
            BitnetcStatus::NullArgument,
            format!("{function}: argument `{argument}` is NULL"),
        ));
    }
    Ok(())
}
