//! Read-only queries and check/repair, each returning a plain C struct the caller frees
//! with its matching `*_free` function. Strings inside those structs belong to the struct.

use std::ffi::{c_char, c_int, CString};
use std::sync::OnceLock;

use ovl2_core::{Problem, ProblemKind};

use crate::args::{c_string, c_string_opt, os_c_string, os_c_string_opt, out_arg, str_arg};
use crate::driver::{handle, ovl2_driver};
use crate::error::{boundary, guard, ovl2_error, ovl2_status};
use crate::owned::{give, ovl2_list, owns_strings, take_back};

/// The paths Docker's `GetMetadata` returns for a layer. Made by `ovl2_layer_metadata`,
/// freed (with all its strings) by `ovl2_metadata_free`. Each path is the exact bytes of the
/// path on disk, which need not be UTF-8 (a home that is not UTF-8 is returned as given).
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_metadata {
    /// Lower layers' `diff` dirs, nearest first, joined by ':'; NULL for a base layer.
    pub lower_dir: *const c_char,
    /// `<home>/<id>/diff`.
    pub upper_dir: *const c_char,
    /// `<home>/<id>/work`.
    pub work_dir: *const c_char,
    /// `<home>/<id>/merged`.
    pub merged_dir: *const c_char,
}
owns_strings!(ovl2_metadata: lower_dir, upper_dir, work_dir, merged_dir);

/// Sets `*out` to the metadata of layer `id` (NULL on failure).
///
/// Ownership: free `*out` with `ovl2_metadata_free`.
/// Errors: INVALID_ARGUMENT, NOT_FOUND, CORRUPT (a lower link does not resolve), IO.
#[no_mangle]
pub extern "C" fn ovl2_layer_metadata(
    driver: *const ovl2_driver,
    id: *const c_char,
    out: *mut *mut ovl2_metadata,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id) = unsafe { (out_arg(out, "out", std::ptr::null_mut())?, handle(driver)?, str_arg(id, "id")?) };
        let m = d.metadata(id)?;
        *out = give(ovl2_metadata {
            lower_dir: os_c_string_opt(m.lower_dir.as_deref()),
            upper_dir: os_c_string(m.upper_dir.as_os_str()),
            work_dir: os_c_string(m.work_dir.as_os_str()),
            merged_dir: os_c_string(m.merged_dir.as_os_str()),
        });
        Ok(())
    })
}

/// Frees metadata from `ovl2_layer_metadata`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_metadata_free(m: *mut ovl2_metadata) {
    // SAFETY: NULL or made by ovl2_layer_metadata, freed once (caller contract).
    unsafe { take_back(m) }
}

/// One key/value pair.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_kv {
    /// The key, e.g. "Backing Filesystem".
    pub key: *const c_char,
    /// The value, e.g. "extfs".
    pub value: *const c_char,
}

owns_strings!(ovl2_kv: key, value);

/// An ordered list of key/value pairs. `items` is NULL when `len` is 0. (C sees `ovl2_kv_list`, named in cbindgen.toml.)
pub type ovl2_kv_list = ovl2_list<ovl2_kv>;

/// Sets `*out` to the store's status, as Docker's `Status()`: its keys first ("Backing
/// Filesystem", "Supports d_type", "Using metacopy", "Native Overlay Diff", "userxattr"),
/// then ovl2's ("Home", "Layers", "Max depth", ...).
///
/// Ownership: free `*out` with `ovl2_kv_list_free`.
/// Errors: INVALID_ARGUMENT (NULL argument), IO.
#[no_mangle]
pub extern "C" fn ovl2_driver_status(
    driver: *const ovl2_driver,
    out: *mut *mut ovl2_list<ovl2_kv>,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d) = unsafe { (out_arg(out, "out", std::ptr::null_mut())?, handle(driver)?) };
        let items = d.status()?.iter().map(|(k, v)| ovl2_kv { key: c_string(k), value: c_string(v) }).collect();
        *out = give(ovl2_list::new(items));
        Ok(())
    })
}

/// Frees a list from `ovl2_driver_status`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_kv_list_free(list: *mut ovl2_list<ovl2_kv>) {
    // SAFETY: NULL or made by ovl2_driver_status, freed once (caller contract).
    unsafe { take_back(list) }
}

/// What one layer's own files occupy on disk, as `ovl2_usage` reports it.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ovl2_layer_usage {
    /// Bytes allocated (`st_blocks` × 512, as `du` counts), every inode once.
    pub bytes: u64,
    /// Distinct inodes: hardlinks count once, the layer's `diff` directory counts.
    pub inodes: u64,
}

/// Sets `*out` to the disk usage and inode count of layer `id`'s own files (its `diff`
/// directory, as `ovl2 du` and containerd's snapshot usage count), never crossing a mount
/// or following a symlink. Unlike `ovl2_diff_size` (Docker's apparent size of the layer's
/// changes) this is what the layer costs on disk. `*out` is zeroed on failure.
///
/// Errors: INVALID_ARGUMENT (NULL argument, bad id), NOT_FOUND, IO.
#[no_mangle]
pub extern "C" fn ovl2_usage(
    driver: *const ovl2_driver,
    id: *const c_char,
    out: *mut ovl2_layer_usage,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d, id) =
            unsafe { (out_arg(out, "out", ovl2_layer_usage::default())?, handle(driver)?, str_arg(id, "id")?) };
        let u = d.usage(id)?;
        *out = ovl2_layer_usage { bytes: u.bytes, inodes: u.inodes };
        Ok(())
    })
}

/// One layer as `ovl2_layers` reports it.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_layer {
    /// The layer's id.
    pub id: *const c_char,
    /// The direct parent's id; NULL for a base layer (and for an orphan, see `orphan`).
    pub parent: *const c_char,
    /// The number of lower layers (entries in its `lower` file): 0 for a base layer.
    pub depth: usize,
    /// The 26-character name under `l/`; NULL when the `link` file is unreadable.
    pub short_id: *const c_char,
    /// Not a base layer, but its parent is gone from the store (so `parent` is NULL and it
    /// cannot mount); `ovl2_check` names the command that resolves it.
    pub orphan: bool,
}
owns_strings!(ovl2_layer: id, parent, short_id);

/// A list of layers sorted by id. `items` is NULL when `len` is 0. (C sees `ovl2_layer_list`, named in cbindgen.toml.)
pub type ovl2_layer_list = ovl2_list<ovl2_layer>;

/// Sets `*out` to every layer in the store with its parent and depth, sorted by id.
///
/// Ownership: free `*out` with `ovl2_layer_list_free`.
/// Errors: INVALID_ARGUMENT (NULL argument), IO.
#[no_mangle]
pub extern "C" fn ovl2_layers(
    driver: *const ovl2_driver,
    out: *mut *mut ovl2_list<ovl2_layer>,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d) = unsafe { (out_arg(out, "out", std::ptr::null_mut())?, handle(driver)?) };
        let items = d
            .layers()?
            .iter()
            .map(|l| ovl2_layer {
                id: c_string(&l.id),
                parent: c_string_opt(l.parent.as_deref()),
                depth: l.depth,
                short_id: c_string_opt(l.short_id.as_deref()),
                orphan: l.orphan,
            })
            .collect();
        *out = give(ovl2_list::new(items));
        Ok(())
    })
}

/// Frees a list from `ovl2_layers`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_layer_list_free(list: *mut ovl2_list<ovl2_layer>) {
    // SAFETY: NULL or made by ovl2_layers, freed once (caller contract).
    unsafe { take_back(list) }
}

/// What kind of damage a problem is. Values are stable; unknown future kinds are reported
/// as OVL2_PROBLEM_KIND_OTHER.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ovl2_problem_kind {
    /// A kind this version of the C ABI does not name yet; see the detail text.
    Other = 0,
    /// A leftover staging or removal dir whose owner is gone.
    StaleStaging = 1,
    /// A layer dir without `diff/` (not repairable).
    MissingDiff = 2,
    /// A layer without a `link` file, or with an empty one.
    MissingLink = 3,
    /// A `link` file whose content is not a short id.
    MalformedLink = 4,
    /// The layer's `l/<short>` symlink is missing.
    MissingShortLink = 5,
    /// `l/<short>` points somewhere other than `../<id>/diff`.
    WrongShortLink = 6,
    /// An `l/` symlink whose layer no longer exists.
    DanglingShortLink = 7,
    /// An `l/` symlink to a live layer that nothing refers to.
    UnusedShortLink = 8,
    /// Something under `l/` that is not a symlink.
    StrayShortLink = 9,
    /// Two layers claim the same short id.
    DuplicateShortId = 10,
    /// A `lower` file that cannot be parsed.
    MalformedLower = 11,
    /// A `lower` entry after the first naming a short id no layer has (an ancestor is gone).
    UnknownLower = 12,
    /// A `lower` chain that disagrees with its parent's chain.
    InconsistentLower = 13,
    /// A chain deeper than the store's limit.
    TooDeep = 14,
    /// A layer with a parent but no `work/`.
    MissingWork = 15,
    /// A layer with children but no `committed` marker.
    MissingCommitted = 16,
    /// A layer with a parent whose `lower` file is gone.
    MissingLower = 17,
    /// A layer whose parent is gone (the detail names the command that resolves it).
    Orphan = 18,
    /// A container whose creator died before both of its layers existed.
    IncompleteContainer = 19,
    /// A mount record in `.ovl2/mounts` that cannot be used; repair rebuilds it.
    BadMountRecord = 20,
    /// Something inside `.ovl2/empty`, which must stay empty; repair empties it.
    NotEmptyEmptyDir = 21,
    /// A layer's `merged` that is not a directory; repair removes it.
    BadMerged = 22,
    /// A containerd snapshot in ovl2-snapshotter's index whose layer is gone; repair drops the
    /// entry while no service runs.
    SnapshotWithoutLayer = 23,
    /// A containerd snapshot whose parent snapshot the index no longer has.
    SnapshotWithoutParent = 24,
    /// A snapshot's short link under `.ovl2/snapshotter/l/` is missing or wrong; repair remakes
    /// it while no service runs.
    MissingSnapshotLink = 25,
    /// A short link under `.ovl2/snapshotter/l/` that no snapshot owns; repair removes it while
    /// no service runs.
    DanglingSnapshotLink = 26,
    /// A file in ovl2-snapshotter's index that is not a valid entry (never touched).
    MalformedSnapshot = 27,
}

/// The one pairing of core's kinds with their C values; the names come from
/// [`ProblemKind::as_str`], so C, JSON and Python spell them alike.
const PROBLEM_KINDS: [(ProblemKind, ovl2_problem_kind); 27] = {
    use ovl2_problem_kind as C;
    use ProblemKind as K;
    [
        (K::StaleStaging, C::StaleStaging),
        (K::MissingDiff, C::MissingDiff),
        (K::MissingLink, C::MissingLink),
        (K::MalformedLink, C::MalformedLink),
        (K::MissingShortLink, C::MissingShortLink),
        (K::WrongShortLink, C::WrongShortLink),
        (K::DanglingShortLink, C::DanglingShortLink),
        (K::UnusedShortLink, C::UnusedShortLink),
        (K::StrayShortLink, C::StrayShortLink),
        (K::DuplicateShortId, C::DuplicateShortId),
        (K::MalformedLower, C::MalformedLower),
        (K::UnknownLower, C::UnknownLower),
        (K::InconsistentLower, C::InconsistentLower),
        (K::TooDeep, C::TooDeep),
        (K::MissingWork, C::MissingWork),
        (K::MissingCommitted, C::MissingCommitted),
        (K::MissingLower, C::MissingLower),
        (K::Orphan, C::Orphan),
        (K::IncompleteContainer, C::IncompleteContainer),
        (K::BadMountRecord, C::BadMountRecord),
        (K::NotEmptyEmptyDir, C::NotEmptyEmptyDir),
        (K::BadMerged, C::BadMerged),
        (K::SnapshotWithoutLayer, C::SnapshotWithoutLayer),
        (K::SnapshotWithoutParent, C::SnapshotWithoutParent),
        (K::MissingSnapshotLink, C::MissingSnapshotLink),
        (K::DanglingSnapshotLink, C::DanglingSnapshotLink),
        (K::MalformedSnapshot, C::MalformedSnapshot),
    ]
};

impl From<ProblemKind> for ovl2_problem_kind {
    fn from(k: ProblemKind) -> Self {
        PROBLEM_KINDS.iter().find(|(core, _)| *core == k).map_or(ovl2_problem_kind::Other, |(_, c)| *c)
    }
}

/// A static snake_case name for a problem kind ("missing_link", ...), the same names the
/// CLI's JSON output uses. Never NULL, never free it; unknown values give "other".
#[no_mangle]
pub extern "C" fn ovl2_problem_kind_name(kind: c_int) -> *const c_char {
    // C wants NUL-terminated names that live forever; made once from core's names.
    static NAMES: OnceLock<Vec<(c_int, CString)>> = OnceLock::new();
    guard(c"other".as_ptr(), || {
        let names = NAMES.get_or_init(|| {
            PROBLEM_KINDS
                .iter()
                .map(|(core, c)| (*c as c_int, CString::new(core.as_str()).unwrap_or_default()))
                .collect()
        });
        names.iter().find(|(k, _)| *k == kind).map_or(c"other".as_ptr(), |(_, n)| n.as_ptr())
    })
}

/// One thing `ovl2_check` found.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_problem {
    /// The layer concerned, or NULL when the problem is not about one layer.
    pub layer: *const c_char,
    /// What is wrong.
    pub kind: ovl2_problem_kind,
    /// A sentence naming the file and what was found.
    pub detail: *const c_char,
    /// Whether `ovl2_repair` can fix it.
    pub repairable: bool,
}
owns_strings!(ovl2_problem: layer, detail);

/// A list of problems. `items` is NULL when `len` is 0. (C sees `ovl2_problem_list`, named in cbindgen.toml.)
pub type ovl2_problem_list = ovl2_list<ovl2_problem>;

fn problem_list(ps: Vec<Problem>) -> ovl2_problem_list {
    let items = ps
        .iter()
        .map(|p| ovl2_problem {
            layer: c_string_opt(p.layer.as_deref()),
            kind: p.kind.into(),
            detail: c_string(&p.detail),
            repairable: p.repairable,
        })
        .collect();
    ovl2_list::new(items)
}

/// Scans the store and sets `*out` to what a crash or another tool left behind. Changes
/// nothing; an empty list means the store is sound.
///
/// Ownership: free `*out` with `ovl2_problem_list_free`.
/// Errors: INVALID_ARGUMENT (NULL argument), IO.
#[no_mangle]
pub extern "C" fn ovl2_check(
    driver: *const ovl2_driver,
    out: *mut *mut ovl2_list<ovl2_problem>,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d) = unsafe { (out_arg(out, "out", std::ptr::null_mut())?, handle(driver)?) };
        *out = give(problem_list(d.check()?));
        Ok(())
    })
}

/// Frees a list from `ovl2_check`, including its strings. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_problem_list_free(list: *mut ovl2_list<ovl2_problem>) {
    // SAFETY: NULL or made by ovl2_check, freed once (caller contract).
    unsafe { take_back(list) }
}

/// What `ovl2_repair` did.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct ovl2_repair_report {
    /// Problems found and fixed.
    pub repaired: ovl2_list<ovl2_problem>,
    /// Problems still there afterwards (those repair cannot fix).
    pub remaining: ovl2_list<ovl2_problem>,
}
// SAFETY: both fields are lists made by `problem_list`; dropping them frees them.
unsafe impl crate::owned::Owned for ovl2_repair_report {}

/// Fixes what `ovl2_check` reports as repairable (never deleting a layer directory) and
/// sets `*out` to what was fixed and what remains.
///
/// Ownership: free `*out` with `ovl2_repair_report_free`.
/// Errors: INVALID_ARGUMENT (NULL argument), PERMISSION, IO.
#[no_mangle]
pub extern "C" fn ovl2_repair(
    driver: *const ovl2_driver,
    out: *mut *mut ovl2_repair_report,
    err: *mut *mut ovl2_error,
) -> ovl2_status {
    boundary(err, || {
        // SAFETY: documented pointer contract; helpers check NULL.
        let (out, d) = unsafe { (out_arg(out, "out", std::ptr::null_mut())?, handle(driver)?) };
        let r = d.repair()?;
        *out = give(ovl2_repair_report { repaired: problem_list(r.repaired), remaining: problem_list(r.remaining) });
        Ok(())
    })
}

/// Frees a report from `ovl2_repair`, including both lists. NULL is a no-op.
#[no_mangle]
pub extern "C" fn ovl2_repair_report_free(report: *mut ovl2_repair_report) {
    // SAFETY: NULL or made by ovl2_repair, freed once (caller contract).
    unsafe { take_back(report) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind core reports has its own C value, named as the CLI's JSON names it.
    #[test]
    fn every_problem_kind_has_a_c_value_and_the_cli_name() {
        use ProblemKind as K;
        let all = [
            K::StaleStaging,
            K::MissingDiff,
            K::MissingLink,
            K::MalformedLink,
            K::MissingShortLink,
            K::WrongShortLink,
            K::DanglingShortLink,
            K::UnusedShortLink,
            K::IncompleteContainer,
            K::StrayShortLink,
            K::DuplicateShortId,
            K::MalformedLower,
            K::MissingLower,
            K::UnknownLower,
            K::Orphan,
            K::InconsistentLower,
            K::TooDeep,
            K::MissingWork,
            K::MissingCommitted,
            K::BadMountRecord,
            K::NotEmptyEmptyDir,
            K::BadMerged,
            K::SnapshotWithoutLayer,
            K::SnapshotWithoutParent,
            K::MissingSnapshotLink,
            K::DanglingSnapshotLink,
            K::MalformedSnapshot,
        ];
        for k in all {
            let c = ovl2_problem_kind::from(k);
            assert_ne!(c, ovl2_problem_kind::Other, "{k:?} has no C value");
            let name = unsafe { std::ffi::CStr::from_ptr(ovl2_problem_kind_name(c as c_int)) };
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(format!("\"{}\"", name.to_str().unwrap()), json);
        }
    }
}
