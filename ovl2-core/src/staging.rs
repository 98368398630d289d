//! The crash-safety protocol, in one place: every change that takes more than one step is
//! worked on in a private place under `.ovl2/`, published with one rename, rolled back when
//! its owner drops it unpublished, and swept on the next open (or `check --repair`) when the
//! owner died.
//!
//! - A [`WorkEntry`] is `.ovl2/staging/<kind>-<random>`: a layer being built (`new-`), a
//!   tar being applied (`apply-`), or a removed layer being deleted (`rm-`). Its owner holds
//!   an exclusive flock on it for as long as it works; dropping it deletes what is left.
//! - A [`PendingRecord`] is `.ovl2/pending/<name>`: a multi-layer change (a container's
//!   pair, or an image chain being imported) that a dead owner's successor must finish
//!   rolling back, flocked the same way.
//! - [`sweep`] is what open's repair and `check` run: an entry or record whose flock can be
//!   taken has no living owner and is a leftover.
//!
//! # Lock order
//!
//! 1. The store lock (`.ovl2/lock`): shared to read or to start a work entry or record,
//!    exclusive to change the layout (create, remove, repair, and so the sweep).
//! 2. A layer's flock (its directory): get, put and apply's swap take it without the store
//!    lock; remove takes it while holding the store lock. Nothing takes the store lock while
//!    holding a layer's flock, so the order cannot invert.
//!
//! A work entry or record is always made and flocked while the store lock is held (either
//! mode; the constructors take the held lock as proof), so the sweep, which runs under the
//! exclusive lock, never sees one that is not yet locked. Their flocks are only ever taken
//! fresh by their maker or tried without waiting by the sweep, so they never wait and sit
//! outside the order.
//!
//! `.ovl2/holders/<token>` files are a different mechanism: liveness, not staging. Each is
//! flocked by a `Driver` that holds mount references, so a reference whose holder file can
//! be locked belongs to a dead process (see `mount/refs.rs`). They are never published.

use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::{Context, Error, Result};
use crate::fsutil::{self, cstr, LockMode, Owner};
use crate::id::LayerId;
use crate::layout;
use crate::lock::StoreLock;
use crate::store::Store;

/// One private work place in `.ovl2/staging`, flocked by this process. Dropped before it is
/// published (or after a failure), it is deleted: a failed step leaves nothing behind.
pub(crate) struct WorkEntry<'s> {
    store: &'s Store,
    name: CString,
    fd: OwnedFd,
    /// Still in staging: dropping deletes it.
    live: bool,
}

impl<'s> WorkEntry<'s> {
    /// Makes `.ovl2/staging/<kind>-<random>` with `mode` and `owner` and flocks it. `label`
    /// names it in errors (`creating <label>`); `what` is the operation, refused read-only.
    pub(crate) fn create(
        store: &'s Store,
        _held: &StoreLock,
        kind: &str,
        mode: Mode,
        owner: Owner,
        what: &str,
        label: &str,
    ) -> Result<WorkEntry<'s>> {
        let staging = store.staging(what)?;
        let name = cstr(&format!("{kind}-{}", fsutil::random_hex(12))).expect("ascii");
        fsutil::mkdir(staging, &name, mode, Some(owner)).ctx(|| format!("creating {label}"))?;
        let setup = || -> Result<OwnedFd> {
            let fd = fsutil::open_dir(staging, &name).ctx(|| format!("opening {label}"))?;
            fsutil::flock(&fd, LockMode::Exclusive).ctx(|| format!("locking {label}"))?;
            Ok(fd)
        };
        match setup() {
            Ok(fd) => Ok(WorkEntry { store, name, fd, live: true }),
            Err(e) => {
                let _ = fsutil::remove_tree(staging, &name);
                Err(e)
            }
        }
    }

    /// Moves `from/name` (whose directory fd `dir` the caller opened, and flocked when others
    /// may be at work in it) out of the store into `.ovl2/staging/rm-<random>`, in one rename:
    /// the first step of every removal, taken under the exclusive store lock. Deleting the
    /// files is then [`WorkEntry::delete`] (or the drop), which needs no store lock.
    pub(crate) fn take_out(
        store: &'s Store,
        from: BorrowedFd<'_>,
        name: &CStr,
        dir: OwnedFd,
        context: impl FnOnce() -> String,
    ) -> Result<WorkEntry<'s>> {
        let staging = store.staging("removing a layer")?;
        let trash = cstr(&format!("rm-{}", fsutil::random_hex(12))).expect("ascii");
        rustix::fs::renameat_with(from, name, staging, &trash, RenameFlags::NOREPLACE).ctx(context)?;
        Ok(WorkEntry { store, name: trash, fd: dir, live: true })
    }

    /// The entry's name in `.ovl2/staging`.
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }

    /// The entry's directory.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Publishes the entry as `to_dir/to` with one rename that never replaces anything. On
    /// failure the entry is dropped (deleted) and the rename's error returned.
    pub(crate) fn publish(mut self, to_dir: BorrowedFd<'_>, to: &CStr) -> std::result::Result<(), Errno> {
        let staging = self.store.staging_fd.as_ref().expect("a live entry's store has staging");
        rustix::fs::renameat_with(staging, &self.name, to_dir, to, RenameFlags::NOREPLACE)?;
        self.live = false;
        Ok(())
    }

    /// Deletes the entry now, saying what failed (`context`), instead of on drop where a
    /// failure can only leave it to the next sweep.
    pub(crate) fn delete(mut self, context: impl FnOnce() -> String) -> Result<()> {
        self.live = false;
        fsutil::remove_tree(self.store.staging("removing a layer")?, &self.name).ctx(context)
    }
}

impl Drop for WorkEntry<'_> {
    fn drop(&mut self) {
        if self.live {
            if let Some(staging) = &self.store.staging_fd {
                let _ = fsutil::remove_tree(staging, &self.name);
            }
        }
    }
}

/// A change of several layers in progress, flocked while its owner lives: a container being
/// created or removed (`.ovl2/pending/<ctr>`, holding the image top's id and whether the top
/// was already committed), or an image chain being imported (`.ovl2/pending/.import-<random>`,
/// holding what `archive/import.rs` needs to roll it back). Dropping it removes it (the
/// change is complete, or fully rolled back).
pub(crate) struct PendingRecord<'s> {
    store: &'s Store,
    name: CString,
    fd: OwnedFd,
    /// Bytes written so far: where the next [`PendingRecord::append`] goes.
    len: u64,
    /// Left on disk when dropped, for the sweep to finish (see [`PendingRecord::keep`]).
    kept: bool,
}

/// The name prefix of an import's pending record (see [`PendingRecord::begin_import`]).
pub(crate) const IMPORT_RECORD_PREFIX: &str = ".import-";

impl<'s> PendingRecord<'s> {
    /// Writes and flocks the record for container `ctr`. Busy when another process holds it.
    pub(crate) fn begin(
        d: &'s Store,
        ctr: &LayerId,
        image_top: &str,
        top_was_committed: bool,
    ) -> Result<PendingRecord<'s>> {
        let content = format!("{image_top}\n{}\n", if top_was_committed { "committed" } else { "uncommitted" });
        let name = ctr.as_c_str().to_owned();
        let shown = format!("the pending record of container {ctr:?}");
        PendingRecord::begin_named(d, name, &shown, "another process is creating this container", content.as_bytes())
    }

    /// Writes and flocks a record of an import in progress, `.ovl2/pending/.import-<random>`
    /// (a name no container id can have, as ids never start with '.'), holding `content`; the
    /// import [appends](PendingRecord::append) to it as it goes.
    pub(crate) fn begin_import(d: &'s Store, content: &[u8]) -> Result<PendingRecord<'s>> {
        let name = cstr(&format!("{IMPORT_RECORD_PREFIX}{}", fsutil::random_hex(12))).expect("ascii");
        PendingRecord::begin_named(d, name, "the pending record of an import", "a random name was taken", content)
    }

    fn begin_named(d: &'s Store, name: CString, shown: &str, busy: &str, content: &[u8]) -> Result<PendingRecord<'s>> {
        d.writable("recording a change of several layers")?;
        // Under the store lock (shared), so the sweep cannot take it for a leftover before it
        // is flocked.
        let _store = d.lock(LockMode::Shared)?;
        let dir = d.pending_dir()?.ok_or_else(|| Error::io("opening .ovl2/pending", Errno::NOENT))?;
        let fd = rustix::fs::openat(
            &dir,
            &name,
            OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            layout::PRIVATE_FILE_MODE,
        )
        .map_err(|e| Error::io(format!("creating {shown}"), e))?;
        if !fsutil::try_flock(&fd, LockMode::Exclusive).map_err(|e| Error::io("locking a pending record", e))? {
            return Err(Error::Busy { id: fsutil::os(&name).to_string_lossy().into_owned(), reason: busy.into() });
        }
        let mut rec = PendingRecord { store: d, name, fd, len: 0, kept: false };
        rustix::fs::ftruncate(&rec.fd, 0).map_err(|e| Error::io(format!("writing {shown}"), e))?;
        rec.append(content).ctx(|| format!("writing {shown}"))?;
        if d.opts.sync {
            rustix::fs::fsync(&dir).map_err(|e| Error::io("syncing .ovl2/pending", e))?;
        }
        Ok(rec)
    }

    /// Adds `content` at the record's end (synced when the store syncs), so that what it
    /// held before stays intact if the process dies mid-write: a reader ignores a torn tail.
    pub(crate) fn append(&mut self, content: &[u8]) -> std::io::Result<()> {
        let mut done = 0;
        while done < content.len() {
            match rustix::io::pwrite(&self.fd, &content[done..], self.len + done as u64) {
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.len += done as u64;
        if self.store.opts.sync {
            rustix::fs::fsync(&self.fd)?;
        }
        Ok(())
    }

    /// Releases the record but leaves it on disk: a change whose rollback failed half way is
    /// then finished by the next sweep, as if this process had died.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for PendingRecord<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Ok(Some(dir)) = self.store.pending_dir() {
            let _ = rustix::fs::unlinkat(&dir, &self.name, AtFlags::empty());
        }
    }
}

impl Store {
    /// `.ovl2/pending`; `None` only on a read-only open of a store that has none.
    pub(crate) fn pending_dir(&self) -> Result<Option<OwnedFd>> {
        let Some(private) = &self.private_fd else { return Ok(None) };
        match fsutil::open_dir(private, crate::layout::PENDING) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if self.is_read_only() && e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(None),
            Err(e) => Err(Error::io("opening .ovl2/pending", e)),
        }
    }
}

/// A leftover the sweep found (and, when fixing, removed or finished).
pub(crate) struct Leftover {
    /// The container whose record its dead owner left; `None` for a staging leftover.
    pub(crate) container: Option<String>,
    /// A sentence naming the entry.
    pub(crate) detail: String,
    /// Whether the sweep can remove it (a leftover with a mount inside cannot be).
    pub(crate) repairable: bool,
}

fn stale(detail: String) -> Leftover {
    Leftover { container: None, detail, repairable: true }
}

/// Finds the work entries and records whose owners died and, with `fix`, removes them (a
/// dead container record's rollback is finished first). Runs under the store lock: shared
/// to only look, exclusive to fix.
pub(crate) fn sweep(d: &Store, fix: bool) -> Result<Vec<Leftover>> {
    let mut found = Vec::new();
    sweep_staging(d, fix, &mut found)?;
    sweep_pending(d, fix, &mut found)?;
    Ok(found)
}

fn sweep_staging(d: &Store, fix: bool, found: &mut Vec<Leftover>) -> Result<()> {
    // A read-only open of a store without `.ovl2/` has nothing staged.
    let Some(staging) = &d.staging_fd else { return Ok(()) };
    let entries = fsutil::list_dir(staging).ctx(|| "listing .ovl2/staging".into())?;
    for ent in entries {
        let shown = || format!(".ovl2/staging/{}", fsutil::os(&ent.name).to_string_lossy());
        // Only directories are ever staged; O_DIRECTORY|O_NONBLOCK so that a FIFO or a
        // device there cannot hang the open (it fails with ENOTDIR instead).
        let fd = match rustix::fs::openat(
            staging,
            &ent.name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            // Not a directory, or one we cannot open: nobody can hold a lock on it.
            Err(_) => {
                if fix {
                    if let Some(p) = remove_leftover(staging, &ent.name)? {
                        found.push(p);
                        continue;
                    }
                }
                let what = fsutil::type_name(ent.file_type);
                found.push(stale(format!("{} ({what}) is a leftover nothing holds", shown())));
                continue;
            }
        };
        // Owners hold an exclusive flock while they work; a lock we can take means the
        // owner died.
        if !fsutil::try_flock(&fd, LockMode::Exclusive).ctx(|| "locking a staging entry".into())? {
            continue;
        }
        if fix {
            if let Some(p) = remove_leftover(staging, &ent.name)? {
                found.push(p);
                continue;
            }
        }
        found.push(stale(format!("{} was left by a process that died", shown())));
    }
    Ok(())
}

/// Removes a stale staging entry. One with a mount inside cannot be removed (removal never
/// crosses a mount); it is reported, not fatal, so the store stays usable.
fn remove_leftover(staging: &OwnedFd, name: &CStr) -> Result<Option<Leftover>> {
    match fsutil::remove_tree(staging, name) {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
            Ok(Some(Leftover { container: None, detail: format!(".ovl2/staging/{e}"), repairable: false }))
        }
        Err(e) => Err(Error::io(format!("removing .ovl2/staging/{}", fsutil::os(name).to_string_lossy()), e)),
    }
}

/// Deletes a finished record.
fn remove_record(dir: &OwnedFd, name: &CStr) -> Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io(format!("removing .ovl2/pending/{}", fsutil::os(name).to_string_lossy()), e)),
    }
}

fn sweep_pending(d: &Store, fix: bool, found: &mut Vec<Leftover>) -> Result<()> {
    let Some(dir) = d.pending_dir()? else { return Ok(()) };
    for ent in fsutil::list_dir(&dir).ctx(|| "listing .ovl2/pending".into())? {
        let ctr = fsutil::os(&ent.name).to_string_lossy().into_owned();
        // Records are regular files; NONBLOCK so a FIFO cannot hang the open, and the
        // type is checked on the open file before anything else.
        let opened = rustix::fs::openat(
            &dir,
            &ent.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => continue,
            Err(Errno::LOOP) => None,
            Err(e) => return Err(Error::io(format!("opening .ovl2/pending/{ctr}"), e)),
        };
        let ft = match &fd {
            Some(fd) => {
                FileType::from_raw_mode(rustix::fs::fstat(fd).ctx(|| format!("stat of .ovl2/pending/{ctr}"))?.st_mode)
            }
            None => FileType::Symlink,
        };
        if ft != FileType::RegularFile {
            // Not a record ovl2 wrote: a leftover, removed without being read.
            if fix {
                fsutil::remove_tree(&dir, &ent.name).ctx(|| format!("removing .ovl2/pending/{ctr}"))?;
            }
            found.push(stale(format!(".ovl2/pending/{ctr} is {}, not a record; a leftover", fsutil::type_name(ft))));
            continue;
        }
        let fd = fd.expect("regular file is open");
        // Its creator holds the lock while it works.
        if !fsutil::try_flock(&fd, LockMode::Exclusive).ctx(|| "locking a pending record".into())? {
            continue;
        }
        if ctr.starts_with(IMPORT_RECORD_PREFIX) {
            let record =
                fsutil::read_small(&dir, &ent.name).ctx(|| format!("reading .ovl2/pending/{ctr}"))?.unwrap_or_default();
            let what = d.sweep_pending_import(&record, fix)?;
            if fix {
                remove_record(&dir, &ent.name)?;
            }
            found.push(stale(format!(".ovl2/pending/{ctr}: {what}")));
            continue;
        }
        let Ok(id) = LayerId::new(&ctr) else { continue };
        let record =
            fsutil::read_small(&dir, &ent.name).ctx(|| format!("reading .ovl2/pending/{ctr}"))?.unwrap_or_default();
        if fix {
            d.finish_pending_container(&id, &record)?;
        }
        found.push(Leftover {
            detail: format!("container {ctr:?} was being created by a process that died"),
            container: Some(ctr),
            repairable: true,
        });
    }
    Ok(())
}
