//! Layers in the store: create (stage, then one rename), remove (one rename out, then delete),
//! and the read-only queries, named as in Docker's graphdriver.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;

use crate::error::{Context, Error, Result};
use crate::fsutil::{self, cstr, LockMode, Owner};
use crate::id::{self, LayerId};
use crate::layout;
use crate::lock::StoreLock;
use crate::options::{depth_of, CreateOpts, RemoveOpts};
use crate::staging::WorkEntry;
use crate::store::{corrupt_layer, orphaned, parse_chain, Store};

/// One layer as [`Driver::layers`](crate::Driver::layers) reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerInfo {
    /// The caller's id.
    pub id: String,
    /// The direct parent, `None` for a base layer (and for an orphan, see `orphan`).
    pub parent: Option<String>,
    /// The number of lower layers ([`depth_of`] its `lower`): 0 for a base layer.
    pub depth: usize,
    /// The 26-character name under `l/`, when the `link` file is readable.
    pub short_id: Option<String>,
    /// The layer is not a base layer but its parent is not in the store (another tool
    /// removed it, or its `lower` is unreadable): `parent` is then `None` and nothing can
    /// mount it. `check` reports it with the command that resolves it.
    pub orphan: bool,
}

/// The paths Docker's `GetMetadata` returns for a layer.
///
/// Paths are kept as bytes, so a home that is not UTF-8 is returned exactly. Serializing
/// (JSON) needs UTF-8: a path that is not valid UTF-8 makes serialization fail with an error
/// naming it rather than write a lossy path that names nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    /// Lower layers' `diff` paths, nearest first, joined by `:`; only for layers with a parent.
    #[serde(rename = "LowerDir", skip_serializing_if = "Option::is_none", serialize_with = "fsutil::utf8_opt")]
    pub lower_dir: Option<OsString>,
    /// `<home>/<id>/diff`.
    #[serde(rename = "UpperDir", serialize_with = "fsutil::utf8")]
    pub upper_dir: PathBuf,
    /// `<home>/<id>/work` (reported even for base layers, as Docker does).
    #[serde(rename = "WorkDir", serialize_with = "fsutil::utf8")]
    pub work_dir: PathBuf,
    /// `<home>/<id>/merged`.
    #[serde(rename = "MergedDir", serialize_with = "fsutil::utf8")]
    pub merged_dir: PathBuf,
}

impl Metadata {
    /// The metadata as Docker's key/value map, values as bytes.
    pub fn to_map(&self) -> BTreeMap<String, OsString> {
        let mut m = BTreeMap::new();
        if let Some(l) = &self.lower_dir {
            m.insert("LowerDir".into(), l.clone());
        }
        m.insert("UpperDir".into(), self.upper_dir.clone().into_os_string());
        m.insert("WorkDir".into(), self.work_dir.clone().into_os_string());
        m.insert("MergedDir".into(), self.merged_dir.clone().into_os_string());
        m
    }
}

/// What [`Store::create_noting`] calls with a staged layer's short id.
pub(crate) type ShortIdNote<'a> = dyn FnMut(&str) -> Result<()> + 'a;

impl Store {
    /// The work of [`Driver::create`](crate::Driver::create).
    pub(crate) fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, None)
    }

    /// [`Store::create`] that tells `note` the layer's new short id once the layer is staged
    /// and before it is published, so a multi-layer change can record it first (see
    /// `archive/import.rs`); a `note` that fails fails the create, leaving nothing behind.
    pub(crate) fn create_noting(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        note: &mut ShortIdNote<'_>,
    ) -> Result<()> {
        self.create_layer(id, parent, opts, Some(note))
    }

    /// The work of [`Driver::create_rw`](crate::Driver::create_rw).
    pub(crate) fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, None)
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        note: Option<&mut ShortIdNote<'_>>,
    ) -> Result<()> {
        self.create_checked_noting(&LayerId::new(id)?, LayerId::opt(parent)?.as_ref(), opts, note)
    }

    /// [`Store::create`] for ids already checked.
    pub(crate) fn create_checked(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        self.create_checked_noting(id, parent, opts, None)
    }

    fn create_checked_noting(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
        note: Option<&mut ShortIdNote<'_>>,
    ) -> Result<()> {
        if let Some(p) = parent {
            if p == id {
                return Err(Error::InvalidArgument(format!("layer {id:?} cannot be its own parent")));
            }
        }
        validate_create_opts(opts)?;
        let lock = self.lock(LockMode::Exclusive)?;
        if self.exists_unlocked(id)? {
            return Err(Error::Exists(id.to_string()));
        }
        let chain = match parent {
            Some(p) => self.chain_for_child(p)?,
            None => Vec::new(),
        };
        self.check_depth(id, &chain)?;

        let (staged, short_link) = self.stage_layer(id, &chain, &lock)?;
        if let Some(note) = note {
            if let Err(e) = note(short_link.to_str().unwrap_or_default()) {
                drop(staged);
                let _ = rfs::unlinkat(&self.links_fd, &short_link, AtFlags::empty());
                return Err(e);
            }
        }
        let staging = self.staging("creating a layer")?;
        // A failed publish deletes the staged tree; the l/ link goes too.
        if let Err(e) = staged.publish(self.home_fd.as_fd(), id.as_c_str()) {
            let _ = rfs::unlinkat(&self.links_fd, &short_link, AtFlags::empty());
            return Err(match e {
                Errno::EXIST => self.in_the_way(id),
                e => Error::io(format!("moving staged layer {id:?} into place"), e),
            });
        }
        // The layer is complete on disk. What follows (durability, the parent's marker) is
        // restored by repair() after a crash; if it fails now, the caller gets an error, so
        // take the layer back out: a failed create leaves nothing behind.
        let finish = self
            .sync_dir(staging, "staging")
            .and_then(|()| self.sync_dir(&self.home_fd, "home"))
            .and_then(|()| parent.map_or(Ok(()), |p| self.mark_committed(p)));
        if let Err(e) = finish {
            self.discard_new_layer(id, short_link.to_str().unwrap_or_default());
            return Err(e);
        }
        Ok(())
    }

    /// Takes a just-created layer back out (same steps as remove, no checks: nothing can
    /// build on it yet, as the store lock is still held).
    fn discard_new_layer(&self, id: &LayerId, lid: &str) {
        let Ok(dir) = fsutil::open_dir(&self.home_fd, id.as_c_str()) else { return };
        // Dropping the taken-out entry deletes it.
        if let Ok(_gone) = WorkEntry::take_out(self, self.home_fd.as_fd(), id.as_c_str(), dir, String::new) {
            let _ = self.unlink_short_link_if_ours(lid, id);
        }
    }

    /// Reads `parent` and returns the lower chain a child of it gets (nearest first).
    fn chain_for_child(&self, parent: &LayerId) -> Result<Vec<String>> {
        let (link, lower) = self.read_layer_files(parent)?;
        let link = link.ok_or_else(|| corrupt_layer(parent, "has no link file"))?;
        let lid = layout::parse_link(&link).map_err(|m| corrupt_layer(parent, &m.describe("link")))?;
        let mut chain = vec![lid.to_string()];
        chain.extend(parse_chain(parent, lower.as_deref())?);
        Ok(chain)
    }

    /// Builds a complete layer directory in staging and links `l/<short>` to its final name.
    /// Returns the staged entry (deleted if dropped unpublished) and the `l/` name made for it.
    fn stage_layer(&self, id: &str, chain: &[String], held: &StoreLock) -> Result<(WorkEntry<'_>, CString)> {
        let owner = Owner { gid: self.root.gid, ..self.owner };
        let staged =
            WorkEntry::create(self, held, "new", layout::LAYER_MODE, owner, "creating a layer", "a staging dir")?;
        let lid = self.fill_staged(staged.fd(), id, chain)?;
        Ok((staged, lid))
    }

    fn fill_staged(&self, dir: &OwnedFd, id: &str, chain: &[String]) -> Result<CString> {
        let at = || format!("staging layer {id:?}");
        fsutil::mkdir(dir, layout::DIFF, layout::DIFF_MODE, Some(self.root))
            .ctx(|| format!("{}: creating diff", at()))?;
        if !chain.is_empty() {
            fsutil::mkdir(dir, layout::WORK, layout::WORK_MODE, Some(self.root))
                .ctx(|| format!("{}: creating work", at()))?;
            fsutil::write_new(
                dir,
                layout::LOWER,
                layout::format_lower(chain).as_bytes(),
                layout::META_FILE_MODE,
                self.opts.sync,
            )
            .ctx(|| format!("{}: writing lower", at()))?;
        }
        let lid = self.new_short_link(id)?;
        let res = fsutil::write_new(dir, layout::LINK, lid.as_bytes(), layout::META_FILE_MODE, self.opts.sync)
            .ctx(|| format!("{}: writing link", at()))
            .and_then(|()| self.sync_dir(dir, "staged layer"))
            .and_then(|()| self.sync_dir(&self.links_fd, "l"));
        let clid = cstr(&lid).expect("ascii");
        if let Err(e) = res {
            let _ = rfs::unlinkat(&self.links_fd, &clid, AtFlags::empty());
            return Err(e);
        }
        Ok(clid)
    }

    /// Creates `l/<short> -> ../<id>/diff` under a fresh short id, drawing again on a clash.
    pub(crate) fn new_short_link(&self, id: &str) -> Result<String> {
        let target = layout::link_target(id);
        for _ in 0..64 {
            let lid = id::new_short_id()?;
            match rfs::symlinkat(target.as_str(), &self.links_fd, lid.as_str()) {
                Ok(()) => return Ok(lid),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::io(format!("creating l/{lid} for layer {id:?}"), e)),
            }
        }
        Err(Error::Corrupt("64 random short ids in a row already exist under l/".into()))
    }

    /// Writes the empty `committed` marker into `id` so later mounts of it are read-only.
    pub(crate) fn mark_committed(&self, id: &LayerId) -> Result<()> {
        let dir = self.layer_dir(id)?;
        match fsutil::write_new(&dir, layout::COMMITTED, b"", layout::COMMITTED_MODE, self.opts.sync) {
            Ok(()) => self.sync_dir(&dir, id),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(format!("writing {id}/committed"), e)),
        }
    }

    /// The work of [`Driver::is_committed`](crate::Driver::is_committed).
    pub(crate) fn is_committed(&self, id: &str) -> Result<bool> {
        let id = &LayerId::new(id)?;
        let dir = self.layer_dir(id)?;
        Ok(fsutil::file_type(&dir, layout::COMMITTED).ctx(|| format!("stat of {id}/committed"))?.is_some())
    }

    /// Undoes a multi-step build that failed half way: removes the layers it `created`
    /// (top first) and, when `parent` gained its `committed` marker from them
    /// (`parent_was_committed` false) and no other child is left, takes the marker back, so
    /// the store is as it was before. Layers already gone are fine.
    pub(crate) fn undo_created(
        &self,
        created: &[String],
        parent: Option<&str>,
        parent_was_committed: bool,
    ) -> Result<()> {
        let mut first = None;
        for id in created.iter().rev() {
            // Top first, so no layer of the build has children left when it goes.
            if let Err(e) = self.remove(id, true) {
                if e.kind() != crate::ErrorKind::NotFound {
                    first.get_or_insert(e);
                }
            }
        }
        if let (Some(p), false) = (parent, parent_was_committed) {
            let p = &LayerId::new(p)?;
            if self.exists_unlocked(p)? {
                self.uncommit_if_childless(p)?;
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Takes back a `committed` marker that a rolled-back child wrote, if no child exists
    /// now. (Docker never removes the marker; this only undoes ovl2's own failed step.)
    pub(crate) fn uncommit_if_childless(&self, id: &LayerId) -> Result<()> {
        let _lock = self.lock(LockMode::Exclusive)?;
        self.uncommit_if_childless_locked(id)
    }

    pub(crate) fn uncommit_if_childless_locked(&self, id: &LayerId) -> Result<()> {
        let (link, _) = self.read_layer_files(id)?;
        let Some(lid) = link.as_deref().and_then(|l| layout::parse_link(l).ok()) else { return Ok(()) };
        if self.children_of(lid)?.is_empty() {
            let dir = self.layer_dir(id)?;
            match rfs::unlinkat(&dir, layout::COMMITTED, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io(format!("removing {id}/committed"), e)),
            }
            self.sync_dir(&dir, id)?;
        }
        Ok(())
    }

    /// The work of [`Driver::remove`](crate::Driver::remove).
    pub(crate) fn remove(&self, id: &str, force: bool) -> Result<()> {
        self.remove_with(id, RemoveOpts { force, ignore_children: false })
    }

    /// The work of [`Driver::remove_with`](crate::Driver::remove_with).
    pub(crate) fn remove_with(&self, id: &str, opts: RemoveOpts) -> Result<()> {
        self.remove_checked(&LayerId::new(id)?, opts)
    }

    /// [`Store::remove_with`] for an id already checked.
    pub(crate) fn remove_checked(&self, id: &LayerId, opts: RemoveOpts) -> Result<()> {
        if opts.force {
            // Refuse a layer with children before touching its mount.
            if !opts.ignore_children {
                let _lock = self.lock(LockMode::Shared)?;
                self.refuse_if_children(id)?;
            }
            self.force_unmount(id)?;
        }
        let lock = self.lock(LockMode::Exclusive)?;
        if !opts.force {
            self.refuse_if_snapshot(id)?;
        }
        let gone = self.unlink_layer_locked(id, opts.ignore_children)?;
        drop(lock);
        gone.delete()
    }

    /// The work of [`Driver::remove_tree`](crate::Driver::remove_tree).
    pub(crate) fn remove_tree(&self, id: &str, force: bool) -> Result<Vec<String>> {
        let id = &LayerId::new(id)?;
        let lock = self.lock(LockMode::Exclusive)?;
        // Every descendant names this layer somewhere in its lower; the longest chains first.
        let mut tree: Vec<(usize, LayerId)> = Vec::new();
        if let Some(lid) = self.own_short_id(id)? {
            for child in self.children_of(&lid)? {
                let depth = match self.read_layer(&child)?.map(|m| m.lower_lids().map(|l| l.map(|v| depth_of(&v)))) {
                    Some(Ok(Some(d))) => d,
                    _ => 0,
                };
                tree.push((depth, child));
            }
        }
        tree.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut order: Vec<LayerId> = tree.into_iter().map(|(_, id)| id).collect();
        order.push(id.clone());
        if force {
            // Unmounting takes no store lock, and neither does a get, so release it meanwhile.
            drop(lock);
            for x in &order {
                self.force_unmount(x)?;
            }
            return self.remove_tree_locked(id, &order, self.lock(LockMode::Exclusive)?, force);
        }
        self.remove_tree_locked(id, &order, lock, force)
    }

    fn remove_tree_locked(&self, id: &LayerId, order: &[LayerId], lock: StoreLock, force: bool) -> Result<Vec<String>> {
        for x in order.iter().filter(|_| !force) {
            self.refuse_if_snapshot(x)?;
        }
        for x in order {
            if let Some(dir) = self.open_layer_dir(x)? {
                if self.is_mounted(&dir)? {
                    return Err(Error::Busy {
                        id: x.to_string(),
                        reason: format!(
                            "it is mounted, and removing {id:?} would remove it; {}, or remove with force (`--force`)",
                            Error::unmount_first(x)
                        ),
                    });
                }
            }
        }
        let mut gone = Vec::with_capacity(order.len());
        let mut done = Vec::with_capacity(order.len());
        let mut failed = None;
        for x in order {
            match self.unlink_layer_locked(x, false) {
                Ok(g) => {
                    gone.push(g);
                    done.push(x.to_string());
                }
                // Someone else removed it meanwhile: nothing left to do for it.
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(lock);
        for g in gone {
            g.delete()?;
        }
        failed.map_or(Ok(done), Err)
    }

    /// A layer's short id: from its `link`, else (a damaged layer must stay removable) from
    /// the `l/` name pointing at it.
    fn own_short_id(&self, id: &LayerId) -> Result<Option<String>> {
        let meta = self.read_layer(id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
        match meta.lid() {
            Some(l) => Ok(Some(l.to_owned())),
            None => self.short_id_pointing_to(id),
        }
    }

    fn refuse_if_children(&self, id: &LayerId) -> Result<()> {
        let Some(lid) = self.own_short_id(id)? else { return Ok(()) };
        let children = self.children_of(&lid)?;
        if children.is_empty() {
            return Ok(());
        }
        Err(Error::Busy {
            id: id.to_string(),
            reason: format!(
                "{} layer(s) build on it ({}); remove them first, or all of them with `ovl2 rm --recursive {id}`",
                children.len(),
                preview(&children)
            ),
        })
    }

    /// The part of [`Driver::remove`] that needs the store lock (held by the caller): checks,
    /// then the rename out of sight. The files go with [`Unlinked::delete`], lock or no lock.
    pub(crate) fn unlink_layer_locked(&self, id: &LayerId, ignore_children: bool) -> Result<Unlinked<'_>> {
        // A damaged layer must stay removable: unreadable files only lose us its short id.
        let lid = self.own_short_id(id)?;
        if !ignore_children {
            self.refuse_if_children(id)?;
        }
        let dir = self.layer_dir(id)?;
        // The layer lock waits out a get/put in progress; none of them takes the store lock,
        // so waiting here while holding it cannot deadlock.
        fsutil::flock(&dir, LockMode::Exclusive).ctx(|| format!("locking layer {id:?}"))?;
        if self.is_mounted(&dir)? {
            return Err(Error::Busy {
                id: id.to_string(),
                reason: format!("it is mounted; {}, or remove with force (`--force`)", Error::unmount_first(id)),
            });
        }
        // Removal never crosses a mount, but refusing up front leaves the layer whole.
        let inside = fsutil::mounts_below(&self.home.join(id)).ctx(|| "reading /proc/self/mountinfo".into())?;
        if let Some(m) = inside.first() {
            return Err(Error::Busy {
                id: id.to_string(),
                reason: format!("{id}/{} is a mount point inside it (unmount it first)", String::from_utf8_lossy(m)),
            });
        }
        let staging = self.staging("removing a layer")?;
        let entry = WorkEntry::take_out(self, self.home_fd.as_fd(), id.as_c_str(), dir, || {
            format!("moving layer {id:?} out of the store")
        })?;
        self.sync_dir(&self.home_fd, "home")?;
        self.sync_dir(staging, "staging")?;
        if let Some(lid) = lid {
            self.unlink_short_link_if_ours(&lid, id)?;
        }
        self.forget_mount_record(id)?;
        Ok(Unlinked { id: id.clone(), entry })
    }

    pub(crate) fn unlink_short_link_if_ours(&self, lid: &str, id: &str) -> Result<()> {
        let clid = cstr(lid).expect("ascii");
        let ours = fsutil::read_link(&self.links_fd, &clid)
            .ctx(|| format!("reading l/{lid}"))?
            .is_some_and(|t| layout::id_from_link_target(&t) == Some(id));
        if ours {
            match rfs::unlinkat(&self.links_fd, &clid, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io(format!("removing l/{lid}"), e)),
            }
            self.sync_dir(&self.links_fd, "l")?;
        }
        Ok(())
    }

    /// The `l/` name whose symlink points to `id`'s diff: the short id of a layer whose
    /// `link` file is lost or damaged.
    pub(crate) fn short_id_pointing_to(&self, id: &str) -> Result<Option<String>> {
        let want = layout::link_target(id);
        for ent in fsutil::list_dir(&self.links_fd).ctx(|| format!("listing {}/l", self.home.display()))? {
            if ent.file_type != FileType::Symlink {
                continue;
            }
            let target = fsutil::read_link(&self.links_fd, &ent.name).ctx(|| "reading an l/ link".into())?;
            if target.as_deref() == Some(want.as_bytes()) {
                if let Ok(name) = ent.name.into_string() {
                    return Ok(Some(name));
                }
            }
        }
        Ok(None)
    }

    /// Ids of layers whose lower chain contains the short id `lid`.
    pub(crate) fn children_of(&self, lid: &str) -> Result<Vec<LayerId>> {
        let mut out = Vec::new();
        for id in self.layer_ids()? {
            // A child whose lower cannot be read cannot be told apart; check reports it.
            if let Some(meta) = self.read_layer(&id)? {
                if let Ok(Some(lids)) = meta.lower_lids() {
                    if lids.contains(&lid) {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The work of [`Driver::exists`](crate::Driver::exists).
    pub(crate) fn exists(&self, id: &str) -> Result<bool> {
        // Docker's hot `Exists`: one stat of the id as it is, so no LayerId (and no C
        // string) is built for it.
        id::validate(id)?;
        self.exists_unlocked(id)
    }

    /// The error for a new layer whose name is taken: by a layer, or by something else.
    fn in_the_way(&self, id: &LayerId) -> Error {
        match fsutil::file_type(&self.home_fd, id.as_c_str()) {
            Ok(Some(FileType::Directory)) | Err(_) => Error::Exists(id.to_string()),
            Ok(t) => Error::io(
                format!(
                    "creating layer {id:?}: {} is {}, not a layer directory (remove it by hand)",
                    self.home.join(id).display(),
                    t.map_or("gone", fsutil::type_name)
                ),
                Errno::EXIST,
            ),
        }
    }

    /// The work of [`Driver::parent`](crate::Driver::parent).
    pub(crate) fn parent(&self, id: &str) -> Result<Option<String>> {
        self.parent_of(&LayerId::new(id)?)
    }

    /// [`Store::parent`] for an id already checked.
    pub(crate) fn parent_of(&self, id: &LayerId) -> Result<Option<String>> {
        let _lock = self.lock(LockMode::Shared)?;
        let chain = self.lower_chain(id)?;
        let Some(first) = chain.first() else { return Ok(None) };
        Ok(Some(self.resolve_short_id(first)?.ok_or_else(|| orphaned(id, first))?.into()))
    }

    /// The work of [`Driver::metadata`](crate::Driver::metadata).
    pub(crate) fn metadata(&self, id: &str) -> Result<Metadata> {
        let id = &LayerId::new(id)?;
        let _lock = self.lock(LockMode::Shared)?;
        let chain = self.lower_chain(id)?;
        let dir = self.home.join(id.as_str());
        // A base layer has no LowerDir at all, as in Docker.
        let lower_dir = if chain.is_empty() {
            None
        } else {
            let mut dirs = OsString::new();
            for lid in &chain {
                let pid = self.resolve_short_id(lid)?.ok_or_else(|| orphaned(id, lid))?;
                if !dirs.is_empty() {
                    dirs.push(":");
                }
                dirs.push(self.home.join(pid.as_str()).join("diff"));
            }
            Some(dirs)
        };
        Ok(Metadata {
            lower_dir,
            upper_dir: dir.join("diff"),
            work_dir: dir.join("work"),
            merged_dir: dir.join("merged"),
        })
    }

    /// The work of [`Driver::layers`](crate::Driver::layers).
    pub(crate) fn layers(&self) -> Result<Vec<LayerInfo>> {
        let _lock = self.lock(LockMode::Shared)?;
        let mut recs = Vec::new();
        let mut by_lid = BTreeMap::new();
        for id in self.layer_ids()? {
            let Some(meta) = self.read_layer(&id)? else { continue };
            let lid = meta.lid().map(str::to_owned);
            if let Some(l) = &lid {
                by_lid.insert(l.clone(), id.to_string());
            }
            // An unreadable or malformed lower lists the layer with an unknown parent
            // (depth 0); `check` says what is wrong with it.
            let lower: Option<Vec<String>> = match meta.lower_lids() {
                Ok(l) => l.map(|v| v.into_iter().map(str::to_owned).collect()),
                Err(()) => Some(Vec::new()),
            };
            recs.push((id, lid, lower));
        }
        let mut out = Vec::with_capacity(recs.len());
        for (id, lid, lower) in recs {
            let (parent, depth) = match &lower {
                None => (None, 0),
                Some(lids) if lids.is_empty() => (None, 0),
                Some(lids) => {
                    let p = match by_lid.get(&lids[0]) {
                        Some(p) => Some(p.clone()),
                        None => self.resolve_short_id(&lids[0])?.map(String::from),
                    };
                    (p, depth_of(lids))
                }
            };
            let orphan = lower.is_some() && parent.is_none();
            out.push(LayerInfo { id: id.into(), parent, depth, short_id: lid, orphan });
        }
        Ok(out)
    }
}

/// A removed layer's files, renamed into staging and still flocked (so repair in another
/// process leaves them to us) until [`Unlinked::delete`] (or the drop) removes them.
pub(crate) struct Unlinked<'s> {
    id: LayerId,
    entry: WorkEntry<'s>,
}

impl Unlinked<'_> {
    /// Deletes the files, outside the store lock.
    pub(crate) fn delete(self) -> Result<()> {
        let id = self.id;
        self.entry.delete(|| format!("deleting the files of layer {id:?}"))
    }
}

fn validate_create_opts(opts: &CreateOpts) -> Result<()> {
    // Any key is an error (overlay2 knows only "size", which ovl2 cannot honour); name the first.
    if let Some(key) = opts.storage_opt.keys().next() {
        return Err(match key.to_ascii_lowercase().as_str() {
            "size" => Error::Unsupported(
                "storage option \"size\" needs xfs project quotas, which ovl2 does not manage".into(),
            ),
            _ => Error::InvalidArgument(format!("unknown storage option {key:?} (overlay2 knows only \"size\")")),
        });
    }
    if let Some(l) = &opts.mount_label {
        if l.contains('\0') {
            return Err(Error::InvalidArgument("mount label must not contain NUL".into()));
        }
    }
    Ok(())
}

fn preview(ids: &[LayerId]) -> String {
    let mut s = ids.iter().take(3).map(LayerId::as_str).collect::<Vec<_>>().join(", ");
    if ids.len() > 3 {
        s.push_str(", ...");
    }
    s
}
