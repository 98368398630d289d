//! Layer archives: apply a tar read from a file descriptor, export a layer as a tar written
//! to one, and the changes and size queries. Streams cross the ABI as fds, never callbacks,
//! so Go and Python can feed them from pipes on their own threads.

use std::ffi::{c_char, c_int};
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;

use ovl2_core::{ApplyOpts, ApplyStats, ChangeKind, Compression, DiffOpts, DiffStats};

use crate::args::{c_string, c_string_opt, flag, opt_str_arg, out_arg, sized_struct, str_arg, Fd, Pod};
use crate::driver::{handle, ovl2_driver};
use crate::error::{boundary, ovl2_error, ovl2_status, FfiResult};
use crate::owned::{give, ovl2_list, owns_strings, take_back};

/// Borrows the caller's fd as a `File` that is never closed by us.
fn borrowed_file(fd: c_int, name: &str) -> FfiResult<ManuallyDrop<File>> {
    let fd = Fd(fd).check(name)?;
    // SAFETY: the fd is open for the duration of the call (caller contract), and
    // ManuallyDrop keeps `File` from closing what it does not own.
    Ok(ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) }))
}

/// An out-pointer the caller may pass as NULL (stats not wanted); a non-NULL one is set to
/// NULL now, so whatever fails later leaves no stale pointer behind.
fn optional_out<'a, T>(out: *mut *mut T) -> FfiResult<Option<&'a mut *mut T>> {
    if out.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and writable for one pointer (documented contract).
    unsafe { out_arg(out, "out", std::ptr::null_mut()) }.map(Some)
}

/// How an applied layer stream was compressed.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ovl2_compression {
    /// A plain tar.
    None = 0,
    /// gzip (possibly several members, as pigz writes).
    Gzip = 1,
    /// zstd.
    Zstd = 2,
}

/// What `ovl2_apply_diff` did. Made by the library, freed with `ovl2_apply_stats_free`.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_apply_stats {
    /// Docker's ApplyDiff value. Onto the layer's own parent: the sum of the sizes of every
    /// non-directory in the layer, hardlinks counted once, whiteouts as 0. Onto any other
    /// parent (Docker's naive path): the sum of the tar's entry sizes.
    pub size: u64,
    /// "sha256:<hex>" of the uncompressed tar stream (the layer's DiffID).
    pub digest: *const c_char,
    /// Length of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// How the input was compressed.
    pub compression: ovl2_compression,
    /// Tar entries read (extension headers not counted).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Whiteouts turned into overlay whiteouts.
    pub whiteouts: u64,
    /// Directories marked opaque.
    pub opaque_dirs: u64,
    /// Devices and fifos created.
    pub special: u64,
    /// Entries deliberately not applied (PAX global headers, AUFS metadata, devices inside
    /// a user namespace).
    pub skipped: u64,
    /// Overlay-private xattrs found in the tar and dropped.
    pub dropped_xattrs: u64,
}
owns_strings!(ovl2_apply_stats: digest);

impl From<ApplyStats> for ovl2_apply_stats {
    fn from(s: ApplyStats) -> Self {
        ovl2_apply_stats {
            size: s.size,
            digest: c_string(&s.digest),
            tar_bytes: s.tar_bytes,
            compression: match s.compression {
                Compression::None => ovl2_compression::None,
                Compression::Gzip => ovl2_compression::Gzip,
                Compression::Zstd => ovl2_compression::Zstd,
            },
            entries: s.entries,
            files: s.files,
            dirs: s.dirs,
            symlinks: s.symlinks,
            hardlinks: s.hardlinks,
            whiteouts: s.whiteouts,
            opaque_dirs: s.opaque_dirs,
            special: s.special,
            skipped: s.skipped,
            dropped_xattrs: s.dropped_xattrs,
        }
    }
}

/// Applies a layer tar (plain, gzip or zstd, detected from its first bytes) read from `fd`
/// until end of file to the empty layer `id`. With `parent` the layer's own parent (NULL for
/// a base layer) the tar is written straight into the layer's diff; any other `parent`
/// (NULL for a layer that has one) unpacks it into the layer's mounted view, as Docker's
/// naive ApplyDiff does (whiteouts delete what the lower layers show; needs mounting
/// rights). Whatever the tar holds, nothing outside the layer is created or followed; on
/// any error the layer is left as it was.
///
/// `fd` stays open and owned by the caller; it may be a pipe, a socket or a file (read from
/// its current offset). `out` may be NULL when the stats are not wanted; otherwise `*out`
/// is NULL on failure, and on success is freed with `ovl2_apply_stats_free`.
///
/// Errors: INVALID_ARGUMENT (NULL argument, bad id, negative fd, the layer already has
/// content), NOT_FOUND (no layer `id` or `parent`), BUSY (the layer, or a layer built on
/// it, is mounted),
/// CORRUPT_ARCHIVE (malformed, truncated or hostile stream), UNSUPPORTED (bzip2, xz),
/// IO (including read errors on `fd`).
#[no_mangle]
pub extern "C" fn ovl2_apply_diff(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    fd: c_int,
    out: *mut *mut ovl2_apply_stats,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    ovl2_apply_diff_with(driver, id, parent, fd, std::ptr::null(), out, err)
}

/// Options for `ovl2_apply_diff_with`. Fill it with `ovl2_apply_opts_init`, then set fields.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_apply_opts {
    /// `sizeof(ovl2_apply_opts)`, set by `ovl2_apply_opts_init`.
    pub size: usize,
    /// The DiffID the uncompressed stream must have ("sha256:<hex>", as in an image
    /// config), or NULL. On a mismatch the apply fails with OVL2_STATUS_CORRUPT_ARCHIVE and
    /// the layer stays empty. Borrowed for the call.
    pub expect_digest: *const c_char,
    /// Flag (0 or 1): use `sync` below instead of the store's `sync` option for this apply.
    pub set_sync: u8,
    /// Flag: flush the applied data to disk (one syncfs) before the layer counts as complete.
    pub sync: u8,
}

// SAFETY: repr(C), integers and a pointer only.
unsafe impl Pod for ovl2_apply_opts {}

/// Fills `opts` with the defaults (no expected digest, the store's sync setting) and sets
/// `opts->size`.
///
/// Errors: OVL2_STATUS_INVALID_ARGUMENT when `opts` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_apply_opts_init(opts: *mut ovl2_apply_opts) -> ovl2_status {
    // SAFETY: NULL or writable (caller contract); out_arg checks NULL.
    boundary(std::ptr::null_mut(), || unsafe { out_arg(opts, "opts", apply_opts_defaults()) }.map(drop))
}

fn apply_opts_defaults() -> ovl2_apply_opts {
    ovl2_apply_opts {
        size: std::mem::size_of::<ovl2_apply_opts>(),
        expect_digest: std::ptr::null(),
        set_sync: 0,
        sync: 1,
    }
}

/// `ovl2_apply_diff` with options; `opts` may be NULL for the defaults. Same ownership and
/// errors, plus CORRUPT_ARCHIVE when the stream's digest is not `opts->expect_digest`.
#[no_mangle]
pub extern "C" fn ovl2_apply_diff_with(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    fd: c_int,
    opts: *const ovl2_apply_opts,
    out: *mut *mut ovl2_apply_stats,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // The optional out-pointer is cleared first, so every failure (a refused argument
        // too) leaves NULL there, as in every other call.
        let out = optional_out(out)?;
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, id, parent, o) = unsafe {
            (
                handle(driver)?,
                str_arg(id, "id")?,
                opt_str_arg(parent, "parent")?,
                sized_struct(opts, "ovl2_apply_opts", apply_opts_defaults())?,
            )
        };
        // SAFETY: NULL or a NUL-terminated string (documented field contract).
        let expect_digest = unsafe { opt_str_arg(o.expect_digest, "opts->expect_digest")? };
        let file = borrowed_file(fd, "fd")?;
        let aopts = ApplyOpts {
            sync: if flag(o.set_sync) { flag(o.sync) } else { d.options().sync },
            expect_digest,
            ..ApplyOpts::default()
        };
        let stats = d.apply_diff_with(id, parent, &*file, &aopts)?;
        if let Some(out) = out {
            *out = give(ovl2_apply_stats::from(stats));
        }
        Ok(())
    })
}

/// Frees stats from `ovl2_apply_diff`, including the digest. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_apply_stats_free(stats: *mut ovl2_apply_stats) {
    // SAFETY: NULL or made by ovl2_apply_diff, freed once (caller contract).
    unsafe { take_back(stats) }
}

/// What `ovl2_diff` wrote. Made by the library, freed with `ovl2_diff_stats_free`.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_diff_stats {
    /// Length of the tar stream.
    pub tar_bytes: u64,
    /// "sha256:<hex>" of the tar stream: the layer's DiffID; NULL only when
    /// `ovl2_diff_with` ran with `opts->digest` off.
    pub digest: *const c_char,
    /// Tar entries written (whiteouts and opaque markers included).
    pub entries: u64,
}
owns_strings!(ovl2_diff_stats: digest);

impl From<DiffStats> for ovl2_diff_stats {
    fn from(s: DiffStats) -> Self {
        ovl2_diff_stats { tar_bytes: s.tar_bytes, digest: c_string_opt(s.digest.as_deref()), entries: s.entries }
    }
}

/// Writes layer `id` to `fd` as an uncompressed tar in Docker's layer format, relative to
/// `parent` (NULL for none). Against the layer's own parent this is Docker's native export:
/// deterministic and byte-identical to Docker's. Against another layer (or none, for a layer
/// that has one) it is Docker's naive export of the differences, which mounts the layers.
///
/// `fd` stays open and owned by the caller; close it (or the pipe's write end) after the
/// call to signal end of stream. When `fd` is a pipe, a reader that goes away makes the
/// write fail with EPIPE (status IO) — but only if SIGPIPE is ignored or handled: a C
/// program should ignore SIGPIPE (Go programs need do nothing). `out` may be NULL;
/// otherwise `*out` is NULL on failure, and on success is freed with `ovl2_diff_stats_free`.
///
/// Errors: INVALID_ARGUMENT (NULL argument, bad id, negative fd), NOT_FOUND, PERMISSION or
/// UNSUPPORTED (a naive export could not mount), IO (including write errors on `fd`).
#[no_mangle]
pub extern "C" fn ovl2_diff(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    fd: c_int,
    out: *mut *mut ovl2_diff_stats,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    ovl2_diff_with(driver, id, parent, fd, std::ptr::null(), out, err)
}

/// Options for `ovl2_diff_with`. Fill it with `ovl2_diff_opts_init`, then set fields.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_diff_opts {
    /// `sizeof(ovl2_diff_opts)`, set by `ovl2_diff_opts_init`.
    pub size: usize,
    /// Flag (0 or 1): compute the stream's sha256 (default 1). Off, the export does no more
    /// work than `tar -c`, and the stats' `digest` is NULL.
    pub digest: u8,
}

// SAFETY: repr(C), integers only.
unsafe impl Pod for ovl2_diff_opts {}

fn diff_opts_defaults() -> ovl2_diff_opts {
    ovl2_diff_opts { size: std::mem::size_of::<ovl2_diff_opts>(), digest: 1 }
}

/// Fills `opts` with the defaults (digest on) and sets `opts->size`.
///
/// Errors: OVL2_STATUS_INVALID_ARGUMENT when `opts` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_diff_opts_init(opts: *mut ovl2_diff_opts) -> ovl2_status {
    // SAFETY: NULL or writable (caller contract); out_arg checks NULL.
    boundary(std::ptr::null_mut(), || unsafe { out_arg(opts, "opts", diff_opts_defaults()) }.map(drop))
}

/// `ovl2_diff` with options; `opts` may be NULL for the defaults. Same ownership and errors.
#[no_mangle]
pub extern "C" fn ovl2_diff_with(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    fd: c_int,
    opts: *const ovl2_diff_opts,
    out: *mut *mut ovl2_diff_stats,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // Cleared first, as in ovl2_apply_diff_with.
        let out = optional_out(out)?;
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, id, parent, o) = unsafe {
            (
                handle(driver)?,
                str_arg(id, "id")?,
                opt_str_arg(parent, "parent")?,
                sized_struct(opts, "ovl2_diff_opts", diff_opts_defaults())?,
            )
        };
        let file = borrowed_file(fd, "fd")?;
        // Into the fd itself: with the digest off and a blocking pipe, large files are spliced.
        let stats = d.diff_to_fd(id, parent, file.as_fd(), &DiffOpts { digest: flag(o.digest) })?;
        if let Some(out) = out {
            *out = give(ovl2_diff_stats::from(stats));
        }
        Ok(())
    })
}

/// Frees stats from `ovl2_diff`, including the digest. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_diff_stats_free(stats: *mut ovl2_diff_stats) {
    // SAFETY: NULL or made by ovl2_diff, freed once (caller contract).
    unsafe { take_back(stats) }
}

/// A whole diff stream in memory, from `ovl2_diff_small`. Made by the library, freed with
/// `ovl2_diff_bytes_free`.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_diff_bytes {
    /// The tar stream, `len` bytes; never NULL (a tar has at least its end blocks).
    pub data: *const u8,
    /// Length of `data`, equal to `stats.tar_bytes`.
    pub len: usize,
    /// What `ovl2_diff_with` reports for the same stream.
    pub stats: ovl2_diff_stats,
}

impl Drop for ovl2_diff_bytes {
    fn drop(&mut self) {
        if !self.data.is_null() {
            // SAFETY: `data`/`len` are those of the Box<[u8]> leaked in ovl2_diff_small, and
            // the struct is dropped once (its free function's contract).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.data.cast_mut(), self.len)) });
        }
    }
}

// SAFETY: `data` is the only owned pointer besides `stats` (itself Owned), made above.
unsafe impl crate::owned::Owned for ovl2_diff_bytes {}

/// Layer `id` as a tar relative to `parent` (NULL for none), exactly as `ovl2_diff_with`
/// writes it, made in memory when the layer is small: a stream of at most `limit` bytes
/// (capped at 1 MiB) and 16 entries. `*out` is NULL, with nothing written anywhere, when
/// the stream is larger or needs mounted views (`parent` is not the layer's own parent, or
/// the upper has a redirected directory): stream it with `ovl2_diff_with` then. Meant for callers that would read
/// a stream on another thread: a small layer then costs no hand-off between threads, which
/// is most of the time a streamed diff of it takes, and a larger one is given up on as soon
/// as a directory listing or a file's size shows it, before the rest is read. `opts` may be
/// NULL (digest on).
///
/// Ownership: free a non-NULL `*out` with `ovl2_diff_bytes_free`.
/// Errors: INVALID_ARGUMENT (NULL `driver`/`id`/`out`, bad id), NOT_FOUND, IO.
#[no_mangle]
pub extern "C" fn ovl2_diff_small(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    opts: *const ovl2_diff_opts,
    limit: usize,
    out: *mut *mut ovl2_diff_bytes,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id, parent, o) = unsafe {
            (
                out_arg(out, "out", std::ptr::null_mut())?,
                handle(driver)?,
                str_arg(id, "id")?,
                opt_str_arg(parent, "parent")?,
                sized_struct(opts, "ovl2_diff_opts", diff_opts_defaults())?,
            )
        };
        let opts = DiffOpts { digest: flag(o.digest) };
        if let Some((tar, stats)) = d.diff_small(id, parent, &opts, limit as u64)? {
            let b = tar.into_boxed_slice();
            let len = b.len();
            *out =
                give(ovl2_diff_bytes { data: Box::into_raw(b).cast::<u8>(), len, stats: ovl2_diff_stats::from(stats) });
        }
        Ok(())
    })
}

/// Frees a stream from `ovl2_diff_small`, with its stats. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_diff_bytes_free(bytes: *mut ovl2_diff_bytes) {
    // SAFETY: NULL or made by ovl2_diff_small, freed once (caller contract).
    unsafe { take_back(bytes) }
}

/// Sets `*out` to Docker's DiffSize of layer `id` against `parent` (NULL for none): with
/// the layer's own parent, the size of its own files (what `ovl2_apply_diff` reported);
/// against another layer, the sizes of added and modified non-directories.
///
/// Errors: INVALID_ARGUMENT (NULL argument, bad id), NOT_FOUND, IO.
#[no_mangle]
pub extern "C" fn ovl2_diff_size(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    out: *mut u64,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id, parent) =
            unsafe { (out_arg(out, "out", 0)?, handle(driver)?, str_arg(id, "id")?, opt_str_arg(parent, "parent")?) };
        *out = d.diff_size(id, parent)?;
        Ok(())
    })
}

/// How a path changed, with Docker's numeric values.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ovl2_change_kind {
    /// Present in both, with different metadata or content ("C" in `docker diff`).
    Modify = 0,
    /// Present only in the layer ("A").
    Add = 1,
    /// Present only in the parent ("D").
    Delete = 2,
}

/// One changed path.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_change {
    /// Absolute path inside the container filesystem ("/etc/hosts").
    pub path: *const c_char,
    /// What happened to it.
    pub kind: ovl2_change_kind,
}
owns_strings!(ovl2_change: path);

/// A list of changes sorted by path. `items` is NULL when `len` is 0. (C sees `ovl2_change_list`, named in cbindgen.toml.)
pub type ovl2_change_list = ovl2_list<ovl2_change>;

/// Sets `*out` to the paths layer `id` adds, modifies or deletes relative to `parent` (NULL
/// for none), sorted by path, with Docker's rules.
///
/// Ownership: free `*out` with `ovl2_change_list_free`.
/// Errors: INVALID_ARGUMENT (NULL argument, bad id), NOT_FOUND, IO.
#[no_mangle]
pub extern "C" fn ovl2_changes(
    driver: *const ovl2_driver,
    id: *const c_char,
    parent: *const c_char,
    out: *mut *mut ovl2_list<ovl2_change>,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id, parent) = unsafe {
            (
                out_arg(out, "out", std::ptr::null_mut())?,
                handle(driver)?,
                str_arg(id, "id")?,
                opt_str_arg(parent, "parent")?,
            )
        };
        let items = d
            .changes(id, parent)?
            .iter()
            .map(|c| ovl2_change {
                path: std::ffi::CString::new(c.path.as_os_str().as_bytes()).unwrap_or_default().into_raw(),
                kind: match c.kind {
                    ChangeKind::Modify => ovl2_change_kind::Modify,
                    ChangeKind::Add => ovl2_change_kind::Add,
                    ChangeKind::Delete => ovl2_change_kind::Delete,
                },
            })
            .collect();
        *out = give(ovl2_list::new(items));
        Ok(())
    })
}

/// Frees a list from `ovl2_changes`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_change_list_free(list: *mut ovl2_list<ovl2_change>) {
    // SAFETY: NULL or made by ovl2_changes, freed once (caller contract).
    unsafe { take_back(list) }
}

/// One layer `ovl2_import_chain` made: its id and what applying its tar did.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_import_layer {
    /// The layer's id (`<top>-1`, ..., `<top>`, base first).
    pub id: *const c_char,
    /// What `ovl2_apply_diff` would have reported for it. Owned by the list item.
    pub stats: ovl2_apply_stats,
}
owns_strings!(ovl2_import_layer: id);

/// The layers of one import, base first. `items` is NULL when `len` is 0. (C sees
/// `ovl2_import_list`, named in cbindgen.toml.)
pub type ovl2_import_list = ovl2_list<ovl2_import_layer>;

/// Options for `ovl2_import_chain`. Fill it with `ovl2_import_opts_init`, then set fields.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ovl2_import_opts {
    /// `sizeof(ovl2_import_opts)`, set by `ovl2_import_opts_init`.
    pub size: usize,
    /// Flag (0 or 1): use `sync` below instead of the store's `sync` option for each apply.
    pub set_sync: u8,
    /// Flag: flush each layer's data to disk (one syncfs) before it counts as complete.
    pub sync: u8,
}

// SAFETY: repr(C), integers only.
unsafe impl Pod for ovl2_import_opts {}

fn import_opts_defaults() -> ovl2_import_opts {
    ovl2_import_opts { size: std::mem::size_of::<ovl2_import_opts>(), set_sync: 0, sync: 1 }
}

/// Fills `opts` with the defaults (the store's sync setting) and sets `opts->size`.
///
/// Errors: OVL2_STATUS_INVALID_ARGUMENT when `opts` is NULL.
#[no_mangle]
pub extern "C" fn ovl2_import_opts_init(opts: *mut ovl2_import_opts) -> ovl2_status {
    // SAFETY: NULL or writable (caller contract); out_arg checks NULL.
    boundary(std::ptr::null_mut(), || unsafe { out_arg(opts, "opts", import_opts_defaults()) }.map(drop))
}

/// Creates one layer per tar in `fds` (`n_fds` of them, base first) on top of `parent`
/// (NULL for none) and applies each tar into its layer: an image's layers in one call. The
/// top layer is `top`, those below it `<top>-1`, `<top>-2`, ... from the base. All or
/// nothing: on failure the layers this call made are removed and `parent` loses the
/// `committed` marker they gave it; if the process is killed half way, the next open (or
/// `ovl2_repair`) does the same. `opts` may be NULL for the defaults.
///
/// Each fd stays open and owned by the caller and is read until end of file (plain, gzip or
/// zstd, as in `ovl2_apply_diff`). `out` may be NULL; otherwise `*out` is NULL on failure,
/// and on success is the layers made, base first, freed with `ovl2_import_list_free`.
///
/// Errors: INVALID_ARGUMENT (NULL argument, no fds, bad id, a negative fd), NOT_FOUND (no
/// `parent`), EXISTS (a layer id is taken), CORRUPT_ARCHIVE, UNSUPPORTED, MAX_DEPTH, IO.
#[no_mangle]
pub extern "C" fn ovl2_import_chain(
    driver: *const ovl2_driver,
    top: *const c_char,
    parent: *const c_char,
    fds: *const c_int,
    n_fds: usize,
    opts: *const ovl2_import_opts,
    out: *mut *mut ovl2_list<ovl2_import_layer>,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        let out = optional_out(out)?;
        // SAFETY: documented pointer contract; helpers check NULL.
        let (d, top, parent, o) = unsafe {
            (
                handle(driver)?,
                str_arg(top, "top")?,
                opt_str_arg(parent, "parent")?,
                sized_struct(opts, "ovl2_import_opts", import_opts_defaults())?,
            )
        };
        if fds.is_null() {
            return Err(ovl2_core::Error::InvalidArgument("fds is NULL".into()).into());
        }
        // SAFETY: `fds` points to `n_fds` ints (caller contract), checked non-NULL above.
        let raw = unsafe { std::slice::from_raw_parts(fds, n_fds) };
        let files = raw
            .iter()
            .enumerate()
            .map(|(i, &fd)| borrowed_file(fd, &format!("fds[{i}]")))
            .collect::<FfiResult<Vec<_>>>()?;
        let aopts =
            ApplyOpts { sync: if flag(o.set_sync) { flag(o.sync) } else { d.options().sync }, ..ApplyOpts::default() };
        let made = d.import_chain(top, parent, files.iter().map(|f| &**f).collect(), &aopts)?;
        if let Some(out) = out {
            let items = made
                .into_iter()
                .map(|(id, st)| ovl2_import_layer { id: c_string(&id), stats: ovl2_apply_stats::from(st) })
                .collect();
            *out = give(ovl2_list::new(items));
        }
        Ok(())
    })
}

/// Frees a list from `ovl2_import_chain`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_import_list_free(list: *mut ovl2_list<ovl2_import_layer>) {
    // SAFETY: NULL or made by ovl2_import_chain, freed once (caller contract).
    unsafe { take_back(list) }
}
