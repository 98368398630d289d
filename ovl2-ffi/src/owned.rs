//! What the library hands to C and takes back: arrays as one generic `{items, len}` list,
//! and result structs that own their strings. Ownership is declared once per type (its
//! `Drop`), so every exported `*_free` function is the same one line, [`take_back`].

use std::ffi::c_char;

use crate::error::guard;

/// A value C receives through an out-pointer and returns to its `*_free` function.
/// Dropping it frees every string and list inside it.
///
/// # Safety
/// Implementors are `repr(C)` structs whose owned pointers were all made by this library
/// ([`crate::args::c_string`] and friends, [`ovl2_list::new`]), so `Drop` may free them.
pub(crate) unsafe trait Owned {}

/// An array the library allocated: `items` points to `len` values, and is NULL when `len`
/// is 0. Strings inside the items belong to the list.
#[repr(C)]
pub struct ovl2_list<T> {
    /// The items, `len` of them.
    pub items: *const T,
    /// How many items.
    pub len: usize,
}

impl<T> ovl2_list<T> {
    /// Hands `v` to C. An empty vector becomes NULL so C never sees a dangling pointer.
    pub(crate) fn new(v: Vec<T>) -> Self {
        if v.is_empty() {
            return ovl2_list { items: std::ptr::null(), len: 0 };
        }
        let b = v.into_boxed_slice();
        let len = b.len();
        ovl2_list { items: Box::into_raw(b).cast::<T>(), len }
    }
}

impl<T> Drop for ovl2_list<T> {
    fn drop(&mut self) {
        if !self.items.is_null() {
            // SAFETY: `items`/`len` are exactly those of the Box<[T]> leaked in `new`, and a
            // list is dropped once (its `*_free` contract).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.items.cast_mut(), self.len)) });
        }
    }
}

// SAFETY: `new` is the only constructor, and the items are Owned.
unsafe impl<T: Owned> Owned for ovl2_list<T> {}

/// Hands `value` to C as a pointer it frees with the type's `*_free` function.
pub(crate) fn give<T: Owned>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// The body of every `*_free` function: takes back what [`give`] handed out and drops it
/// with everything it owns. NULL is a no-op; a panic while freeing never reaches C.
///
/// # Safety
/// `p` is NULL or came from [`give`] with the same `T` and is taken back once.
pub(crate) unsafe fn take_back<T: Owned>(p: *mut T) {
    guard((), || {
        if !p.is_null() {
            // SAFETY: made by Box::into_raw in `give` (caller contract), taken back once.
            drop(unsafe { Box::from_raw(p) });
        }
    })
}

/// Frees strings made by [`crate::args::c_string`] and friends; NULLs are skipped.
pub(crate) fn free_strings<const N: usize>(strings: [*const c_char; N]) {
    for s in strings {
        // SAFETY: every string field of an Owned struct was made by CString::into_raw and is
        // freed only by that struct's Drop, which runs once.
        unsafe { crate::args::free_c_string(s) };
    }
}

/// Declares that a result struct owns the listed string fields: its `Drop` frees them and
/// it may be handed out with [`give`] or inside an [`ovl2_list`].
macro_rules! owns_strings {
    ($ty:ty: $($field:ident),* $(,)?) => {
        impl Drop for $ty {
            fn drop(&mut self) {
                $crate::owned::free_strings([$(self.$field),*]);
            }
        }
        // SAFETY: the listed fields are the struct's only owned pointers, made by c_string.
        unsafe impl $crate::owned::Owned for $ty {}
    };
}
pub(crate) use owns_strings;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::c_string;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    struct Counted(#[allow(dead_code)] *const c_char);
    impl Drop for Counted {
        fn drop(&mut self) {
            free_strings([self.0]);
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
    unsafe impl Owned for Counted {}

    /// One free releases the list, every item and every item's strings, exactly once.
    #[test]
    fn a_list_frees_each_item_once() {
        let p = give(ovl2_list::new(vec![Counted(c_string("a")), Counted(c_string("b")), Counted(std::ptr::null())]));
        assert_eq!(unsafe { (*p).len }, 3);
        unsafe { take_back(p) };
        assert_eq!(DROPPED.load(Ordering::SeqCst), 3);
        unsafe { take_back(std::ptr::null_mut::<ovl2_list<Counted>>()) };
    }

    #[test]
    fn an_empty_list_has_null_items() {
        let l = ovl2_list::<Counted>::new(Vec::new());
        assert!(l.items.is_null());
        assert_eq!(l.len, 0);
    }
}
