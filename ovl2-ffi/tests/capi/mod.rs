//! The C face of the shared test bodies (`ovl2-core/tests/faces`): [`CapiDriver`] implements
//! `Face` by calling the exported `ovl2_*` functions exactly as a C caller does (C strings,
//! versioned option structs, out-pointers, status codes, `ovl2_error`, the `*_free`
//! functions), and turns what comes back into core's plain types, so a body asserts the same
//! values, error kinds and messages on both faces.
#![allow(dead_code, missing_docs)]

use std::ffi::{c_char, CStr, CString, OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::ptr;

use ovl2::*;
use ovl2_core::{
    docker_init_entries, ApplyOpts, ApplyStats, Change, ChangeKind, Compression, ContainerOpts, CreateOpts, DiffOpts,
    DiffStats, ErrorKind, InitKind, LayerInfo, Metadata, MountInfo, MountOpts, MountStrategy, OpenMode, Options,
    Problem, ProblemKind, RemoveOpts, RepairReport, Usage,
};

use crate::faces::{Face, FaceError, R};

/// A store opened through `ovl2_open`, closed with `ovl2_close` on drop.
#[derive(Debug)]
pub struct CapiDriver {
    handle: *mut ovl2_driver,
    /// What `ovl2_home` said right after opening (borrowed from the handle in C).
    home: PathBuf,
}

// SAFETY: the C ABI documents a handle as callable from many threads at once (every function
// takes `const ovl2_driver *`); only `ovl2_close`, run by Drop with `&mut self`, must not race.
unsafe impl Send for CapiDriver {}
unsafe impl Sync for CapiDriver {}

impl Drop for CapiDriver {
    fn drop(&mut self) {
        ovl2_close(self.handle);
    }
}

/// Runs one fallible C call with an error out-pointer and turns a failure into a
/// [`FaceError`], freeing the `ovl2_error`.
fn call(f: impl FnOnce(*mut *mut ovl2_error) -> ovl2_status) -> R {
    let mut err: *mut ovl2_error = ptr::dangling_mut(); // junk the call must overwrite
    let status = f(&mut err);
    if status == ovl2_status::Ok {
        assert!(err.is_null(), "success must clear *err");
        return Ok(());
    }
    assert!(!err.is_null(), "a failure must fill *err");
    assert_eq!(ovl2_error_status(err), status, "the error's status is the returned one");
    // SAFETY: a live error from the library; the message is borrowed until the free below.
    let message = unsafe { CStr::from_ptr(ovl2_error_message(err)) }.to_str().unwrap().to_owned();
    let errno = ovl2_error_errno(err);
    ovl2_error_free(err);
    let kind = match status {
        ovl2_status::InvalidArgument => ErrorKind::InvalidArgument,
        ovl2_status::NotFound => ErrorKind::NotFound,
        ovl2_status::Exists => ErrorKind::Exists,
        ovl2_status::MaxDepth => ErrorKind::MaxDepth,
        ovl2_status::Busy => ErrorKind::Busy,
        ovl2_status::Unsupported => ErrorKind::Unsupported,
        ovl2_status::Permission => ErrorKind::Permission,
        ovl2_status::Corrupt => ErrorKind::Corrupt,
        ovl2_status::CorruptArchive => ErrorKind::CorruptArchive,
        ovl2_status::Io => ErrorKind::Io,
        ovl2_status::Panic => panic!("a panic crossed into the C face: {message}"),
        ovl2_status::Ok => unreachable!(),
    };
    Err(FaceError { kind, message, errno: (errno != 0).then_some(errno) })
}

/// A string argument as C passes it. Bodies never hand the C face a string with a NUL
/// (`Face::STRINGS_CAN_HOLD_NUL` is false), so this cannot fail for them.
fn cs(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| panic!("the C face cannot pass {s:?}: a C string holds no NUL"))
}

fn cs_opt(s: Option<&str>) -> Option<CString> {
    s.map(cs)
}

fn ptr_of(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}

/// Takes a library string: its bytes, then frees it with `ovl2_string_free`.
fn take_string(p: *mut c_char) -> Option<OsString> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string the library handed out.
    let v = OsString::from_vec(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec());
    ovl2_string_free(p);
    Some(v)
}

/// Reads a string inside a library struct (freed later with its struct).
fn borrowed(p: *const c_char) -> Option<OsString> {
    // SAFETY: NULL or a NUL-terminated string owned by a live library struct.
    (!p.is_null()).then(|| OsString::from_vec(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec()))
}

fn borrowed_str(p: *const c_char) -> Option<String> {
    borrowed(p).map(|s| s.into_string().expect("the C ABI hands out ids and names as UTF-8"))
}

/// The `{items, len}` of a library list as a slice.
fn items<'a, T>(p: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        assert!(p.is_null(), "an empty list has NULL items");
        return &[];
    }
    // SAFETY: the library's list holds `len` items at `p` until its free function runs.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// An anonymous in-memory file: what apply reads from and diff writes to, as an fd.
fn memfd(name: &str) -> std::fs::File {
    let fd: OwnedFd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    std::fs::File::from(fd)
}

/// Every problem kind, to name the C value back (through `ovl2_problem_kind_name`, which
/// uses the CLI's JSON names).
const PROBLEM_KINDS: &[ProblemKind] = &[
    ProblemKind::StaleStaging,
    ProblemKind::MissingDiff,
    ProblemKind::MissingLink,
    ProblemKind::MalformedLink,
    ProblemKind::MissingShortLink,
    ProblemKind::WrongShortLink,
    ProblemKind::DanglingShortLink,
    ProblemKind::UnusedShortLink,
    ProblemKind::StrayShortLink,
    ProblemKind::DuplicateShortId,
    ProblemKind::MalformedLower,
    ProblemKind::UnknownLower,
    ProblemKind::InconsistentLower,
    ProblemKind::TooDeep,
    ProblemKind::MissingWork,
    ProblemKind::MissingCommitted,
    ProblemKind::MissingLower,
    ProblemKind::Orphan,
    ProblemKind::IncompleteContainer,
    ProblemKind::BadMountRecord,
    ProblemKind::NotEmptyEmptyDir,
    ProblemKind::BadMerged,
    ProblemKind::SnapshotWithoutLayer,
    ProblemKind::SnapshotWithoutParent,
    ProblemKind::MissingSnapshotLink,
    ProblemKind::DanglingSnapshotLink,
    ProblemKind::MalformedSnapshot,
];

fn problem_kind(k: ovl2_problem_kind) -> ProblemKind {
    // SAFETY: a static NUL-terminated name.
    let name = unsafe { CStr::from_ptr(ovl2_problem_kind_name(k as i32)) }.to_str().unwrap();
    let json = format!("\"{name}\"");
    *PROBLEM_KINDS
        .iter()
        .find(|pk| serde_json::to_string(pk).unwrap() == json)
        .unwrap_or_else(|| panic!("C problem kind {name} ({}) names no core kind", k as i32))
}

fn problems(l: &ovl2_problem_list) -> Vec<Problem> {
    items(l.items, l.len)
        .iter()
        .map(|p| Problem {
            layer: borrowed_str(p.layer),
            kind: problem_kind(p.kind),
            detail: borrowed_str(p.detail).expect("a problem has a detail"),
            repairable: p.repairable,
        })
        .collect()
}

fn create_opts(o: &CreateOpts) -> (ovl2_create_opts, Vec<CString>, Vec<*const c_char>, Option<CString>) {
    let mut c = std::mem::MaybeUninit::<ovl2_create_opts>::uninit();
    assert_eq!(ovl2_create_opts_init(c.as_mut_ptr()), ovl2_status::Ok);
    // SAFETY: initialised by ovl2_create_opts_init.
    let c = unsafe { c.assume_init() };
    let kvs: Vec<CString> = o.storage_opt.iter().map(|(k, v)| cs(&format!("{k}={v}"))).collect();
    let mut ptrs: Vec<*const c_char> = kvs.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(ptr::null());
    let label = cs_opt(o.mount_label.as_deref());
    (c, kvs, ptrs, label)
}

impl CapiDriver {
    fn h(&self) -> *const ovl2_driver {
        self.handle
    }

    fn create_common(&self, id: &str, parent: Option<&str>, opts: &CreateOpts, rw: bool) -> R {
        let (id, parent) = (cs(id), cs_opt(parent));
        let (mut c, _kvs, ptrs, label) = create_opts(opts);
        c.mount_label = ptr_of(&label);
        c.storage_opt = if opts.storage_opt.is_empty() { ptr::null() } else { ptrs.as_ptr() };
        let f = if rw { ovl2_create_rw } else { ovl2_create };
        call(|e| f(self.h(), id.as_ptr(), ptr_of(&parent), &c, e))
    }
}

impl Face for CapiDriver {
    const STRINGS_CAN_HOLD_NUL: bool = false;

    fn open(home: impl AsRef<Path>, options: Options) -> R<Self> {
        let home = CString::new(home.as_ref().as_os_str().as_bytes()).unwrap();
        let mut o = std::mem::MaybeUninit::<ovl2_options>::uninit();
        assert_eq!(ovl2_options_init(o.as_mut_ptr()), ovl2_status::Ok);
        // SAFETY: initialised by ovl2_options_init.
        let mut o = unsafe { o.assume_init() };
        o.max_depth = u32::try_from(options.max_depth).unwrap_or(u32::MAX);
        o.sync = options.sync.into();
        o.repair_on_open = options.repair_on_open.into();
        if let Some(root) = options.root {
            o.set_root = 1;
            o.root_uid = root.uid.as_raw();
            o.root_gid = root.gid.as_raw();
        }
        o.mount_strategy = match options.mount_strategy {
            None => OVL2_MOUNT_STRATEGY_DEFAULT,
            Some(MountStrategy::Auto) => OVL2_MOUNT_STRATEGY_AUTO,
            Some(MountStrategy::New) => OVL2_MOUNT_STRATEGY_NEW,
            Some(MountStrategy::Legacy) => OVL2_MOUNT_STRATEGY_LEGACY,
        };
        o.open_mode = match options.open_mode {
            OpenMode::Create => OVL2_OPEN_CREATE,
            OpenMode::Existing => OVL2_OPEN_EXISTING,
            OpenMode::ReadOnly => OVL2_OPEN_READ_ONLY,
        };
        // Empty means "the environment's, if set" on both faces, as NULL does in C.
        let disabled = (!options.disabled_features.is_empty()).then(|| cs(&options.disabled_features.join(",")));
        o.disabled_features = ptr_of(&disabled);
        let mut handle = ptr::dangling_mut();
        call(|e| ovl2_open(home.as_ptr(), &o, &mut handle, e)).inspect_err(|_| {
            assert!(handle.is_null(), "a failed open leaves *out NULL");
        })?;
        // SAFETY: borrowed from the live handle.
        let home = PathBuf::from(borrowed(ovl2_home(handle)).expect("an open handle has a home"));
        Ok(CapiDriver { handle, home })
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> R {
        self.create_common(id, parent, opts, false)
    }

    fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> R {
        self.create_common(id, parent, opts, true)
    }

    fn remove(&self, id: &str, force: bool) -> R {
        let id = cs(id);
        call(|e| ovl2_remove(self.h(), id.as_ptr(), force, e))
    }

    fn remove_with(&self, id: &str, opts: RemoveOpts) -> R {
        let id = cs(id);
        let mut flags = 0;
        if opts.force {
            flags |= OVL2_REMOVE_FORCE;
        }
        if opts.ignore_children {
            flags |= OVL2_REMOVE_IGNORE_CHILDREN;
        }
        call(|e| ovl2_remove_with(self.h(), id.as_ptr(), flags, e))
    }

    fn remove_tree(&self, id: &str, force: bool) -> R<Vec<String>> {
        let cid = cs(id);
        let flags = if force { OVL2_REMOVE_FORCE } else { 0 };
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_remove_tree_with(self.h(), cid.as_ptr(), flags, &mut out, e))
            .inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live list from ovl2_remove_tree_with until the free below.
        let ids = unsafe { items((*out).items, (*out).len) }.iter().map(|i| borrowed_str(i.id).unwrap()).collect();
        ovl2_id_list_free(out);
        Ok(ids)
    }

    fn exists(&self, id: &str) -> R<bool> {
        let id = cs(id);
        let mut out = true; // the call must clear it
        call(|e| ovl2_exists(self.h(), id.as_ptr(), &mut out, e)).inspect_err(|_| assert!(!out))?;
        Ok(out)
    }

    fn parent(&self, id: &str) -> R<Option<String>> {
        let id = cs(id);
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_parent(self.h(), id.as_ptr(), &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        Ok(take_string(out).map(|s| s.into_string().unwrap()))
    }

    fn metadata(&self, id: &str) -> R<Metadata> {
        let id = cs(id);
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_layer_metadata(self.h(), id.as_ptr(), &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live struct from ovl2_layer_metadata until the free below.
        let m = unsafe { &*out };
        let md = Metadata {
            lower_dir: borrowed(m.lower_dir),
            upper_dir: borrowed(m.upper_dir).unwrap().into(),
            work_dir: borrowed(m.work_dir).unwrap().into(),
            merged_dir: borrowed(m.merged_dir).unwrap().into(),
        };
        ovl2_metadata_free(out);
        Ok(md)
    }

    fn layers(&self) -> R<Vec<LayerInfo>> {
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_layers(self.h(), &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live list from ovl2_layers until the free below.
        let l = unsafe { &*out };
        let v = items(l.items, l.len)
            .iter()
            .map(|x| LayerInfo {
                id: borrowed_str(x.id).unwrap(),
                parent: borrowed_str(x.parent),
                depth: x.depth,
                short_id: borrowed_str(x.short_id),
                orphan: x.orphan,
            })
            .collect();
        ovl2_layer_list_free(out);
        Ok(v)
    }

    fn status(&self) -> R<Vec<(String, String)>> {
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_driver_status(self.h(), &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live list from ovl2_driver_status until the free below.
        let l = unsafe { &*out };
        let v = items(l.items, l.len)
            .iter()
            .map(|kv| (borrowed_str(kv.key).unwrap(), borrowed_str(kv.value).unwrap()))
            .collect();
        ovl2_kv_list_free(out);
        Ok(v)
    }

    fn check(&self) -> R<Vec<Problem>> {
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_check(self.h(), &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live list from ovl2_check until the free below.
        let v = problems(unsafe { &*out });
        ovl2_problem_list_free(out);
        Ok(v)
    }

    fn repair(&self) -> R<RepairReport> {
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_repair(self.h(), &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live report from ovl2_repair until the free below.
        let r = unsafe { &*out };
        let v = RepairReport { repaired: problems(&r.repaired), remaining: problems(&r.remaining) };
        ovl2_repair_report_free(out);
        Ok(v)
    }

    fn get(&self, id: &str, mount_label: Option<&str>) -> R<PathBuf> {
        let (id, label) = (cs(id), cs_opt(mount_label));
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_get(self.h(), id.as_ptr(), ptr_of(&label), &mut out, e))
            .inspect_err(|_| assert!(out.is_null()))?;
        Ok(take_string(out).expect("a path").into())
    }

    fn get_with(&self, id: &str, opts: &MountOpts) -> R<PathBuf> {
        let (id, label) = (cs(id), cs_opt(opts.mount_label.as_deref()));
        let mut o = std::mem::MaybeUninit::<ovl2_mount_opts>::uninit();
        assert_eq!(ovl2_mount_opts_init(o.as_mut_ptr()), ovl2_status::Ok);
        // SAFETY: initialised by ovl2_mount_opts_init.
        let mut o = unsafe { o.assume_init() };
        o.mount_label = ptr_of(&label);
        o.readonly = opts.readonly.into();
        o.volatile_mount = opts.volatile.into();
        o.persistent = opts.persistent.into();
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_get_with(self.h(), id.as_ptr(), &o, &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        Ok(take_string(out).expect("a path").into())
    }

    fn put(&self, id: &str) -> R {
        let id = cs(id);
        call(|e| ovl2_put(self.h(), id.as_ptr(), e))
    }

    fn mounts(&self) -> R<Vec<MountInfo>> {
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_mounts(self.h(), &mut out, e)).inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live list from ovl2_mounts until the free below.
        let l = unsafe { &*out };
        let v = items(l.items, l.len)
            .iter()
            .map(|m| MountInfo {
                id: borrowed_str(m.id).unwrap(),
                path: borrowed(m.path).unwrap().into(),
                count: m.count,
                persistent: m.persistent,
                processes: m.processes,
                readonly: m.readonly,
                method: borrowed_str(m.method).unwrap(),
                mounted: m.mounted,
            })
            .collect();
        ovl2_mount_list_free(out);
        Ok(v)
    }

    fn cleanup(&self) -> R {
        call(|e| ovl2_cleanup(self.h(), e))
    }

    fn apply_diff_with(
        &self,
        id: &str,
        parent: Option<&str>,
        mut reader: impl Read,
        opts: &ApplyOpts<'_>,
    ) -> R<ApplyStats> {
        assert!(opts.progress.is_none(), "the C ABI has no progress callback");
        let (id, parent, digest) = (cs(id), cs_opt(parent), cs_opt(opts.expect_digest));
        let mut input = memfd("ovl2-apply");
        std::io::copy(&mut reader, &mut input).unwrap();
        input.rewind().unwrap();
        let mut o = std::mem::MaybeUninit::<ovl2_apply_opts>::uninit();
        assert_eq!(ovl2_apply_opts_init(o.as_mut_ptr()), ovl2_status::Ok);
        // SAFETY: initialised by ovl2_apply_opts_init.
        let mut o = unsafe { o.assume_init() };
        o.expect_digest = ptr_of(&digest);
        o.set_sync = 1;
        o.sync = opts.sync.into();
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_apply_diff_with(self.h(), id.as_ptr(), ptr_of(&parent), input.as_raw_fd(), &o, &mut out, e))
            .inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: live stats from ovl2_apply_diff_with until the free below.
        let s = unsafe { &*out };
        let st = apply_stats(s);
        ovl2_apply_stats_free(out);
        Ok(st)
    }

    fn diff(&self, id: &str, parent: Option<&str>, mut writer: impl Write) -> R<DiffStats> {
        let (id, parent) = (cs(id), cs_opt(parent));
        let mut output = memfd("ovl2-diff");
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_diff(self.h(), id.as_ptr(), ptr_of(&parent), output.as_raw_fd(), &mut out, e))
            .inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: live stats from ovl2_diff until the free below.
        let s = unsafe { &*out };
        let st = DiffStats { tar_bytes: s.tar_bytes, digest: borrowed_str(s.digest), entries: s.entries };
        ovl2_diff_stats_free(out);
        output.rewind().unwrap();
        std::io::copy(&mut output, &mut writer).unwrap();
        Ok(st)
    }

    fn diff_small(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &DiffOpts,
        limit: u64,
    ) -> R<Option<(Vec<u8>, DiffStats)>> {
        let (id, parent) = (cs(id), cs_opt(parent));
        let mut o = std::mem::MaybeUninit::<ovl2_diff_opts>::uninit();
        assert_eq!(ovl2_diff_opts_init(o.as_mut_ptr()), ovl2_status::Ok);
        // SAFETY: initialised by ovl2_diff_opts_init.
        let mut o = unsafe { o.assume_init() };
        o.digest = u8::from(opts.digest);
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_diff_small(self.h(), id.as_ptr(), ptr_of(&parent), &o, limit as usize, &mut out, e))
            .inspect_err(|_| assert!(out.is_null()))?;
        if out.is_null() {
            return Ok(None);
        }
        // SAFETY: a live stream from ovl2_diff_small until the free below.
        let b = unsafe { &*out };
        // SAFETY: `data` holds `len` bytes (the struct's contract).
        let tar = unsafe { std::slice::from_raw_parts(b.data, b.len) }.to_vec();
        let st =
            DiffStats { tar_bytes: b.stats.tar_bytes, digest: borrowed_str(b.stats.digest), entries: b.stats.entries };
        ovl2_diff_bytes_free(out);
        Ok(Some((tar, st)))
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> R<u64> {
        let (id, parent) = (cs(id), cs_opt(parent));
        let mut out = u64::MAX;
        call(|e| ovl2_diff_size(self.h(), id.as_ptr(), ptr_of(&parent), &mut out, e))
            .inspect_err(|_| assert_eq!(out, 0))?;
        Ok(out)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> R<Vec<Change>> {
        let (id, parent) = (cs(id), cs_opt(parent));
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_changes(self.h(), id.as_ptr(), ptr_of(&parent), &mut out, e))
            .inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live list from ovl2_changes until the free below.
        let l = unsafe { &*out };
        let v = items(l.items, l.len)
            .iter()
            .map(|c| Change {
                path: PathBuf::from(OsStr::from_bytes(borrowed(c.path).unwrap().as_bytes())),
                kind: match c.kind {
                    ovl2_change_kind::Modify => ChangeKind::Modify,
                    ovl2_change_kind::Add => ChangeKind::Add,
                    ovl2_change_kind::Delete => ChangeKind::Delete,
                },
            })
            .collect();
        ovl2_change_list_free(out);
        Ok(v)
    }

    /// Docker's entries go as the C default (`no_default_entries` off) when the options
    /// start with them, the rest as `entries`; any other list replaces the defaults.
    fn create_container(&self, ctr: &str, image_top: &str, opts: &ContainerOpts) -> R {
        let (ctr, top) = (cs(ctr), cs(image_top));
        let defaults = docker_init_entries();
        let keep_defaults = opts.init_entries.starts_with(&defaults);
        let extra = if keep_defaults { &opts.init_entries[defaults.len()..] } else { &opts.init_entries[..] };
        let strings: Vec<(CString, Option<CString>)> = extra
            .iter()
            .map(|e| {
                let target = match &e.kind {
                    InitKind::Symlink(t) => Some(cs(t)),
                    _ => None,
                };
                (cs(&e.path), target)
            })
            .collect();
        let entries: Vec<ovl2_init_entry> = extra
            .iter()
            .zip(&strings)
            .map(|(e, (path, target))| ovl2_init_entry {
                path: path.as_ptr(),
                kind: match e.kind {
                    InitKind::Dir => OVL2_INIT_DIR,
                    InitKind::File => OVL2_INIT_FILE,
                    InitKind::Symlink(_) => OVL2_INIT_SYMLINK,
                },
                target: ptr_of(target),
            })
            .collect();
        let label = cs_opt(opts.create.mount_label.as_deref());
        assert!(opts.create.storage_opt.is_empty(), "the C ABI's container options have no storage options");
        let mut o = std::mem::MaybeUninit::<ovl2_container_opts>::uninit();
        assert_eq!(ovl2_container_opts_init(o.as_mut_ptr()), ovl2_status::Ok);
        // SAFETY: initialised by ovl2_container_opts_init.
        let mut o = unsafe { o.assume_init() };
        o.no_default_entries = (!keep_defaults).into();
        o.entries = if entries.is_empty() { ptr::null() } else { entries.as_ptr() };
        o.n_entries = entries.len();
        if let Some(root) = opts.root {
            o.remap_root = 1;
            o.root_uid = root.uid.as_raw();
            o.root_gid = root.gid.as_raw();
        }
        o.mount_label = ptr_of(&label);
        call(|e| ovl2_create_container(self.h(), ctr.as_ptr(), top.as_ptr(), &o, e))
    }

    fn remove_container(&self, ctr: &str, force: bool) -> R {
        let ctr = cs(ctr);
        call(|e| ovl2_remove_container(self.h(), ctr.as_ptr(), force, e))
    }

    fn import_chain<Rd: Read>(
        &self,
        top: &str,
        parent: Option<&str>,
        tars: Vec<Rd>,
        opts: &ApplyOpts<'_>,
    ) -> R<Vec<(String, ApplyStats)>> {
        assert!(opts.progress.is_none() && opts.expect_digest.is_none(), "the C import has neither");
        let (top, parent) = (cs(top), cs_opt(parent));
        let inputs: Vec<std::fs::File> = tars
            .into_iter()
            .map(|mut r| {
                let mut f = memfd("ovl2-import");
                std::io::copy(&mut r, &mut f).unwrap();
                f.rewind().unwrap();
                f
            })
            .collect();
        let fds: Vec<std::ffi::c_int> = inputs.iter().map(AsRawFd::as_raw_fd).collect();
        let mut o = std::mem::MaybeUninit::<ovl2_import_opts>::uninit();
        assert_eq!(ovl2_import_opts_init(o.as_mut_ptr()), ovl2_status::Ok);
        // SAFETY: initialised by ovl2_import_opts_init.
        let mut o = unsafe { o.assume_init() };
        o.set_sync = 1;
        o.sync = opts.sync.into();
        let mut out = ptr::dangling_mut();
        call(|e| ovl2_import_chain(self.h(), top.as_ptr(), ptr_of(&parent), fds.as_ptr(), fds.len(), &o, &mut out, e))
            .inspect_err(|_| assert!(out.is_null()))?;
        // SAFETY: a live list from ovl2_import_chain until the free below.
        let made = unsafe { items((*out).items, (*out).len) }
            .iter()
            .map(|l| (borrowed_str(l.id).unwrap(), apply_stats(&l.stats)))
            .collect();
        ovl2_import_list_free(out);
        Ok(made)
    }

    fn usage(&self, id: &str) -> R<Usage> {
        let id = cs(id);
        let mut out = ovl2_layer_usage { bytes: 1, inodes: 1 }; // the call must clear it
        call(|e| ovl2_usage(self.h(), id.as_ptr(), &mut out, e))
            .inspect_err(|_| assert_eq!((out.bytes, out.inodes), (0, 0)))?;
        Ok(Usage { bytes: out.bytes, inodes: out.inodes })
    }
}

/// Core's stats from the C struct (which keeps its digest).
fn apply_stats(s: &ovl2_apply_stats) -> ApplyStats {
    ApplyStats {
        size: s.size,
        digest: borrowed_str(s.digest).unwrap(),
        tar_bytes: s.tar_bytes,
        compression: match s.compression {
            ovl2_compression::None => Compression::None,
            ovl2_compression::Gzip => Compression::Gzip,
            ovl2_compression::Zstd => Compression::Zstd,
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
