//! Checked casts between the opaque pointers C holds and the Rust values behind them.
//!
//! C sees `ovl2_driver *` and `ovl2_error *`, opaque types it cannot build or look into. Each
//! is a zero-sized marker tied by [`Handle`] to the Rust value it stands for, so the one
//! place that turns a pointer back into a value checks NULL, knows the type behind it and
//! names the argument in the error; no exported function casts a pointer itself.

use crate::error::{Failure, FfiResult};

/// An opaque C type whose pointers are boxed `Self::Target` values owned by the caller.
///
/// # Safety
/// `Self` is a marker never constructed; every non-NULL `*const Self` a caller passes back
/// came from [`Handle::into_raw`] of the same type and has not been released yet. That is
/// the documented contract of every exported function taking such a pointer.
pub(crate) unsafe trait Handle: Sized {
    /// The Rust value behind the pointer.
    type Target;
    /// The argument's name in the error a NULL pointer gives ("driver").
    const NAME: &'static str;

    /// Moves `value` to the heap and hands C an opaque pointer to it.
    fn into_raw(value: Self::Target) -> *mut Self {
        Box::into_raw(Box::new(value)).cast()
    }

    /// Borrows the value behind `p`, NULL being an INVALID_ARGUMENT error.
    ///
    /// # Safety
    /// `p` is NULL or a live pointer from [`Handle::into_raw`] (see the trait's contract).
    unsafe fn borrow<'a>(p: *const Self) -> FfiResult<&'a Self::Target> {
        // SAFETY: the trait's contract: non-NULL means a live Box<Self::Target>.
        unsafe { Self::borrow_opt(p) }.ok_or_else(|| Failure::null(Self::NAME))
    }

    /// Borrows the value behind `p`, `None` for NULL (for accessors without an error).
    ///
    /// # Safety
    /// As [`Handle::borrow`].
    unsafe fn borrow_opt<'a>(p: *const Self) -> Option<&'a Self::Target> {
        // SAFETY: as above.
        unsafe { p.cast::<Self::Target>().as_ref() }
    }

    /// Takes back and drops the value behind `p`. NULL is a no-op.
    ///
    /// # Safety
    /// `p` is NULL or a live pointer from [`Handle::into_raw`], released exactly once.
    unsafe fn release(p: *mut Self) {
        if !p.is_null() {
            // SAFETY: made by Box::into_raw of a Self::Target (trait contract), released once.
            drop(unsafe { Box::from_raw(p.cast::<Self::Target>()) });
        }
    }
}
