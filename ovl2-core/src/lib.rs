//! ovl2-core: Docker's overlay2 layer store as a library.
//!
//! The store keeps layers in exactly the on-disk format of Docker's `overlay2` graph driver
//! (`<id>/diff`, `link`, `lower`, `work`, `committed`, and short-id symlinks under `l/`), so
//! Docker can use a store written by ovl2 and the other way round. ovl2 adds what Docker
//! lacks: crash-safe create and remove (stage, fsync, rename), self-repair, cross-process
//! locking, and chains up to the kernel's 500 layers.
//!
//! ```no_run
//! use ovl2_core::{Driver, Options, CreateOpts};
//! let d = Driver::open("/var/lib/ovl2", Options::default())?;
//! d.create("base", None, &CreateOpts::default())?;
//! d.create("app", Some("base"), &CreateOpts::default())?;
//! assert_eq!(d.parent("app")?.as_deref(), Some("base"));
//! # Ok::<(), ovl2_core::Error>(())
//! ```

mod archive;
mod check;
mod container;
mod driver;
mod error;
mod forkgen;
mod fsutil;
pub mod id;
mod kernel;
mod layers;
pub mod layout;
mod lexical;
mod lock;
mod mount;
mod options;
pub mod snapshots;
mod staging;
mod status;
mod store;
mod usage;

pub use archive::{
    detect_compression, import_chain_ids, whiteout, ApplyOpts, ApplyProgress, ApplyStats, Change, ChangeKind,
    Compression, DiffOpts, DiffStats,
};
pub use check::{Problem, ProblemKind, RepairReport};
pub use container::{docker_init_entries, init_layer_id, ContainerOpts, InitEntry, InitKind};
pub use driver::Driver;
pub use error::{Error, ErrorKind, Result};
pub use fsutil::Owner;
pub use layers::{LayerInfo, Metadata};
pub use mount::{Features, MountInfo, MountMethod, MountOpts, MountStrategy};
pub use options::{depth_of, CreateOpts, OpenMode, Options, RemoveOpts, DOCKER_MAX_DEPTH, KERNEL_MAX_DEPTH};
/// The id and mode types of [`Owner`] and the [`layout`] constants (rustix's, re-exported so
/// callers need not depend on rustix to name them).
pub use rustix::fs::{Gid, Mode, Uid};
pub use usage::Usage;

/// The library version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
