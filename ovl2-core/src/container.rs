//! Container layers as Docker makes them: `<ctr>-init` on the image top, filled with the
//! entries the runtime later bind-mounts or rewrites, then `<ctr>` on top of it.
//!
//! The init entries are made through a real mount of the init layer, as Docker's
//! `initlayer.Setup` does, so copy-ups and whiteouts land in the init layer's `diff` exactly as
//! they would under Docker. All of it is fd-relative inside the mount: image content (for
//! example a symlinked `/etc`) is never followed out of the container's root.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fsutil::{self, cstr, Owner};
use crate::id::LayerId;
use crate::mount::MountOpts;
use crate::options::{CreateOpts, RemoveOpts};
use crate::staging::PendingRecord;
use crate::store::Store;

/// What an init entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitKind {
    /// A directory, 0755.
    Dir,
    /// An empty regular file, 0755 (a bind-mount target).
    File,
    /// A symlink to the given target.
    Symlink(String),
}

/// One entry of the init layer, by absolute path inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitEntry {
    /// Absolute path inside the container, e.g. `/etc/hosts`.
    pub path: String,
    /// What to create there.
    pub kind: InitKind,
}

impl InitEntry {
    /// A directory entry.
    pub fn dir(path: &str) -> InitEntry {
        InitEntry { path: path.into(), kind: InitKind::Dir }
    }
    /// An empty-file entry.
    pub fn file(path: &str) -> InitEntry {
        InitEntry { path: path.into(), kind: InitKind::File }
    }
    /// A symlink entry.
    pub fn symlink(path: &str, target: &str) -> InitEntry {
        InitEntry { path: path.into(), kind: InitKind::Symlink(target.into()) }
    }
}

/// Docker's init entries: the mount points and files the runtime bind-mounts or rewrites.
pub fn docker_init_entries() -> Vec<InitEntry> {
    vec![
        InitEntry::dir("/dev/pts"),
        InitEntry::dir("/dev/shm"),
        InitEntry::dir("/proc"),
        InitEntry::dir("/sys"),
        InitEntry::file("/.dockerenv"),
        InitEntry::file("/etc/resolv.conf"),
        InitEntry::file("/etc/hosts"),
        InitEntry::file("/etc/hostname"),
        InitEntry::file("/dev/console"),
        InitEntry::symlink("/etc/mtab", "/proc/mounts"),
    ]
}

/// Options for [`Driver::create_container`](crate::Driver::create_container).
#[derive(Debug, Clone)]
pub struct ContainerOpts {
    /// The init entries; [`docker_init_entries`] by default. Replace the list, or push onto
    /// it (for example `/run/secrets`).
    pub init_entries: Vec<InitEntry>,
    /// The container's root uid/gid on the host (user-namespaced containers); new init
    /// entries and the directories made for them are owned by it. `None`: the store's root.
    pub root: Option<Owner>,
    /// Per-layer options for both layers (Docker's `CreateOpts`).
    pub create: CreateOpts,
}

impl Default for ContainerOpts {
    fn default() -> Self {
        ContainerOpts { init_entries: docker_init_entries(), root: None, create: CreateOpts::default() }
    }
}

/// Mode of the directories and files the init entries create (Docker's `0755`).
const INIT_MODE: Mode = Mode::from_raw_mode(0o755);

/// The init layer's id for a container, as Docker names it.
pub fn init_layer_id(ctr: &str) -> String {
    format!("{ctr}-init")
}

impl Store {
    /// The work of [`Driver::create_container`](crate::Driver::create_container).
    pub(crate) fn create_container(&self, ctr: &str, image_top: &str, opts: &ContainerOpts) -> Result<()> {
        let ctr = &LayerId::new(ctr)?;
        let init = &LayerId::new(&init_layer_id(ctr))?;
        let image_top = &LayerId::new(image_top)?;
        for e in &opts.init_entries {
            entry_components(&e.path)?;
        }
        if !self.exists_unlocked(image_top)? {
            return Err(Error::NotFound(image_top.to_string()));
        }
        for id in [ctr, init] {
            if self.exists_unlocked(id)? {
                return Err(Error::Exists(id.to_string()));
            }
        }
        let top_was_committed = self.is_committed(image_top)?;
        // The init layer's mount may make this `Driver`'s holder file, which outlives the
        // mount; a failed create takes it back, to leave the store as it was.
        let had_holder = self.has_holder_file();
        // Until the pair exists, a record says so: if this process dies half way, repair
        // (on the next open) finishes the rollback below.
        let pending = PendingRecord::begin(self, ctr, image_top, top_was_committed)?;
        let res = self.create_checked(init, Some(image_top), &opts.create);
        if let Err(e) = res {
            drop(pending);
            return Err(e);
        }
        let res = self.fill_init_layer(init, opts).and_then(|()| self.create_checked(ctr, Some(init), &opts.create));
        if let Err(e) = res {
            // Undo whatever exists of the pair; the original error is what the caller needs.
            let _ = self.force_unmount(init);
            let _ = self.undo_created(&[init.to_string()], Some(image_top), top_was_committed);
            if !had_holder {
                self.drop_idle_holder();
            }
            drop(pending);
            return Err(e);
        }
        drop(pending);
        Ok(())
    }

    /// The work of [`Driver::remove_container`](crate::Driver::remove_container).
    pub(crate) fn remove_container(&self, ctr: &str, force: bool) -> Result<()> {
        let ctr = &LayerId::new(ctr)?;
        let init = &LayerId::new(&init_layer_id(ctr))?;
        // The record first: it is also the lock against a concurrent create or remove of the
        // same container, so what is read below cannot change before the removal. It makes
        // the pair's removal finish even if this process dies between the two layers (repair
        // removes a lone init layer). The image top is left as it is.
        let pending = PendingRecord::begin(self, ctr, "", true)?;
        let checked = (|| {
            let (has_ctr, has_init) = (self.exists_unlocked(ctr)?, self.exists_unlocked(init)?);
            if !has_ctr && !has_init {
                return Err(Error::NotFound(ctr.to_string()));
            }
            // Refuse before anything changes.
            if has_ctr && !force && self.mounts()?.iter().any(|m| m.id == ctr.as_str()) {
                return Err(Error::Busy {
                    id: ctr.to_string(),
                    reason: format!("it is mounted; {}, or remove with force (`--force`)", Error::unmount_first(ctr)),
                });
            }
            Ok((has_ctr, has_init))
        })();
        let (has_ctr, has_init) = match checked {
            Ok(v) => v,
            Err(e) => {
                drop(pending);
                return Err(e);
            }
        };
        let res = (|| {
            let plain = RemoveOpts { force: false, ignore_children: false };
            if has_ctr {
                if force {
                    self.force_unmount(ctr)?;
                }
                self.remove_checked(ctr, plain)?;
            }
            if has_init {
                if force {
                    self.force_unmount(init)?;
                }
                self.remove_checked(init, plain)?;
            }
            Ok(())
        })();
        drop(pending);
        res
    }

    fn fill_init_layer(&self, init: &str, opts: &ContainerOpts) -> Result<()> {
        let merged =
            self.get_with(init, &MountOpts { mount_label: opts.create.mount_label.clone(), ..MountOpts::default() })?;
        let owner = opts.root.unwrap_or(self.root);
        let res = (|| {
            let root =
                fsutil::open_dir_path(&merged).map_err(|e| Error::io(format!("opening {}", merged.display()), e))?;
            for e in &opts.init_entries {
                setup_entry(&root, e, owner).map_err(|err| match err {
                    Error::Io { context, source } => {
                        Error::Io { context: format!("init entry {}: {context}", e.path), source }
                    }
                    other => other,
                })?;
            }
            Ok(())
        })();
        let put = self.put(init);
        res.and(put)
    }
}

impl Store {
    /// Repair's half: a record whose creator died. A container whose layer exists is
    /// complete and only loses the record; otherwise its init layer is removed and the image
    /// top's `committed` taken back if it gained it. Runs under the store lock.
    pub(crate) fn finish_pending_container(&self, ctr: &LayerId, record: &[u8]) -> Result<()> {
        let init = LayerId::new(&init_layer_id(ctr)).ok();
        if let (false, Some(init)) = (self.exists_unlocked(ctr)?, &init) {
            if self.exists_unlocked(init)? {
                self.finish_pending_init(init, record)?;
            }
        }
        let Some(dir) = self.pending_dir()? else { return Ok(()) };
        match rustix::fs::unlinkat(&dir, ctr.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(format!("removing the pending record of {ctr:?}"), e)),
        }
    }

    /// Removes a died creator's lone init layer, and takes back the image top's `committed`
    /// marker when the record says the creation gave it.
    fn finish_pending_init(&self, init: &LayerId, record: &[u8]) -> Result<()> {
        self.force_unmount(init)?;
        match self.unlink_layer_locked(init, false) {
            Ok(gone) => gone.delete()?,
            // Something else was built on the init layer since: it is in use, keep it.
            Err(e) if e.kind() == crate::ErrorKind::Busy => {}
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(record);
        let mut lines = text.lines();
        if let (Some(top), Some("uncommitted")) = (lines.next(), lines.next()) {
            if let Ok(top) = LayerId::new(top) {
                if self.exists_unlocked(&top)? {
                    self.uncommit_if_childless_locked(&top)?;
                }
            }
        }
        Ok(())
    }
}

/// The path's components, refusing anything that is not a plain absolute path.
fn entry_components(path: &str) -> Result<Vec<&str>> {
    let rest = path.strip_prefix('/').ok_or_else(|| bad_entry(path, "must be absolute"))?;
    let comps: Vec<&str> = rest.split('/').collect();
    if comps.iter().any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0')) {
        return Err(bad_entry(path, "must be a plain path without empty, '.' or '..' components"));
    }
    Ok(comps)
}

fn bad_entry(path: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("init entry {path:?} {why}"))
}

/// Docker's rule for one entry: unlink every component of the path (files and symlinks go,
/// directories stay), then create what is missing: parents 0755 owned by root (only the new
/// ones), then the entry itself.
fn setup_entry(root: &OwnedFd, e: &InitEntry, owner: Owner) -> Result<()> {
    let comps = entry_components(&e.path)?;
    let (last, parents) = comps.split_last().expect("at least one component");
    let io = |what: &str, err: Errno| Error::io(what.to_owned(), err);

    // Unlink pass: walk down, unlinking each component; stop where the path ends.
    let mut dir = root.try_clone().map_err(|err| Error::io("dup of the mount root", err))?;
    let mut complete = true;
    for c in &comps {
        let name = cstr(c).expect("checked");
        let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
        if c == last {
            break;
        }
        match open_child(dir.as_fd(), &name) {
            Ok(fd) => dir = fd,
            Err(Errno::NOENT) => {
                complete = false;
                break;
            }
            Err(err) => return Err(io(&format!("opening {c}"), err)),
        }
    }
    if complete && exists(dir.as_fd(), last)? {
        return Ok(());
    }

    // Create pass.
    let mut dir = root.try_clone().map_err(|err| Error::io("dup of the mount root", err))?;
    for c in parents {
        let name = cstr(c).expect("checked");
        match rustix::fs::mkdirat(&dir, &name, INIT_MODE) {
            Ok(()) => set_owner_mode(dir.as_fd(), &name, owner, Some(INIT_MODE))?,
            Err(Errno::EXIST) => {}
            Err(err) => return Err(io(&format!("creating {c}"), err)),
        }
        dir = open_child(dir.as_fd(), &name).map_err(|err| io(&format!("opening {c}"), err))?;
    }
    let name = cstr(last).expect("checked");
    match &e.kind {
        InitKind::Dir => match rustix::fs::mkdirat(&dir, &name, INIT_MODE) {
            Ok(()) => set_owner_mode(dir.as_fd(), &name, owner, Some(INIT_MODE)),
            Err(Errno::EXIST) => Ok(()),
            Err(err) => Err(io("creating the directory", err)),
        },
        InitKind::File => {
            let fd = rustix::fs::openat(
                &dir,
                &name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                INIT_MODE,
            )
            .map_err(|err| io("creating the file", err))?;
            owner.fchown(&fd).map_err(|err| io("chown of the file", err))?;
            rustix::fs::fchmod(&fd, INIT_MODE).map_err(|err| io("chmod of the file", err))
        }
        InitKind::Symlink(target) => match rustix::fs::symlinkat(target.as_str(), &dir, &name) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(err) => Err(io("creating the symlink", err)),
        },
    }
}

fn open_child(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether `name` exists. After the unlink pass only a directory can still be there, so not
/// following a final symlink agrees with Docker's `os.Stat`.
fn exists(dir: BorrowedFd<'_>, name: &str) -> Result<bool> {
    let name = cstr(name).expect("checked");
    match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(Error::io("stat of an init entry", e)),
    }
}

fn set_owner_mode(dir: BorrowedFd<'_>, name: &std::ffi::CStr, owner: Owner, mode: Option<Mode>) -> Result<()> {
    owner.chown_at(dir, name).map_err(|e| Error::io("chown of an init entry", e))?;
    if let Some(m) = mode {
        rustix::fs::chmodat(dir, name, m, AtFlags::empty()).map_err(|e| Error::io("chmod of an init entry", e))?;
    }
    Ok(())
}
