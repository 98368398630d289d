//! C ABI for ovl2 (`libovl2.so`, `libovl2.a`, header `include/ovl2.h`). Thin: it converts
//! arguments, results and errors; all logic lives in ovl2-core.
//!
//! Conventions every function follows (see the header for the per-function contract):
//! - fallible calls return an `ovl2_status` and take a last `ovl2_error **err`, which may be
//!   NULL; on failure `*err` receives an error the caller frees with `ovl2_error_free`, on
//!   success it is set to NULL. Nothing is kept per thread, so Go callers whose goroutines
//!   hop between OS threads get the right error.
//! - no panic crosses the boundary: it becomes `OVL2_STATUS_PANIC`;
//! - NULL or malformed arguments give `OVL2_STATUS_INVALID_ARGUMENT`;
//! - everything the library allocates for the caller has one documented `*_free` function.

#![allow(non_camel_case_types)]
// The exported functions are called from C, where `unsafe` means nothing; their pointer
// contracts are documented per function and checked (NULL) in `args`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod archive;
mod args;
mod container;
mod driver;
mod error;
mod handle;
mod mount;
mod owned;
mod queries;

use std::ffi::c_char;

pub use archive::*;
pub use container::*;
pub use driver::*;
pub use error::{ovl2_error, ovl2_error_errno, ovl2_error_free, ovl2_error_message, ovl2_error_status, ovl2_status};
pub use mount::*;
pub use owned::ovl2_list;
pub use queries::*;

/// The library version (e.g. "0.1.0") as a static NUL-terminated string. Never free it.
#[no_mangle]
pub extern "C" fn ovl2_version() -> *const c_char {
    static V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{boundary, Failure};
    use std::ffi::CStr;

    #[test]
    fn version_matches_core() {
        let v = unsafe { CStr::from_ptr(ovl2_version()) };
        assert_eq!(v.to_str().unwrap(), ovl2_core::VERSION);
    }

    #[test]
    fn panic_becomes_status_and_message() {
        let mut err: *mut ovl2_error = std::ptr::null_mut();
        let st = boundary(&mut err, || panic!("boom {}", 42));
        assert_eq!(st, ovl2_status::Panic);
        assert_eq!(ovl2_error_status(err), ovl2_status::Panic);
        let msg = unsafe { CStr::from_ptr(ovl2_error_message(err)) }.to_str().unwrap().to_owned();
        assert!(msg.contains("boom 42"), "{msg}");
        ovl2_error_free(err);
        // With err == NULL only the status comes back.
        assert_eq!(boundary(std::ptr::null_mut(), || panic!("quiet")), ovl2_status::Panic);
    }

    #[test]
    fn success_clears_err_and_failure_fills_it() {
        let mut err: *mut ovl2_error = std::ptr::dangling_mut(); // junk the call must overwrite
        assert_eq!(boundary(&mut err, || Ok(())), ovl2_status::Ok);
        assert!(err.is_null());
        assert_eq!(boundary(&mut err, || Err(Failure::null("id"))), ovl2_status::InvalidArgument);
        assert_eq!(ovl2_error_errno(err), libc::EINVAL);
        let msg = unsafe { CStr::from_ptr(ovl2_error_message(err)) };
        assert_eq!(msg.to_str().unwrap(), "id must not be NULL");
        ovl2_error_free(err);
    }

    #[test]
    fn core_errors_map_to_stable_statuses() {
        let cases = [
            (ovl2_core::Error::NotFound("x".into()), ovl2_status::NotFound, libc::ENOENT),
            (ovl2_core::Error::Exists("x".into()), ovl2_status::Exists, libc::EEXIST),
            (
                ovl2_core::Error::MaxDepth { id: "x".into(), depth: 3, limit: 2 },
                ovl2_status::MaxDepth,
                libc::ETOOMANYREFS,
            ),
            (ovl2_core::Error::Busy { id: "x".into(), reason: "r".into() }, ovl2_status::Busy, libc::EBUSY),
            (ovl2_core::Error::Unsupported("u".into()), ovl2_status::Unsupported, libc::EOPNOTSUPP),
            (ovl2_core::Error::Corrupt("c".into()), ovl2_status::Corrupt, libc::EUCLEAN),
            (
                ovl2_core::Error::CorruptArchive { at: "a".into(), reason: "r".into() },
                ovl2_status::CorruptArchive,
                libc::EBADMSG,
            ),
            (
                ovl2_core::Error::Io { context: "c".into(), source: std::io::Error::from_raw_os_error(libc::EIO) },
                ovl2_status::Io,
                libc::EIO,
            ),
            (
                ovl2_core::Error::Io { context: "c".into(), source: std::io::Error::from_raw_os_error(libc::EACCES) },
                ovl2_status::Permission,
                libc::EACCES,
            ),
        ];
        for (e, status, errno) in cases {
            let mut err: *mut ovl2_error = std::ptr::null_mut();
            assert_eq!(boundary(&mut err, || Err(e.into())), status);
            assert_eq!(ovl2_error_errno(err), errno);
            ovl2_error_free(err);
        }
    }

    #[test]
    fn options_struct_versions() {
        // An older caller's smaller struct: fields past its size keep their defaults.
        let mut o = std::mem::MaybeUninit::<ovl2_options>::uninit();
        assert_eq!(ovl2_options_init(o.as_mut_ptr()), ovl2_status::Ok);
        let mut o = unsafe { o.assume_init() };
        o.size = std::mem::offset_of!(ovl2_options, sync);
        o.max_depth = 7;
        o.sync = 0;
        let got = unsafe { crate::args::sized_struct(&o, "o", ovl2_options_init_value()) }.ok().unwrap();
        assert_eq!(got.max_depth, 7);
        assert_eq!(got.sync, 1, "a field beyond the caller's size must take its default");
    }

    /// Option flags are bytes read from C memory: any non-zero byte is true, as in C, and
    /// no byte a caller stores can make an invalid Rust value (a `bool` holding 2 would be
    /// undefined behaviour, which is why the flags are `u8`).
    #[test]
    fn a_flag_byte_other_than_0_or_1_reads_as_true() {
        let mut o = std::mem::MaybeUninit::<ovl2_mount_opts>::uninit();
        assert_eq!(ovl2_mount_opts_init(o.as_mut_ptr()), ovl2_status::Ok);
        let mut o = unsafe { o.assume_init() };
        o.readonly = 2;
        o.persistent = 0xff;
        let mut defaults = std::mem::MaybeUninit::<ovl2_mount_opts>::uninit();
        ovl2_mount_opts_init(defaults.as_mut_ptr());
        let got = unsafe { crate::args::sized_struct(&o, "o", defaults.assume_init()) }.ok().unwrap();
        assert!(crate::args::flag(got.readonly) && crate::args::flag(got.persistent));
        assert!(!crate::args::flag(got.volatile_mount));
    }

    /// The flags were C `bool`s before they became `u8`: the structs C callers built against
    /// the older header must have exactly the layout (size and every offset) they have now.
    #[test]
    fn option_structs_keep_the_layout_they_had_with_bool_flags() {
        use std::ffi::c_char;
        use std::mem::{offset_of, size_of};
        #[repr(C)]
        struct OldOptions {
            size: usize,
            max_depth: u32,
            sync: bool,
            repair_on_open: bool,
            set_root: bool,
            root_uid: u32,
            root_gid: u32,
            mount_strategy: u32,
            disabled_features: *const c_char,
            open_mode: u32,
        }
        #[repr(C)]
        struct OldMountOpts {
            size: usize,
            mount_label: *const c_char,
            readonly: bool,
            volatile_mount: bool,
            persistent: bool,
        }
        #[repr(C)]
        struct OldApplyOpts {
            size: usize,
            expect_digest: *const c_char,
            set_sync: bool,
            sync: bool,
        }
        #[repr(C)]
        struct OldDiffOpts {
            size: usize,
            digest: bool,
        }
        #[repr(C)]
        struct OldContainerOpts {
            size: usize,
            no_default_entries: bool,
            entries: *const ovl2_init_entry,
            n_entries: usize,
            remap_root: bool,
            root_uid: u32,
            root_gid: u32,
            mount_label: *const c_char,
        }
        macro_rules! same_layout {
            ($new:ty, $old:ty: $($f:ident),*) => {
                assert_eq!(size_of::<$new>(), size_of::<$old>(), stringify!($new));
                $(assert_eq!(offset_of!($new, $f), offset_of!($old, $f), concat!(stringify!($new), ".", stringify!($f)));)*
            };
        }
        same_layout!(ovl2_options, OldOptions: size, max_depth, sync, repair_on_open, set_root, root_uid, root_gid,
            mount_strategy, disabled_features, open_mode);
        same_layout!(ovl2_mount_opts, OldMountOpts: size, mount_label, readonly, volatile_mount, persistent);
        same_layout!(ovl2_apply_opts, OldApplyOpts: size, expect_digest, set_sync, sync);
        same_layout!(ovl2_diff_opts, OldDiffOpts: size, digest);
        same_layout!(ovl2_container_opts, OldContainerOpts: size, no_default_entries, entries, n_entries, remap_root,
            root_uid, root_gid, mount_label);
    }

    /// The handle casts check NULL and name the argument.
    #[test]
    fn a_null_handle_is_an_invalid_argument_naming_it() {
        let mut out = std::ptr::null_mut();
        let mut err: *mut ovl2_error = std::ptr::null_mut();
        assert_eq!(ovl2_layers(std::ptr::null(), &mut out, &mut err), ovl2_status::InvalidArgument);
        let msg = unsafe { CStr::from_ptr(ovl2_error_message(err)) };
        assert_eq!(msg.to_str().unwrap(), "driver must not be NULL");
        ovl2_error_free(err);
        assert!(ovl2_home(std::ptr::null()).is_null());
        assert_eq!(ovl2_error_status(std::ptr::null()), ovl2_status::InvalidArgument);
        ovl2_close(std::ptr::null_mut());
    }

    #[test]
    fn unknown_problem_kinds_are_named_other() {
        // 28: the first value past the last kind (MalformedSnapshot = 27).
        for k in [0, 28, -1, 1000] {
            assert_eq!(unsafe { CStr::from_ptr(ovl2_problem_kind_name(k)) }.to_str().unwrap(), "other");
        }
    }

    fn ovl2_options_init_value() -> ovl2_options {
        let mut o = std::mem::MaybeUninit::<ovl2_options>::uninit();
        ovl2_options_init(o.as_mut_ptr());
        unsafe { o.assume_init() }
    }
}
