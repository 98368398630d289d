//! `changes` and `diff_size`, computed from the layer's upper dir against its lower chain
//! without mounting and without walking the lower trees (moby/moby#39428): only paths the
//! upper mentions are looked up below it, plus the listings of directories it makes opaque.
//! When the caller names a layer other than the real parent, both merged views are walked
//! in full, which is what Docker's naive path computes through two mounts.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType, Stat};
use rustix::io::Errno;

use super::{fsx, size, whiteout, Layers};
use crate::driver::Driver;
use crate::error::{Context, Error, Result};
use crate::fsutil;

/// How a path differs from the parent, with Docker's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[repr(u8)]
pub enum ChangeKind {
    /// Present in both, with different metadata or content.
    Modify = 0,
    /// Present only in the layer.
    Add = 1,
    /// Present only in the parent.
    Delete = 2,
}

/// One entry of [`Driver::changes`]: an absolute path (leading `/`) and how it changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Absolute path inside the container filesystem.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl std::fmt::Display for Change {
    /// Docker's text form: `C /p`, `A /p` or `D /p`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = match self.kind {
            ChangeKind::Modify => 'C',
            ChangeKind::Add => 'A',
            ChangeKind::Delete => 'D',
        };
        write!(f, "{k} {}", self.path.display())
    }
}

impl Driver {
    /// The paths layer `id` adds, modifies or deletes relative to `parent`, sorted by path,
    /// with exactly Docker's rules (see docs/archives.md).
    pub fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        let (layers, native) = self.layers_for(id, parent)?;
        let mut out = Vec::new();
        if native {
            let lower = Merged::new(&layers.lowers)?;
            let hidden = opaque(layers.upper.as_fd())?;
            if let Err(e) = native_dir(b"", layers.upper.as_fd(), Some(&lower), hidden, &mut out) {
                if !super::needs_mount(&e) {
                    return Err(e);
                }
                drop(layers);
                let (_mounted, new, old) = self.mounted_views(id, parent)?;
                return naive(&new, &old);
            }
        } else {
            let (new, old) = self.naive_views(layers, parent)?;
            naive_dir(b"", Some(&new), Some(&old), &mut out)?;
        }
        out.sort_by(|a, b| a.path.as_os_str().as_bytes().cmp(b.path.as_os_str().as_bytes()));
        Ok(out)
    }

    /// Docker's `DiffSize`: with the real parent, the size of the layer's own `diff` (what
    /// `apply_diff` returned); against another layer, the sizes of added and modified
    /// non-directories, hardlinks counted once.
    pub fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
        let (layers, native) = self.layers_for(id, parent)?;
        if native {
            return size::tree_size(layers.upper.as_fd()).ctx(|| format!("measuring layer {id:?}"));
        }
        let (new, old) = self.naive_views(layers, parent)?;
        naive_size(&new, &old)
    }
}

/// Docker's naive DiffSize: added and modified non-directories of `new`, hardlinks once.
fn naive_size(new: &Merged, old: &Merged) -> Result<u64> {
    {
        let mut changes = Vec::new();
        naive_dir(b"", Some(new), Some(old), &mut changes)?;
        let mut seen = HashSet::new();
        let mut total = 0u64;
        for c in changes.iter().filter(|c| c.kind != ChangeKind::Delete) {
            let rel = &c.path.as_os_str().as_bytes()[1..];
            if let Some(f) = new.lookup_path(rel)? {
                if FileType::from_raw_mode(f.st.st_mode) == FileType::Directory {
                    continue;
                }
                if f.st.st_nlink > 1 && !seen.insert((f.st.st_dev, f.st.st_ino)) {
                    continue;
                }
                total += f.st.st_size as u64;
            }
        }
        Ok(total)
    }
}

impl Driver {
    /// The layer's merged view and `parent`'s, for the naive comparison.
    pub(crate) fn naive_views(&self, layers: Layers, parent: Option<&str>) -> Result<(Merged, Merged)> {
        let mut new_fds = vec![layers.upper];
        new_fds.extend(layers.lowers);
        let new = Merged::from_owned(new_fds)?;
        let old = match parent {
            None => Merged::from_owned(Vec::new())?,
            Some(p) => {
                let pl = self.open_layers(p)?;
                let mut fds = vec![pl.upper];
                fds.extend(pl.lowers);
                Merged::from_owned(fds)?
            }
        };
        Ok((new, old))
    }
}

/// A directory in a merged (overlay) view: the same directory in each layer that
/// contributes to it, top first, cut at the first opaque one.
pub(crate) struct Merged {
    layers: Vec<OwnedFd>,
}

/// One entry found in a merged view.
pub(crate) struct Found {
    pub st: Stat,
    /// The layer (index into the parent's `layers`) the entry comes from.
    layer: usize,
    /// For directories, the merged directory.
    pub dir: Option<Merged>,
}

/// Docker's naive changes between two merged views, sorted by path.
pub(crate) fn naive(new: &Merged, old: &Merged) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    naive_dir(b"", Some(new), Some(old), &mut out)?;
    out.sort_by(|a, b| a.path.as_os_str().as_bytes().cmp(b.path.as_os_str().as_bytes()));
    Ok(out)
}

fn opaque(fd: BorrowedFd<'_>) -> Result<bool> {
    for key in [whiteout::OPAQUE_TRUSTED, whiteout::OPAQUE_USER] {
        if fsx::fget_xattr(fd, key)
            .ctx(|| "reading the opaque xattr".into())?
            .is_some_and(|v| whiteout::is_opaque_value(&v))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Merged {
    fn new(fds: &[OwnedFd]) -> Result<Merged> {
        let dup: std::io::Result<Vec<OwnedFd>> = fds.iter().map(|f| f.try_clone()).collect();
        Merged::from_owned(dup.ctx(|| "duplicating layer fds".into())?)
    }

    pub(crate) fn from_owned(fds: Vec<OwnedFd>) -> Result<Merged> {
        // A layer root marked opaque hides everything below it.
        let mut layers = Vec::with_capacity(fds.len());
        for fd in fds {
            let stop = opaque(fd.as_fd())?;
            layers.push(fd);
            if stop {
                break;
            }
        }
        Ok(Merged { layers })
    }

    /// The layer directory an entry found in this directory lives in.
    pub(crate) fn layer(&self, f: &Found) -> BorrowedFd<'_> {
        self.layers[f.layer].as_fd()
    }

    /// Resolves a relative path; returns the entry and (a duplicate of) the layer directory
    /// it lives in.
    pub(crate) fn lookup_path_in(&self, rel: &[u8]) -> Result<Option<(OwnedFd, Found)>> {
        let (dir, base) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let name = CString::new(base).map_err(|_| Error::InvalidArgument("NUL in path".into()))?;
        let parent = if dir.is_empty() {
            None
        } else {
            match self.lookup_path(dir)? {
                Some(Found { dir: Some(d), .. }) => Some(d),
                _ => return Ok(None),
            }
        };
        let m = parent.as_ref().unwrap_or(self);
        let Some(f) = m.lookup(&name)? else { return Ok(None) };
        let fd = m.layers[f.layer].try_clone().ctx(|| "duplicating a layer fd".into())?;
        Ok(Some((fd, f)))
    }

    /// Looks `name` up as overlayfs would.
    pub(crate) fn lookup(&self, name: &CStr) -> Result<Option<Found>> {
        let mut first: Option<(Stat, usize)> = None;
        let mut dirs = Vec::new();
        for (i, fd) in self.layers.iter().enumerate() {
            let st = match rfs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("stat of {:?} in a lower layer", OsStr::from_bytes(name.to_bytes())),
                        e,
                    ))
                }
            };
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if first.is_none() {
                if whiteout::is_whiteout(&st) {
                    return Ok(None);
                }
                first = Some((st, i));
                if !is_dir {
                    break;
                }
            } else if !is_dir {
                // A whiteout or a file below a directory ends the merge.
                break;
            }
            let dfd = fsutil::open_dir(fd, name).ctx(|| "opening a lower directory".into())?;
            let stop = opaque(dfd.as_fd())?;
            dirs.push(dfd);
            if stop {
                break;
            }
        }
        Ok(first.map(|(st, layer)| Found {
            st,
            layer,
            dir: if dirs.is_empty() { None } else { Some(Merged { layers: dirs }) },
        }))
    }

    fn lookup_path(&self, rel: &[u8]) -> Result<Option<Found>> {
        let mut comps = rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).peekable();
        let mut cur: Option<Found> = None;
        while let Some(c) = comps.next() {
            let name = CString::new(c).map_err(|_| Error::InvalidArgument("NUL in path".into()))?;
            let here = match &cur {
                None => self.lookup(&name)?,
                Some(f) => match &f.dir {
                    Some(d) => d.lookup(&name)?,
                    None => return Ok(None),
                },
            };
            match here {
                None => return Ok(None),
                Some(f) => cur = Some(f),
            }
            if comps.peek().is_none() {
                break;
            }
        }
        Ok(cur)
    }

    /// Every visible name, sorted.
    pub(crate) fn list(&self) -> Result<BTreeSet<CString>> {
        let mut names = BTreeSet::new();
        for fd in &self.layers {
            for e in fsutil::list_dir(fd).ctx(|| "listing a lower directory".into())? {
                names.insert(e.name);
            }
        }
        let mut out = BTreeSet::new();
        for n in names {
            if self.lookup(&n)?.is_some() {
                out.insert(n);
            }
        }
        Ok(out)
    }

    fn capability(&self, f: &Found, name: &CStr) -> Result<Option<Vec<u8>>> {
        capability_at(self.layers[f.layer].as_fd(), name, &f.st)
    }
}

fn capability_at(dir: BorrowedFd<'_>, name: &CStr, st: &Stat) -> Result<Option<Vec<u8>>> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile | FileType::Directory => {
            fsx::lget_xattr_at(dir, name, c"security.capability").ctx(|| "reading security.capability".into())
        }
        _ => Ok(None),
    }
}

/// go-archive's `sameFsTime`: equal, or the same second with one side lacking nanoseconds.
fn same_time(a: &Stat, b: &Stat) -> bool {
    a.st_mtime == b.st_mtime && (a.st_mtime_nsec == b.st_mtime_nsec || a.st_mtime_nsec == 0 || b.st_mtime_nsec == 0)
}

/// go-archive's `statDifferent`.
fn stat_different(old: &Stat, new: &Stat) -> bool {
    if old.st_mode != new.st_mode || old.st_uid != new.st_uid || old.st_gid != new.st_gid || old.st_rdev != new.st_rdev
    {
        return true;
    }
    let dir = FileType::from_raw_mode(old.st_mode) == FileType::Directory;
    !dir && (!same_time(old, new) || old.st_size != new.st_size)
}

fn child_path(path: &[u8], name: &CStr) -> Vec<u8> {
    let mut p = path.to_vec();
    p.push(b'/');
    p.extend_from_slice(name.to_bytes());
    p
}

fn push(out: &mut Vec<Change>, path: &[u8], kind: ChangeKind) {
    out.push(Change { path: PathBuf::from(OsStr::from_bytes(path)), kind });
}

fn redirected(fd: BorrowedFd<'_>) -> Result<bool> {
    for key in whiteout::REDIRECT_XATTRS {
        if fsx::fget_xattr(fd, key).ctx(|| "reading overlay xattrs".into())?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn redirect_error(path: &[u8]) -> Error {
    Error::Unsupported(format!(
        "{} carries an {}; changes cannot be computed from the upper directory alone",
        String::from_utf8_lossy(path),
        super::REDIRECT_MARK
    ))
}

/// The native walk over one upper directory. `hidden` says the layer's view of this
/// directory is the upper alone (it, or a directory above it, is opaque), so everything the
/// parent's view holds here and the upper lacks is deleted. Returns whether anything below
/// changed.
fn native_dir(
    path: &[u8],
    upper: BorrowedFd<'_>,
    lower: Option<&Merged>,
    hidden: bool,
    out: &mut Vec<Change>,
) -> Result<bool> {
    let ents = fsutil::list_dir(upper).ctx(|| format!("listing {}", String::from_utf8_lossy(path)))?;
    let mut changed = false;
    for ent in &ents {
        let child = child_path(path, &ent.name);
        let mut st = None;
        if ent.file_type == FileType::CharacterDevice {
            let s = rfs::statat(upper, &ent.name, AtFlags::SYMLINK_NOFOLLOW).ctx(|| "stat in the upper dir".into())?;
            if whiteout::is_whiteout(&s) {
                if let Some(l) = lower {
                    if l.lookup(&ent.name)?.is_some() {
                        push(out, &child, ChangeKind::Delete);
                        changed = true;
                    }
                }
                continue;
            }
            st = Some(s);
        }
        let old = match lower {
            Some(l) => l.lookup(&ent.name)?,
            None => None,
        };
        let Some(old) = old else {
            push(out, &child, ChangeKind::Add);
            changed = true;
            if ent.file_type == FileType::Directory {
                let fd = fsutil::open_dir(upper, &ent.name).ctx(|| "opening an upper dir".into())?;
                if redirected(fd.as_fd())? {
                    return Err(redirect_error(&child));
                }
                add_all(&child, fd.as_fd(), out)?;
            }
            continue;
        };
        let new = match st {
            Some(s) => s,
            None => rfs::statat(upper, &ent.name, AtFlags::SYMLINK_NOFOLLOW).ctx(|| "stat in the upper dir".into())?,
        };
        let new_ty = FileType::from_raw_mode(new.st_mode);
        if new_ty == FileType::RegularFile && new.st_blocks == 0 && new.st_size > 0 {
            // Possibly a metacopy-only copy-up, whose data lives in the lower layer.
            if fsx::lget_xattr_at(upper, &ent.name, c"trusted.overlay.metacopy")
                .ctx(|| "reading xattrs".into())?
                .is_some()
                || fsx::lget_xattr_at(upper, &ent.name, c"user.overlay.metacopy")
                    .ctx(|| "reading xattrs".into())?
                    .is_some()
            {
                return Err(redirect_error(&child));
            }
        }
        let lower_dir = lower.expect("old found implies a lower view");
        let modified = stat_different(&old.st, &new)
            || capability_at(upper, &ent.name, &new)? != lower_dir.capability(&old, &ent.name)?;
        if modified {
            push(out, &child, ChangeKind::Modify);
            changed = true;
        }
        if new_ty == FileType::Directory {
            let fd = fsutil::open_dir(upper, &ent.name).ctx(|| "opening an upper dir".into())?;
            if redirected(fd.as_fd())? {
                return Err(redirect_error(&child));
            }
            let hide = hidden || opaque(fd.as_fd())?;
            if native_dir(&child, fd.as_fd(), old.dir.as_ref(), hide, out)? {
                changed = true;
                if !modified {
                    push(out, &child, ChangeKind::Modify);
                }
            }
        }
    }
    if hidden {
        if let Some(l) = lower {
            let mine: BTreeSet<&CStr> = ents.iter().map(|e| e.name.as_c_str()).collect();
            for n in l.list()? {
                if !mine.contains(n.as_c_str()) {
                    push(out, &child_path(path, &n), ChangeKind::Delete);
                    changed = true;
                }
            }
        }
    }
    Ok(changed)
}

/// Everything below an added directory is added (whiteouts are invisible in the view).
fn add_all(path: &[u8], dir: BorrowedFd<'_>, out: &mut Vec<Change>) -> Result<()> {
    for ent in fsutil::list_dir(dir).ctx(|| "listing an upper dir".into())? {
        if ent.file_type == FileType::CharacterDevice {
            let s = rfs::statat(dir, &ent.name, AtFlags::SYMLINK_NOFOLLOW).ctx(|| "stat in the upper dir".into())?;
            if whiteout::is_whiteout(&s) {
                continue;
            }
        }
        let child = child_path(path, &ent.name);
        push(out, &child, ChangeKind::Add);
        if ent.file_type == FileType::Directory {
            let fd = fsutil::open_dir(dir, &ent.name).ctx(|| "opening an upper dir".into())?;
            add_all(&child, fd.as_fd(), out)?;
        }
    }
    Ok(())
}

/// Docker's `addChanges` over two merged views, walked in full.
fn naive_dir(path: &[u8], new: Option<&Merged>, old: Option<&Merged>, out: &mut Vec<Change>) -> Result<bool> {
    let Some(new) = new else { return Ok(false) };
    let start = out.len();
    let new_names = new.list()?;
    let mut old_left: BTreeMap<CString, ()> = match old {
        Some(o) => o.list()?.into_iter().map(|n| (n, ())).collect(),
        None => BTreeMap::new(),
    };
    let mut changed = false;
    for n in &new_names {
        let child = child_path(path, n);
        let nf = new.lookup(n)?.expect("listed names resolve");
        let of = match old {
            Some(o) if old_left.remove(n).is_some() => o.lookup(n)?,
            _ => None,
        };
        match of {
            None => {
                push(out, &child, ChangeKind::Add);
                changed = true;
                naive_dir(&child, nf.dir.as_ref(), None, out)?;
            }
            Some(of) => {
                let o = old.expect("found in old");
                let modified = stat_different(&of.st, &nf.st) || new.capability(&nf, n)? != o.capability(&of, n)?;
                if modified {
                    push(out, &child, ChangeKind::Modify);
                    changed = true;
                }
                let is_dir = FileType::from_raw_mode(nf.st.st_mode) == FileType::Directory;
                if is_dir && naive_dir(&child, nf.dir.as_ref(), of.dir.as_ref(), out)? {
                    changed = true;
                    if !modified {
                        push(out, &child, ChangeKind::Modify);
                    }
                }
            }
        }
    }
    for n in old_left.keys() {
        push(out, &child_path(path, n), ChangeKind::Delete);
        changed = true;
    }
    Ok(changed || out.len() > start)
}
