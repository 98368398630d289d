//! The values the module hands to Python: layers, problems, mounts and the stats of an
//! apply or export. Immutable records with Python-style reprs; names of core enums come
//! from their `as_str`, the same names the CLI and the C ABI use.

use std::path::PathBuf;

use ovl2_core::{InitEntry, InitKind};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::IntoPyObjectExt;

/// One mounted layer as :meth:`Driver.mounts` reports it.
#[pyclass(frozen, eq, module = "ovl2")]
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Layer id.
    #[pyo3(get)]
    pub(crate) id: String,
    /// The mount point, ``<home>/<id>/merged``.
    #[pyo3(get)]
    pub(crate) path: PathBuf,
    /// All references.
    #[pyo3(get)]
    pub(crate) count: u64,
    /// References held by the store (``get(..., persistent=True)``).
    #[pyo3(get)]
    pub(crate) persistent: u64,
    /// References held by live processes.
    #[pyo3(get)]
    pub(crate) processes: u64,
    /// Mounted without an upper.
    #[pyo3(get)]
    pub(crate) readonly: bool,
    /// How it was mounted: ``new-fd``, ``legacy-relative``, ...
    #[pyo3(get)]
    pub(crate) method: String,
    /// Whether the kernel really has it mounted.
    #[pyo3(get)]
    pub(crate) mounted: bool,
}

#[pymethods]
impl Mount {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Mount(id={}, count={}, readonly={}, method={}, mounted={})",
            repr(py, &self.id)?,
            self.count,
            repr(py, self.readonly)?,
            repr(py, &self.method)?,
            repr(py, self.mounted)?,
        ))
    }
}

/// What :meth:`Driver.apply_diff` did.
#[pyclass(frozen, module = "ovl2")]
pub(crate) struct ApplyStats {
    /// Docker's ApplyDiff size: lstat sizes of the layer's non-directories, hardlinks once.
    #[pyo3(get)]
    pub(crate) size: u64,
    /// ``sha256:<hex>`` of the uncompressed tar (the layer's DiffID).
    #[pyo3(get)]
    pub(crate) digest: String,
    /// Length of the uncompressed tar.
    #[pyo3(get)]
    pub(crate) tar_bytes: u64,
    /// How the input was compressed.
    #[pyo3(get)]
    pub(crate) compression: String,
    /// Tar entries read (extension headers not counted).
    #[pyo3(get)]
    pub(crate) entries: u64,
    /// Regular files written.
    #[pyo3(get)]
    pub(crate) files: u64,
    /// Directories created or updated.
    #[pyo3(get)]
    pub(crate) dirs: u64,
    /// Symlinks created.
    #[pyo3(get)]
    pub(crate) symlinks: u64,
    /// Hardlinks created.
    #[pyo3(get)]
    pub(crate) hardlinks: u64,
    /// ``.wh.NAME`` entries turned into overlay whiteouts.
    #[pyo3(get)]
    pub(crate) whiteouts: u64,
    /// Directories marked opaque (``.wh..wh..opq``).
    #[pyo3(get)]
    pub(crate) opaque_dirs: u64,
    /// Character and block devices and fifos created.
    #[pyo3(get)]
    pub(crate) special: u64,
    /// Entries deliberately not applied (PAX global headers, AUFS metadata, devices in a
    /// user namespace).
    #[pyo3(get)]
    pub(crate) skipped: u64,
    /// Overlay-private xattrs found and dropped.
    #[pyo3(get)]
    pub(crate) dropped_xattrs: u64,
}

impl From<ovl2_core::ApplyStats> for ApplyStats {
    fn from(s: ovl2_core::ApplyStats) -> Self {
        ApplyStats {
            size: s.size,
            digest: s.digest,
            tar_bytes: s.tar_bytes,
            compression: s.compression.as_str().to_owned(),
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

#[pymethods]
impl ApplyStats {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "ApplyStats(size={}, digest={}, compression={}, entries={}, files={}, dirs={}, whiteouts={})",
            self.size,
            repr(py, &self.digest)?,
            repr(py, &self.compression)?,
            self.entries,
            self.files,
            self.dirs,
            self.whiteouts,
        ))
    }
}

/// What :meth:`Driver.diff` wrote.
#[pyclass(frozen, module = "ovl2")]
pub(crate) struct DiffStats {
    /// Length of the tar stream.
    #[pyo3(get)]
    pub(crate) tar_bytes: u64,
    /// ``sha256:<hex>`` of the tar stream (the layer's DiffID); None with ``digest=False``.
    #[pyo3(get)]
    pub(crate) digest: Option<String>,
    /// Tar entries written (whiteouts and opaque markers included).
    #[pyo3(get)]
    pub(crate) entries: u64,
}

#[pymethods]
impl DiffStats {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "DiffStats(tar_bytes={}, digest={}, entries={})",
            self.tar_bytes,
            repr(py, &self.digest)?,
            self.entries
        ))
    }
}

/// What :meth:`Driver.usage` measured. Immutable, comparable.
#[pyclass(frozen, eq, module = "ovl2")]
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes allocated (``st_blocks`` × 512, as ``du`` counts), every inode once.
    #[pyo3(get)]
    pub(crate) bytes: u64,
    /// Distinct inodes: hardlinks once, the layer's ``diff`` directory included.
    #[pyo3(get)]
    pub(crate) inodes: u64,
}

impl From<ovl2_core::Usage> for Usage {
    fn from(u: ovl2_core::Usage) -> Self {
        Usage { bytes: u.bytes, inodes: u.inodes }
    }
}

#[pymethods]
impl Usage {
    fn __repr__(&self) -> String {
        format!("Usage(bytes={}, inodes={})", self.bytes, self.inodes)
    }
}

/// One layer as :meth:`Driver.layers` reports it. Immutable, comparable, hashable.
#[pyclass(frozen, eq, hash, module = "ovl2")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Layer {
    /// The caller's id.
    #[pyo3(get)]
    pub(crate) id: String,
    /// The direct parent, None for a base layer.
    #[pyo3(get)]
    pub(crate) parent: Option<String>,
    /// The number of lower layers (entries in ``lower``): 0 for a base layer.
    #[pyo3(get)]
    pub(crate) depth: usize,
    /// The 26-character name under ``l/``, when the ``link`` file is readable.
    #[pyo3(get)]
    pub(crate) short_id: Option<String>,
    /// Not a base layer, but its parent is gone from the store (``parent`` is then None
    /// and it cannot mount); ``check()`` names the command that resolves it.
    #[pyo3(get)]
    pub(crate) orphan: bool,
}

#[pymethods]
impl Layer {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Layer(id={}, parent={}, depth={})", repr(py, &self.id)?, repr(py, &self.parent)?, self.depth))
    }
}

/// One problem :meth:`Driver.check` found.
#[pyclass(frozen, eq, module = "ovl2")]
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The layer concerned, None for store-wide problems.
    #[pyo3(get)]
    pub(crate) layer: Option<String>,
    /// The kind as a snake_case name: ``stale_staging``, ``missing_link``, ``dangling_short_link``, ...
    #[pyo3(get)]
    pub(crate) kind: String,
    /// A sentence naming the file and what was found.
    #[pyo3(get)]
    pub(crate) detail: String,
    /// Whether ``check(repair=True)`` can fix it.
    #[pyo3(get)]
    pub(crate) repairable: bool,
    /// Whether this call fixed it (only ever True with ``repair=True``).
    #[pyo3(get)]
    pub(crate) repaired: bool,
}

impl Problem {
    pub(crate) fn new(p: ovl2_core::Problem, repaired: bool) -> Self {
        let kind = p.kind.as_str().to_owned();
        Problem { layer: p.layer, kind, detail: p.detail, repairable: p.repairable, repaired }
    }
}

#[pymethods]
impl Problem {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Problem(layer={}, kind={}, repairable={}, repaired={}, detail={})",
            repr(py, &self.layer)?,
            repr(py, &self.kind)?,
            repr(py, self.repairable)?,
            repr(py, self.repaired)?,
            repr(py, &self.detail)?,
        ))
    }
}

/// Python's `repr()` of a value, so reprs quote strings the way Python users expect.
pub(crate) fn repr<'py, T: IntoPyObject<'py>>(py: Python<'py>, value: T) -> PyResult<String> {
    Ok(value.into_bound_py_any(py)?.repr()?.to_string())
}

/// An init entry from Python's `("dir", path)`, `("file", path)` or `("symlink", path, target)`.
pub(crate) fn init_entry_from_py(entry: Vec<String>) -> PyResult<InitEntry> {
    match entry.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["dir", path] => Ok(InitEntry::dir(path)),
        ["file", path] => Ok(InitEntry::file(path)),
        ["symlink", path, target] => Ok(InitEntry::symlink(path, target)),
        _ => {
            let shown: Vec<String> = entry.iter().map(|s| format!("'{s}'")).collect();
            Err(PyValueError::new_err(format!(
                "init entry ({}): expected ('dir', path), ('file', path) or ('symlink', path, target)",
                shown.join(", ")
            )))
        }
    }
}

/// Docker's init entries (``/dev/pts``, ``/etc/hosts``, ``/.dockerenv``, ...), for
/// extending and passing to :meth:`Driver.create_container`.
#[pyfunction]
pub(crate) fn docker_init_entries(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyTuple>>> {
    ovl2_core::docker_init_entries()
        .into_iter()
        .map(|e| match e.kind {
            InitKind::Dir => PyTuple::new(py, ["dir".to_owned(), e.path]),
            InitKind::File => PyTuple::new(py, ["file".to_owned(), e.path]),
            InitKind::Symlink(target) => PyTuple::new(py, ["symlink".to_owned(), e.path, target]),
        })
        .collect()
}
