//! Mounting: Docker's Get/Put with cross-process reference counts, the list of mounts and
//! Cleanup. Paths handed back are library-allocated strings freed with `ovl2_string_free`.

use std::ffi::c_char;
use std::os::unix::ffi::OsStrExt;

use ovl2_core::MountOpts;

use crate::args::{c_string, flag, opt_str_arg, out_arg, sized_struct, str_arg, Pod};
use crate::driver::{handle, ovl2_driver};
use crate::error::{boundary, ovl2_error, ovl2_status};
use crate::owned::{give, ovl2_list, owns_strings, take_back};

/// Options for `ovl2_get_with`. Fill it with `ovl2_mount_opts_init`, then set fields.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_mount_opts {
    /// `sizeof(ovl2_mount_opts)`, set by `ovl2_mount_opts_init`.
    pub size: usize,
    /// SELinux label passed as `context="..."`, or NULL; borrowed for the call.
    pub mount_label: *const c_char,
    /// Flag (0 or 1): mount without an upper even when the layer is not committed (inspect
    /// an image).
    pub readonly: u8,
    /// Flag: mount with `volatile` (no syncs to the upper): for throwaway containers only.
    pub volatile_mount: u8,
    /// Flag: the reference belongs to the store, not to this process: it survives the
    /// process and is released only by an `ovl2_put` (from any process).
    pub persistent: u8,
}

// SAFETY: repr(C), integers and a pointer only.
unsafe impl Pod for ovl2_mount_opts {}

impl ovl2_mount_opts {
    fn defaults() -> Self {
        ovl2_mount_opts {
            size: std::mem::size_of::<ovl2_mount_opts>(),
            mount_label: std::ptr::null(),
            readonly: 0,
            volatile_mount: 0,
            persistent: 0,
        }
    }
}

/// Fills `opts` with the defaults (no label, read-write when possible, process-owned
/// reference) and sets `opts->size`.
///
/// Errors: OVL2_STATUS_INVALID_ARGUMENT when `opts` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_mount_opts_init(opts: *mut ovl2_mount_opts) -> ovl2_status {
    // SAFETY: NULL or writable (caller contract); out_arg checks NULL.
    boundary(std::ptr::null_mut(), || unsafe { out_arg(opts, "opts", ovl2_mount_opts::defaults()) }.map(drop))
}

fn path_out(p: &std::path::Path) -> *mut c_char {
    // Paths under a store home are the home (a C string already) plus ids; never NUL.
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap_or_default().into_raw()
}

/// Docker's Get: mounts layer `id` (or takes another reference to its mount) and sets
/// `*out` to the path to use: `<home>/<id>/merged`, or `<home>/<id>/diff` for a base layer,
/// which is not mounted (as in Docker). Each successful get needs one `ovl2_put`.
/// `mount_label` may be NULL.
///
/// Ownership: free `*out` with `ovl2_string_free`.
/// Errors: INVALID_ARGUMENT (NULL argument, bad id, label with NUL, '"' or ','), NOT_FOUND,
/// BUSY (mounted read-only and asked read-write, or the other way round), PERMISSION (not
/// allowed to mount), UNSUPPORTED (the kernel cannot mount this chain), CORRUPT, IO.
#[no_mangle]
pub extern "C" fn ovl2_get(
    driver: *const ovl2_driver,
    id: *const c_char,
    mount_label: *const c_char,
    out: *mut *mut c_char,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id, label) = unsafe {
            (
                out_arg(out, "out", std::ptr::null_mut())?,
                handle(driver)?,
                str_arg(id, "id")?,
                opt_str_arg(mount_label, "mount_label")?,
            )
        };
        *out = path_out(&d.get(id, label)?);
        Ok(())
    })
}

/// `ovl2_get` with every option; `opts` may be NULL for the defaults.
///
/// Ownership and errors as `ovl2_get`; also INVALID_ARGUMENT for a bad `opts->size`.
#[no_mangle]
pub extern "C" fn ovl2_get_with(
    driver: *const ovl2_driver,
    id: *const c_char,
    opts: *const ovl2_mount_opts,
    out: *mut *mut c_char,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id, o) = unsafe {
            (
                out_arg(out, "out", std::ptr::null_mut())?,
                handle(driver)?,
                str_arg(id, "id")?,
                sized_struct(opts, "ovl2_mount_opts", ovl2_mount_opts::defaults())?,
            )
        };
        let mopts = MountOpts {
            // SAFETY: NULL or a NUL-terminated string (documented field contract).
            mount_label: unsafe { opt_str_arg(o.mount_label, "opts->mount_label")? }.map(str::to_owned),
            readonly: flag(o.readonly),
            volatile: flag(o.volatile_mount),
            persistent: flag(o.persistent),
        };
        *out = path_out(&d.get_with(id, &mopts)?);
        Ok(())
    })
}

/// Docker's Put: drops one reference to layer `id`'s mount (this process's, else a
/// persistent one) and unmounts when none is left. A base layer's put does nothing.
///
/// Errors: INVALID_ARGUMENT (NULL argument, bad id, or the layer is not mounted),
/// NOT_FOUND, BUSY (unmount refused), IO.
#[no_mangle]
pub extern "C" fn ovl2_put(driver: *const ovl2_driver, id: *const c_char, err: *mut *mut ovl2_error) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, id) = unsafe { (handle(driver)?, str_arg(id, "id")?) };
        Ok(d.put(id)?)
    })
}

/// One mounted layer, as `ovl2_mounts` reports it.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_mount_info {
    /// Layer id.
    pub id: *const c_char,
    /// The mount point, `<home>/<id>/merged`.
    pub path: *const c_char,
    /// All references.
    pub count: u64,
    /// References held by the store (persistent gets).
    pub persistent: u64,
    /// References held by live processes.
    pub processes: u64,
    /// Mounted without an upper.
    pub readonly: bool,
    /// How it was mounted: "new-fd", "new-path", "legacy-absolute", "legacy-relative",
    /// "legacy-fd", or "" when not recorded.
    pub method: *const c_char,
    /// Whether the kernel really has it mounted.
    pub mounted: bool,
}
owns_strings!(ovl2_mount_info: id, path, method);

/// A list of mounts. `items` is NULL when `len` is 0. (C sees `ovl2_mount_list`, named in cbindgen.toml.)
pub type ovl2_mount_list = ovl2_list<ovl2_mount_info>;

/// Sets `*out` to every layer of the store that is mounted (by any process), with its
/// reference counts.
///
/// Ownership: free `*out` with `ovl2_mount_list_free`.
/// Errors: INVALID_ARGUMENT (NULL argument), IO.
#[no_mangle]
pub extern "C" fn ovl2_mounts(
    driver: *const ovl2_driver,
    out: *mut *mut ovl2_list<ovl2_mount_info>,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d) = unsafe { (out_arg(out, "out", std::ptr::null_mut())?, handle(driver)?) };
        let items = d
            .mounts()?
            .iter()
            .map(|m| ovl2_mount_info {
                id: c_string(&m.id),
                path: path_out(&m.path).cast_const(),
                count: m.count,
                persistent: m.persistent,
                processes: m.processes,
                readonly: m.readonly,
                method: c_string(&m.method),
                mounted: m.mounted,
            })
            .collect();
        *out = give(ovl2_list::new(items));
        Ok(())
    })
}

/// Frees a list from `ovl2_mounts`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_mount_list_free(list: *mut ovl2_list<ovl2_mount_info>) {
    // SAFETY: NULL or made by ovl2_mounts, freed once (caller contract).
    unsafe { take_back(list) }
}

/// Docker's Cleanup: unmounts every layer of the store, whoever holds it, and forgets all
/// references. Use it when shutting the store down for good.
///
/// Errors: INVALID_ARGUMENT (NULL driver), BUSY (an unmount was refused), PERMISSION, IO.
#[no_mangle]
pub extern "C" fn ovl2_cleanup(driver: *const ovl2_driver, err: *mut *mut ovl2_error) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; handle checks NULL.
        let d = unsafe { handle(driver)? };
        Ok(d.cleanup()?)
    })
}
