//! Mounting layers: Docker's `Get`/`Put` with reference counts that hold across processes.
//!
//! The flow of a `get`: take the layer's lock (a flock on its directory, shared by every
//! process), load its record, forget holders that died, agree with the kernel (a mount that
//! vanished resets the record; a mount found in place counts once, as in Docker), add our
//! reference, and mount if nothing was mounted. `put` is the mirror image, unmounting when
//! the last reference goes. A process that already holds a layer answers a repeated `get`
//! from memory, without a syscall.

pub(crate) mod engine;
mod probe;
mod refs;
pub(crate) mod state;

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

pub use engine::{MountMethod, MountStrategy};
pub use probe::Features;
use refs::{Holder, Record};
use state::{Held, Me};

use crate::error::{Context, Error, Result};
use crate::fsutil::{self, cstr, LockMode};
use crate::id::LayerId;
use crate::staging::WorkEntry;
use crate::store::Store;
use crate::{forkgen, layout};

/// Options for [`Driver::get_with`](crate::Driver::get_with).
#[derive(Debug, Clone, Default)]
pub struct MountOpts {
    /// SELinux label, passed as `context="<label>"`.
    pub mount_label: Option<String>,
    /// Mount without an upper even if the layer is not committed (inspect an image).
    pub readonly: bool,
    /// Mount with `volatile` (no syncs to the upper); for throwaway containers only.
    pub volatile: bool,
    /// The reference belongs to the store, not to this process: it survives the process and
    /// is released only by a `put` (this is what each `ovl2 mount` command takes).
    pub persistent: bool,
}

/// One mounted layer, as [`Driver::mounts`](crate::Driver::mounts) reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountInfo {
    /// Layer id.
    pub id: String,
    /// The mount point, `<home>/<id>/merged`.
    #[serde(serialize_with = "crate::fsutil::utf8")]
    pub path: PathBuf,
    /// All references.
    pub count: u64,
    /// References held by the store (`persistent`).
    pub persistent: u64,
    /// References held by live processes.
    pub processes: u64,
    /// Mounted without an upper.
    pub readonly: bool,
    /// How it was mounted (`new-fd`, `legacy-relative`, ...).
    pub method: String,
    /// Whether the kernel really has it mounted.
    pub mounted: bool,
}

/// Gives a holder reference back when a get fails after taking it; a holder file that get
/// made goes too, so a failed get leaves the store as it found it.
struct Unhold<'a> {
    d: &'a Store,
    armed: bool,
    made: bool,
}

impl Drop for Unhold<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.d.unhold();
            if self.made {
                self.d.drop_idle_holder();
            }
        }
    }
}

/// A base layer's `diff` path, which its plain get returns without mounting (Docker's
/// rule); `None` when `id` has a `lower` file (or is no layer: the locked path reports it).
///
/// Two `stat`s and no lock: a layer's `lower` is written before the layer is published and
/// never removed, so a layer without one stays a base layer, and nothing on disk changes.
/// Nothing is remembered between gets: a repair can write a `lower` into a base layer's
/// directory, and another process can re-make the name as a child (both tested).
fn base_layer_diff(home: BorrowedFd<'_>, home_path: &Path, id: &str) -> Result<Option<PathBuf>> {
    // A symlink or file under the layer's name is not a layer.
    match rustix::fs::statat(home, id, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Error::io(format!("stat of layer {id:?}"), e)),
    }
    let mut lower = Vec::with_capacity(id.len() + 1 + layout::LOWER.count_bytes());
    lower.extend_from_slice(id.as_bytes());
    lower.push(b'/');
    lower.extend_from_slice(layout::LOWER.to_bytes());
    match rustix::fs::statat(home, lower.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(Some(home_path.join(id).join("diff"))),
        Ok(_) => Ok(None),
        Err(e) => Err(Error::io(format!("stat of {id}/lower"), e)),
    }
}

/// A layer dir locked for mount-state changes; the flock goes with the fd.
struct LockedLayer {
    fd: std::os::fd::OwnedFd,
}

impl Store {
    /// The work of [`Driver::mount_strategy`](crate::Driver::mount_strategy).
    pub(crate) fn mount_strategy(&self) -> MountStrategy {
        self.mounts.strategy
    }

    /// The work of [`Driver::features`](crate::Driver::features).
    pub(crate) fn features(&self) -> &Features {
        self.mounts.features.get_or_init(|| {
            let found = match &self.private_fd {
                Some(p) if !self.is_read_only() => probe::load_or_probe(p),
                // Read-only: the cached result, else a probe outside the store.
                p => p.as_ref().and_then(probe::load_cached).unwrap_or_else(probe::probe_elsewhere),
            };
            found.without(&self.mounts.disabled)
        })
    }

    /// The work of [`Driver::get`](crate::Driver::get).
    pub(crate) fn get(&self, id: &str, mount_label: Option<&str>) -> Result<PathBuf> {
        self.get_with(id, &MountOpts { mount_label: mount_label.map(str::to_owned), ..MountOpts::default() })
    }

    /// The work of [`Driver::get_with`](crate::Driver::get_with).
    pub(crate) fn get_with(&self, id: &str, opts: &MountOpts) -> Result<PathBuf> {
        let id = &LayerId::new(id)?;
        self.writable("mounting a layer")?;
        if let Some(l) = &opts.mount_label {
            if let Some(c) = l.chars().find(|c| matches!(c, '\0' | '"' | ',')) {
                let what = match c {
                    '\0' => "a NUL byte",
                    '"' => "a double quote",
                    _ => "a comma",
                };
                return Err(Error::InvalidArgument(format!(
                    "mount label contains {what}, which overlay mount options cannot carry"
                )));
            }
        }
        self.mounts.after_fork();
        let merged = || self.home.join(id).join("merged");
        let slot = self.mounts.slot(id);
        let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
        let fits = if opts.readonly { held.readonly } else { held.plain_ok };
        if held.count > 0 && !opts.persistent && fits {
            held.count += 1;
            return Ok(merged());
        }
        if !opts.readonly {
            if let Some(diff) = base_layer_diff(self.home_fd.as_fd(), &self.home, id)? {
                if !opts.persistent {
                    held.base_gets += 1;
                }
                return Ok(diff);
            }
        }
        let layer = self.lock_layer(id)?;
        let lower = fsutil::read_small(&layer.fd, layout::LOWER).ctx(|| format!("reading {id}/lower"))?;
        let lowers = crate::store::parse_chain(id, lower.as_deref())?;
        if lowers.is_empty() && !opts.readonly {
            if !opts.persistent {
                held.base_gets += 1;
            }
            return Ok(self.home.join(id).join("diff"));
        }
        let committed =
            fsutil::file_type(&layer.fd, layout::COMMITTED).ctx(|| format!("stat of {id}/committed"))?.is_some();
        let readonly = opts.readonly || committed || lowers.is_empty();
        if readonly && lowers.len() + 1 > crate::KERNEL_MAX_DEPTH {
            // Without an upper the layer's own diff is one more lower: a layer at the full
            // depth mounts read-write only.
            return Err(Error::Unsupported(format!(
                "a read-only mount of layer {id:?} needs {} lower directories (its {} lower layers and its own \
                 diff), more than the kernel's limit of {}; mount it read-write",
                lowers.len() + 1,
                lowers.len(),
                crate::KERNEL_MAX_DEPTH
            )));
        }

        let (mut rec, in_place, file) = self.reconciled_open(id, &layer, true)?;
        let file = file.as_ref();
        let mounted = rec.total() > 0;
        if mounted && rec.readonly != readonly {
            return Err(Error::Busy {
                id: id.to_string(),
                reason: format!("it is already mounted {}", if rec.readonly { "read-only" } else { "read-write" }),
            });
        }
        let (holder, made) = if opts.persistent { (Holder::Store, false) } else { self.holder()? };
        // Until this get has succeeded, a failure gives the holder reference back.
        let mut pending = Unhold { d: self, armed: !opts.persistent, made };
        if !rec.add(holder.clone(), 1) {
            return Err(Error::Busy { id: id.to_string(), reason: "it holds the most references a count can".into() });
        }
        rec.readonly = readonly;
        if mounted {
            refs::store_open(file, self.mounts_fd()?, id, &rec)?;
        } else {
            if in_place {
                // Never two overlay mounts on one upper and workdir (the kernel would allow
                // it with index=off, with undefined results). The reconcile counts a mount
                // it finds without a record, so this is one that an unmount left behind.
                return Err(Error::Busy { id: id.to_string(), reason: "something else is mounted on merged/".into() });
            }
            let req = self.mount_request(id, &layer, &lowers, readonly, opts)?;
            let method = engine::choose(&req, self.mounts.strategy, self.features())?;
            rec.method = method.as_str().to_owned();
            // Record the reference before mounting: a crash in between leaves a record that
            // the next reconcile drops (nothing mounted), never a mount nobody accounts for.
            refs::store_open(file, self.mounts_fd()?, id, &rec)?;
            match self.mount_layer(&req, method) {
                Ok(()) => {}
                Err(e) => {
                    rec.release(&holder);
                    let _ = refs::store_open(file, self.mounts_fd()?, id, &rec);
                    let _ = rustix::fs::unlinkat(&layer.fd, layout::MERGED, AtFlags::REMOVEDIR);
                    return Err(e);
                }
            }
        }
        pending.armed = false;
        if !opts.persistent {
            held.count += 1;
            held.readonly = readonly;
            held.plain_ok = readonly == (committed || lowers.is_empty());
        }
        Ok(merged())
    }

    /// The work of [`Driver::put`](crate::Driver::put).
    pub(crate) fn put(&self, id: &str) -> Result<()> {
        let id = &LayerId::new(id)?;
        self.writable("unmounting a layer")?;
        self.mounts.after_fork();
        let slot = self.mounts.slot(id);
        let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
        if held.count > 1 {
            held.count -= 1;
            return Ok(());
        }
        if held.count == 0 && held.base_gets > 0 {
            held.base_gets -= 1;
            return Ok(());
        }
        let layer = self.lock_layer(id)?;
        let (mut rec, mounted, file) = self.reconciled_open(id, &layer, true)?;
        let mine = self.mounts.me();
        let mine_released = held.count == 1 && rec.release(&mine);
        let released = mine_released || rec.release(&Holder::Store) || rec.release(&Holder::External);
        held.count = 0;
        if !released {
            let is_base = fsutil::file_type(&layer.fd, layout::LOWER).ctx(|| format!("stat of {id}/lower"))?.is_none();
            if is_base {
                return Ok(());
            }
            return Err(Error::InvalidArgument(format!("layer {id:?} is not mounted")));
        }
        if rec.total() == 0 {
            self.take_down(id, &layer, mounted)?;
        }
        refs::store_open(file.as_ref(), self.mounts_fd()?, id, &rec)?;
        if mine_released {
            self.unhold();
        }
        Ok(())
    }

    /// The work of [`Driver::mounts`](crate::Driver::mounts).
    pub(crate) fn mounts(&self) -> Result<Vec<MountInfo>> {
        self.mounts.after_fork();
        let mut out = Vec::new();
        for id in self.recorded_mounts()? {
            if !refs::maybe_held(self.mounts_fd()?, &id) && !self.layer_mounted_quick(&id) {
                continue;
            }
            let Ok(layer) = self.lock_layer(&id) else { continue };
            let rec = self.reconciled_record(&id, &layer)?;
            if rec.total() == 0 {
                continue;
            }
            out.push(MountInfo {
                path: self.home.join(&id).join("merged"),
                count: rec.total(),
                persistent: rec.count_of(|h| matches!(h, Holder::Store)),
                processes: rec.count_of(|h| matches!(h, Holder::Process { .. } | Holder::Lock { .. })),
                readonly: rec.readonly,
                method: rec.method.clone(),
                mounted: self.is_mounted(&layer.fd)?,
                id: id.into(),
            });
        }
        Ok(out)
    }

    /// The work of [`Driver::cleanup`](crate::Driver::cleanup).
    pub(crate) fn cleanup(&self) -> Result<()> {
        self.writable("unmounting the store's layers")?;
        let mut ids: Vec<LayerId> = self.recorded_mounts()?;
        ids.extend(self.layer_ids()?);
        ids.sort();
        ids.dedup();
        for id in ids {
            let Some(layer) = self.lock_layer_or_forget(&id)? else { continue };
            self.unmount_layer(&id, &layer)?;
            refs::store(self.mounts_fd()?, &id, &Record::default())?;
        }
        self.mounts.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }

    /// Brings every record in line with the kernel and with which processes are alive,
    /// unmounting what nobody holds any more. Runs on open.
    pub(crate) fn reconcile_mounts(&self) -> Result<()> {
        self.sweep_holders();
        for id in self.recorded_mounts()? {
            if !refs::maybe_held(self.mounts_fd()?, &id) && self.layer_exists_quick(&id) {
                continue;
            }
            let Some(layer) = self.lock_layer_or_forget(&id)? else { continue };
            let rec = self.reconciled_record(&id, &layer)?;
            if rec.total() == 0 {
                self.unmount_layer(&id, &layer)?;
            }
            refs::store(self.mounts_fd()?, &id, &rec)?;
        }
        Ok(())
    }

    /// `check`'s part for mounts: unusable records and a `.ovl2/empty` that is not empty.
    /// With `fix`, a record is rebuilt (as the reconcile on open would) and `empty` emptied.
    pub(crate) fn scan_mount_state(&self, fix: bool, problems: &mut Vec<crate::Problem>) -> Result<()> {
        for id in self.recorded_mounts()? {
            let Some(why) = refs::problem(self.mounts_fd()?, &id) else { continue };
            if fix {
                if let Some(layer) = self.lock_layer_or_forget(&id)? {
                    let rec = self.reconciled_record(&id, &layer)?;
                    refs::store(self.mounts_fd()?, &id, &rec)?;
                }
            }
            problems.push(crate::Problem {
                layer: Some(id.to_string()),
                kind: crate::ProblemKind::BadMountRecord,
                detail: format!("mount record .ovl2/mounts/{id} is unusable: {why}"),
                repairable: true,
            });
        }
        for id in self.layer_ids()? {
            let Some(dir) = self.open_layer_dir(&id)? else { continue };
            match fsutil::file_type(&dir, layout::MERGED).ctx(|| format!("stat of {id}/merged"))? {
                None | Some(FileType::Directory) => continue,
                Some(t) => {
                    if fix {
                        match rustix::fs::unlinkat(&dir, layout::MERGED, AtFlags::empty()) {
                            Ok(()) | Err(Errno::NOENT) => {}
                            Err(e) => return Err(Error::io(format!("removing {id}/merged"), e)),
                        }
                    }
                    problems.push(crate::Problem {
                        layer: Some(id.to_string()),
                        kind: crate::ProblemKind::BadMerged,
                        detail: format!("{id}/merged is {}, not a directory", crate::fsutil::type_name(t)),
                        repairable: true,
                    });
                }
            }
        }
        // A read-only open of a store without `.ovl2/` has no empty dir to check.
        let Some(private) = &self.private_fd else { return Ok(()) };
        if let Some(why) = engine::empty_dir_problem(private) {
            if fix {
                self.reset_empty_dir()?;
            }
            problems.push(crate::Problem {
                layer: None,
                kind: crate::ProblemKind::NotEmptyEmptyDir,
                detail: format!(".ovl2/empty {why}"),
                repairable: true,
            });
        }
        Ok(())
    }

    /// Replaces `.ovl2/empty` by a new empty directory; what was in it is deleted. A
    /// directory is taken out with the staging protocol's removal (one rename into
    /// `.ovl2/staging`, then deleted), so a kill half way leaves only an entry the sweep
    /// deletes and a missing `.ovl2/empty` that the next open recreates; anything else there
    /// is unlinked in one step. Runs under the exclusive store lock (repair).
    fn reset_empty_dir(&self) -> Result<()> {
        let private = self.private_dir()?;
        match fsutil::open_dir(private, layout::EMPTY) {
            Ok(dir) => {
                fsutil::flock(&dir, LockMode::Exclusive).ctx(|| "locking .ovl2/empty".into())?;
                let gone =
                    WorkEntry::take_out(self, private, layout::EMPTY, dir, || "moving .ovl2/empty aside".into())?;
                fsutil::mkdir(private, layout::EMPTY, layout::DIFF_MODE, Some(self.root))
                    .ctx(|| "creating .ovl2/empty".into())?;
                gone.delete(|| "deleting what was in .ovl2/empty".into())
            }
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                fsutil::mkdir(private, layout::EMPTY, layout::DIFF_MODE, Some(self.root))
                    .ctx(|| "creating .ovl2/empty".into())
            }
            Err(_) => {
                match rustix::fs::unlinkat(private, layout::EMPTY, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(Error::io("removing .ovl2/empty, which is not a directory", e)),
                }
                fsutil::mkdir(private, layout::EMPTY, layout::DIFF_MODE, Some(self.root))
                    .ctx(|| "creating .ovl2/empty".into())
            }
        }
    }

    /// `.ovl2/`, for an operation that needs it (every store opened for writing has it).
    fn private_dir(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        self.writable("changing mount state")?;
        match &self.private_fd {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(Error::Corrupt(format!("the store {} has no .ovl2 directory", self.home.display()))),
        }
    }

    /// Loads a record and makes it agree with reality: dead holders dropped, an empty
    /// record when nothing is mounted, one external reference for a mount found in place
    /// without any record. (A record whose holders all died comes back empty, so the
    /// caller unmounts.)
    fn reconciled_record(&self, id: &LayerId, layer: &LockedLayer) -> Result<Record> {
        Ok(self.reconciled_open(id, layer, false)?.0)
    }

    /// [`Self::reconciled_record`], with whether something is mounted on `merged/` now, and
    /// with `update` (a get or put, on a writable store) the record file kept open for
    /// saving the caller's change ([`refs::store_open`]).
    fn reconciled_open(
        &self,
        id: &LayerId,
        layer: &LockedLayer,
        update: bool,
    ) -> Result<(Record, bool, Option<std::os::fd::OwnedFd>)> {
        // An unusable record (torn, damaged) says nothing: the kernel's view decides, and a
        // mount found in place is kept for an explicit put, never taken down on a guess.
        let (loaded, file) = refs::load_open(self.mounts_fd()?, id, update && !self.is_read_only());
        let mut rec = loaded.unwrap_or_default();
        let recorded = rec.total() > 0;
        // This `Driver`'s own references need no look at its holder file, and a record
        // that names no other holder no look at the directory.
        let mine = self.live_token();
        let others = rec.holders.keys().any(|h| matches!(h, Holder::Lock { token } if Some(token) != mine.as_ref()));
        let holders = if others { self.holders_dir() } else { None };
        rec.drop_dead(holders.as_ref().map(std::os::fd::AsFd::as_fd), mine.as_deref());
        let mut mounted = self.is_mounted(&layer.fd)?;
        if mounted && recorded && rec.total() == 0 && !self.is_read_only() {
            // Every holder died: the mount is nobody's. Take it down now, under the layer
            // lock, so no caller can stack a second mount on the same upper and workdir.
            self.unmount_layer(id, layer)?;
            refs::store_open(file.as_ref(), self.mounts_fd()?, id, &Record::default())?;
            // Looked at again: an unmount can leave a mount in place (one locked in a user
            // namespace, one of several stacked there), and the caller must know.
            mounted = self.is_mounted(&layer.fd)?;
        }
        if !mounted {
            rec = Record::default();
        } else if !recorded {
            // Mounted, but never by ovl2 (or its record was lost): count it once.
            let _ = rec.add(Holder::External, 1);
            rec.method = "external".into();
            rec.readonly = fsutil::file_type(&layer.fd, layout::COMMITTED).ok().flatten().is_some();
        }
        Ok((rec, mounted, file))
    }

    fn mount_request<'a>(
        &'a self,
        id: &'a str,
        layer: &'a LockedLayer,
        lowers: &'a [String],
        readonly: bool,
        opts: &'a MountOpts,
    ) -> Result<engine::Request<'a>> {
        Ok(engine::Request {
            home: &self.home,
            home_fd: self.home_fd.as_fd(),
            links_fd: self.links_fd.as_fd(),
            private_fd: self.private_dir()?,
            id,
            layer_fd: layer.fd.as_fd(),
            lowers,
            readonly,
            label: opts.mount_label.as_deref(),
            volatile: opts.volatile,
        })
    }

    /// Mounts a private read-write overlay of the chain `lowers` (short ids, nearest first)
    /// with `<dir>/diff` as upper and `<dir>/work` as workdir, where `dir` is `rel` below
    /// home, and returns the mount's root fd. Nothing records it and no `get` sees it: it is
    /// gone when the fd is closed or the process dies.
    pub(crate) fn mount_private(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        rel: &str,
        lowers: &[String],
    ) -> Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        let req = engine::Request {
            home: &self.home,
            home_fd: self.home_fd.as_fd(),
            links_fd: self.links_fd.as_fd(),
            private_fd: self.private_dir()?,
            id: rel,
            layer_fd: dir,
            lowers,
            readonly: false,
            label: None,
            // overlayfs syncs its whole upper filesystem when a mount without `volatile`
            // goes away, which would flush every other writer's data on every naive apply.
            // This mount is thrown away after the apply, which syncs what it wrote itself
            // (one `syncfs`, or none with sync off). Kernels before 5.10 lack the option:
            // they get the mount without it.
            volatile: true,
        };
        let method = engine::choose(&req, self.mounts.strategy, self.features())?;
        engine::mount_detached(&req, method, self.features()).or_else(|_| {
            let req = engine::Request { volatile: false, ..req };
            engine::mount_detached(&req, method, self.features())
        })
    }

    fn mount_layer(&self, req: &engine::Request<'_>, method: MountMethod) -> Result<()> {
        let (id, lfd) = (req.id, req.layer_fd);
        // Docker's format has merged/ only while mounted, so this runs on every first get:
        // skip the chown when the process already is the containers' root.
        let merged_owner = (self.root != self.owner).then_some(self.root);
        match rustix::fs::mkdirat(lfd, layout::MERGED, layout::MERGED_MODE) {
            Ok(()) => {
                if let Some(o) = merged_owner {
                    o.chown_at(lfd, layout::MERGED).map_err(|e| Error::io(format!("chown of {id}/merged"), e))?;
                }
                rustix::fs::chmodat(lfd, layout::MERGED, layout::MERGED_MODE, AtFlags::empty())
                    .map_err(|e| Error::io(format!("chmod of {id}/merged"), e))?;
            }
            // A merged/ left by someone else: make it ours, once it is known to be a real
            // directory (a symlink there would aim the mount outside the store).
            Err(Errno::EXIST) => {
                match fsutil::file_type(lfd, layout::MERGED).ctx(|| format!("stat of {id}/merged"))? {
                    Some(FileType::Directory) | None => {}
                    Some(t) => {
                        return Err(Error::Corrupt(format!(
                            "cannot mount layer {id:?}: {id}/merged is {}, not a directory; refusing to mount \
                             through it",
                            crate::fsutil::type_name(t)
                        )))
                    }
                }
                fsutil::ensure_dir(lfd, layout::MERGED, layout::MERGED_MODE, Some(self.root))
                    .ctx(|| format!("creating {id}/merged"))?
            }
            Err(e) => return Err(Error::io(format!("creating {id}/merged"), e)),
        }
        if !req.readonly {
            // A volatile mount that was not cleanly unmounted leaves this marker, and the
            // kernel then refuses the workdir; containers/storage removes it the same way.
            if fsutil::file_type(lfd, c"work/work/incompat").ok().flatten().is_some() {
                let _ = fsutil::remove_tree(lfd, c"work/work/incompat");
            }
        }
        engine::mount(req, method, self.features())?;
        if !req.readonly && self.root != self.owner {
            // Docker chowns work/work to the remapped root (the kernel made it as us).
            let _ = self.root.chown_at(lfd, c"work/work");
        }
        Ok(())
    }

    fn unmount_layer(&self, id: &LayerId, layer: &LockedLayer) -> Result<()> {
        let mounted = self.is_mounted(&layer.fd)?;
        self.take_down(id, layer, mounted)
    }

    /// [`Self::unmount_layer`] when the caller has just looked (under the same layer lock)
    /// whether something is mounted on `merged/`.
    fn take_down(&self, id: &LayerId, layer: &LockedLayer, mounted: bool) -> Result<()> {
        if mounted {
            let path = self.home.join(id).join("merged");
            match rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH) {
                Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io(format!("unmounting {}", path.display()), e)),
            }
        }
        match rustix::fs::unlinkat(&layer.fd, layout::MERGED, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            // Something was left inside an unmounted merged/: keep it, Docker does too.
            Err(Errno::NOTEMPTY) | Err(Errno::BUSY) => Ok(()),
            Err(e) => Err(Error::io(format!("removing {id}/merged"), e)),
        }
    }

    /// Gives back every reference this `Driver` holds, unmounting what nobody else holds.
    /// Runs when the `Driver` is dropped: a closed handle's references would otherwise stay
    /// in force for as long as the process lives, with no handle left that could put them.
    pub(crate) fn release_held(&self) {
        {
            let me = self.mounts.me.lock().unwrap_or_else(|e| e.into_inner());
            if me.forked() {
                // A forked child's copy: whatever is in memory is the parent's to give back.
                return;
            }
        }
        let held: Vec<(String, Arc<Mutex<Held>>)> = self
            .mounts
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let me = self.mounts.me();
        for (id, slot) in held {
            let mut h = slot.lock().unwrap_or_else(|e| e.into_inner());
            if h.count == 0 {
                continue;
            }
            h.count = 0;
            // Slots are keyed by the ids get() checked, so this cannot fail.
            let Ok(id) = LayerId::new(&id) else { continue };
            let Ok(layer) = self.lock_layer(&id) else { continue };
            let Ok(mut rec) = self.reconciled_record(&id, &layer) else { continue };
            while rec.release(&me) {}
            if rec.total() == 0 {
                let _ = self.unmount_layer(&id, &layer);
            }
            let _ = refs::store(self.mounts_fd().expect("records dir"), &id, &rec);
        }
        self.drop_holder();
    }

    /// This `Driver`'s holder token, taking its holder file on first use; says whether this
    /// call made the file.
    fn holder(&self) -> Result<(Holder, bool)> {
        let mut me = self.mounts.me.lock().unwrap_or_else(|e| e.into_inner());
        if me.lock.is_some() && me.refs == 0 && me.forks_at_lock != forkgen::forks_made() {
            // A child forked since the file was made holds its lock too (a flock belongs to
            // the open file) for as long as it lives, and would keep this Driver's references
            // alive after this process died. Nothing is held under the file now: replace it.
            self.remove_holder_file(&mut me);
        }
        let mut tries = 0;
        let made_file = me.lock.is_none();
        while me.lock.is_none() {
            tries += 1;
            let (dir, made) = match self.ensure_holders_dir() {
                Ok(d) => d,
                Err(e) if tries < 3 && e.errno() == Some(Errno::NOENT.raw_os_error()) => continue,
                Err(e) => return Err(e),
            };
            let forks = forkgen::forks_made();
            match refs::take_holder(dir.as_fd(), &me.token) {
                Ok(Some(fd)) => {
                    me.lock = Some(fd);
                    me.forks_at_lock = forks;
                }
                // A sweep removed the file as we made it: start again under a new name.
                Ok(None) => me.token = fsutil::random_hex(8),
                Err(e) => {
                    if made {
                        // A failed get leaves nothing behind (another process that made
                        // its file in between keeps the directory: it is not empty).
                        let _ = rustix::fs::unlinkat(self.private_dir()?, layout::HOLDERS, AtFlags::REMOVEDIR);
                    }
                    // The directory went away under us (someone else's failed get): retry.
                    if tries < 3 && e.errno() == Some(Errno::NOENT.raw_os_error()) {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        me.refs += 1;
        Ok((Holder::Lock { token: me.token.clone() }, made_file))
    }

    /// Gives back one holder reference taken by [`Self::holder`]. The holder file stays
    /// while the `Driver` is open (it goes in [`Self::drop_holder`]): making and removing it
    /// on every first get and last put cost four journaled metadata operations per mount.
    fn unhold(&self) {
        let mut me = self.mounts.me.lock().unwrap_or_else(|e| e.into_inner());
        me.refs = me.refs.saturating_sub(1);
    }

    /// This `Driver`'s token while it holds its holder file's lock (so it is alive).
    fn live_token(&self) -> Option<String> {
        let me = self.mounts.me.lock().unwrap_or_else(|e| e.into_inner());
        me.live().then(|| me.token.clone())
    }

    /// Whether this `Driver` has its holder file now (an operation that must leave the store
    /// as it found it on failure notes this first, for [`Self::drop_idle_holder`]).
    pub(crate) fn has_holder_file(&self) -> bool {
        self.mounts.me.lock().unwrap_or_else(|e| e.into_inner()).live()
    }

    /// Removes the holder file when this `Driver` holds no reference under it: the rollback
    /// of a failed operation whose gets made the file.
    pub(crate) fn drop_idle_holder(&self) {
        let mut me = self.mounts.me.lock().unwrap_or_else(|e| e.into_inner());
        if me.refs == 0 && !me.forked() {
            self.remove_holder_file(&mut me);
        }
    }

    /// Removes this `Driver`'s holder file (it is closing; its references are given back).
    fn drop_holder(&self) {
        let mut me = self.mounts.me.lock().unwrap_or_else(|e| e.into_inner());
        me.refs = 0;
        self.remove_holder_file(&mut me);
    }

    fn remove_holder_file(&self, me: &mut Me) {
        if let Some(fd) = me.lock.take() {
            if let Some(dir) = self.holders_dir() {
                if let Ok(n) = cstr(&me.token) {
                    let _ = rustix::fs::unlinkat(&dir, &n, AtFlags::empty());
                }
            }
            drop(fd);
            // The directory too, when no one else has a file in it (a process making one
            // right now finds it gone and makes it again).
            if let Some(private) = &self.private_fd {
                let _ = rustix::fs::unlinkat(private, layout::HOLDERS, AtFlags::REMOVEDIR);
            }
        }
    }

    /// `.ovl2/holders`, if it exists (it is made by the first process-held get).
    fn holders_dir(&self) -> Option<std::os::fd::OwnedFd> {
        fsutil::open_dir(self.private_fd.as_ref()?, layout::HOLDERS).ok()
    }

    /// Opens `.ovl2/holders`, creating it when missing (and saying so).
    fn ensure_holders_dir(&self) -> Result<(std::os::fd::OwnedFd, bool)> {
        let mode = layout::PRIVATE_MODE;
        let private = self.private_dir()?;
        let made = match rustix::fs::mkdirat(private, layout::HOLDERS, mode) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(Error::io("creating .ovl2/holders", e)),
        };
        let fd = fsutil::open_dir(private, layout::HOLDERS).ctx(|| "opening .ovl2/holders".into())?;
        Ok((fd, made))
    }

    /// Removes the holder files of `Driver`s that are gone (a process killed before it could
    /// clean up leaves one behind).
    fn sweep_holders(&self) {
        let Some(dir) = self.holders_dir() else { return };
        let Ok(entries) = fsutil::list_dir(&dir) else { return };
        let me = self.mounts.me.lock().unwrap_or_else(|e| e.into_inner()).token.clone();
        for e in entries {
            if let Ok(token) = e.name.into_string() {
                if token != me {
                    refs::holder_alive(dir.as_fd(), &token);
                }
            }
        }
    }

    /// [`Self::lock_layer`], or `None` when the layer is gone, dropping its stale record.
    fn lock_layer_or_forget(&self, id: &LayerId) -> Result<Option<LockedLayer>> {
        match self.lock_layer(id) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                refs::store(self.mounts_fd()?, id, &Record::default())?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn layer_exists_quick(&self, id: &LayerId) -> bool {
        matches!(self.open_layer_dir(id), Ok(Some(_)))
    }

    fn layer_mounted_quick(&self, id: &LayerId) -> bool {
        matches!(self.open_layer_dir(id), Ok(Some(fd)) if self.is_mounted(&fd).unwrap_or(false))
    }

    /// Opens and flocks a layer directory for a mount-state change.
    fn lock_layer(&self, id: &LayerId) -> Result<LockedLayer> {
        let fd = self.layer_dir(id)?;
        fsutil::flock(&fd, LockMode::Exclusive).ctx(|| format!("locking layer {id:?}"))?;
        Ok(LockedLayer { fd })
    }

    /// True when something is mounted on the layer's `merged/`.
    pub(crate) fn is_mounted(&self, layer_dir: &std::os::fd::OwnedFd) -> Result<bool> {
        let st = match rustix::fs::statat(layer_dir, layout::MERGED, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(Error::io("stat of merged", e)),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(false);
        }
        let parent = rustix::fs::fstat(layer_dir).ctx(|| "stat of layer dir".into())?;
        Ok(st.st_dev != parent.st_dev)
    }

    /// Unmounts a layer whoever holds it and forgets its references (forced removal).
    pub(crate) fn force_unmount(&self, id: &LayerId) -> Result<()> {
        // Same lock order as get/put: this process's slot, then the layer's flock.
        let slot = self.mounts.slot(id);
        let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
        let Some(layer) = self.lock_layer_or_forget(id)? else { return Ok(()) };
        self.unmount_layer(id, &layer)?;
        refs::store(self.mounts_fd()?, id, &Record::default())?;
        held.count = 0;
        Ok(())
    }

    /// Deletes a removed layer's mount record (it can only be stale: the layer was unmounted).
    pub(crate) fn forget_mount_record(&self, id: &LayerId) -> Result<()> {
        refs::delete(self.mounts_fd()?, id)
    }

    fn mounts_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        match &self.mounts.records_fd {
            Some(fd) => Ok(std::os::fd::AsFd::as_fd(fd)),
            None => Err(Error::io(".ovl2/mounts", rustix::io::Errno::NOENT)),
        }
    }

    fn recorded_mounts(&self) -> Result<Vec<LayerId>> {
        if self.mounts.records_fd.is_none() {
            // A read-only open of a store without records: ovl2 never mounted anything here.
            return Ok(Vec::new());
        }
        let fd = self.mounts_fd()?;
        Ok(fsutil::list_dir(fd)
            .ctx(|| "listing .ovl2/mounts".into())?
            .into_iter()
            .filter_map(|e| LayerId::from_entry(e.name))
            .collect())
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Store>();
    let _ = cstr;
}

impl Drop for Store {
    fn drop(&mut self) {
        self.release_held();
    }
}
