//! The open store: its home and the fds of `l/` and `.ovl2/`, the options, the owner, the
//! store lock, and every read of a layer's `link` and `lower` (one place, so each caller
//! gets the same answer and the same error for a damaged layer).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, OFlags};
use rustix::io::Errno;

use crate::error::{Context, Error, Result};
use crate::fsutil::{self, cstr, LockMode, Owner};
use crate::id::LayerId;
use crate::layout;
use crate::lock::{lock_store, StoreLock};
use crate::mount::state::MountState;
use crate::options::{depth_of, OpenMode, Options, KERNEL_MAX_DEPTH};

/// An open layer store, behind the public [`Driver`](crate::Driver). It also owns this
/// handle's mount state (references held, features in force), so the mount operations can
/// work on it without knowing the `Driver`.
#[derive(Debug)]
pub(crate) struct Store {
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

/// What is on disk for one layer: its `link` and `lower` files as read. A file that cannot
/// be read (the wrong type, too large, unreadable) keeps its error instead of failing the
/// read: the scans over every layer (`layers`, `check`, finding children or a short id) go
/// on past one damaged layer, and [`LayerFiles::strict`] raises it for the operations that
/// need the file.
#[derive(Debug)]
pub(crate) struct LayerFiles {
    pub(crate) link: std::io::Result<Option<Vec<u8>>>,
    pub(crate) lower: std::io::Result<Option<Vec<u8>>>,
}

/// A layer's `link` and `lower` contents, `None` for a file that is not there.
pub(crate) type LinkAndLower = (Option<Vec<u8>>, Option<Vec<u8>>);

impl LayerFiles {
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

    /// Both files' contents, or the first read error, naming the file (`<id>/link`).
    pub(crate) fn strict(self, id: &str) -> Result<LinkAndLower> {
        let link = self.link.ctx(|| format!("reading {id}/link"))?;
        let lower = self.lower.ctx(|| format!("reading {id}/lower"))?;
        Ok((link, lower))
    }
}

/// Parses layer `id`'s `lower` file content (`None`: a base layer, no file) into its chain of
/// short ids, nearest first. The one place a malformed `lower` becomes an error, so every
/// operation reports it alike.
pub(crate) fn parse_chain(id: &str, lower: Option<&[u8]>) -> Result<Vec<String>> {
    let Some(lower) = lower else { return Ok(Vec::new()) };
    let lids = layout::parse_lower(lower).map_err(|m| corrupt_layer(id, &m.describe("lower")))?;
    Ok(lids.into_iter().map(str::to_owned).collect())
}

impl Store {
    /// Opens (or, as `options.open_mode` allows, creates) the store's directories and checks
    /// that its filesystem can carry overlay layers. Repair on open is the caller's next step.
    pub(crate) fn open(home: &Path, options: Options) -> Result<Store> {
        if options.max_depth == 0 || options.max_depth > KERNEL_MAX_DEPTH {
            return Err(Error::InvalidArgument(format!(
                "max_depth must be between 1 and {KERNEL_MAX_DEPTH}, got {}",
                options.max_depth
            )));
        }
        let mut mounts = MountState::new(options.mount_strategy, &options.disabled_features)?;
        let home = clean_absolute(home)?;
        let owner = Owner::current();
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
            set_mode_owner_fd(&home_fd, layout::HOME_MODE, Owner { gid: root.gid, ..owner })
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
        let store = Store { home, home_fd, links_fd, private_fd, staging_fd, opts: options, owner, root, mounts };
        // Overlayfs needs d_type to tell whiteouts from files; Docker refuses such stores too.
        if !store.supports_d_type()? {
            return Err(Error::Unsupported(format!(
                "the filesystem under {} does not report file types in directory entries (d_type); \
                 overlay cannot work on it (an xfs filesystem needs ftype=1)",
                store.home.display()
            )));
        }
        Ok(store)
    }

    /// The work of [`Driver::home`](crate::Driver::home).
    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    /// The work of [`Driver::options`](crate::Driver::options).
    pub(crate) fn options(&self) -> &Options {
        &self.opts
    }

    /// The store lock: shared for readers, exclusive for layout changes (refused read-only).
    pub(crate) fn lock(&self, mode: LockMode) -> Result<StoreLock> {
        if mode == LockMode::Exclusive {
            self.writable("changing the store")?;
        }
        match &self.private_fd {
            Some(p) => lock_store(p, mode, self.opts.open_mode == OpenMode::ReadOnly),
            // A Docker-written store opened read-only: no ovl2 writer has been here.
            None => Ok(StoreLock::none()),
        }
    }

    /// The work of [`Driver::is_read_only`](crate::Driver::is_read_only).
    pub(crate) fn is_read_only(&self) -> bool {
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

    /// Refuses a layer whose lower chain is deeper than the store allows (Docker's rule).
    pub(crate) fn check_depth(&self, id: &str, lowers: &[impl AsRef<str>]) -> Result<()> {
        let depth = depth_of(lowers);
        if depth > self.opts.max_depth {
            return Err(Error::MaxDepth { id: id.to_owned(), depth, limit: self.opts.max_depth });
        }
        Ok(())
    }

    pub(crate) fn exists_unlocked(&self, id: &str) -> Result<bool> {
        // The id as it is (no C string allocated): `exists` is one stat relative to home.
        Ok(fsutil::file_type(&self.home_fd, id).ctx(|| format!("stat of layer {id:?}"))? == Some(FileType::Directory))
    }

    /// Ids of all layer directories in `home`, sorted (an entry that is no valid id is not
    /// a layer).
    pub(crate) fn layer_ids(&self) -> Result<Vec<LayerId>> {
        let entries = fsutil::list_dir(&self.home_fd).ctx(|| format!("listing {}", self.home.display()))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.file_type == FileType::Directory)
            .filter_map(|e| LayerId::from_entry(e.name))
            .collect())
    }

    /// Opens layer `id`'s directory, `None` when there is no such layer.
    pub(crate) fn open_layer_dir(&self, id: &LayerId) -> Result<Option<OwnedFd>> {
        // A symlink or file under a layer's name is not a layer (as for `exists`).
        fsutil::open_dir_if_any(&self.home_fd, id.as_c_str()).map_err(|e| Error::io(format!("opening layer {id:?}"), e))
    }

    /// Opens layer `id`'s directory for an operation on it: the one place a missing layer
    /// becomes [`Error::NotFound`] (a file missing inside it is an I/O error, never that).
    pub(crate) fn layer_dir(&self, id: &LayerId) -> Result<OwnedFd> {
        self.open_layer_dir(id)?.ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Reads a layer's `link` and `lower` (`None` when there is no such layer); see
    /// [`LayerFiles`] for what a damaged file gives.
    pub(crate) fn read_layer(&self, id: &LayerId) -> Result<Option<LayerFiles>> {
        let Some(dir) = self.open_layer_dir(id)? else { return Ok(None) };
        Ok(Some(LayerFiles {
            link: fsutil::read_small(&dir, layout::LINK),
            lower: fsutil::read_small(&dir, layout::LOWER),
        }))
    }

    /// [`Store::read_layer`] for an operation on this layer: a missing layer is `NotFound`,
    /// an unreadable `link` or `lower` an error naming it.
    pub(crate) fn read_layer_files(&self, id: &LayerId) -> Result<LinkAndLower> {
        self.read_layer(id)?.ok_or_else(|| Error::NotFound(id.to_string()))?.strict(id)
    }

    /// Layer `id`'s lower chain as short ids, nearest first (empty for a base layer).
    pub(crate) fn lower_chain(&self, id: &LayerId) -> Result<Vec<String>> {
        let (_, lower) = self.read_layer_files(id)?;
        parse_chain(id, lower.as_deref())
    }

    /// The layer a short id names: through `l/<short>`, else by scanning `link` files.
    pub(crate) fn resolve_short_id(&self, lid: &str) -> Result<Option<LayerId>> {
        let clid = cstr(lid).ctx(|| format!("reading l/{lid}"))?;
        if let Some(t) = fsutil::read_link(&self.links_fd, &clid).ctx(|| format!("reading l/{lid}"))? {
            if let Some(id) = layout::id_from_link_target(&t).and_then(|id| LayerId::new(id).ok()) {
                if self.exists_unlocked(&id)? {
                    return Ok(Some(id));
                }
            }
        }
        for id in self.layer_ids()? {
            if let Some(meta) = self.read_layer(&id)? {
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

    /// Whether readdir on the backing filesystem reports entry types (Docker refuses without).
    /// Looks at `l/` in `home`, which every store has (`.ovl2/` may be missing read-only).
    pub(crate) fn supports_d_type(&self) -> Result<bool> {
        let fd = rustix::fs::openat(
            &self.home_fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ctx(|| format!("opening {}", self.home.display()))?;
        let mut dir = rustix::fs::Dir::read_from(&fd).ctx(|| format!("reading {}", self.home.display()))?;
        while let Some(ent) = dir.read() {
            let ent = ent.ctx(|| format!("reading {}", self.home.display()))?;
            if ent.file_name() == layout::LINK_DIR {
                return Ok(ent.file_type() != FileType::Unknown);
            }
        }
        Ok(false)
    }
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
            return Err(Error::StoreNotFound(home.to_owned()));
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

fn set_mode_owner_fd(fd: &OwnedFd, mode: rfs::Mode, owner: Owner) -> std::io::Result<()> {
    let st = rfs::fstat(fd)?;
    if !owner.owns(&st) {
        owner.fchown(fd)?;
    }
    if rfs::Mode::from_raw_mode(st.st_mode) != mode {
        rfs::fchmod(fd, mode)?;
    }
    Ok(())
}

/// Absolute and lexically clean (as Go's `filepath.Clean`), so metadata paths match Docker's.
fn clean_absolute(p: &Path) -> Result<PathBuf> {
    if p.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("store home must not be empty".into()));
    }
    let abs = std::path::absolute(p).ctx(|| format!("resolving {}", p.display()))?;
    // Rooted, so the cleaned path never climbs above `/`.
    let parts = crate::lexical::clean(abs.as_os_str().as_bytes()).unwrap_or_default();
    let mut out = PathBuf::from("/");
    out.extend(parts.into_iter().map(std::ffi::OsStr::from_bytes));
    Ok(out)
}

pub(crate) fn corrupt_layer(id: &str, what: &str) -> Error {
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
