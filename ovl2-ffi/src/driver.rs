//! The driver handle and the layer-store operations: open/close, create, remove and the
//! read-only queries. Each function converts arguments, calls ovl2-core, converts the result.

use std::ffi::{c_char, CString};
use std::os::unix::ffi::OsStrExt;

use ovl2_core::{CreateOpts, Driver, MountStrategy, OpenMode, Options, Owner};

use crate::args::{
    c_string, c_string_opt, flag, opt_str_arg, out_arg, path_arg, sized_struct, str_arg, str_array, Pod,
};
use crate::error::{boundary, guard, ovl2_error, ovl2_status, Failure, FfiResult};
use crate::handle::Handle;
use crate::owned::{give, ovl2_list, owns_strings, take_back};

/// An open layer store. Opaque; made by `ovl2_open`, released by `ovl2_close`.
///
/// Thread safety: every function taking a `const ovl2_driver *` may be called on the same
/// handle from many threads at once. `ovl2_close` must not race with any other call on it.
pub struct ovl2_driver {
    _opaque: [u8; 0],
}

/// What an `ovl2_driver *` points to.
pub(crate) struct OpenStore {
    inner: Driver,
    /// `ovl2_home`'s answer, kept so the pointer it returns lives as long as the handle.
    home: CString,
}

// SAFETY: ovl2_driver is never constructed; its pointers come only from into_raw in ovl2_open.
unsafe impl Handle for ovl2_driver {
    type Target = OpenStore;
    const NAME: &'static str = "driver";
}

/// Options for `ovl2_open`. Fill it with `ovl2_options_init` first, then change fields, so
/// new fields added in later versions get their defaults.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_options {
    /// `sizeof(ovl2_options)`, set by `ovl2_options_init`; lets the library tell which
    /// version of the struct the caller was built with.
    pub size: usize,
    /// Most lower layers a layer may have (its depth; a base layer has 0), counted as Docker
    /// counts them (1..=500). Default 500, the kernel's limit; use 128 (Docker's) when Docker
    /// must be able to mount the store too.
    pub max_depth: u32,
    /// Flag (0 or 1): fsync metadata so a power cut cannot lose or empty it. Default 1.
    pub sync: u8,
    /// Flag: repair what a crash left behind when opening. Default 1.
    pub repair_on_open: u8,
    /// Flag: use `root_uid`/`root_gid` as the owner of layer contents (user-namespace
    /// remapping). Default 0: this process's euid/egid.
    pub set_root: u8,
    /// Owner of `diff/`, `work/` and `merged/` when `set_root` is true.
    pub root_uid: u32,
    /// Group of the store and layer dirs when `set_root` is true.
    pub root_gid: u32,
    /// How layers are mounted: one of the `OVL2_MOUNT_STRATEGY_*` values. Default
    /// `OVL2_MOUNT_STRATEGY_DEFAULT`: the `OVL2_MOUNT_STRATEGY` environment variable
    /// (auto|new|legacy) if set, else auto.
    pub mount_strategy: u32,
    /// Kernel features to treat as absent, comma-separated as in the status key "Mount
    /// features" (e.g. "lowerdir+fd"), to work around a buggy kernel; borrowed for the call.
    /// NULL (the default) means the `OVL2_DISABLE_FEATURES` environment variable, if set.
    pub disabled_features: *const c_char,
    /// What opening may do to `home`: one of the `OVL2_OPEN_*` values. Default
    /// `OVL2_OPEN_CREATE`. (A later field: callers built against a header without it pass
    /// a smaller `size` and get the default.)
    pub open_mode: u32,
}

// SAFETY: repr(C), integers and a pointer only.
unsafe impl Pod for ovl2_options {}

/// `ovl2_options.open_mode`: open the store, creating it when `home` is missing or an empty
/// directory (the default). A non-empty directory that is not a store is refused.
pub const OVL2_OPEN_CREATE: u32 = 0;
/// `ovl2_options.open_mode`: open an existing store for reading and writing, never create one.
pub const OVL2_OPEN_EXISTING: u32 = 1;
/// `ovl2_options.open_mode`: open an existing store and never write to it (nothing created,
/// chmod-ed or chown-ed, no repair on open); writing calls fail with OVL2_STATUS_PERMISSION
/// (errno EROFS). Works on a read-only file system and on a store Docker wrote.
pub const OVL2_OPEN_READ_ONLY: u32 = 2;

/// `ovl2_options.mount_strategy`: `OVL2_MOUNT_STRATEGY` from the environment, else auto.
pub const OVL2_MOUNT_STRATEGY_DEFAULT: u32 = 0;
/// `ovl2_options.mount_strategy`: the best the kernel offers (new API, else legacy).
pub const OVL2_MOUNT_STRATEGY_AUTO: u32 = 1;
/// `ovl2_options.mount_strategy`: `fsopen`/`fsconfig` with one `lowerdir+` per layer.
pub const OVL2_MOUNT_STRATEGY_NEW: u32 = 2;
/// `ovl2_options.mount_strategy`: `mount(2)` with an option string.
pub const OVL2_MOUNT_STRATEGY_LEGACY: u32 = 3;

impl ovl2_options {
    fn defaults() -> Self {
        let d = Options::default();
        ovl2_options {
            size: std::mem::size_of::<ovl2_options>(),
            max_depth: d.max_depth as u32,
            sync: d.sync.into(),
            repair_on_open: d.repair_on_open.into(),
            set_root: 0,
            root_uid: 0,
            root_gid: 0,
            mount_strategy: OVL2_MOUNT_STRATEGY_DEFAULT,
            disabled_features: std::ptr::null(),
            open_mode: OVL2_OPEN_CREATE,
        }
    }
}

/// Per-layer options for `ovl2_create` and `ovl2_create_rw`. Fill it with
/// `ovl2_create_opts_init`, then set fields. Pointers are borrowed for the call only.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_create_opts {
    /// `sizeof(ovl2_create_opts)`, set by `ovl2_create_opts_init`.
    pub size: usize,
    /// SELinux mount label, or NULL for none.
    pub mount_label: *const c_char,
    /// Docker's `--storage-opt` as a NULL-terminated array of "key=value" strings, or NULL.
    /// overlay2 knows only "size", which ovl2 refuses with OVL2_STATUS_UNSUPPORTED.
    pub storage_opt: *const *const c_char,
}

// SAFETY: repr(C), an integer and pointers only.
unsafe impl Pod for ovl2_create_opts {}

impl ovl2_create_opts {
    fn defaults() -> Self {
        ovl2_create_opts {
            size: std::mem::size_of::<ovl2_create_opts>(),
            mount_label: std::ptr::null(),
            storage_opt: std::ptr::null(),
        }
    }
}

/// Resolves a handle argument.
///
/// # Safety
/// `d` is NULL or a live handle from `ovl2_open`.
pub(crate) unsafe fn handle<'a>(d: *const ovl2_driver) -> FfiResult<&'a Driver> {
    // SAFETY: caller contract.
    unsafe { ovl2_driver::borrow(d) }.map(|s| &s.inner)
}

/// Fills `opts` with the defaults (max_depth 500, sync and repair_on_open on, root = the
/// calling process) and sets `opts->size`.
///
/// Errors: OVL2_STATUS_INVALID_ARGUMENT when `opts` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_options_init(opts: *mut ovl2_options) -> ovl2_status {
    // SAFETY: `opts` is NULL or writable (caller contract); out_arg checks NULL.
    boundary(std::ptr::null_mut(), || unsafe { out_arg(opts, "opts", ovl2_options::defaults()) }.map(drop))
}

/// Fills `opts` with empty per-layer options and sets `opts->size`.
///
/// Errors: OVL2_STATUS_INVALID_ARGUMENT when `opts` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_create_opts_init(opts: *mut ovl2_create_opts) -> ovl2_status {
    // SAFETY: as in ovl2_options_init.
    boundary(std::ptr::null_mut(), || unsafe { out_arg(opts, "opts", ovl2_create_opts::defaults()) }.map(drop))
}

/// Opens the store at `home` as `opts->open_mode` allows (by default creating it when `home`
/// is missing or an empty directory) and repairs what a crash left behind unless
/// `opts->repair_on_open` is false or the mode is `OVL2_OPEN_READ_ONLY`. A relative `home` is resolved against the current
/// directory once, here; `ovl2_home` returns the absolute path.
///
/// `opts` may be NULL for the defaults. On success `*out` is a new handle that the caller
/// releases with `ovl2_close`; on failure `*out` is NULL.
///
/// Errors: INVALID_ARGUMENT (NULL or empty `home`, NULL `out`, max_depth outside 1..=500,
/// bad `opts->size`, unknown mount strategy, open mode or feature name, bad
/// `OVL2_MOUNT_STRATEGY`, `home` is a non-empty directory that is not a store), NOT_FOUND
/// (`home` is missing and the mode does not create), PERMISSION, IO (`home` is not a
/// directory: errno ENOTDIR), CORRUPT (repair found damage it cannot fix).
#[no_mangle]
pub extern "C" fn ovl2_open(
    home: *const c_char,
    opts: *const ovl2_options,
    out: *mut *mut ovl2_driver,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: pointer arguments follow the documented contract; helpers check NULL.
        let (out, home, o) = unsafe {
            (
                out_arg(out, "out", std::ptr::null_mut())?,
                path_arg(home, "home")?,
                sized_struct(opts, "ovl2_options", ovl2_options::defaults())?,
            )
        };
        let mount_strategy = match o.mount_strategy {
            OVL2_MOUNT_STRATEGY_DEFAULT => None,
            OVL2_MOUNT_STRATEGY_AUTO => Some(MountStrategy::Auto),
            OVL2_MOUNT_STRATEGY_NEW => Some(MountStrategy::New),
            OVL2_MOUNT_STRATEGY_LEGACY => Some(MountStrategy::Legacy),
            other => return Err(Failure::invalid(format!("unknown mount_strategy {other}"))),
        };
        let open_mode = match o.open_mode {
            OVL2_OPEN_CREATE => OpenMode::Create,
            OVL2_OPEN_EXISTING => OpenMode::Existing,
            OVL2_OPEN_READ_ONLY => OpenMode::ReadOnly,
            other => return Err(Failure::invalid(format!("unknown open_mode {other}"))),
        };
        // SAFETY: NULL or a NUL-terminated string (documented field contract).
        let disabled_features = unsafe { opt_str_arg(o.disabled_features, "opts->disabled_features")? }
            .map(|s| s.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let options = Options {
            max_depth: o.max_depth as usize,
            root: flag(o.set_root).then_some(Owner::from_raw(o.root_uid, o.root_gid)),
            sync: flag(o.sync),
            repair_on_open: flag(o.repair_on_open),
            mount_strategy,
            disabled_features,
            open_mode,
        };
        let inner = Driver::open(home, options)?;
        let home =
            CString::new(inner.home().as_os_str().as_bytes()).map_err(|_| Failure::invalid("home contains NUL"))?;
        *out = ovl2_driver::into_raw(OpenStore { inner, home });
        Ok(())
    })
}

/// Closes a handle from `ovl2_open` and frees it. NULL is a no-op. No other call may be
/// running on, or made afterwards with, this handle. References it took with `ovl2_get`
/// are released (a layer nobody else holds is unmounted); persistent references from
/// `ovl2_get_with` stay until an `ovl2_put`.
#[no_mangle]
pub extern "C" fn ovl2_close(driver: *mut ovl2_driver) {
    // SAFETY: NULL or made by ovl2_open and closed once (caller contract).
    guard((), || unsafe { ovl2_driver::release(driver) })
}

/// The store's home directory, absolute and lexically clean.
///
/// Ownership: borrowed from the handle; valid until `ovl2_close`. Returns NULL when
/// `driver` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_home(driver: *const ovl2_driver) -> *const c_char {
    // SAFETY: NULL or a live handle (caller contract).
    guard(std::ptr::null(), || unsafe { ovl2_driver::borrow_opt(driver) }.map_or(std::ptr::null(), |d| d.home.as_ptr()))
}

fn create_opts(opts: *const ovl2_create_opts) -> FfiResult<CreateOpts> {
    // SAFETY: NULL or a readable struct with valid pointers (caller contract).
    let o = unsafe { sized_struct(opts, "ovl2_create_opts", ovl2_create_opts::defaults())? };
    // SAFETY: pointers inside the struct follow the same contract.
    let mount_label = unsafe { opt_str_arg(o.mount_label, "opts->mount_label")? }.map(str::to_owned);
    let mut out = CreateOpts { mount_label, ..CreateOpts::default() };
    for kv in unsafe { str_array(o.storage_opt, "opts->storage_opt")? } {
        let (k, v) =
            kv.split_once('=').ok_or_else(|| Failure::invalid(format!("storage option {kv:?} is not key=value")))?;
        out.storage_opt.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn create_common(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    opts: *const ovl2_create_opts,
    err: *mut *mut ovl2_error,
    rw: bool,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: pointer arguments follow the documented contract; helpers check NULL.
        let (d, id, parent) = unsafe { (handle(driver)?, str_arg(id, "id")?, opt_str_arg(parent, "parent")?) };
        let opts = create_opts(opts)?;
        if rw {
            d.create_rw(id, parent, &opts)?;
        } else {
            d.create(id, parent, &opts)?;
        }
        Ok(())
    })
}

/// Creates a read-only (image) layer `id` on `parent` (NULL for a base layer). `opts` may
/// be NULL. The layer appears whole or not at all, even if the process dies mid-way.
///
/// Errors: INVALID_ARGUMENT (NULL `driver`/`id`, bad id, unknown storage option),
/// EXISTS, NOT_FOUND (parent), MAX_DEPTH, UNSUPPORTED (storage option "size"), IO.
#[no_mangle]
pub extern "C" fn ovl2_create(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    opts: *const ovl2_create_opts,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    create_common(driver, id, parent, opts, err, false)
}

/// Creates a read-write (container) layer; same arguments and errors as `ovl2_create`.
#[no_mangle]
pub extern "C" fn ovl2_create_rw(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    opts: *const ovl2_create_opts,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    create_common(driver, id, parent, opts, err, true)
}

/// Removes layer `id`. A layer other layers build on is always refused (see
/// `ovl2_remove_tree`); `force` unmounts it first instead of refusing a mounted layer.
///
/// Errors: INVALID_ARGUMENT, NOT_FOUND, BUSY (has children, is mounted, or another process
/// works on it), IO.
#[no_mangle]
pub extern "C" fn ovl2_remove(
    driver: *const ovl2_driver,
    id: *const c_char,
    force: bool,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, id) = unsafe { (handle(driver)?, str_arg(id, "id")?) };
        Ok(d.remove(id, force)?)
    })
}

/// `ovl2_remove_with` flag: unmount the layer first.
pub const OVL2_REMOVE_FORCE: u32 = 1;
/// `ovl2_remove_with` flag: remove it even when other layers build on it, as Docker's
/// graphdriver `Remove` does; those layers become orphans (`ovl2_check` reports them).
pub const OVL2_REMOVE_IGNORE_CHILDREN: u32 = 2;

/// `ovl2_remove` with flags (`OVL2_REMOVE_FORCE`, `OVL2_REMOVE_IGNORE_CHILDREN`, or 0).
///
/// Errors: INVALID_ARGUMENT (also an unknown flag bit), NOT_FOUND, BUSY, IO.
#[no_mangle]
pub extern "C" fn ovl2_remove_with(
    driver: *const ovl2_driver,
    id: *const c_char,
    flags: u32,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, id) = unsafe { (handle(driver)?, str_arg(id, "id")?) };
        let unknown = flags & !(OVL2_REMOVE_FORCE | OVL2_REMOVE_IGNORE_CHILDREN);
        if unknown != 0 {
            return Err(ovl2_core::Error::InvalidArgument(format!("unknown remove flags {unknown:#x}")).into());
        }
        let opts = ovl2_core::RemoveOpts {
            force: flags & OVL2_REMOVE_FORCE != 0,
            ignore_children: flags & OVL2_REMOVE_IGNORE_CHILDREN != 0,
        };
        Ok(d.remove_with(id, opts)?)
    })
}

/// Removes layer `id` and every layer built on it, deepest first (a crash midway leaves only
/// whole layers removed, never a layer whose parent is gone). Refuses, removing nothing,
/// when one of them is mounted, unless `force`, which unmounts them first.
///
/// Errors: INVALID_ARGUMENT, NOT_FOUND, BUSY (mounted, or another process works on one), IO.
#[no_mangle]
pub extern "C" fn ovl2_remove_tree(
    driver: *const ovl2_driver,
    id: *const c_char,
    force: bool,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, id) = unsafe { (handle(driver)?, str_arg(id, "id")?) };
        d.remove_tree(id, force)?;
        Ok(())
    })
}

/// One removed layer's id, an item of the list `ovl2_remove_tree_with` returns.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_id {
    /// The layer's id.
    pub id: *const c_char,
}
owns_strings!(ovl2_id: id);

/// A list of layer ids. `items` is NULL when `len` is 0. (C sees `ovl2_id_list`, named in
/// cbindgen.toml.)
pub type ovl2_id_list = ovl2_list<ovl2_id>;

/// `ovl2_remove_tree` with flags (`OVL2_REMOVE_FORCE` or 0) that also says what it removed:
/// `*out` (when `out` is not NULL) is set to the removed ids in the order they went,
/// deepest first and `id` last, freed with `ovl2_id_list_free`; NULL on failure.
///
/// Errors: as `ovl2_remove_tree`; INVALID_ARGUMENT also for a flag other than
/// `OVL2_REMOVE_FORCE` (a tree removal never leaves orphans).
#[no_mangle]
pub extern "C" fn ovl2_remove_tree_with(
    driver: *const ovl2_driver,
    id: *const c_char,
    flags: u32,
    out: *mut *mut ovl2_list<ovl2_id>,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        let out = if out.is_null() {
            None
        } else {
            // SAFETY: non-NULL and writable for one pointer (documented contract).
            Some(unsafe { out_arg(out, "out", std::ptr::null_mut())? })
        };
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, id) = unsafe { (handle(driver)?, str_arg(id, "id")?) };
        let unknown = flags & !OVL2_REMOVE_FORCE;
        if unknown != 0 {
            return Err(ovl2_core::Error::InvalidArgument(format!("unknown remove_tree flags {unknown:#x}")).into());
        }
        let removed = d.remove_tree(id, flags & OVL2_REMOVE_FORCE != 0)?;
        if let Some(out) = out {
            *out = give(ovl2_list::new(removed.iter().map(|r| ovl2_id { id: c_string(r) }).collect()));
        }
        Ok(())
    })
}

/// Frees a list from `ovl2_remove_tree_with`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_id_list_free(list: *mut ovl2_list<ovl2_id>) {
    // SAFETY: NULL or made by ovl2_remove_tree_with, freed once (caller contract).
    unsafe { take_back(list) }
}

/// Sets `*out` to whether a layer `id` exists (false on failure).
///
/// Errors: INVALID_ARGUMENT (NULL argument, bad id), IO.
#[no_mangle]
pub extern "C" fn ovl2_exists(
    driver: *const ovl2_driver,
    id: *const c_char,
    out: *mut bool,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id) = unsafe { (out_arg(out, "out", false)?, handle(driver)?, str_arg(id, "id")?) };
        *out = d.exists(id)?;
        Ok(())
    })
}

/// Sets `*out` to the id of the direct parent of `id`, or to NULL for a base layer.
///
/// Ownership: a non-NULL `*out` belongs to the caller; free it with `ovl2_string_free`.
/// Errors: INVALID_ARGUMENT, NOT_FOUND, CORRUPT (the parent link is broken), IO.
#[no_mangle]
pub extern "C" fn ovl2_parent(
    driver: *const ovl2_driver,
    id: *const c_char,
    out: *mut *mut c_char,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id) = unsafe { (out_arg(out, "out", std::ptr::null_mut())?, handle(driver)?, str_arg(id, "id")?) };
        *out = c_string_opt(d.parent(id)?.as_deref()).cast_mut();
        Ok(())
    })
}

/// Frees a string the library handed out through a `char **out` (`ovl2_parent`, `ovl2_get`,
/// `ovl2_get_with`). NULL is a no-op. Strings inside structs are freed with their struct.
#[no_mangle]
pub extern "C" fn ovl2_string_free(s: *mut c_char) {
    // SAFETY: NULL or a string from this library, freed once (caller contract).
    guard((), || unsafe { crate::args::free_c_string(s) })
}
