//! The public face of ovl2: every operation on a store, in one place, in the order a reader
//! meets them (as containerd's `snapshots/overlay/overlay.go`). Each method says what it
//! promises and hands the work to the module that does it:
//!
//! - `store.rs`: the open store (home fds, options, owner, store lock, reads of `link` and
//!   `lower`); `layers.rs`: create, remove and the layer queries;
//! - `mount/`: get/put and the mount engine; `container.rs`: container layer pairs;
//! - `archive/`: apply, diff, changes, import; `check.rs`: check and repair; `status.rs`:
//!   status; `usage.rs`: a layer's disk usage;
//! - `staging.rs`: the crash-safety protocol every multi-step change follows, and the one
//!   lock order.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::archive::{ApplyOpts, ApplyStats, Change, DiffOpts, DiffStats};
use crate::check::{Problem, RepairReport};
use crate::container::ContainerOpts;
use crate::error::Result;
use crate::layers::{LayerInfo, Metadata};
use crate::mount::{Features, MountInfo, MountOpts, MountStrategy};
use crate::options::{CreateOpts, OpenMode, Options, RemoveOpts};
use crate::store::Store;
use crate::usage::Usage;

/// An open layer store.
///
/// A `Driver` is `Send + Sync`: share one between threads. Several processes may open the
/// same home at once; they coordinate through the store lock.
#[derive(Debug)]
pub struct Driver {
    store: Store,
}

impl Driver {
    /// Opens the store at `home` as `options.open_mode` allows (by default creating it when
    /// `home` is missing or empty), then repairs what a crash left behind unless
    /// `options.repair_on_open` is off or the store is opened read-only.
    ///
    /// A `home` that exists and is not a directory, or is a non-empty directory without `l/`
    /// (not a store), is refused without touching it.
    pub fn open(home: impl AsRef<Path>, options: Options) -> Result<Driver> {
        let store = Store::open(home.as_ref(), options)?;
        if store.opts.repair_on_open && store.opts.open_mode != OpenMode::ReadOnly {
            store.repair()?;
            store.reconcile_mounts()?;
        }
        Ok(Driver { store })
    }

    // The store.

    /// The store's home directory, absolute and lexically clean.
    pub fn home(&self) -> &Path {
        self.store.home()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        self.store.options()
    }

    /// Whether the store was opened with [`OpenMode::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.store.is_read_only()
    }

    /// Ordered key/value pairs: Docker's keys first (`Backing Filesystem`, `Supports d_type`,
    /// `Using metacopy`, `Native Overlay Diff`, `userxattr`), then ovl2's.
    pub fn status(&self) -> Result<Vec<(String, String)>> {
        self.store.status()
    }

    // Layers: what is there.

    /// Whether a layer directory named `id` exists (half-created Docker layers count, as in Docker).
    pub fn exists(&self, id: &str) -> Result<bool> {
        self.store.exists(id)
    }

    /// The direct parent of `id`, or `None` for a base layer.
    pub fn parent(&self, id: &str) -> Result<Option<String>> {
        self.store.parent(id)
    }

    /// Docker's `GetMetadata`: absolute `LowerDir` (resolved through `l/`), `UpperDir`,
    /// `WorkDir` and `MergedDir`.
    pub fn metadata(&self, id: &str) -> Result<Metadata> {
        self.store.metadata(id)
    }

    /// Every layer with its parent and depth, sorted by id.
    pub fn layers(&self) -> Result<Vec<LayerInfo>> {
        self.store.layers()
    }

    /// Whether `id` carries the `committed` marker (a child was created on it, so it mounts
    /// read-only).
    pub fn is_committed(&self, id: &str) -> Result<bool> {
        self.store.is_committed(id)
    }

    // Layers: create and remove.

    /// Creates a read-only (image) layer `id` on top of `parent` (none for a base layer).
    pub fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.store.create(id, parent, opts)
    }

    /// Creates a read-write (container) layer. The on-disk layout is the same as for
    /// [`Driver::create`]; the distinction is kept for Docker API parity.
    pub fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.store.create_rw(id, parent, opts)
    }

    /// Removes a layer. A layer that other layers build on is refused (remove them first, or
    /// all at once with [`Driver::remove_tree`]); `force` unmounts it first instead of
    /// refusing a mounted layer. A layer that is a containerd snapshot in `ovl2-snapshotter`'s
    /// index is refused (Busy, naming the snapshot key) unless `force`, which removes it and
    /// leaves the entry for [`Driver::repair`] to drop (see [`crate::snapshots`]).
    ///
    /// The layer is first renamed out of sight (so it is either fully there or gone), its
    /// `l/` link removed, and only then is its tree deleted, outside the store lock.
    pub fn remove(&self, id: &str, force: bool) -> Result<()> {
        self.store.remove(id, force)
    }

    /// [`Driver::remove`] with every option, including Docker's own semantics
    /// (`ignore_children`).
    pub fn remove_with(&self, id: &str, opts: RemoveOpts) -> Result<()> {
        self.store.remove_with(id, opts)
    }

    /// Removes a layer and every layer that builds on it, deepest first, so a crash midway
    /// leaves a consistent store: only whole layers gone, never a layer whose parent is gone.
    /// Refuses (before removing anything) when one of them is mounted or is a containerd
    /// snapshot, unless `force`, which unmounts them first and removes them anyway. Returns the removed ids in the order they went.
    pub fn remove_tree(&self, id: &str, force: bool) -> Result<Vec<String>> {
        self.store.remove_tree(id, force)
    }

    // Containers: the init layer and the container layer as one step.

    /// Creates `<ctr>-init` on `image_top`, fills it with the init entries through a mount,
    /// and creates the container layer `<ctr>` on it (which marks the init layer committed).
    /// All or nothing: on any failure neither layer is left behind.
    pub fn create_container(&self, ctr: &str, image_top: &str, opts: &ContainerOpts) -> Result<()> {
        self.store.create_container(ctr, image_top, opts)
    }

    /// Removes a container's layer and then its init layer. Refused while the container
    /// layer is mounted unless `force`, which unmounts it first.
    pub fn remove_container(&self, ctr: &str, force: bool) -> Result<()> {
        self.store.remove_container(ctr, force)
    }

    // Mounts: Docker's Get and Put, reference-counted across processes.

    /// Docker's `Get`: mounts the layer (or takes another reference to its mount) and returns
    /// the merged path. A base layer returns its `diff` path without mounting, as in Docker.
    pub fn get(&self, id: &str, mount_label: Option<&str>) -> Result<PathBuf> {
        self.store.get(id, mount_label)
    }

    /// [`Driver::get`] with every option.
    pub fn get_with(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        self.store.get_with(id, opts)
    }

    /// Docker's `Put`: drops one reference (this process's, else a persistent one) and
    /// unmounts when none is left. A base layer's put is a no-op, as in Docker.
    pub fn put(&self, id: &str) -> Result<()> {
        self.store.put(id)
    }

    /// Every layer ovl2 has mounted (or found mounted), with its reference counts.
    pub fn mounts(&self) -> Result<Vec<MountInfo>> {
        self.store.mounts()
    }

    /// Unmounts every layer of this store, whoever holds it, and forgets all references
    /// (Docker's `Cleanup`).
    pub fn cleanup(&self) -> Result<()> {
        self.store.cleanup()
    }

    /// The mount strategy in force (option, else `OVL2_MOUNT_STRATEGY`, else auto).
    pub fn mount_strategy(&self) -> MountStrategy {
        self.store.mount_strategy()
    }

    /// Kernel features found by the probes (cached per store and boot).
    pub fn features(&self) -> &Features {
        self.store.features()
    }

    // Layer archives.

    /// Applies a layer tar (plain, gzip or zstd) to the empty layer `id` and returns Docker's
    /// size value, the tar's digest and entry counts.
    ///
    /// When `parent` is the layer's own parent (`None` for a base layer), the tar is written
    /// straight into the layer's `diff` (Docker's overlay2 path: whiteouts become overlay
    /// whiteouts). Any other `parent`, `None` included, takes Docker's naive path: the tar is
    /// unpacked into the layer's mounted view, where a whiteout deletes what the lower layers
    /// show (see `docs/archives.md`).
    ///
    /// Nothing outside the layer's `diff` is created, changed or followed, whatever the tar
    /// holds. On any error the layer is left exactly as it was. Data is synced when the store
    /// was opened with `sync` (see [`Driver::apply_diff_with`] to choose per call).
    pub fn apply_diff(&self, id: &str, parent: Option<&str>, reader: impl Read) -> Result<ApplyStats> {
        self.store.apply_diff(id, parent, reader)
    }

    /// [`Driver::apply_diff`] with explicit options.
    pub fn apply_diff_with(
        &self,
        id: &str,
        parent: Option<&str>,
        reader: impl Read,
        opts: &ApplyOpts<'_>,
    ) -> Result<ApplyStats> {
        self.store.apply_diff_with(id, parent, reader, opts)
    }

    /// Creates one layer per tarball (base first) on top of `parent` and applies each tar
    /// into its layer onto the one below: an image's layers in one call. The top layer is
    /// `top`, those below it `<top>-1`, `<top>-2`, ... from the base (see
    /// [`import_chain_ids`](crate::import_chain_ids)). All or nothing: on any failure the
    /// layers this call created are removed again, and `parent` loses the `committed`
    /// marker they gave it, so the store is as it was. Returns each layer's id and stats.
    pub fn import_chain<R: Read>(
        &self,
        top: &str,
        parent: Option<&str>,
        tars: Vec<R>,
        opts: &ApplyOpts<'_>,
    ) -> Result<Vec<(String, ApplyStats)>> {
        self.store.import_chain(top, parent, tars, opts)
    }

    /// Writes layer `id` as a tar in Docker's layer format relative to `parent`, which must
    /// be the layer's own parent (`None` for a base layer).
    ///
    /// Whiteouts become `.wh.NAME` entries, opaque directories get a `.wh..wh..opq` entry,
    /// hardlinks are links to the first path seen, and the only xattr written is
    /// `security.capability`, as in Docker. The output is deterministic: the same tree
    /// always gives the same bytes, and they are the bytes Docker's native Diff writes.
    pub fn diff(&self, id: &str, parent: Option<&str>, writer: impl Write) -> Result<DiffStats> {
        self.store.diff(id, parent, writer)
    }

    /// [`Driver::diff`] with explicit options.
    pub fn diff_with(&self, id: &str, parent: Option<&str>, writer: impl Write, opts: &DiffOpts) -> Result<DiffStats> {
        self.store.diff_with(id, parent, writer, opts)
    }

    /// [`Driver::diff_with`] into an fd (a pipe, a file, a socket), written with `write(2)`
    /// and no buffering of its own. The bytes are the ones [`Driver::diff_with`] writes. With
    /// the digest off and `fd` a blocking pipe, the data of large files moves from the page
    /// cache into the pipe with `splice(2)`, without a copy through this process.
    pub fn diff_to_fd(
        &self,
        id: &str,
        parent: Option<&str>,
        fd: std::os::fd::BorrowedFd<'_>,
        opts: &DiffOpts,
    ) -> Result<DiffStats> {
        self.store.diff_to_fd(id, parent, fd, opts)
    }

    /// [`Driver::diff_with`] into memory, for a small layer: a stream of at most `limit`
    /// bytes (capped at 1 MiB) and 16 entries. `None`, with nothing written, when the
    /// stream is larger or needs mounted views (`parent` is not the layer's own parent, or
    /// the upper has a redirected directory); [`Driver::diff_with`] then streams it (or,
    /// for a redirect in a base layer, says why it cannot). For callers whose reader would
    /// otherwise run on another thread: a small layer costs no hand-off between threads,
    /// which is most of such a diff's time, and a larger one is given up on as soon as a
    /// directory listing or a file's size shows it, before the rest is read. The bytes are
    /// the ones [`Driver::diff_with`] writes.
    pub fn diff_small(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &DiffOpts,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, DiffStats)>> {
        self.store.diff_small(id, parent, opts, limit)
    }

    /// The paths layer `id` adds, modifies or deletes relative to `parent`, sorted by path,
    /// with exactly Docker's rules (see docs/archives.md).
    pub fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        self.store.changes(id, parent)
    }

    /// [`Driver::changes`], handing each change to `f` in path order instead of collecting
    /// them. Against the real parent, memory is bounded by the number of changes (each
    /// costing its name, not its full path) and the current path, whatever the depth: a
    /// chain of 30,000 directories does not need its 900 MB of full paths at once.
    pub fn changes_each(
        &self,
        id: &str,
        parent: Option<&str>,
        f: impl FnMut(Change) -> std::io::Result<()>,
    ) -> Result<()> {
        self.store.changes_each(id, parent, f)
    }

    /// Docker's `DiffSize`: with the real parent, the size of the layer's own `diff` (what
    /// `apply_diff` returned); against another layer, the sizes of added and modified
    /// non-directories, hardlinks counted once.
    pub fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
        self.store.diff_size(id, parent)
    }

    /// The disk usage and inode count of layer `id`'s own files (its `diff/`), not crossing
    /// mounts and never following symlinks, with a bounded number of fds at any depth. Unlike
    /// [`Driver::diff_size`] (Docker's apparent size of the layer's changes) this is what the
    /// layer costs on disk.
    pub fn usage(&self, id: &str) -> Result<Usage> {
        self.store.usage(id)
    }

    // Check and repair.

    /// Reports every problem in the store without changing anything.
    pub fn check(&self) -> Result<Vec<Problem>> {
        self.store.check()
    }

    /// Fixes what can be fixed: stale staging dirs, missing or malformed `link` files,
    /// missing, wrong, dangling and unused `l/` links, stray whitespace in `lower`, missing
    /// `work/` dirs and `committed` markers; and, while no `ovl2-snapshotter` serves the store,
    /// its index entries whose layer is gone and its missing or unowned short links. Never
    /// deletes a layer directory.
    pub fn repair(&self) -> Result<RepairReport> {
        self.store.repair()
    }
}
