//! `ovl2.Driver`: the store handle, its methods and the `mounted()` context manager. Each
//! method converts its arguments, runs the core call with the GIL released and converts the
//! result (see `types`), mapping errors through `errors` and streams through `io`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ovl2_core::{ApplyOpts, ContainerOpts, CreateOpts, DiffOpts, MountOpts, MountStrategy, OpenMode, Options, Owner};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::errors;
use crate::io::{self, Dest, Failure, PyFailure, Source};
use crate::types::{init_entry_from_py, repr, ApplyStats, DiffStats, Layer, Mount, Problem, Usage};

// `Driver(max_depth=500)` is spelled as a literal so Python's signature shows it; keep it the
// kernel's limit.
const _: () = assert!(ovl2_core::KERNEL_MAX_DEPTH == 500);

/// An open overlay2 layer store, in exactly Docker's on-disk format.
///
/// Safe to share between threads; several processes may open the same home at once.
/// Use it as a context manager (or call :meth:`close`) to release the store's descriptors.
///
/// Opens the store at ``home`` as ``open_mode`` allows.
///
/// A directory that exists, is not empty and is not a store (it has no ``l/``) is
/// refused and left untouched, whatever the mode.
///
/// :param sync: fsync metadata files and directories so a power cut cannot lose them.
/// :param max_depth: most lower layers a layer may have (1..500), counted as Docker
///     counts them (a base layer has depth 0); use ``DOCKER_MAX_DEPTH`` when Docker
///     must mount the store too.
/// :param repair_on_open: repair what a crash or another tool left behind.
/// :param root: ``(uid, gid)`` owning ``diff``/``work``/``merged`` (the containers'
///     remapped root); default this process's euid/egid.
/// :param mount_strategy: how layers are mounted: ``"new"`` (``fsopen``/``lowerdir+``,
///     layers as fds where the kernel allows), ``"legacy"`` (``mount(2)`` with an
///     option string) or ``"auto"`` (the best available). None: ``$OVL2_MOUNT_STRATEGY``,
///     else ``"auto"``.
/// :param disabled_features: kernel features to treat as absent (names as
///     :meth:`features` reports them, e.g. ``"lowerdir+fd"``); works around a buggy
///     kernel. None or empty: ``$OVL2_DISABLE_FEATURES`` (comma-separated).
/// :param open_mode: ``"create"`` (the default) makes a store in a missing or empty
///     directory; ``"existing"`` opens only an existing store; ``"read_only"`` opens an
///     existing store and never writes to it (nothing created, chmod-ed or chown-ed, no
///     repair on open; writing calls raise :class:`PermissionDeniedError`, errno EROFS),
///     which works on a read-only file system and on a store Docker wrote.
/// :raises InvalidArgumentError: ``max_depth`` out of range, an unknown strategy, feature
///     or open mode, or ``home`` is a non-empty directory that is not a store.
/// :raises LayerNotFoundError: ``home`` is missing and ``open_mode`` does not create.
/// :raises ValueError: ``home`` contains a NUL byte (as Python's ``os`` functions).
/// :raises Error: the home cannot be created or opened (errno ENOTDIR: not a directory).
#[pyclass(frozen, module = "ovl2", name = "Driver")]
pub(crate) struct PyDriver {
    /// `None` once closed. Calls clone the `Arc` out and drop the lock before working, so a
    /// `close()` racing a long call only ends the store's life when that call finishes.
    inner: Mutex<Option<Arc<ovl2_core::Driver>>>,
    home: PathBuf,
    max_depth: usize,
    sync: bool,
}

impl PyDriver {
    fn slot(&self) -> MutexGuard<'_, Option<Arc<ovl2_core::Driver>>> {
        // Nothing panics while holding the lock, but a poisoned slot is still a valid slot.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open store, or ValueError once closed.
    fn driver(&self) -> PyResult<Arc<ovl2_core::Driver>> {
        self.slot().clone().ok_or_else(|| PyValueError::new_err("operation on a closed ovl2.Driver"))
    }

    /// Runs `f` on the store with the GIL released, mapping its error.
    fn run<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: Send + FnOnce(&ovl2_core::Driver) -> ovl2_core::Result<T>,
    {
        let driver = self.driver()?;
        py.detach(move || f(&driver)).map_err(|e| errors::to_pyerr(py, e))
    }

    /// [`PyDriver::run`] for calls that read or write a caller's stream: an exception the
    /// caller's file object raised is re-raised as it was, and a path that cannot be opened
    /// raises the usual `OSError` subclass.
    fn run_stream<T, F>(&self, py: Python<'_>, failure: PyFailure, f: F) -> PyResult<T>
    where
        T: Send,
        F: Send + FnOnce(&ovl2_core::Driver) -> Result<T, Failure>,
    {
        let driver = self.driver()?;
        let failed = match py.detach(move || f(&driver)) {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        Err(match (failure.take(), failed) {
            (Some(raised), _) => raised,
            (None, Failure::Open(e, path)) => io::open_error(e, path),
            (None, Failure::Core(e)) => errors::to_pyerr(py, e),
        })
    }
}

#[pymethods]
impl PyDriver {
    /// Opens the store; Python sees this documentation on the class (pyo3 gives `#[new]` none).
    #[new]
    #[pyo3(signature = (
        home, *, sync = true, max_depth = 500, repair_on_open = true,
        root = None, mount_strategy = None, disabled_features = None, open_mode = "create",
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        home: &Bound<'_, PyAny>,
        sync: bool,
        max_depth: usize,
        repair_on_open: bool,
        root: Option<(u32, u32)>,
        mount_strategy: Option<&str>,
        disabled_features: Option<Vec<String>>,
        open_mode: &str,
    ) -> PyResult<Self> {
        let home = io::fs_path(home)?;
        let open_mode = match open_mode {
            "create" => OpenMode::Create,
            "existing" => OpenMode::Existing,
            "read_only" => OpenMode::ReadOnly,
            other => {
                return Err(errors::to_pyerr(
                    py,
                    ovl2_core::Error::InvalidArgument(format!(
                        "open_mode must be \"create\", \"existing\" or \"read_only\", not {other:?}"
                    )),
                ))
            }
        };
        let mount_strategy = match mount_strategy {
            None => None,
            Some(s) => Some(s.parse::<MountStrategy>().map_err(|e| {
                errors::to_pyerr(py, ovl2_core::Error::InvalidArgument(format!("mount_strategy: {e}")))
            })?),
        };
        let options = Options {
            max_depth,
            root: root.map(|(uid, gid)| Owner::from_raw(uid, gid)),
            sync,
            repair_on_open,
            mount_strategy,
            disabled_features: disabled_features.unwrap_or_default(),
            open_mode,
        };
        let driver = py.detach(move || ovl2_core::Driver::open(home, options)).map_err(|e| errors::to_pyerr(py, e))?;
        let home = driver.home().to_path_buf();
        Ok(PyDriver { inner: Mutex::new(Some(Arc::new(driver))), home, max_depth, sync })
    }

    /// The store's home directory, absolute and lexically clean; ``os.fsencode`` of it
    /// gives the exact bytes, also for a home that is not UTF-8.
    #[getter]
    fn home(&self) -> PathBuf {
        self.home.clone()
    }

    /// The deepest chain this store allows.
    #[getter]
    fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Whether metadata writes are fsynced.
    #[getter]
    fn sync(&self) -> bool {
        self.sync
    }

    /// True after :meth:`close`.
    #[getter]
    fn closed(&self) -> bool {
        self.slot().is_none()
    }

    /// Releases the store. Calls already running finish first; later calls raise ValueError.
    ///
    /// Mount references this Driver took with :meth:`get` are given back (a layer nobody else
    /// holds is unmounted); persistent references stay until a :meth:`put`.
    fn close(&self, py: Python<'_>) {
        let driver = self.slot().take();
        // The last reference may close several descriptors; do it without the GIL.
        py.detach(move || drop(driver));
    }

    /// Returns the driver itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the store; never suppresses the exception.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let state = if self.closed() { " closed" } else { "" };
        Ok(format!("<ovl2.Driver home={}{state}>", repr(py, self.home.to_string_lossy())?))
    }

    /// Creates the read-only (image) layer ``id`` on top of ``parent`` (None: a base layer).
    ///
    /// :raises InvalidIdError: ``id`` or ``parent`` is malformed.
    /// :raises LayerExistsError: ``id`` exists.
    /// :raises LayerNotFoundError: ``parent`` does not exist.
    /// :raises MaxDepthError: the chain would exceed ``max_depth``.
    /// :raises UnsupportedError: ``storage_opt`` has ``size`` (needs xfs quotas).
    /// :raises InvalidArgumentError: ``storage_opt`` has an unknown key.
    #[pyo3(signature = (id, parent = None, *, storage_opt = None, mount_label = None))]
    fn create(
        &self,
        py: Python<'_>,
        id: String,
        parent: Option<String>,
        storage_opt: Option<BTreeMap<String, String>>,
        mount_label: Option<String>,
    ) -> PyResult<()> {
        let opts = CreateOpts { storage_opt: storage_opt.unwrap_or_default(), mount_label };
        self.run(py, move |d| d.create(&id, parent.as_deref(), &opts))
    }

    /// Creates a read-write (container) layer; same layout and errors as :meth:`create`.
    #[pyo3(signature = (id, parent = None, *, storage_opt = None, mount_label = None))]
    fn create_rw(
        &self,
        py: Python<'_>,
        id: String,
        parent: Option<String>,
        storage_opt: Option<BTreeMap<String, String>>,
        mount_label: Option<String>,
    ) -> PyResult<()> {
        let opts = CreateOpts { storage_opt: storage_opt.unwrap_or_default(), mount_label };
        self.run(py, move |d| d.create_rw(&id, parent.as_deref(), &opts))
    }

    /// Removes a layer: atomically out of sight first, then its files.
    ///
    /// ``force=True`` unmounts it first instead of refusing a mounted layer.
    ///
    /// :raises LayerNotFoundError: no such layer.
    /// :raises BusyError: other layers build on it (see ``remove_tree``, with or without
    ///     ``force``), or it is mounted (unless ``force``).
    #[pyo3(signature = (id, force = false))]
    fn remove(&self, py: Python<'_>, id: String, force: bool) -> PyResult<()> {
        self.run(py, move |d| d.remove(&id, force))
    }

    /// Removes a layer and every layer built on it, deepest first, so a crash midway
    /// never leaves a layer whose parent is gone; returns the removed ids in that order.
    ///
    /// :raises LayerNotFoundError: no such layer.
    /// :raises BusyError: one of them is mounted (unless ``force``, which unmounts them
    ///     first); nothing is removed then.
    #[pyo3(signature = (id, force = false))]
    fn remove_tree(&self, py: Python<'_>, id: String, force: bool) -> PyResult<Vec<String>> {
        self.run(py, move |d| d.remove_tree(&id, force))
    }

    /// Whether a layer directory named ``id`` exists.
    ///
    /// :raises InvalidIdError: ``id`` is malformed.
    fn exists(&self, py: Python<'_>, id: String) -> PyResult<bool> {
        self.run(py, move |d| d.exists(&id))
    }

    /// The direct parent of ``id``, or None for a base layer.
    ///
    /// :raises LayerNotFoundError: no such layer.
    /// :raises CorruptStoreError: the layer's ``lower`` file is damaged.
    fn parent(&self, py: Python<'_>, id: String) -> PyResult<Option<String>> {
        self.run(py, move |d| d.parent(&id))
    }

    /// Docker's ``GetMetadata``: ``LowerDir`` (only with a parent), ``UpperDir``,
    /// ``WorkDir`` and ``MergedDir``, as absolute paths. Paths are ``str`` as ``os.fsdecode``
    /// makes them, so ``os.fsencode`` gives their exact bytes under a home that is not UTF-8.
    ///
    /// :raises LayerNotFoundError: no such layer.
    fn metadata(&self, py: Python<'_>, id: String) -> PyResult<BTreeMap<String, std::ffi::OsString>> {
        self.run(py, move |d| d.metadata(&id)).map(|m| m.to_map())
    }

    /// Ordered key/value pairs: Docker's (``Backing Filesystem``, ``Supports d_type``, ...)
    /// first, then ovl2's.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pairs = self.run(py, |d| d.status())?;
        // A dict keeps insertion order, which is the order the driver reports.
        let dict = PyDict::new(py);
        for (k, v) in pairs {
            dict.set_item(k, v)?;
        }
        Ok(dict)
    }

    /// Every layer with its parent and depth, sorted by id.
    fn layers(&self, py: Python<'_>) -> PyResult<Vec<Layer>> {
        let layers = self.run(py, |d| d.layers())?;
        Ok(layers
            .into_iter()
            .map(|l| Layer { id: l.id, parent: l.parent, depth: l.depth, short_id: l.short_id, orphan: l.orphan })
            .collect())
    }

    /// Problems in the store (stale staging dirs, broken links, ...).
    ///
    /// With ``repair=True`` fixes what can be fixed and returns both what was fixed
    /// (``repaired=True``) and what remains. Repair never deletes a layer directory.
    #[pyo3(signature = (repair = false))]
    fn check(&self, py: Python<'_>, repair: bool) -> PyResult<Vec<Problem>> {
        if !repair {
            let found = self.run(py, |d| d.check())?;
            return Ok(found.into_iter().map(|p| Problem::new(p, false)).collect());
        }
        let report = self.run(py, |d| d.repair())?;
        let repaired = report.repaired.into_iter().map(|p| Problem::new(p, true));
        Ok(repaired.chain(report.remaining.into_iter().map(|p| Problem::new(p, false))).collect())
    }
    /// Creates a container as Docker does: ``<ctr>-init`` on ``image_top``, filled with
    /// the init entries through a real mount (so copy-ups and whiteouts are Docker's), then
    /// the container layer ``<ctr>`` on it. All or nothing, also across a crash.
    ///
    /// :param init_entries: default :func:`docker_init_entries`.
    /// :param root: ``(uid, gid)`` owning new init entries (user-namespaced containers).
    /// :raises LayerNotFoundError: no ``image_top``.
    /// :raises LayerExistsError: ``ctr`` or ``ctr-init`` exists.
    /// :raises ValueError: a malformed init entry.
    #[pyo3(signature = (ctr, image_top, *, init_entries = None, root = None, storage_opt = None, mount_label = None))]
    #[allow(clippy::too_many_arguments)]
    fn create_container(
        &self,
        py: Python<'_>,
        ctr: String,
        image_top: String,
        init_entries: Option<Vec<Vec<String>>>,
        root: Option<(u32, u32)>,
        storage_opt: Option<BTreeMap<String, String>>,
        mount_label: Option<String>,
    ) -> PyResult<()> {
        let init_entries = match init_entries {
            None => ovl2_core::docker_init_entries(),
            Some(entries) => entries.into_iter().map(init_entry_from_py).collect::<PyResult<_>>()?,
        };
        let opts = ContainerOpts {
            init_entries,
            root: root.map(|(uid, gid)| Owner::from_raw(uid, gid)),
            create: CreateOpts { storage_opt: storage_opt.unwrap_or_default(), mount_label },
        };
        self.run(py, move |d| d.create_container(&ctr, &image_top, &opts))
    }

    /// Removes ``<ctr>`` and ``<ctr>-init``.
    ///
    /// :raises BusyError: the container is mounted (``force=True`` unmounts it first).
    /// :raises LayerNotFoundError: neither layer exists.
    #[pyo3(signature = (ctr, force = false))]
    fn remove_container(&self, py: Python<'_>, ctr: String, force: bool) -> PyResult<()> {
        self.run(py, move |d| d.remove_container(&ctr, force))
    }

    /// Applies a layer tar (plain, gzip or zstd; detected) to the empty layer ``id``.
    ///
    /// Nothing outside the layer's ``diff`` is created, changed or followed, whatever the tar
    /// holds; on any error the layer is left as it was.
    ///
    /// :param source: a path (str or PathLike), ``bytes``/``bytearray``, a binary file
    ///     object (anything with ``read(n)``), or an int fd (read from its current offset;
    ///     the caller keeps it open). Paths, bytes and fds are read without the GIL.
    /// :param parent: omitted (None): the layer's own parent, the fast path that writes
    ///     the tar straight into the layer's ``diff``. ``""`` is Docker's "no parent"; it
    ///     and any layer other than the layer's own parent apply through the layer's mounted
    ///     view, as Docker's naive ``ApplyDiff`` does (whiteouts delete what the lower layers
    ///     show; the returned size is the sum of the tar's entry sizes, as Docker returns).
    /// :param sync: flush the data to disk before returning; default the store's ``sync``.
    /// :param expect_digest: the DiffID the uncompressed stream must have
    ///     (``sha256:<hex>``, as in an image config); checked before the layer is swapped in.
    /// :raises CorruptArchiveError: the stream is malformed, truncated or hostile, or its
    ///     digest is not ``expect_digest``.
    /// :raises InvalidArgumentError: the layer already has content.
    /// :raises LayerNotFoundError: no such layer, or no layer ``parent``.
    /// :raises BusyError: the layer is mounted, or a mounted layer builds on it.
    /// :raises OSError: a ``source`` path cannot be opened (``FileNotFoundError``, ...);
    ///     an exception raised by a file object propagates unchanged.
    #[pyo3(signature = (id, source, parent = None, *, sync = None, expect_digest = None))]
    fn apply_diff(
        &self,
        py: Python<'_>,
        id: String,
        source: &Bound<'_, PyAny>,
        parent: Option<String>,
        sync: Option<bool>,
        expect_digest: Option<String>,
    ) -> PyResult<ApplyStats> {
        let source = Source::from_py(source)?;
        let failure = PyFailure::default();
        let stats = self.run_stream(py, failure.clone(), move |d| {
            let opts = ApplyOpts {
                sync: sync.unwrap_or(d.options().sync),
                progress: None,
                expect_digest: expect_digest.as_deref(),
            };
            let parent = match parent {
                None => d.parent(&id)?,
                Some(p) => docker_parent(Some(p)),
            };
            source.with_reader(&failure, |r| d.apply_diff_with(&id, parent.as_deref(), r, &opts))
        })?;
        Ok(ApplyStats::from(stats))
    }

    /// Writes layer ``id`` as a tar in Docker's layer format (deterministic bytes).
    ///
    /// :param dest: a path (created or truncated), a binary file object (anything with
    ///     ``write``; ``flush`` is called at the end) or an int fd.
    /// :param parent: the layer's own parent (None for a base layer) for the layer's own
    ///     changes; any other layer (None included, for a layer that has a parent) exports
    ///     what differs between the two merged views, as Docker's naive diff does. ``""``
    ///     (Docker's spelling) is the same as None.
    /// :param digest: compute the stream's sha256 (as the stream is written); turn it off when
    ///     hashing the stream yourself.
    /// :raises LayerNotFoundError: no such layer.
    #[pyo3(signature = (id, dest, parent = None, *, digest = true))]
    fn diff(
        &self,
        py: Python<'_>,
        id: String,
        dest: &Bound<'_, PyAny>,
        parent: Option<String>,
        digest: bool,
    ) -> PyResult<DiffStats> {
        let dest = Dest::from_py(dest)?;
        let failure = PyFailure::default();
        let opts = DiffOpts { digest };
        let stats = self.run_stream(py, failure.clone(), move |d| {
            dest.with_writer(&failure, |w| d.diff_with(&id, docker_parent(parent).as_deref(), w, &opts))
        })?;
        Ok(DiffStats { tar_bytes: stats.tar_bytes, digest: stats.digest, entries: stats.entries })
    }

    /// Creates one layer per tarball in ``sources`` (base first) on top of ``parent``
    /// and applies each tarball into its layer: an image's layers in one call. The top
    /// layer is ``top``, those below it ``<top>-1``, ``<top>-2``, ... from the base.
    ///
    /// All or nothing: on any error the layers it made are removed and ``parent`` loses the
    /// ``committed`` marker they gave it; if the process is killed half way, the next open
    /// (or :meth:`repair`) does the same.
    ///
    /// :param sources: each as :meth:`apply_diff` takes it (a path, bytes, a binary file
    ///     object or an int fd); paths are opened before anything is created.
    /// :param parent: the layer the chain builds on; None or ``""`` for none.
    /// :param sync: flush each layer's data to disk; default the store's ``sync``.
    /// :returns: ``(id, stats)`` for each layer made, base first.
    /// :raises InvalidArgumentError: ``sources`` is empty.
    /// :raises LayerExistsError: one of the ids is taken.
    /// :raises LayerNotFoundError: no layer ``parent``.
    /// :raises CorruptArchiveError: a tarball is malformed, truncated or hostile.
    /// :raises OSError: a ``sources`` path cannot be opened; an exception raised by a file
    ///     object propagates unchanged.
    #[pyo3(signature = (top, sources, parent = None, *, sync = None))]
    fn import_chain(
        &self,
        py: Python<'_>,
        top: String,
        sources: Vec<Bound<'_, PyAny>>,
        parent: Option<String>,
        sync: Option<bool>,
    ) -> PyResult<Vec<(String, ApplyStats)>> {
        let sources = sources.iter().map(Source::from_py).collect::<PyResult<Vec<_>>>()?;
        let failure = PyFailure::default();
        let made = self.run_stream(py, failure.clone(), move |d| {
            let opts = ApplyOpts { sync: sync.unwrap_or(d.options().sync), progress: None, expect_digest: None };
            // Every path is opened before anything is created, as the CLI's import does.
            let readers = sources.into_iter().map(|s| s.into_reader(&failure)).collect::<Result<Vec<_>, _>>()?;
            Ok(d.import_chain(&top, docker_parent(parent).as_deref(), readers, &opts)?)
        })?;
        Ok(made.into_iter().map(|(id, st)| (id, ApplyStats::from(st))).collect())
    }

    /// What layer ``id``'s own files (its ``diff``) occupy on disk, as ``ovl2 du`` and
    /// containerd's snapshot usage count: never crossing a mount or following a symlink.
    /// Unlike :meth:`diff_size` (Docker's apparent size of the layer's changes) this is what
    /// the layer costs on disk.
    ///
    /// :raises LayerNotFoundError: no such layer.
    fn usage(&self, py: Python<'_>, id: String) -> PyResult<Usage> {
        self.run(py, move |d| d.usage(&id)).map(Usage::from)
    }

    /// Docker's ``DiffSize``: with the layer's own parent, the size of its ``diff`` (what
    /// :meth:`apply_diff` returned); against another layer, the sizes of the
    /// non-directories it adds or modifies, hardlinks counted once. ``parent=""`` is the
    /// same as None (no parent).
    #[pyo3(signature = (id, parent = None))]
    fn diff_size(&self, py: Python<'_>, id: String, parent: Option<String>) -> PyResult<u64> {
        self.run(py, move |d| d.diff_size(&id, docker_parent(parent).as_deref()))
    }

    /// Paths layer ``id`` adds, modifies or deletes relative to ``parent``, sorted by
    /// path, by Docker's rules.
    ///
    /// With the layer's own parent only what its ``diff`` mentions is looked up (fast); any
    /// other ``parent`` (None or ``""``, for a layer that has a parent, means an empty base)
    /// compares the two merged views in full, as Docker's naive diff does.
    #[pyo3(signature = (id, parent = None))]
    fn changes<'py>(&self, py: Python<'py>, id: String, parent: Option<String>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        static CHANGE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static KIND: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let changes = self.run(py, move |d| d.changes(&id, docker_parent(parent).as_deref()))?;
        let change = CHANGE.import(py, "ovl2._types", "Change")?;
        let kind = KIND.import(py, "ovl2._types", "ChangeKind")?;
        changes
            .into_iter()
            .map(|c| {
                // Docker's numeric kinds (Modify 0, Add 1, Delete 2) are the enum's values.
                let k = kind.call1((c.kind as u8,))?;
                change.call1((c.path.into_os_string(), k))
            })
            .collect()
    }

    /// The mount strategy in force.
    #[getter]
    fn mount_strategy(&self) -> PyResult<&'static str> {
        Ok(self.driver()?.mount_strategy().as_str())
    }

    /// Kernel mount features found by probing (cached per store and boot), minus the
    /// disabled ones: ``fsopen``, ``lowerdir+``, ``lowerdir+fd``, ``O_PATH-fds``,
    /// ``index-param``, ``userxattr``.
    fn features(&self, py: Python<'_>) -> PyResult<Vec<&'static str>> {
        self.run(py, |d| Ok(d.features().names()))
    }

    /// Docker's ``Get``: mounts the layer (or takes another reference to its mount) and
    /// returns the merged path. A base layer returns its ``diff`` path without mounting.
    ///
    /// References are counted across threads and processes; each ``get`` needs one
    /// :meth:`put`. References of a process that dies are dropped by the next ``get``.
    ///
    /// :param mount_label: SELinux label (``context=``).
    /// :param readonly: mount without an upper even if the layer is not committed.
    /// :param volatile: mount with ``volatile`` (no syncs); for throwaway containers.
    /// :param persistent: the reference belongs to the store and survives this process.
    /// :raises LayerNotFoundError: no such layer.
    /// :raises BusyError: already mounted with the other read-only/read-write mode.
    /// :raises PermissionDeniedError: mounting needs privileges this process lacks.
    #[pyo3(signature = (id, mount_label = None, *, readonly = false, volatile = false, persistent = false))]
    fn get(
        &self,
        py: Python<'_>,
        id: String,
        mount_label: Option<String>,
        readonly: bool,
        volatile: bool,
        persistent: bool,
    ) -> PyResult<OsString> {
        let opts = MountOpts { mount_label, readonly, volatile, persistent };
        // An OsString becomes a str the way os.fsdecode() makes one, so any path round-trips.
        Ok(self.run(py, move |d| d.get_with(&id, &opts))?.into_os_string())
    }

    /// Docker's ``Put``: drops one reference; unmounts with the last one.
    ///
    /// :raises InvalidArgumentError: the layer is not mounted.
    /// :raises LayerNotFoundError: no such layer.
    fn put(&self, py: Python<'_>, id: String) -> PyResult<()> {
        self.run(py, move |d| d.put(&id))
    }

    /// A context manager: ``get`` on entry, yielding the merged path as a
    /// ``pathlib.Path``, and ``put`` on exit, also when the body raises::
    ///
    ///     with driver.mounted("ctr") as root:
    ///         (root / "etc" / "hostname").write_text("box\n")
    #[pyo3(signature = (id, mount_label = None, *, readonly = false, volatile = false))]
    fn mounted(slf: Py<Self>, id: String, mount_label: Option<String>, readonly: bool, volatile: bool) -> Mounted {
        let opts = MountOpts { mount_label, readonly, volatile, persistent: false };
        Mounted { driver: slf, id, opts, entered: Mutex::new(0) }
    }

    /// Every layer this store has mounted (or found mounted), with reference counts.
    fn mounts(&self, py: Python<'_>) -> PyResult<Vec<Mount>> {
        let mounts = self.run(py, |d| d.mounts())?;
        Ok(mounts
            .into_iter()
            .map(|m| Mount {
                id: m.id,
                path: m.path,
                count: m.count,
                persistent: m.persistent,
                processes: m.processes,
                readonly: m.readonly,
                method: m.method,
                mounted: m.mounted,
            })
            .collect())
    }

    /// Docker's ``Cleanup``: unmounts every layer of the store, whoever holds it, and
    /// drops all references.
    fn cleanup(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |d| d.cleanup())
    }
}

/// Returned by :meth:`Driver.mounted`; use it in a ``with`` statement.
#[pyclass(frozen, module = "ovl2")]
pub(crate) struct Mounted {
    driver: Py<PyDriver>,
    id: String,
    opts: MountOpts,
    /// Entries not yet exited; each holds one reference.
    entered: Mutex<u32>,
}

#[pymethods]
impl Mounted {
    /// Gets the layer and returns its merged path.
    fn __enter__(&self, py: Python<'_>) -> PyResult<PathBuf> {
        let (id, opts) = (self.id.clone(), self.opts.clone());
        let path = self.driver.get().run(py, move |d| d.get_with(&id, &opts))?;
        *self.entered.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(path)
    }

    /// Puts the layer; never suppresses the exception.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        {
            let mut entered = self.entered.lock().unwrap_or_else(|e| e.into_inner());
            if *entered == 0 {
                return Err(PyRuntimeError::new_err("ovl2 mount context exited without being entered"));
            }
            *entered -= 1;
        }
        let id = self.id.clone();
        self.driver.get().run(py, move |d| d.put(&id))?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("<ovl2.Mounted id={} readonly={}>", repr(py, &self.id)?, repr(py, self.opts.readonly)?))
    }
}

/// Docker spells "no parent" as `""`; Python callers may use either that or None.
pub(crate) fn docker_parent(parent: Option<String>) -> Option<String> {
    parent.filter(|p| !p.is_empty())
}
