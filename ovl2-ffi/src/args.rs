//! Argument checks in one place: every pointer, string and struct from C passes through
//! these helpers, so NULL and malformed input become INVALID_ARGUMENT, never a crash.

use std::ffi::{c_char, CStr, CString};
use std::mem::size_of;

use crate::error::{Failure, FfiResult};

/// A required UTF-8 string argument (layer ids, labels).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| Failure::invalid(format!("{name} is not valid UTF-8")))
}

/// An optional UTF-8 string argument: NULL means "none".
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(p: *const c_char, name: &str) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { str_arg(p, name) }.map(Some)
    }
}

/// A required path argument; paths need not be UTF-8.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn path_arg<'a>(p: *const c_char, name: &str) -> FfiResult<&'a std::path::Path> {
    use std::os::unix::ffi::OsStrExt;
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(Failure::invalid(format!("{name} must not be empty")));
    }
    Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// Checks an out-pointer and clears what it points to, so a failed call leaves NULL/0 there.
///
/// # Safety
/// `p` is NULL or valid for writing one `T`.
pub(crate) unsafe fn out_arg<'a, T>(p: *mut T, name: &str, cleared: T) -> FfiResult<&'a mut T> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL and writable per the caller's contract; `write` does not drop the
    // (possibly uninitialised) old value.
    unsafe {
        p.write(cleared);
        Ok(&mut *p)
    }
}

/// Reads an extensible options struct whose first field is its `size`, the way openat2 does:
/// a caller built against an older, smaller struct gets defaults for the fields it lacks; a
/// newer, larger struct is accepted only when the bytes this library does not know are zero.
///
/// # Safety
/// `p` is NULL or points to at least `*(p as *const usize)` readable bytes. (`T: Pod`
/// makes whatever those bytes hold a valid `T`.)
pub(crate) unsafe fn sized_struct<T: Pod>(p: *const T, name: &str, defaults: T) -> FfiResult<T> {
    let ours = size_of::<T>();
    if p.is_null() {
        return Ok(defaults);
    }
    // SAFETY: the struct starts with its size (caller contract).
    let theirs = unsafe { p.cast::<usize>().read_unaligned() };
    if theirs < size_of::<usize>() {
        return Err(Failure::invalid(format!(
            "{name}->size is {theirs}; set it to sizeof({name}) (use its init function)"
        )));
    }
    if theirs > ours {
        // SAFETY: the caller vouches for `theirs` readable bytes.
        let extra = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), theirs - ours) };
        if extra.iter().any(|b| *b != 0) {
            return Err(Failure::invalid(format!(
                "{name} has fields this library ({}) does not know; they must be zero",
                ovl2_core::VERSION
            )));
        }
    }
    let mut out = defaults;
    // SAFETY: copying min(theirs, ours) bytes between two valid T-sized regions; T is Pod,
    // so any bytes the caller stored make a valid T.
    unsafe {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut out as *mut T).cast::<u8>(), theirs.min(ours));
    }
    Ok(out)
}

/// Plain old data: a `repr(C)` struct of integers (`u8` flags rather than `bool`) and raw
/// pointers, for which every byte pattern is a valid value. Structs read from C memory
/// ([`sized_struct`], arrays of entries) must be `Pod`: a C caller may store any byte in a
/// flag, and a Rust `bool` holding 2 would be undefined behaviour.
///
/// # Safety
/// Implement only for `repr(C)` structs whose fields are all integers or raw pointers.
pub(crate) unsafe trait Pod: Copy {}

/// Reads a `u8` flag from a C struct: 0 is false, any other value true (as C's `if`).
pub(crate) fn flag(v: u8) -> bool {
    v != 0
}

/// A NULL-terminated array of strings, as `char *const argv[]`.
///
/// # Safety
/// `p` is NULL or points to a NULL-terminated array of NUL-terminated strings.
pub(crate) unsafe fn str_array<'a>(p: *const *const c_char, name: &str) -> FfiResult<Vec<&'a str>> {
    let mut out = Vec::new();
    if p.is_null() {
        return Ok(out);
    }
    for i in 0.. {
        // SAFETY: the array is NULL-terminated, so every index up to the terminator is readable.
        let s = unsafe { p.add(i).read() };
        if s.is_null() {
            break;
        }
        // SAFETY: each element is a NUL-terminated string (caller contract).
        out.push(unsafe { str_arg(s, &format!("{name}[{i}]")) }?);
    }
    Ok(out)
}

/// A file descriptor argument: negative values are rejected rather than passed to the kernel.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fd(pub(crate) std::ffi::c_int);

impl Fd {
    pub(crate) fn check(self, name: &str) -> FfiResult<std::os::fd::BorrowedFd<'static>> {
        if self.0 < 0 {
            return Err(Failure::invalid(format!("{name} must be an open file descriptor, got {}", self.0)));
        }
        // SAFETY: non-negative; the caller keeps it open for the duration of the call, which
        // is the only time the borrow is used.
        Ok(unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) })
    }
}

/// An owned C string for output structs; interior NULs (impossible in paths and ids) are
/// escaped rather than truncating the value silently.
pub(crate) fn c_string(s: &str) -> *const c_char {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default().into_raw()
}

/// Like [`c_string`] for optional values: NULL for `None`.
pub(crate) fn c_string_opt(s: Option<&str>) -> *const c_char {
    s.map_or(std::ptr::null(), c_string)
}

/// Like [`c_string`] for paths: their exact bytes, UTF-8 or not (C strings are bytes).
pub(crate) fn os_c_string(s: &std::ffi::OsStr) -> *const c_char {
    use std::os::unix::ffi::OsStrExt;
    // Paths come from the kernel or from a C string, so they hold no NUL.
    CString::new(s.as_bytes()).unwrap_or_default().into_raw()
}

/// Like [`os_c_string`] for optional values: NULL for `None`.
pub(crate) fn os_c_string_opt(s: Option<&std::ffi::OsStr>) -> *const c_char {
    s.map_or(std::ptr::null(), os_c_string)
}

/// Frees a string made by [`c_string`]. NULL is a no-op.
///
/// # Safety
/// `p` is NULL or came from [`c_string`] or [`os_c_string`] and is freed once.
pub(crate) unsafe fn free_c_string(p: *const c_char) {
    if !p.is_null() {
        // SAFETY: made by CString::into_raw (caller contract).
        drop(unsafe { CString::from_raw(p.cast_mut()) });
    }
}
