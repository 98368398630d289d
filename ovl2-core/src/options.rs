//! How a store is opened and how layers are made and removed: the option types of the public
//! API and the depth limits, with nothing else, so every module can take them.

use std::collections::BTreeMap;

use crate::fsutil::Owner;
use crate::mount::engine::MountStrategy;

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
    /// Repair what a crash or another tool left behind when opening (see [`Driver::repair`](crate::Driver::repair)),
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

/// What [`Driver::open`](crate::Driver::open) may do to `home`. Whatever the mode, an existing directory that is
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

/// Per-layer options for [`Driver::create`](crate::Driver::create) and [`Driver::create_rw`](crate::Driver::create_rw), as Docker's `CreateOpts`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Docker's `--storage-opt` map. Docker's overlay2 knows only `size` (xfs project quotas).
    pub storage_opt: BTreeMap<String, String>,
    /// SELinux mount label; kept for API parity, used when the layer is mounted.
    pub mount_label: Option<String>,
}

/// How [`Driver::remove_with`](crate::Driver::remove_with) removes a layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveOpts {
    /// Unmount the layer first, whoever holds it; without it a mounted layer is refused, and
    /// so is a layer that is a containerd snapshot in `ovl2-snapshotter`'s index.
    pub force: bool,
    /// Remove the layer even when other layers build on it, as Docker's graphdriver `Remove`
    /// does (it never looks at children). Those layers become orphans that cannot mount,
    /// which `check` reports; only for adapters that must behave exactly like Docker.
    pub ignore_children: bool,
}
