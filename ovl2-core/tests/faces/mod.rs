//! One test body, every face (libpathrs' way: one test trait implemented by the Rust `Root`
//! and by the C-ABI `CapiRoot`).
//!
//! [`Face`] is the store as a test sees it: the public `Driver` operations the format, mount,
//! archive and container suites use, returning core's plain types and a [`FaceError`] (kind,
//! message, errno) that every face fills the same way. `impl Face for Driver` is the Rust
//! face; `ovl2-ffi/tests/capi/mod.rs` is the C face (`CapiDriver`, calling the exported
//! `ovl2_*` functions). The shared bodies are `faces/{format,mount,archive,container}.rs`,
//! each generic over `D: Face` and announced by `face_test!(name)`.
//!
//! Where this lives, and why: the bodies are files included by path, not a crate. ovl2-ffi
//! depends on ovl2-core, so a test-support crate holding the C face would have to be a
//! dev-dependency of ovl2-core that depends on ovl2-core again (a dev-dependency cycle). So
//! ovl2-core's tests (`tests/format.rs`, ...) include these files and run the Rust face, and
//! ovl2-ffi's tests (`ovl2-ffi/tests/format.rs`, ...) include the same files with
//! `#[path = "../../ovl2-core/tests/faces/..."]` and run the C face. Each face runs once; a
//! body added here runs on both without being listed anywhere else.
//!
//! Each test crate says which face it runs by defining `face_test!` before including the
//! bodies, with [`face_test_on!`]:
//! `macro_rules! face_test { ($n:ident) => { face_test_on!(rust = ovl2_core::Driver, $n); }; }`.
//! A body `foo` then runs as the test `shared::foo::rust` (or `shared::foo::c`).
#![allow(dead_code, missing_docs)]

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ovl2_core::{
    ApplyOpts, ApplyStats, Change, ContainerOpts, CreateOpts, DiffOpts, DiffStats, Driver, ErrorKind, LayerInfo,
    Metadata, MountInfo, MountOpts, Options, Problem, RemoveOpts, RepairReport, Usage,
};

/// Emits `mod <body> { #[test] fn <face>() }`, which runs the shared body `<body>` on the
/// face type `$ty`. A module and a function may share a name (they live in different
/// namespaces), so the test sits next to its body without renaming it.
macro_rules! face_test_on {
    ($face:ident = $ty:ty, $name:ident) => {
        mod $name {
            #[test]
            fn $face() {
                super::$name::<$ty>();
            }
        }
    };
}

/// A failed call as every face reports it: the kind, the full message and the errno. Faces
/// must agree on all three, so the shared bodies compare them the way they compared
/// `ovl2_core::Error` before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceError {
    pub kind: ErrorKind,
    pub message: String,
    pub errno: Option<i32>,
}

impl FaceError {
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for FaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FaceError {}

impl From<ovl2_core::Error> for FaceError {
    fn from(e: ovl2_core::Error) -> Self {
        FaceError { kind: e.kind(), message: e.to_string(), errno: e.errno() }
    }
}

pub type R<T = ()> = Result<T, FaceError>;

/// The store through one face. Method names and arguments are `Driver`'s, so a body reads as
/// it did when it called `Driver` directly.
pub trait Face: Sized + Send + Sync + fmt::Debug + 'static {
    /// Whether this face can pass a string with an interior NUL (a C string cannot hold one,
    /// so the C face cannot even express such an id; core's refusal of it is a Rust-face
    /// check).
    const STRINGS_CAN_HOLD_NUL: bool;

    fn open(home: impl AsRef<Path>, options: Options) -> R<Self>;
    fn home(&self) -> &Path;
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> R;
    fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> R;
    fn remove(&self, id: &str, force: bool) -> R;
    fn remove_with(&self, id: &str, opts: RemoveOpts) -> R;
    fn remove_tree(&self, id: &str, force: bool) -> R<Vec<String>>;
    fn exists(&self, id: &str) -> R<bool>;
    fn parent(&self, id: &str) -> R<Option<String>>;
    fn metadata(&self, id: &str) -> R<Metadata>;
    fn layers(&self) -> R<Vec<LayerInfo>>;
    fn status(&self) -> R<Vec<(String, String)>>;
    fn check(&self) -> R<Vec<Problem>>;
    fn repair(&self) -> R<RepairReport>;
    fn get(&self, id: &str, mount_label: Option<&str>) -> R<PathBuf>;
    fn get_with(&self, id: &str, opts: &MountOpts) -> R<PathBuf>;
    fn put(&self, id: &str) -> R;
    fn mounts(&self) -> R<Vec<MountInfo>>;
    fn cleanup(&self) -> R;
    fn apply_diff_with(&self, id: &str, parent: Option<&str>, reader: impl Read, opts: &ApplyOpts<'_>)
        -> R<ApplyStats>;
    fn diff(&self, id: &str, parent: Option<&str>, writer: impl Write) -> R<DiffStats>;
    fn diff_small(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &DiffOpts,
        limit: u64,
    ) -> R<Option<(Vec<u8>, DiffStats)>>;
    fn diff_size(&self, id: &str, parent: Option<&str>) -> R<u64>;
    fn changes(&self, id: &str, parent: Option<&str>) -> R<Vec<Change>>;
    fn create_container(&self, ctr: &str, image_top: &str, opts: &ContainerOpts) -> R;
    fn remove_container(&self, ctr: &str, force: bool) -> R;
    fn import_chain<Rd: Read>(
        &self,
        top: &str,
        parent: Option<&str>,
        tars: Vec<Rd>,
        opts: &ApplyOpts<'_>,
    ) -> R<Vec<(String, ApplyStats)>>;
    fn usage(&self, id: &str) -> R<Usage>;

    fn apply_diff(&self, id: &str, parent: Option<&str>, reader: impl Read) -> R<ApplyStats> {
        self.apply_diff_with(id, parent, reader, &ApplyOpts::default())
    }

    /// Opens with the default options (sync on), as `common::open` does for `Driver`.
    fn open_default(home: &Path) -> Self {
        Self::open(home, Options::default()).unwrap()
    }

    /// Opens without fsync, as `common::open_fast` does for `Driver`.
    fn open_fast(home: &Path) -> Self {
        Self::open(home, Options { sync: false, ..Options::default() }).unwrap()
    }
}

/// The Rust face: `Driver` itself, errors converted to [`FaceError`].
impl Face for Driver {
    const STRINGS_CAN_HOLD_NUL: bool = true;

    fn open(home: impl AsRef<Path>, options: Options) -> R<Self> {
        Ok(Driver::open(home, options)?)
    }
    fn home(&self) -> &Path {
        Driver::home(self)
    }
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> R {
        Ok(Driver::create(self, id, parent, opts)?)
    }
    fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> R {
        Ok(Driver::create_rw(self, id, parent, opts)?)
    }
    fn remove(&self, id: &str, force: bool) -> R {
        Ok(Driver::remove(self, id, force)?)
    }
    fn remove_with(&self, id: &str, opts: RemoveOpts) -> R {
        Ok(Driver::remove_with(self, id, opts)?)
    }
    fn remove_tree(&self, id: &str, force: bool) -> R<Vec<String>> {
        Ok(Driver::remove_tree(self, id, force)?)
    }
    fn exists(&self, id: &str) -> R<bool> {
        Ok(Driver::exists(self, id)?)
    }
    fn parent(&self, id: &str) -> R<Option<String>> {
        Ok(Driver::parent(self, id)?)
    }
    fn metadata(&self, id: &str) -> R<Metadata> {
        Ok(Driver::metadata(self, id)?)
    }
    fn layers(&self) -> R<Vec<LayerInfo>> {
        Ok(Driver::layers(self)?)
    }
    fn status(&self) -> R<Vec<(String, String)>> {
        Ok(Driver::status(self)?)
    }
    fn check(&self) -> R<Vec<Problem>> {
        Ok(Driver::check(self)?)
    }
    fn repair(&self) -> R<RepairReport> {
        Ok(Driver::repair(self)?)
    }
    fn get(&self, id: &str, mount_label: Option<&str>) -> R<PathBuf> {
        Ok(Driver::get(self, id, mount_label)?)
    }
    fn get_with(&self, id: &str, opts: &MountOpts) -> R<PathBuf> {
        Ok(Driver::get_with(self, id, opts)?)
    }
    fn put(&self, id: &str) -> R {
        Ok(Driver::put(self, id)?)
    }
    fn mounts(&self) -> R<Vec<MountInfo>> {
        Ok(Driver::mounts(self)?)
    }
    fn cleanup(&self) -> R {
        Ok(Driver::cleanup(self)?)
    }
    fn apply_diff_with(
        &self,
        id: &str,
        parent: Option<&str>,
        reader: impl Read,
        opts: &ApplyOpts<'_>,
    ) -> R<ApplyStats> {
        Ok(Driver::apply_diff_with(self, id, parent, reader, opts)?)
    }
    fn apply_diff(&self, id: &str, parent: Option<&str>, reader: impl Read) -> R<ApplyStats> {
        Ok(Driver::apply_diff(self, id, parent, reader)?)
    }
    fn diff(&self, id: &str, parent: Option<&str>, writer: impl Write) -> R<DiffStats> {
        Ok(Driver::diff(self, id, parent, writer)?)
    }
    fn diff_small(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &DiffOpts,
        limit: u64,
    ) -> R<Option<(Vec<u8>, DiffStats)>> {
        Ok(Driver::diff_small(self, id, parent, opts, limit)?)
    }
    fn diff_size(&self, id: &str, parent: Option<&str>) -> R<u64> {
        Ok(Driver::diff_size(self, id, parent)?)
    }
    fn changes(&self, id: &str, parent: Option<&str>) -> R<Vec<Change>> {
        Ok(Driver::changes(self, id, parent)?)
    }
    fn create_container(&self, ctr: &str, image_top: &str, opts: &ContainerOpts) -> R {
        Ok(Driver::create_container(self, ctr, image_top, opts)?)
    }
    fn remove_container(&self, ctr: &str, force: bool) -> R {
        Ok(Driver::remove_container(self, ctr, force)?)
    }
    fn import_chain<Rd: Read>(
        &self,
        top: &str,
        parent: Option<&str>,
        tars: Vec<Rd>,
        opts: &ApplyOpts<'_>,
    ) -> R<Vec<(String, ApplyStats)>> {
        Ok(Driver::import_chain(self, top, parent, tars, opts)?)
    }
    fn usage(&self, id: &str) -> R<Usage> {
        Ok(Driver::usage(self, id)?)
    }
}
