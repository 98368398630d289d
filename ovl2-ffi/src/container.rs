//! Container layers: `<ctr>-init` with Docker's init entries, then `<ctr>` on it.

use std::ffi::c_char;

use ovl2_core::{ContainerOpts, InitEntry, Owner};

use crate::args::{flag, opt_str_arg, sized_struct, str_arg, Pod};
use crate::driver::{handle, ovl2_driver};
use crate::error::{boundary, ovl2_error, ovl2_status, Failure, FfiResult};

/// `ovl2_init_entry.kind`: a directory, 0755.
pub const OVL2_INIT_DIR: u32 = 0;
/// `ovl2_init_entry.kind`: an empty regular file, 0755 (a bind-mount target).
pub const OVL2_INIT_FILE: u32 = 1;
/// `ovl2_init_entry.kind`: a symlink to `target`.
pub const OVL2_INIT_SYMLINK: u32 = 2;

/// One init entry, by absolute path inside the container. Borrowed for the call only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_init_entry {
    /// Absolute path inside the container, e.g. "/run/secrets".
    pub path: *const c_char,
    /// `OVL2_INIT_DIR`, `OVL2_INIT_FILE` or `OVL2_INIT_SYMLINK`.
    pub kind: u32,
    /// The symlink target for `OVL2_INIT_SYMLINK`; NULL otherwise.
    pub target: *const c_char,
}

// SAFETY: repr(C), an integer and pointers only.
unsafe impl Pod for ovl2_init_entry {}

/// Options for `ovl2_create_container`. Fill it with `ovl2_container_opts_init`, then set
/// fields. Pointers are borrowed for the call only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_container_opts {
    /// `sizeof(ovl2_container_opts)`, set by `ovl2_container_opts_init`.
    pub size: usize,
    /// Flag (0 or 1): start from no init entries instead of Docker's (`/dev/pts`,
    /// `/etc/hosts`, ...).
    pub no_default_entries: u8,
    /// Entries added after the defaults (or alone, with `no_default_entries`); may be NULL
    /// when `n_entries` is 0.
    pub entries: *const ovl2_init_entry,
    /// Number of `entries`.
    pub n_entries: usize,
    /// Flag: own new init entries by `root_uid`/`root_gid` (a user-namespaced container's
    /// root) instead of the store's root.
    pub remap_root: u8,
    /// The container's root uid on the host, with `remap_root`.
    pub root_uid: u32,
    /// The container's root gid on the host, with `remap_root`.
    pub root_gid: u32,
    /// SELinux mount label for both layers, or NULL.
    pub mount_label: *const c_char,
}

// SAFETY: repr(C), integers and pointers only.
unsafe impl Pod for ovl2_container_opts {}

impl ovl2_container_opts {
    fn defaults() -> Self {
        ovl2_container_opts {
            size: std::mem::size_of::<ovl2_container_opts>(),
            no_default_entries: 0,
            entries: std::ptr::null(),
            n_entries: 0,
            remap_root: 0,
            root_uid: 0,
            root_gid: 0,
            mount_label: std::ptr::null(),
        }
    }
}

/// Fills `opts` with the defaults (Docker's init entries, the store's root) and sets
/// `opts->size`.
///
/// Errors: INVALID_ARGUMENT (NULL `opts`).
#[no_mangle]
pub extern "C" fn ovl2_container_opts_init(opts: *mut ovl2_container_opts) -> ovl2_status {
    boundary(std::ptr::null_mut(), || {
        // SAFETY: NULL or a writable struct (caller contract).
        let o = unsafe { opts.as_mut() }.ok_or_else(|| Failure::null("opts"))?;
        *o = ovl2_container_opts::defaults();
        Ok(())
    })
}

fn container_opts(opts: *const ovl2_container_opts) -> FfiResult<ContainerOpts> {
    // SAFETY: NULL or a readable struct with valid pointers (caller contract).
    let o = unsafe { sized_struct(opts, "ovl2_container_opts", ovl2_container_opts::defaults())? };
    let mut out = ContainerOpts::default();
    if flag(o.no_default_entries) {
        out.init_entries.clear();
    }
    if o.n_entries > 0 {
        if o.entries.is_null() {
            return Err(Failure::null("opts->entries"));
        }
        // SAFETY: `entries` points to `n_entries` readable entries (caller contract).
        let entries = unsafe { std::slice::from_raw_parts(o.entries, o.n_entries) };
        for (i, e) in entries.iter().enumerate() {
            // SAFETY: the strings follow the same contract.
            let path = unsafe { str_arg(e.path, &format!("opts->entries[{i}].path"))? };
            out.init_entries.push(match e.kind {
                OVL2_INIT_DIR => InitEntry::dir(path),
                OVL2_INIT_FILE => InitEntry::file(path),
                OVL2_INIT_SYMLINK => {
                    // SAFETY: as above.
                    let target = unsafe { str_arg(e.target, &format!("opts->entries[{i}].target"))? };
                    InitEntry::symlink(path, target)
                }
                k => return Err(Failure::invalid(format!("opts->entries[{i}].kind {k} is not an OVL2_INIT_* value"))),
            });
        }
    }
    if flag(o.remap_root) {
        out.root = Some(Owner::from_raw(o.root_uid, o.root_gid));
    }
    // SAFETY: as above.
    out.create.mount_label = unsafe { opt_str_arg(o.mount_label, "opts->mount_label")? }.map(str::to_owned);
    Ok(out)
}

/// Creates container `ctr` on the image layer `image_top` as Docker does: `<ctr>-init`,
/// filled through a mount with the init entries, then `<ctr>` on it. `opts` may be NULL for
/// Docker's entries. All or nothing, even if the process dies mid-way (the next open
/// finishes the rollback).
///
/// Errors: INVALID_ARGUMENT (NULL argument, bad id, bad entry path or kind), NOT_FOUND
/// (`image_top`), EXISTS (`ctr` or `<ctr>-init`), BUSY (another process creates it), IO.
#[no_mangle]
pub extern "C" fn ovl2_create_container(
    driver: *const ovl2_driver,
    ctr: *const c_char,
    image_top: *const c_char,
    opts: *const ovl2_container_opts,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: pointer arguments follow the documented contract; helpers check NULL.
        let (d, ctr, top) = unsafe { (handle(driver)?, str_arg(ctr, "ctr")?, str_arg(image_top, "image_top")?) };
        let opts = container_opts(opts)?;
        Ok(d.create_container(ctr, top, &opts)?)
    })
}

/// Removes container `ctr`: the container layer, then `<ctr>-init`. Refused while the
/// container layer is mounted unless `force`, which unmounts it first.
///
/// Errors: INVALID_ARGUMENT, NOT_FOUND (neither layer exists), BUSY (mounted), IO.
#[no_mangle]
pub extern "C" fn ovl2_remove_container(
    driver: *const ovl2_driver,
    ctr: *const c_char,
    force: bool,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: as in ovl2_create_container.
        let (d, ctr) = unsafe { (handle(driver)?, str_arg(ctr, "ctr")?) };
        Ok(d.remove_container(ctr, force)?)
    })
}
