//! The layer store: open, create, remove, and the read-only queries, named as in Docker's
//! graphdriver so the flow reads like Docker's overlay2 driver.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, RenameFlags};
use rustix::io::Errno;

use crate::error::{Context, Error, Result};
use crate::fsutil::{self, cstr, Owner};
use crate::id;
use crate::layout;
use crate::lock::{lock_store, StoreLock};
use crate::mount::{MountState, MountStrategy};

/// The kernel's limit on lower layers in one overlay mount (`OVL_MAX_STACK`): a layer with
/// 500 lower layers still mounts read-write (its own `diff` is the upper). The default
/// [`Options::max_depth`].
pub const KERNEL_MAX_DEPTH: usize = 500;

/// Docker's overlay2 limit (`maxDepth`): Docker refuses a layer only when it would have more
/// than 128 lower layers. Use it when Docker must be able to mount the store too.
pub const DOCKER_MAX_DEPTH: usize = 128;

/// The one definition of a layer's depth: the number of lower layers it sits on (the entries
/// in its `lower` file), so a base layer has depth 0 and its child depth 1. This is how Docker
/// counts (`len(lowers) > maxDepth` is refused) and how the kernel's limit is stated, and it
/// is what [`Options::max_depth`], [`LayerInfo::depth`], [`Error::MaxDepth`] and `check` use.
pub fn depth_of(lowers: &[impl AsRef<str>]) -> usize {
    lowers.len()
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most lower layers a layer may have (its [`depth_of`]; a base layer has none): creating
    /// a deeper one fails with [`Error::MaxDepth`], exactly where Docker's `maxDepth` refuses.
    /// 1 to [`KERNEL_MAX_DEPTH`] (the default); use [`DOCKER_MAX_DEPTH`] when Docker must
    /// mount the store too.
    pub max_depth: usize,
    /// Owner of `diff/`, `work/` and `merged/`, and group of `home` and layer dirs: the
    /// (remapped) root of the containers. `None` means this process's euid/egid.
    pub root: Option<Owner>,
    /// fsync metadata files and directories so a power cut cannot lose or empty them.
    /// Turning it off keeps crash safety against killed processes but not power loss.
    pub sync: bool,
    /// Repair what a crash or another tool left behind when opening (see [`Driver::repair`]),
    /// and reconcile mount reference counts with the kernel.
    pub repair_on_open: bool,
    /// How to mount; `None` means `OVL2_MOUNT_STRATEGY` if set, else auto.
    pub mount_strategy: Option<MountStrategy>,
    /// Kernel features to treat as absent even when the probe finds them (names as in
    /// `status()`'s "Mount features", e.g. `lowerdir+fd`): a way around a buggy kernel, and
    /// how the fallbacks for older kernels are tested. Empty means `OVL2_DISABLE_FEATURES`
    /// (comma-separated) if set.
    pub disabled_features: Vec<String>,
    /// What opening may do to `home`: create a store, only open one, or only read one.
    pub open_mode: OpenMode,
}

/// What [`Driver::open`] may do to `home`. Whatever the mode, an existing directory that is
/// not empty and is not a store (it has no `l/`) is refused, never turned into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Open the store, creating it when `home` is missing or an empty directory (the default,
    /// for commands that write: create, apply, import, container create, init). An existing
    /// store gets what it lacks of `.ovl2/` (a Docker-written store has none).
    #[default]
    Create,
    /// Open an existing store for reading and writing; a missing or empty `home` is refused.
    Existing,
    /// Open an existing store and never write to it: nothing is created, chmod-ed or chown-ed,
    /// `repair_on_open` is skipped, and every operation that would write (create, remove,
    /// apply, mount, repair) fails with `EROFS` ([`crate::ErrorKind::Permission`]). Works on a
    /// read-only file system and on a Docker-written store without `.ovl2/`.
    ReadOnly,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_depth: KERNEL_MAX_DEPTH,
            root: None,
            sync: true,
            repair_on_open: true,
            mount_strategy: None,
            disabled_features: Vec::new(),
            open_mode: OpenMode::Create,
        }
    }
}

/// Per-layer options for [`Driver::create`] and [`Driver::create_rw`], as Docker's `CreateOpts`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Docker's `--storage-opt` map. Docker's overlay2 knows only `size` (xfs project quotas).
    pub storage_opt: BTreeMap<String, String>,
    /// SELinux mount label; kept for API parity, used when the layer is mounted.
    pub mount_label: Option<String>,
}

/// How [`Driver::remove_with`] removes a layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveOpts {
    /// Unmount the layer first, whoever holds it; without it a mounted layer is refused.
    pub force: bool,
    /// Remove the layer even when other layers build on it, as Docker's graphdriver `Remove`
    /// does (it never looks at children). Those layers become orphans that cannot mount,
    /// which `check` reports; only for adapters that must behave exactly like Docker.
    pub ignore_children: bool,
}

/// One layer as [`Driver::layers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerInfo {
    /// The caller's id.
    pub id: String,
    /// The direct parent, `None` for a base layer (and for an orphan, see `orphan`).
    pub parent: Option<String>,
    /// The number of lower layers ([`depth_of`] its `lower`): 0 for a base layer.
    pub depth: usize,
    /// The 26-character name under `l/`, when the `link` file is readable.
    pub short_id: Option<String>,
    /// The layer is not a base layer but its parent is not in the store (another tool
    /// removed it, or its `lower` is unreadable): `parent` is then `None` and nothing can
    /// mount it. `check` reports it with the command that resolves it.
    pub orphan: bool,
}

/// The paths Docker's `GetMetadata` returns for a layer.
///
/// Paths are kept as bytes, so a home that is not UTF-8 is returned exactly. Serializing
/// (JSON) needs UTF-8: a path that is not valid UTF-8 makes serialization fail with an error
/// naming it rather than write a lossy path that names nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    /// Lower layers' `diff` paths, nearest first, joined by `:`; only for layers with a parent.
    #[serde(rename = "LowerDir", skip_serializing_if = "Option::is_none", serialize_with = "fsutil::utf8_opt")]
    pub lower_dir: Option<OsString>,
    /// `<home>/<id>/diff`.
    #[serde(rename = "UpperDir", serialize_with = "fsutil::utf8")]
    pub upper_dir: PathBuf,
    /// `<home>/<id>/work` (reported even for base layers, as Docker does).
    #[serde(rename = "WorkDir", serialize_with = "fsutil::utf8")]
    pub work_dir: PathBuf,
    /// `<home>/<id>/merged`.
    #[serde(rename = "MergedDir", serialize_with = "fsutil::utf8")]
    pub merged_dir: PathBuf,
}

impl Metadata {
    /// The metadata as Docker's key/value map, values as bytes.
    pub fn to_map(&self) -> BTreeMap<String, OsString> {
        let mut m = BTreeMap::new();
        if let Some(l) = &self.lower_dir {
            m.insert("LowerDir".into(), l.clone());
        }
        m.insert("UpperDir".into(), self.upper_dir.clone().into_os_string());
        m.insert("WorkDir".into(), self.work_dir.clone().into_os_string());
        m.insert("MergedDir".into(), self.merged_dir.clone().into_os_string());
        m
    }
}

/// An open layer store.
///
/// A `Driver` is `Send + Sync`: share one between threads. Several processes may open the
/// same home at once; they coordinate through the store lock.
#[derive(Debug)]
pub struct Driver {
    pub(crate) home: PathBuf,
    pub(crate) home_fd: OwnedFd,
    pub(crate) links_fd: OwnedFd,
    /// `.ovl2/` and the directories in it: `None` only in [`OpenMode::ReadOnly`], when the
    /// store has none (Docker wrote it).
    pub(crate) private_fd: Option<OwnedFd>,
    pub(crate) staging_fd: Option<OwnedFd>,
    pub(crate) opts: Options,
    pub(crate) owner: Owner,
    pub(crate) root: Owner,
    pub(crate) mounts: MountState,
}

/// What is on disk for one layer, read without judging it.
#[derive(Debug)]
pub(crate) struct LayerFiles {
    pub(crate) link: Option<Vec<u8>>,
    pub(crate) lower: Option<Vec<u8>>,
}

/// What is on disk for one layer, where a file that cannot be read (the wrong type, too
/// large, unreadable) is kept as the reason instead of failing: the scans over every layer
/// (`layers`, `check`, finding children or a short id) must go on past one damaged layer.
#[derive(Debug)]
pub(crate) struct LayerMeta {
    pub(crate) link: std::result::Result<Option<Vec<u8>>, String>,
    pub(crate) lower: std::result::Result<Option<Vec<u8>>, String>,
}

impl LayerMeta {
    /// The layer's short id, when its `link` file is readable and well formed.
    pub(crate) fn lid(&self) -> Option<&str> {
        self.link.as_ref().ok()?.as_deref().and_then(|l| layout::parse_link(l).ok())
    }

    /// The parsed lower chain: `Ok(None)` for a base layer, `Err` when unreadable or malformed.
    pub(crate) fn lower_lids(&self) -> std::result::Result<Option<Vec<&str>>, ()> {
        match &self.lower {
            Ok(None) => Ok(None),
            Ok(Some(l)) => layout::parse_lower(l).map(Some).map_err(drop),
            Err(_) => Err(()),
        }
    }
}

impl Driver {
    /// Opens the store at `home` as `options.open_mode` allows (by default creating it when
    /// `home` is missing or empty), then repairs what a crash left behind unless
    /// `options.repair_on_open` is off or the store is opened read-only.
    ///
    /// A `home` that exists and is not a directory, or is a non-empty directory without `l/`
    /// (not a store), is refused without touching it.
    pub fn open(home: impl AsRef<Path>, options: Options) -> Result<Driver> {
        if options.max_depth == 0 || options.max_depth > KERNEL_MAX_DEPTH {
            return Err(Error::InvalidArgument(format!(
                "max_depth must be between 1 and {KERNEL_MAX_DEPTH}, got {}",
                options.max_depth
            )));
        }
        let mut mounts = MountState::new(options.mount_strategy, &options.disabled_features)?;
        let home = clean_absolute(home.as_ref())?;
        let owner = Owner { uid: rustix::process::geteuid().as_raw(), gid: rustix::process::getegid().as_raw() };
        let root = options.root.unwrap_or(owner);
        let mode = options.open_mode;

        let home_fd = open_home(&home, mode)?;
        let (links_fd, private_fd, staging_fd, mount_records_fd) = if mode == OpenMode::ReadOnly {
            let links_fd =
                fsutil::open_dir(&home_fd, layout::LINK_DIR).ctx(|| format!("opening {}/l", home.display()))?;
            let private_fd = open_optional_dir(&home_fd, layout::PRIVATE_DIR, &home, ".ovl2")?;
            let sub = |name, what| match &private_fd {
                Some(p) => open_optional_dir(p, name, &home, what),
                None => Ok(None),
            };
            let staging_fd = sub(layout::STAGING, ".ovl2/staging")?;
            let mount_records_fd = sub(layout::MOUNT_RECORDS, ".ovl2/mounts")?;
            (links_fd, private_fd, staging_fd, mount_records_fd)
        } else {
            set_mode_owner_fd(&home_fd, layout::HOME_MODE, Owner { uid: owner.uid, gid: root.gid })
                .ctx(|| format!("setting mode and owner of {}", home.display()))?;
            fsutil::ensure_dir(&home_fd, layout::LINK_DIR, layout::LINK_DIR_MODE, Some(owner))
                .ctx(|| format!("creating {}/l", home.display()))?;
            fsutil::ensure_dir(&home_fd, layout::PRIVATE_DIR, layout::PRIVATE_MODE, Some(owner))
                .ctx(|| format!("creating {}/.ovl2", home.display()))?;
            let links_fd =
                fsutil::open_dir(&home_fd, layout::LINK_DIR).ctx(|| format!("opening {}/l", home.display()))?;
            let private_fd =
                fsutil::open_dir(&home_fd, layout::PRIVATE_DIR).ctx(|| format!("opening {}/.ovl2", home.display()))?;
            fsutil::ensure_dir(&private_fd, layout::STAGING, layout::PRIVATE_MODE, Some(owner))
                .ctx(|| format!("creating {}/.ovl2/staging", home.display()))?;
            fsutil::ensure_dir(&private_fd, layout::EMPTY, layout::DIFF_MODE, Some(root))
                .ctx(|| format!("creating {}/.ovl2/empty", home.display()))?;
            fsutil::ensure_dir(&private_fd, layout::MOUNT_RECORDS, layout::PRIVATE_MODE, Some(owner))
                .ctx(|| format!("creating {}/.ovl2/mounts", home.display()))?;
            fsutil::ensure_dir(&private_fd, layout::PENDING, layout::PRIVATE_MODE, Some(owner))
                .ctx(|| format!("creating {}/.ovl2/pending", home.display()))?;
            let mount_records_fd = fsutil::open_dir(&private_fd, layout::MOUNT_RECORDS)
                .ctx(|| format!("opening {}/.ovl2/mounts", home.display()))?;
            let staging_fd = fsutil::open_dir(&private_fd, layout::STAGING)
                .ctx(|| format!("opening {}/.ovl2/staging", home.display()))?;
            (links_fd, Some(private_fd), Some(staging_fd), Some(mount_records_fd))
        };

        mounts.set_records_dir(mount_records_fd);
        let driver = Driver { home, home_fd, links_fd, private_fd, staging_fd, opts: options, owner, root, mounts };
        // Overlayfs needs d_type to tell whiteouts from files; Docker refuses such stores too.
        if !driver.supports_d_type()? {
            return Err(Error::Unsupported(format!(
                "the filesystem under {} does not report file types in directory entries (d_type); \
                 overlay cannot work on it (an xfs filesystem needs ftype=1)",
                driver.home.display()
            )));
        }
        if driver.opts.repair_on_open && mode != OpenMode::ReadOnly {
            driver.repair()?;
            driver.reconcile_mounts()?;
        }
        Ok(driver)
    }

    /// The store's home directory, absolute and lexically clean.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The store lock: shared for readers, exclusive for layout changes (refused read-only).
    pub(crate) fn lock(&self, exclusive: bool) -> Result<StoreLock> {
        if exclusive {
            self.writable("changing the store")?;
        }
        match &self.private_fd {
            Some(p) => lock_store(p, exclusive, self.opts.open_mode == OpenMode::ReadOnly),
            // A Docker-written store opened read-only: no ovl2 writer has been here.
            None => Ok(StoreLock::none()),
        }
    }

    /// Whether the store was opened with [`OpenMode::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.opts.open_mode == OpenMode::ReadOnly
    }

    /// Refuses `what` (an operation that writes) on a store opened read-only.
    pub(crate) fn writable(&self, what: &str) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::io(
                format!("{what}: the store {} was opened read-only", self.home.display()),
                Errno::ROFS,
            ));
        }
        Ok(())
    }

    /// `.ovl2/staging/`, for an operation that writes there.
    pub(crate) fn staging(&self, what: &str) -> Result<std::os::fd::BorrowedFd<'_>> {
        self.writable(what)?;
        Ok(self.staging_fd.as_ref().expect("writable stores have .ovl2/staging").as_fd())
    }

    /// Creates a read-only (image) layer `id` on top of `parent` (none for a base layer).
    pub fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts)
    }

    /// Creates a read-write (container) layer. The on-disk layout is the same as for
    /// [`Driver::create`]; the distinction is kept for Docker API parity.
    pub fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts)
    }

    fn create_layer(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        id::validate(id)?;
        if let Some(p) = parent {
            id::validate(p)?;
            if p == id {
                return Err(Error::InvalidArgument(format!("layer {id:?} cannot be its own parent")));
            }
        }
        validate_create_opts(opts)?;
        let _lock = self.lock(true)?;
        if self.exists_unlocked(id)? {
            return Err(Error::Exists(id.to_owned()));
        }
        let chain = match parent {
            Some(p) => self.chain_for_child(p)?,
            None => Vec::new(),
        };
        self.check_depth(id, &chain)?;

        let staged = self.stage_layer(id, &chain)?;
        let cid = cstr(id).expect("validated id has no NUL");
        let staging = self.staging("creating a layer")?;
        if let Err(e) = rfs::renameat_with(staging, &staged.name, &self.home_fd, &cid, RenameFlags::NOREPLACE) {
            staged.abandon(self);
            return Err(match e {
                Errno::EXIST => self.in_the_way(id),
                e => Error::io(format!("moving staged layer {id:?} into place"), e),
            });
        }
        // The layer is complete on disk. What follows (durability, the parent's marker) is
        // restored by repair() after a crash; if it fails now, the caller gets an error, so
        // take the layer back out: a failed create leaves nothing behind.
        let finish = self
            .sync_dir(staging, "staging")
            .and_then(|()| self.sync_dir(&self.home_fd, "home"))
            .and_then(|()| parent.map_or(Ok(()), |p| self.mark_committed(p)));
        if let Err(e) = finish {
            let lid = staged.short_link.as_deref().and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
            self.discard_new_layer(id, &lid);
            return Err(e);
        }
        Ok(())
    }

    /// Refuses a layer whose lower chain is deeper than the store allows (Docker's rule).
    pub(crate) fn check_depth(&self, id: &str, lowers: &[impl AsRef<str>]) -> Result<()> {
        let depth = depth_of(lowers);
        if depth > self.opts.max_depth {
            return Err(Error::MaxDepth { id: id.to_owned(), depth, limit: self.opts.max_depth });
        }
        Ok(())
    }

    /// Takes a just-created layer back out (same steps as remove, no checks: nothing can
    /// build on it yet, as the store lock is still held).
    fn discard_new_layer(&self, id: &str, lid: &str) {
        let cid = cstr(id).expect("validated");
        let trash = cstr(&format!("rm-{}", fsutil::random_hex(12))).expect("ascii");
        let Ok(staging) = self.staging("removing a layer") else { return };
        if rfs::renameat_with(&self.home_fd, &cid, staging, &trash, RenameFlags::NOREPLACE).is_ok() {
            let _ = self.unlink_short_link_if_ours(lid, id);
            let _ = fsutil::remove_tree(staging, &trash);
        }
    }

    /// Reads `parent` and returns the lower chain a child of it gets (nearest first).
    fn chain_for_child(&self, parent: &str) -> Result<Vec<String>> {
        let files = self.read_layer_files(parent)?.ok_or_else(|| Error::NotFound(parent.to_owned()))?;
        let link = files.link.ok_or_else(|| corrupt_layer(parent, "has no link file"))?;
        let lid = layout::parse_link(&link).map_err(|m| corrupt_layer(parent, &m.describe("link")))?;
        let mut chain = vec![lid.to_owned()];
        if let Some(lower) = files.lower {
            let lids = layout::parse_lower(&lower).map_err(|m| corrupt_layer(parent, &m.describe("lower")))?;
            chain.extend(lids.into_iter().map(str::to_owned));
        }
        Ok(chain)
    }

    /// Builds a complete layer directory in staging and links `l/<short>` to its final name.
    fn stage_layer(&self, id: &str, chain: &[String]) -> Result<Staged> {
        let staged = Staged::new(self)?;
        match self.fill_staged(&staged, id, chain) {
            Ok(lid) => Ok(Staged { short_link: Some(lid), ..staged }),
            Err(e) => {
                staged.abandon(self);
                Err(e)
            }
        }
    }

    fn fill_staged(&self, staged: &Staged, id: &str, chain: &[String]) -> Result<CString> {
        let dir = &staged.fd;
        let at = || format!("staging layer {id:?}");
        fsutil::mkdir(dir, layout::DIFF, layout::DIFF_MODE, Some(self.root))
            .ctx(|| format!("{}: creating diff", at()))?;
        if !chain.is_empty() {
            fsutil::mkdir(dir, layout::WORK, layout::WORK_MODE, Some(self.root))
                .ctx(|| format!("{}: creating work", at()))?;
            fsutil::write_new(
                dir,
                layout::LOWER,
                layout::format_lower(chain).as_bytes(),
                layout::META_FILE_MODE,
                self.opts.sync,
            )
            .ctx(|| format!("{}: writing lower", at()))?;
        }
        let lid = self.new_short_link(id)?;
        let res = fsutil::write_new(dir, layout::LINK, lid.as_bytes(), layout::META_FILE_MODE, self.opts.sync)
            .ctx(|| format!("{}: writing link", at()))
            .and_then(|()| self.sync_dir(dir, "staged layer"))
            .and_then(|()| self.sync_dir(&self.links_fd, "l"));
        let clid = cstr(&lid).expect("ascii");
        if let Err(e) = res {
            let _ = rfs::unlinkat(&self.links_fd, &clid, AtFlags::empty());
            return Err(e);
        }
        Ok(clid)
    }

    /// Creates `l/<short> -> ../<id>/diff` under a fresh short id, drawing again on a clash.
    pub(crate) fn new_short_link(&self, id: &str) -> Result<String> {
        let target = layout::link_target(id);
        for _ in 0..64 {
            let lid = id::new_short_id()?;
            match rfs::symlinkat(target.as_str(), &self.links_fd, lid.as_str()) {
                Ok(()) => return Ok(lid),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::io(format!("creating l/{lid} for layer {id:?}"), e)),
            }
        }
        Err(Error::Corrupt("64 random short ids in a row already exist under l/".into()))
    }

    /// Writes the empty `committed` marker into `id` so later mounts of it are read-only.
    pub(crate) fn mark_committed(&self, id: &str) -> Result<()> {
        let dir = self.open_layer_dir(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        match fsutil::write_new(&dir, layout::COMMITTED, b"", layout::COMMITTED_MODE, self.opts.sync) {
            Ok(()) => self.sync_dir(&dir, id),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(format!("writing {id}/committed"), e)),
        }
    }

    /// Whether `id` carries the `committed` marker (a child was created on it, so it mounts
    /// read-only).
    pub fn is_committed(&self, id: &str) -> Result<bool> {
        id::validate(id)?;
        let dir = self.open_layer_dir(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        Ok(fsutil::file_type(&dir, layout::COMMITTED).ctx(|| format!("stat of {id}/committed"))?.is_some())
    }

    /// Undoes a multi-step build that failed half way: removes the layers it `created`
    /// (top first) and, when `parent` gained its `committed` marker from them
    /// (`parent_was_committed` false) and no other child is left, takes the marker back, so
    /// the store is as it was before. Layers already gone are fine.
    pub fn undo_created(&self, created: &[String], parent: Option<&str>, parent_was_committed: bool) -> Result<()> {
        let mut first = None;
        for id in created.iter().rev() {
            // Top first, so no layer of the build has children left when it goes.
            if let Err(e) = self.remove(id, true) {
                if e.kind() != crate::ErrorKind::NotFound {
                    first.get_or_insert(e);
                }
            }
        }
        if let (Some(p), false) = (parent, parent_was_committed) {
            if self.exists(p)? {
                self.uncommit_if_childless(p)?;
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Takes back a `committed` marker that a rolled-back child wrote, if no child exists
    /// now. (Docker never removes the marker; this only undoes ovl2's own failed step.)
    pub(crate) fn uncommit_if_childless(&self, id: &str) -> Result<()> {
        let _lock = self.lock(true)?;
        self.uncommit_if_childless_locked(id)
    }

    pub(crate) fn uncommit_if_childless_locked(&self, id: &str) -> Result<()> {
        let files = self.read_layer_files(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let Some(lid) = files.link.as_deref().and_then(|l| layout::parse_link(l).ok()) else { return Ok(()) };
        if self.children_of(lid)?.is_empty() {
            let dir = self.open_layer_dir(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
            match rfs::unlinkat(&dir, layout::COMMITTED, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io(format!("removing {id}/committed"), e)),
            }
            self.sync_dir(&dir, id)?;
        }
        Ok(())
    }

    /// Removes a layer. A layer that other layers build on is refused (remove them first, or
    /// all at once with [`Driver::remove_tree`]); `force` unmounts it first instead of
    /// refusing a mounted layer.
    ///
    /// The layer is first renamed out of sight (so it is either fully there or gone), its
    /// `l/` link removed, and only then is its tree deleted, outside the store lock.
    pub fn remove(&self, id: &str, force: bool) -> Result<()> {
        self.remove_with(id, RemoveOpts { force, ignore_children: false })
    }

    /// [`Driver::remove`] with every option, including Docker's own semantics
    /// (`ignore_children`).
    pub fn remove_with(&self, id: &str, opts: RemoveOpts) -> Result<()> {
        id::validate(id)?;
        if opts.force {
            // Refuse a layer with children before touching its mount.
            if !opts.ignore_children {
                let _lock = self.lock(false)?;
                self.refuse_if_children(id)?;
            }
            self.force_unmount(id)?;
        }
        let lock = self.lock(true)?;
        let gone = self.unlink_layer_locked(id, opts.ignore_children)?;
        drop(lock);
        gone.delete(self)
    }

    /// Removes a layer and every layer that builds on it, deepest first, so a crash midway
    /// leaves a consistent store: only whole layers gone, never a layer whose parent is gone.
    /// Refuses (before removing anything) when one of them is mounted, unless `force`, which
    /// unmounts them first. Returns the removed ids in the order they went.
    pub fn remove_tree(&self, id: &str, force: bool) -> Result<Vec<String>> {
        id::validate(id)?;
        let lock = self.lock(true)?;
        // Every descendant names this layer somewhere in its lower; the longest chains first.
        let mut tree: Vec<(usize, String)> = Vec::new();
        if let Some(lid) = self.own_short_id(id)? {
            for child in self.children_of(&lid)? {
                let depth = match self.read_layer_meta(&child)?.map(|m| m.lower_lids().map(|l| l.map(|v| depth_of(&v))))
                {
                    Some(Ok(Some(d))) => d,
                    _ => 0,
                };
                tree.push((depth, child));
            }
        }
        tree.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut order: Vec<String> = tree.into_iter().map(|(_, id)| id).collect();
        order.push(id.to_owned());
        if force {
            // Unmounting takes no store lock, and neither does a get, so release it meanwhile.
            drop(lock);
            for x in &order {
                self.force_unmount(x)?;
            }
            return self.remove_tree_locked(id, &order, self.lock(true)?);
        }
        self.remove_tree_locked(id, &order, lock)
    }

    fn remove_tree_locked(&self, id: &str, order: &[String], lock: StoreLock) -> Result<Vec<String>> {
        for x in order {
            if let Some(dir) = self.open_layer_dir(x)? {
                if self.is_mounted(&dir)? {
                    return Err(Error::Busy {
                        id: x.clone(),
                        reason: format!(
                            "it is mounted, and removing {id:?} would remove it; {}, or remove with force (`--force`)",
                            Error::unmount_first(x)
                        ),
                    });
                }
            }
        }
        let mut gone = Vec::with_capacity(order.len());
        let mut done = Vec::with_capacity(order.len());
        let mut failed = None;
        for x in order {
            match self.unlink_layer_locked(x, false) {
                Ok(g) => {
                    gone.push(g);
                    done.push(x.clone());
                }
                // Someone else removed it meanwhile: nothing left to do for it.
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(lock);
        for g in gone {
            g.delete(self)?;
        }
        failed.map_or(Ok(done), Err)
    }

    /// A layer's short id: from its `link`, else (a damaged layer must stay removable) from
    /// the `l/` name pointing at it.
    fn own_short_id(&self, id: &str) -> Result<Option<String>> {
        let meta = self.read_layer_meta(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        match meta.lid() {
            Some(l) => Ok(Some(l.to_owned())),
            None => self.short_id_pointing_to(id),
        }
    }

    fn refuse_if_children(&self, id: &str) -> Result<()> {
        let Some(lid) = self.own_short_id(id)? else { return Ok(()) };
        let children = self.children_of(&lid)?;
        if children.is_empty() {
            return Ok(());
        }
        Err(Error::Busy {
            id: id.to_owned(),
            reason: format!(
                "{} layer(s) build on it ({}); remove them first, or all of them with `ovl2 rm --recursive {id}`",
                children.len(),
                preview(&children)
            ),
        })
    }

    /// The part of [`Driver::remove`] that needs the store lock (held by the caller): checks,
    /// then the rename out of sight. The files go with [`Unlinked::delete`], lock or no lock.
    pub(crate) fn unlink_layer_locked(&self, id: &str, ignore_children: bool) -> Result<Unlinked> {
        // A damaged layer must stay removable: unreadable files only lose us its short id.
        let lid = self.own_short_id(id)?;
        if !ignore_children {
            self.refuse_if_children(id)?;
        }
        let cid = cstr(id).expect("validated");
        let dir = fsutil::open_dir(&self.home_fd, &cid).ctx(|| format!("opening layer {id:?}"))?;
        // The layer lock waits out a get/put in progress; none of them takes the store lock,
        // so waiting here while holding it cannot deadlock.
        fsutil::flock(&dir, true, false).ctx(|| format!("locking layer {id:?}"))?;
        if self.is_mounted(&dir)? {
            return Err(Error::Busy {
                id: id.to_owned(),
                reason: format!("it is mounted; {}, or remove with force (`--force`)", Error::unmount_first(id)),
            });
        }
        // Removal never crosses a mount, but refusing up front leaves the layer whole.
        let inside = fsutil::mounts_below(&self.home.join(id)).ctx(|| "reading /proc/self/mountinfo".into())?;
        if let Some(m) = inside.first() {
            return Err(Error::Busy {
                id: id.to_owned(),
                reason: format!("{id}/{} is a mount point inside it (unmount it first)", String::from_utf8_lossy(m)),
            });
        }
        let trash = cstr(&format!("rm-{}", fsutil::random_hex(12))).expect("ascii");
        let staging = self.staging("removing a layer")?;
        rfs::renameat_with(&self.home_fd, &cid, staging, &trash, RenameFlags::NOREPLACE)
            .ctx(|| format!("moving layer {id:?} out of the store"))?;
        self.sync_dir(&self.home_fd, "home")?;
        self.sync_dir(staging, "staging")?;
        if let Some(lid) = lid {
            self.unlink_short_link_if_ours(&lid, id)?;
        }
        self.forget_mount_record(id)?;
        Ok(Unlinked { id: id.to_owned(), trash, dir })
    }

    pub(crate) fn unlink_short_link_if_ours(&self, lid: &str, id: &str) -> Result<()> {
        let clid = cstr(lid).expect("ascii");
        let ours = fsutil::read_link(&self.links_fd, &clid)
            .ctx(|| format!("reading l/{lid}"))?
            .is_some_and(|t| layout::id_from_link_target(&t) == Some(id));
        if ours {
            match rfs::unlinkat(&self.links_fd, &clid, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io(format!("removing l/{lid}"), e)),
            }
            self.sync_dir(&self.links_fd, "l")?;
        }
        Ok(())
    }

    /// The `l/` name whose symlink points to `id`'s diff: the short id of a layer whose
    /// `link` file is lost or damaged.
    pub(crate) fn short_id_pointing_to(&self, id: &str) -> Result<Option<String>> {
        let want = layout::link_target(id);
        for ent in fsutil::list_dir(&self.links_fd).ctx(|| format!("listing {}/l", self.home.display()))? {
            if ent.file_type != FileType::Symlink {
                continue;
            }
            let target = fsutil::read_link(&self.links_fd, &ent.name).ctx(|| "reading an l/ link".into())?;
            if target.as_deref() == Some(want.as_bytes()) {
                if let Ok(name) = ent.name.into_string() {
                    return Ok(Some(name));
                }
            }
        }
        Ok(None)
    }

    /// Ids of layers whose lower chain contains the short id `lid`.
    pub(crate) fn children_of(&self, lid: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in self.layer_ids()? {
            // A child whose lower cannot be read cannot be told apart; check reports it.
            if let Some(meta) = self.read_layer_meta(&id)? {
                if let Ok(Some(lids)) = meta.lower_lids() {
                    if lids.contains(&lid) {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether a layer directory named `id` exists (half-created Docker layers count, as in Docker).
    pub fn exists(&self, id: &str) -> Result<bool> {
        id::validate(id)?;
        self.exists_unlocked(id)
    }

    /// The error for a new layer whose name is taken: by a layer, or by something else.
    fn in_the_way(&self, id: &str) -> Error {
        let cid = cstr(id).expect("validated");
        match fsutil::file_type(&self.home_fd, &cid) {
            Ok(Some(FileType::Directory)) | Err(_) => Error::Exists(id.to_owned()),
            Ok(t) => Error::io(
                format!(
                    "creating layer {id:?}: {} is {}, not a layer directory (remove it by hand)",
                    self.home.join(id).display(),
                    t.map_or("gone", fsutil::type_name)
                ),
                Errno::EXIST,
            ),
        }
    }

    fn exists_unlocked(&self, id: &str) -> Result<bool> {
        let cid = cstr(id).expect("validated");
        Ok(fsutil::file_type(&self.home_fd, &cid).ctx(|| format!("stat of layer {id:?}"))? == Some(FileType::Directory))
    }

    /// The direct parent of `id`, or `None` for a base layer.
    pub fn parent(&self, id: &str) -> Result<Option<String>> {
        id::validate(id)?;
        let _lock = self.lock(false)?;
        let files = self.read_layer_files(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let Some(lower) = files.lower else { return Ok(None) };
        let lids = layout::parse_lower(&lower).map_err(|m| corrupt_layer(id, &m.describe("lower")))?;
        Ok(Some(self.resolve_short_id(lids[0])?.ok_or_else(|| orphaned(id, lids[0]))?))
    }

    /// Docker's `GetMetadata`: absolute `LowerDir` (resolved through `l/`), `UpperDir`,
    /// `WorkDir` and `MergedDir`.
    pub fn metadata(&self, id: &str) -> Result<Metadata> {
        id::validate(id)?;
        let _lock = self.lock(false)?;
        let files = self.read_layer_files(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let dir = self.home.join(id);
        let lower_dir = match files.lower {
            None => None,
            Some(lower) => {
                let lids = layout::parse_lower(&lower).map_err(|m| corrupt_layer(id, &m.describe("lower")))?;
                let mut dirs = OsString::new();
                for lid in lids {
                    let pid = self.resolve_short_id(lid)?.ok_or_else(|| orphaned(id, lid))?;
                    if !dirs.is_empty() {
                        dirs.push(":");
                    }
                    dirs.push(self.home.join(pid).join("diff"));
                }
                Some(dirs)
            }
        };
        Ok(Metadata {
            lower_dir,
            upper_dir: dir.join("diff"),
            work_dir: dir.join("work"),
            merged_dir: dir.join("merged"),
        })
    }

    /// Every layer with its parent and depth, sorted by id.
    pub fn layers(&self) -> Result<Vec<LayerInfo>> {
        let _lock = self.lock(false)?;
        let mut recs = Vec::new();
        let mut by_lid = BTreeMap::new();
        for id in self.layer_ids()? {
            let Some(meta) = self.read_layer_meta(&id)? else { continue };
            let lid = meta.lid().map(str::to_owned);
            if let Some(l) = &lid {
                by_lid.insert(l.clone(), id.clone());
            }
            // An unreadable or malformed lower lists the layer with an unknown parent
            // (depth 0); `check` says what is wrong with it.
            let lower: Option<Vec<String>> = match meta.lower_lids() {
                Ok(l) => l.map(|v| v.into_iter().map(str::to_owned).collect()),
                Err(()) => Some(Vec::new()),
            };
            recs.push((id, lid, lower));
        }
        let mut out = Vec::with_capacity(recs.len());
        for (id, lid, lower) in recs {
            let (parent, depth) = match &lower {
                None => (None, 0),
                Some(lids) if lids.is_empty() => (None, 0),
                Some(lids) => {
                    let p = match by_lid.get(&lids[0]) {
                        Some(p) => Some(p.clone()),
                        None => self.resolve_short_id(&lids[0])?,
                    };
                    (p, depth_of(lids))
                }
            };
            let orphan = lower.is_some() && parent.is_none();
            out.push(LayerInfo { id, parent, depth, short_id: lid, orphan });
        }
        Ok(out)
    }

    /// Ids of all layer directories in `home`, sorted.
    pub(crate) fn layer_ids(&self) -> Result<Vec<String>> {
        let entries = fsutil::list_dir(&self.home_fd).ctx(|| format!("listing {}", self.home.display()))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.file_type == FileType::Directory)
            .filter_map(|e| e.name.into_string().ok())
            .filter(|n| id::validate(n).is_ok())
            .collect())
    }

    pub(crate) fn open_layer_dir(&self, id: &str) -> Result<Option<OwnedFd>> {
        let cid = cstr(id).expect("validated");
        match fsutil::open_dir(&self.home_fd, &cid) {
            Ok(fd) => Ok(Some(fd)),
            // A symlink or file under a layer's name is not a layer (as for `exists`).
            Err(e)
                if [Errno::NOENT, Errno::NOTDIR, Errno::LOOP]
                    .iter()
                    .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io(format!("opening layer {id:?}"), e)),
        }
    }

    /// [`Driver::read_layer_files`] that keeps going past a damaged file (see [`LayerMeta`]).
    pub(crate) fn read_layer_meta(&self, id: &str) -> Result<Option<LayerMeta>> {
        let Some(dir) = self.open_layer_dir(id)? else { return Ok(None) };
        let read = |name| fsutil::read_small(&dir, name).map_err(|e| e.to_string());
        Ok(Some(LayerMeta { link: read(layout::LINK), lower: read(layout::LOWER) }))
    }

    pub(crate) fn read_layer_files(&self, id: &str) -> Result<Option<LayerFiles>> {
        let Some(dir) = self.open_layer_dir(id)? else { return Ok(None) };
        let link = fsutil::read_small(&dir, layout::LINK).ctx(|| format!("reading {id}/link"))?;
        let lower = fsutil::read_small(&dir, layout::LOWER).ctx(|| format!("reading {id}/lower"))?;
        Ok(Some(LayerFiles { link, lower }))
    }

    /// The layer a short id names: through `l/<short>`, else by scanning `link` files.
    pub(crate) fn resolve_short_id(&self, lid: &str) -> Result<Option<String>> {
        let clid = cstr(lid).expect("ascii");
        if let Some(t) = fsutil::read_link(&self.links_fd, &clid).ctx(|| format!("reading l/{lid}"))? {
            if let Some(id) = layout::id_from_link_target(&t) {
                if self.exists_unlocked(id)? {
                    return Ok(Some(id.to_owned()));
                }
            }
        }
        for id in self.layer_ids()? {
            if let Some(meta) = self.read_layer_meta(&id)? {
                if meta.lid() == Some(lid) {
                    return Ok(Some(id));
                }
            }
        }
        Ok(None)
    }

    pub(crate) fn sync_dir<Fd: AsFd>(&self, fd: Fd, what: &str) -> Result<()> {
        if self.opts.sync {
            fsutil::fsync(fd).ctx(|| format!("syncing {what}"))?;
        }
        Ok(())
    }
}

/// A removed layer's files, renamed into staging and still flocked (so repair in another
/// process leaves them to us) until [`Unlinked::delete`] removes them.
pub(crate) struct Unlinked {
    id: String,
    trash: CString,
    dir: OwnedFd,
}

impl Unlinked {
    pub(crate) fn delete(self, d: &Driver) -> Result<()> {
        fsutil::remove_tree(d.staging("removing a layer")?, &self.trash)
            .ctx(|| format!("deleting the files of layer {:?}", self.id))?;
        drop(self.dir);
        Ok(())
    }
}

/// A layer being built in `.ovl2/staging/<name>`, locked so repair leaves it alone.
struct Staged {
    name: CString,
    fd: OwnedFd,
    short_link: Option<CString>,
}

impl Staged {
    fn new(d: &Driver) -> Result<Staged> {
        let name = cstr(&format!("new-{}", fsutil::random_hex(12))).expect("ascii");
        let staging = d.staging("creating a layer")?;
        fsutil::mkdir(staging, &name, layout::LAYER_MODE, Some(Owner { uid: d.owner.uid, gid: d.root.gid }))
            .ctx(|| "creating a staging dir".into())?;
        let fd = fsutil::open_dir(staging, &name).ctx(|| "opening a staging dir".into())?;
        fsutil::flock(&fd, true, false).ctx(|| "locking a staging dir".into())?;
        Ok(Staged { name, fd, short_link: None })
    }

    /// Undoes a failed create: removes the `l/` link and the staged tree.
    fn abandon(self, d: &Driver) {
        if let Some(l) = &self.short_link {
            let _ = rfs::unlinkat(&d.links_fd, l, AtFlags::empty());
        }
        if let Ok(staging) = d.staging("creating a layer") {
            let _ = fsutil::remove_tree(staging, &self.name);
        }
    }
}

fn validate_create_opts(opts: &CreateOpts) -> Result<()> {
    // Any key is an error (overlay2 knows only "size", which ovl2 cannot honour); name the first.
    if let Some(key) = opts.storage_opt.keys().next() {
        return Err(match key.to_ascii_lowercase().as_str() {
            "size" => Error::Unsupported(
                "storage option \"size\" needs xfs project quotas, which ovl2 does not manage".into(),
            ),
            _ => Error::InvalidArgument(format!("unknown storage option {key:?} (overlay2 knows only \"size\")")),
        });
    }
    if let Some(l) = &opts.mount_label {
        if l.contains('\0') {
            return Err(Error::InvalidArgument("mount label must not contain NUL".into()));
        }
    }
    Ok(())
}

/// Opens `home` as a directory if it may be opened in `mode`: a store (it has `l/`), or in
/// [`OpenMode::Create`] a missing or empty directory (created here). Anything else is refused
/// before it is changed in any way.
fn open_home(home: &Path, mode: OpenMode) -> Result<OwnedFd> {
    let shown = home.display();
    let fd = match fsutil::open_dir_path(home) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) && mode == OpenMode::Create => {
            std::fs::create_dir_all(home).ctx(|| format!("creating store home {shown}"))?;
            fsutil::open_dir_path(home).ctx(|| format!("opening store home {shown}"))?
        }
        Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
            return Err(Error::io(format!("store home {shown} is not a directory"), e));
        }
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
            return Err(Error::io(
                format!("store home {shown} does not exist (a command that writes, or `ovl2 init`, creates it)"),
                e,
            ));
        }
        Err(e) => return Err(Error::io(format!("opening store home {shown}"), e)),
    };
    match fsutil::file_type(&fd, layout::LINK_DIR).ctx(|| format!("stat of {shown}/l"))? {
        Some(FileType::Directory) => return Ok(fd),
        Some(_) => return Err(not_a_store(home, "its l is not a directory")),
        None => {}
    }
    let empty = fsutil::list_dir(&fd).ctx(|| format!("listing {shown}"))?.is_empty();
    match (empty, mode) {
        (true, OpenMode::Create) => Ok(fd),
        (true, _) => Err(not_a_store(home, "it is empty (a command that writes, or `ovl2 init`, creates a store)")),
        (false, _) => Err(not_a_store(home, "it is not empty and has no l/ directory")),
    }
}

fn not_a_store(home: &Path, why: &str) -> Error {
    Error::InvalidArgument(format!("{} is not an ovl2/overlay2 store: {why}", home.display()))
}

/// Opens `dir/name` as a directory, `None` when it does not exist (read-only opens).
fn open_optional_dir<Fd: AsFd>(dir: Fd, name: &std::ffi::CStr, home: &Path, what: &str) -> Result<Option<OwnedFd>> {
    match fsutil::open_dir(dir, name) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(None),
        Err(e) => Err(Error::io(format!("opening {}/{what}", home.display()), e)),
    }
}

fn set_mode_owner_fd(fd: &OwnedFd, mode: u32, owner: Owner) -> std::io::Result<()> {
    let st = rfs::fstat(fd)?;
    if st.st_uid != owner.uid || st.st_gid != owner.gid {
        rfs::fchown(fd, Some(rfs::Uid::from_raw(owner.uid)), Some(rfs::Gid::from_raw(owner.gid)))?;
    }
    if st.st_mode & 0o7777 != mode {
        rfs::fchmod(fd, rfs::Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

/// Absolute and lexically clean (as Go's `filepath.Clean`), so metadata paths match Docker's.
fn clean_absolute(p: &Path) -> Result<PathBuf> {
    if p.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("store home must not be empty".into()));
    }
    let abs = std::path::absolute(p).ctx(|| format!("resolving {}", p.display()))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

fn corrupt_layer(id: &str, what: &str) -> Error {
    Error::Corrupt(format!("layer {id:?}: {what}; run `ovl2 check --repair`"))
}

/// A layer whose chain names a short id no layer has: repair cannot bring a removed layer back,
/// so point at `check`, which names the command that resolves it.
pub(crate) fn orphaned(id: &str, lid: &str) -> Error {
    Error::Corrupt(format!(
        "layer {id:?}: its lower names short id {lid}, which no layer in the store has (a layer it builds on \
         was removed); `ovl2 check` names the command that resolves it"
    ))
}

fn preview(ids: &[String]) -> String {
    let mut s = ids.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 3 {
        s.push_str(", ...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::clean_absolute;
    use std::path::Path;

    #[test]
    fn clean_paths_like_go() {
        assert_eq!(clean_absolute(Path::new("/a/b/../c/./d/")).unwrap(), Path::new("/a/c/d"));
        assert_eq!(clean_absolute(Path::new("//a//b")).unwrap(), Path::new("/a/b"));
        assert_eq!(clean_absolute(Path::new("/..")).unwrap(), Path::new("/"));
        assert!(clean_absolute(Path::new("")).is_err());
    }
}
