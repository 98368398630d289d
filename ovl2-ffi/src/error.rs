//! The status enum, the error object handed to C, and the one boundary helper every exported
//! function runs its body through (argument failures, core errors and panics all end here).

use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use ovl2_core::ErrorKind;

use crate::handle::Handle;

/// Outcome of every fallible call. The numeric values are part of the ABI and never change;
/// new values may be added at the end, so treat unknown values like `OVL2_STATUS_IO`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ovl2_status {
    /// Success.
    Ok = 0,
    /// An argument was NULL, not UTF-8, out of range or otherwise malformed (bad layer id,
    /// unknown option, negative fd, ...). errno is EINVAL.
    InvalidArgument = 1,
    /// The layer (or store home) the caller named does not exist. errno is ENOENT. A file
    /// missing inside a layer is IO (errno ENOENT), not this.
    NotFound = 2,
    /// A layer with that id already exists. errno is usually EEXIST.
    Exists = 3,
    /// The chain would be deeper than the store's max_depth. errno is ETOOMANYREFS.
    MaxDepth = 4,
    /// The layer is in use: it has children, is mounted, or another process holds it.
    Busy = 5,
    /// The kernel or filesystem lacks something the operation needs.
    Unsupported = 6,
    /// The process is not allowed to do this (EPERM, EACCES, EROFS).
    Permission = 7,
    /// The on-disk store is damaged in a way the operation cannot work around.
    Corrupt = 8,
    /// A layer archive (tar, gzip or zstd stream) is malformed, truncated or hostile.
    CorruptArchive = 9,
    /// Any other I/O failure; the error's errno says which.
    Io = 10,
    /// ovl2 hit an internal bug (a Rust panic was caught at the boundary). The handle stays
    /// usable, but please report the message.
    Panic = 11,
}

impl ovl2_status {
    fn from_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => ovl2_status::InvalidArgument,
            ErrorKind::NotFound => ovl2_status::NotFound,
            ErrorKind::Exists => ovl2_status::Exists,
            ErrorKind::MaxDepth => ovl2_status::MaxDepth,
            ErrorKind::Busy => ovl2_status::Busy,
            ErrorKind::Unsupported => ovl2_status::Unsupported,
            ErrorKind::Permission => ovl2_status::Permission,
            ErrorKind::Corrupt => ovl2_status::Corrupt,
            ErrorKind::CorruptArchive => ovl2_status::CorruptArchive,
            // ErrorKind is non-exhaustive; a kind this face does not know yet is still an error.
            _ => ovl2_status::Io,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ovl2_status::Ok => "OK\0",
            ovl2_status::InvalidArgument => "INVALID_ARGUMENT\0",
            ovl2_status::NotFound => "NOT_FOUND\0",
            ovl2_status::Exists => "EXISTS\0",
            ovl2_status::MaxDepth => "MAX_DEPTH\0",
            ovl2_status::Busy => "BUSY\0",
            ovl2_status::Unsupported => "UNSUPPORTED\0",
            ovl2_status::Permission => "PERMISSION\0",
            ovl2_status::Corrupt => "CORRUPT\0",
            ovl2_status::CorruptArchive => "CORRUPT_ARCHIVE\0",
            ovl2_status::Io => "IO\0",
            ovl2_status::Panic => "PANIC\0",
        }
    }
}

/// Details of one failed call: status, errno and a message. Opaque; read it with the
/// `ovl2_error_*` accessors and release it with `ovl2_error_free`.
///
/// An error belongs to the caller that received it and is never shared or reused by the
/// library, so it stays correct whichever thread (or goroutine) reads it later.
pub struct ovl2_error {
    _opaque: [u8; 0],
}

/// What an `ovl2_error *` points to.
pub(crate) struct ErrorDetails {
    status: ovl2_status,
    errno: c_int,
    message: CString,
}

// SAFETY: ovl2_error is never constructed; its pointers come only from into_raw in `boundary`.
unsafe impl Handle for ovl2_error {
    type Target = ErrorDetails;
    const NAME: &'static str = "err";
}

/// Why an exported call failed, before it is turned into an [`ovl2_error`].
pub(crate) struct Failure {
    status: ovl2_status,
    errno: c_int,
    message: String,
}

impl Failure {
    /// A bad argument detected at the boundary (NULL pointer, invalid UTF-8, negative fd, ...).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure { status: ovl2_status::InvalidArgument, errno: libc::EINVAL, message: message.into() }
    }

    /// The caller passed NULL where a value is required.
    pub(crate) fn null(param: &str) -> Self {
        Failure::invalid(format!("{param} must not be NULL"))
    }
}

impl From<ovl2_core::Error> for Failure {
    fn from(e: ovl2_core::Error) -> Self {
        Failure { status: ovl2_status::from_kind(e.kind()), errno: e.errno().unwrap_or(0), message: e.to_string() }
    }
}

/// Result type of the bodies run by [`boundary`].
pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

/// Runs `body` with the panic boundary, turns its outcome into a status, and stores the
/// details in `*err` when the caller asked for them (`err` may be NULL).
///
/// `*err` is set to NULL on success, so a caller can always free what it holds afterwards.
pub(crate) fn boundary(err: *mut *mut ovl2_error, body: impl FnOnce() -> FfiResult) -> ovl2_status {
    let outcome = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => None,
        Ok(Err(f)) => Some(f),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            Some(Failure { status: ovl2_status::Panic, errno: 0, message: format!("internal error (panic): {what}") })
        }
    };
    let status = outcome.as_ref().map_or(ovl2_status::Ok, |f| f.status);
    if !err.is_null() {
        let boxed = outcome.map_or(ptr::null_mut(), |f| {
            let message = CString::new(f.message.replace('\0', "\\0")).unwrap_or_default();
            ovl2_error::into_raw(ErrorDetails { status: f.status, errno: f.errno, message })
        });
        // SAFETY: the caller promises a non-NULL err points to writable storage for a pointer.
        unsafe { err.write(boxed) };
    }
    status
}

/// Runs a body that cannot fail except by panicking, returning `fallback` if it does.
/// For infallible accessors and free functions, which have no error out-pointer.
pub(crate) fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The status of an error. Returns `OVL2_STATUS_INVALID_ARGUMENT` for NULL.
#[no_mangle]
pub extern "C" fn ovl2_error_status(err: *const ovl2_error) -> ovl2_status {
    // SAFETY: non-NULL err came from this library and has not been freed (documented contract).
    unsafe { ovl2_error::borrow_opt(err) }.map_or(ovl2_status::InvalidArgument, |e| e.status)
}

/// The errno behind an error, or 0 when there is none (or `err` is NULL). Set even for
/// non-IO statuses where one fits (ENOENT for NOT_FOUND, EEXIST for EXISTS, ...).
#[no_mangle]
pub extern "C" fn ovl2_error_errno(err: *const ovl2_error) -> c_int {
    // SAFETY: as in ovl2_error_status.
    unsafe { ovl2_error::borrow_opt(err) }.map_or(0, |e| e.errno)
}

/// The error's message as a NUL-terminated UTF-8 string.
///
/// Ownership: borrowed from `err`; valid until `ovl2_error_free(err)`. Do not free it.
/// Returns an empty string (not NULL) when `err` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_error_message(err: *const ovl2_error) -> *const c_char {
    // SAFETY: as in ovl2_error_status.
    unsafe { ovl2_error::borrow_opt(err) }.map_or(c"".as_ptr(), |e| e.message.as_ptr())
}

/// Frees an error returned through an `ovl2_error **err` out-pointer. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_error_free(err: *mut ovl2_error) {
    // SAFETY: NULL or made by `boundary`, freed once (caller contract).
    guard((), || unsafe { ovl2_error::release(err) })
}

/// A static name for a status ("OK", "NOT_FOUND", ...). Never NULL, never free it.
/// Unknown values give "UNKNOWN".
#[no_mangle]
pub extern "C" fn ovl2_status_name(status: c_int) -> *const c_char {
    let all = [
        ovl2_status::Ok,
        ovl2_status::InvalidArgument,
        ovl2_status::NotFound,
        ovl2_status::Exists,
        ovl2_status::MaxDepth,
        ovl2_status::Busy,
        ovl2_status::Unsupported,
        ovl2_status::Permission,
        ovl2_status::Corrupt,
        ovl2_status::CorruptArchive,
        ovl2_status::Io,
        ovl2_status::Panic,
    ];
    // Taking an int rather than the enum keeps an out-of-range value from C defined behaviour.
    all.iter().find(|s| **s as c_int == status).map_or("UNKNOWN\0", |s| s.name()).as_ptr().cast()
}
