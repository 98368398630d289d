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

use super::{fsx, size, whiteout, Layers, Native};
use crate::error::{Context, Error, Result};
use crate::fsutil::{self, DirStack, Mounts};
use crate::store::Store;

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

/// One entry of [`Driver::changes`](crate::Driver::changes): an absolute path (leading `/`) and how it changed.
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

impl Store {
    /// The work of [`Driver::changes`](crate::Driver::changes).
    pub(crate) fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        self.changes_each(id, parent, |c| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// The work of [`Driver::changes_each`](crate::Driver::changes_each).
    pub(crate) fn changes_each(
        &self,
        id: &str,
        parent: Option<&str>,
        mut f: impl FnMut(Change) -> std::io::Result<()>,
    ) -> Result<()> {
        let (layers, native) = self.layers_for(id, parent)?;
        let all = if native {
            let lower = Merged::new(&layers.lowers)?;
            match native_tree(layers.upper.as_fd(), lower)? {
                Native::Done(tree) => return tree.emit(&mut f).ctx(|| "writing the changes".into()),
                Native::NeedsMount(_) => {
                    drop(layers);
                    let (_mounted, new, old) = self.mounted_views(id, parent)?;
                    naive(&new, &old)?
                }
            }
        } else {
            let (new, old) = self.naive_views(layers, parent)?;
            naive(&new, &old)?
        };
        for c in all {
            f(c).ctx(|| "writing the changes".into())?;
        }
        Ok(())
    }

    /// The work of [`Driver::diff_size`](crate::Driver::diff_size).
    pub(crate) fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
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

impl Store {
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
    /// Which of the view's root layers each entry of `layers` is (so a deep walk can close
    /// and re-open them).
    ids: Vec<usize>,
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

/// Whether a layer directory is opaque. One `listxattr` answers in the common case of a
/// directory without the xattr (rather than one `getxattr` per namespace).
fn opaque(fd: BorrowedFd<'_>) -> Result<bool> {
    let list = fsx::flist_xattrs(fd).ctx(|| "listing the xattrs of a directory".into())?;
    for key in [whiteout::OPAQUE_TRUSTED, whiteout::OPAQUE_USER] {
        if fsx::listed(&list, key)
            && fsx::fget_xattr(fd, key)
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
        let ids = (0..layers.len()).collect();
        Ok(Merged { layers, ids })
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
        self.lookup_at(name, 0)
    }

    /// [`Merged::lookup`] of a name [`Merged::list_top`] found first in layer `top`: the
    /// layers above it, which do not have it, are not asked again.
    pub(crate) fn lookup_at(&self, name: &CStr, top: usize) -> Result<Option<Found>> {
        let mut first: Option<(Stat, usize)> = None;
        let mut dirs = Vec::new();
        let mut ids = Vec::new();
        for (i, fd) in self.layers.iter().enumerate().skip(top) {
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
            ids.push(self.ids[i]);
            if stop {
                break;
            }
        }
        Ok(first.map(|(st, layer)| Found {
            st,
            layer,
            dir: if dirs.is_empty() { None } else { Some(Merged { layers: dirs, ids }) },
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

    /// Every visible name, sorted. A name is visible unless its topmost entry is a whiteout
    /// (the layers are already cut at an opaque directory), and only a character device can
    /// be one: so only those are stat'ed, not every name.
    pub(crate) fn list(&self) -> Result<BTreeSet<CString>> {
        Ok(self.list_top()?.into_keys().collect())
    }

    /// [`Merged::list`] with the topmost layer each name is in, for [`Merged::lookup_at`]:
    /// in a view of many layers, a name from the bottom one is then stat'ed once, not once
    /// per layer.
    pub(crate) fn list_top(&self) -> Result<BTreeMap<CString, usize>> {
        let mut seen = BTreeSet::new();
        let mut out = BTreeMap::new();
        for (i, fd) in self.layers.iter().enumerate() {
            for e in fsutil::list_walk_dir(fd.as_fd()).ctx(|| "listing a lower directory".into())? {
                if seen.contains(&e.name) {
                    continue;
                }
                let visible = e.file_type != FileType::CharacterDevice
                    || match rfs::statat(fd, &e.name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => !whiteout::is_whiteout(&st),
                        // Gone since the listing: a lower layer may still show it.
                        Err(Errno::NOENT) => continue,
                        Err(err) => {
                            return Err(Error::io(
                                format!("stat of {:?} in a lower layer", OsStr::from_bytes(e.name.to_bytes())),
                                err,
                            ))
                        }
                    };
                if visible {
                    out.insert(e.name.clone(), i);
                }
                seen.insert(e.name);
            }
        }
        Ok(out)
    }

    /// The same view with its own fds.
    pub(crate) fn try_clone(&self) -> Result<Merged> {
        let layers: std::io::Result<Vec<OwnedFd>> = self.layers.iter().map(|f| f.try_clone()).collect();
        Ok(Merged { layers: layers.ctx(|| "duplicating layer fds".into())?, ids: self.ids.clone() })
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

/// The changes found so far, as a tree of names rather than full paths, so a deep tree
/// costs memory per change, not per path byte. Node 0 is the root.
struct Tree {
    nodes: Vec<Node>,
}

struct Node {
    name: Box<[u8]>,
    kind: Option<ChangeKind>,
    children: Vec<usize>,
}

impl Tree {
    fn add(&mut self, parent: usize, name: &[u8], kind: Option<ChangeKind>) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node { name: name.into(), kind, children: Vec::new() });
        self.nodes[parent].children.push(i);
        i
    }

    /// Calls `f` for every change in byte order of full paths (the order Docker sorts by).
    /// Within a directory, an entry's own path sorts at `name` and its descendants at
    /// `name/`; names hold no `/`, so ordering these keys orders the full paths.
    fn emit(self, f: &mut impl FnMut(Change) -> std::io::Result<()>) -> std::io::Result<()> {
        let items = |t: &Tree, n: usize| {
            let mut v: Vec<(Vec<u8>, usize, bool)> = Vec::new();
            for &c in &t.nodes[n].children {
                let node = &t.nodes[c];
                if node.kind.is_some() {
                    v.push((node.name.to_vec(), c, false));
                }
                if !node.children.is_empty() {
                    let mut k = node.name.to_vec();
                    k.push(b'/');
                    v.push((k, c, true));
                }
            }
            v.sort();
            v.into_iter()
        };
        let mut path = Vec::new();
        let mut stack = vec![(items(&self, 0), 0usize)];
        while let Some((it, _)) = stack.last_mut() {
            let Some((_, c, sub)) = it.next() else {
                let (_, plen) = stack.pop().expect("non-empty");
                path.truncate(plen);
                continue;
            };
            let plen = path.len();
            path.push(b'/');
            path.extend_from_slice(&self.nodes[c].name);
            if sub {
                stack.push((items(&self, c), plen));
            } else {
                let kind = self.nodes[c].kind.expect("listed as a change");
                f(Change { path: PathBuf::from(OsStr::from_bytes(&path)), kind })?;
                path.truncate(plen);
            }
        }
        Ok(())
    }
}

/// What the native walk keeps for each directory on its path.
struct Level {
    /// The directory's node in the tree, once something at or below it changed.
    node: Option<usize>,
    /// `None` inside an added directory: everything below is added.
    cmp: Option<Cmp>,
}

struct Cmp {
    /// The parent's view of this directory; parked while the walk is below it.
    lower: Option<Lower>,
    /// The layer's view of this directory is the upper alone (it or a directory above it is
    /// opaque), so everything the parent's view holds here and the upper lacks is deleted.
    hidden: bool,
    /// The directory itself was recorded as modified.
    modified: bool,
    /// Something at or below it changed.
    changed: bool,
}

/// A level's lower view: open while the walk is in the directory itself; parked while it is
/// below. Parked, the fds of layers that also hold the child the walk went into are closed
/// (the child's `..` gives them back); only layers the path leaves stay open, and each layer
/// leaves the path once, so the lower side needs at most two fds per layer at any depth
/// (plus the budget of [`park_excess`], which parks only past it).
pub(crate) enum Lower {
    Open(Merged),
    Parked(Vec<ParkedLayer>),
}

pub(crate) struct ParkedLayer {
    id: usize,
    dev: u64,
    ino: u64,
    fd: Option<OwnedFd>,
}

/// Directory fds the open views of a walk over merged views may hold before the shallowest
/// ones are parked: a walk of a shallow tree over a short chain then parks nothing (parking
/// costs a stat per layer, and re-opening through `..` two calls more), while a deep tree or
/// a long chain stays bounded as before. At most 128, and an eighth of the process's fd
/// limit, so a process with a tight limit parks as early as it always did.
fn view_fds() -> usize {
    static FDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *FDS.get_or_init(|| {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        soft.map_or(128, |n| (n / 8).min(128) as usize)
    })
}

/// Parks the shallowest open views of a walk's stack of views (`None` where a level has no
/// view), each from the one below it, until the open ones hold at most [`view_fds`] fds. The
/// open views are always the deepest ones, the current directory's included.
pub(crate) fn park_excess(mut chain: Vec<Option<&mut Lower>>) -> Result<()> {
    let mut open: usize = chain.iter().flatten().map(|l| l.open_fds()).sum();
    let budget = view_fds();
    for j in 0..chain.len().saturating_sub(1) {
        if open <= budget {
            break;
        }
        let (head, tail) = chain.split_at_mut(j + 1);
        let (Some(l), Some(below)) = (head[j].as_deref_mut(), tail[0].as_deref()) else { continue };
        if matches!(l, Lower::Parked(_)) {
            continue;
        }
        let before = l.open_fds();
        l.park(Some(below.view()))?;
        open = open + l.open_fds() - before;
    }
    Ok(())
}

impl Lower {
    /// Directory fds the view holds open.
    fn open_fds(&self) -> usize {
        match self {
            Lower::Open(m) => m.layers.len(),
            Lower::Parked(p) => p.iter().filter(|l| l.fd.is_some()).count(),
        }
    }

    pub(crate) fn view(&self) -> &Merged {
        match self {
            Lower::Open(m) => m,
            Lower::Parked(_) => unreachable!("the current directory's view is open"),
        }
    }

    /// Closes what the child view `below` can give back through `..`.
    pub(crate) fn park(&mut self, below: Option<&Merged>) -> Result<()> {
        let Lower::Open(m) = self else { return Ok(()) };
        let m = std::mem::replace(m, Merged { layers: Vec::new(), ids: Vec::new() });
        let mut parked = Vec::with_capacity(m.layers.len());
        for (fd, id) in m.layers.into_iter().zip(m.ids) {
            let st = rfs::fstat(&fd).ctx(|| "stat of a lower directory".into())?;
            let reopenable = below.is_some_and(|b| b.ids.contains(&id));
            parked.push(ParkedLayer {
                id,
                dev: st.st_dev,
                ino: st.st_ino,
                fd: if reopenable { None } else { Some(fd) },
            });
        }
        *self = Lower::Parked(parked);
        Ok(())
    }

    /// Re-opens a parked view from the child view the walk climbs out of.
    pub(crate) fn unpark(&mut self, below: Option<&Merged>) -> Result<()> {
        let Lower::Parked(p) = self else { return Ok(()) };
        let mut layers = Vec::with_capacity(p.len());
        let mut ids = Vec::with_capacity(p.len());
        for l in p.drain(..) {
            let fd = match l.fd {
                Some(fd) => fd,
                None => {
                    let b = below.expect("closed layers have a child view");
                    let at = b.ids.iter().position(|&i| i == l.id).expect("closed only when the child has it");
                    let fd = fsutil::open_dir(&b.layers[at], c"..").ctx(|| "re-opening a lower directory".into())?;
                    let st = rfs::fstat(&fd).ctx(|| "stat of a lower directory".into())?;
                    if st.st_dev != l.dev || st.st_ino != l.ino {
                        return Err(Error::io(
                            "re-opening a lower directory",
                            std::io::Error::other("a directory was moved while the tree was being walked"),
                        ));
                    }
                    fd
                }
            };
            layers.push(fd);
            ids.push(l.id);
        }
        *self = Lower::Open(Merged { layers, ids });
        Ok(())
    }
}

/// Records `kind` for `name` in the walk's current directory, creating the nodes of the
/// directories above it on first use; returns the new node.
fn record(stack: &mut DirStack<Level>, tree: &mut Tree, name: &[u8], kind: Option<ChangeKind>) -> usize {
    let mut up = 0;
    while stack.data_at(up).expect("the root level has a node").node.is_none() {
        up += 1;
    }
    let mut parent = stack.data_at(up).and_then(|l| l.node).expect("found above");
    while up > 0 {
        up -= 1;
        let n = stack.name_at(up).to_bytes().to_vec();
        parent = tree.add(parent, &n, None);
        stack.data_at(up).expect("on the path").node = Some(parent);
    }
    tree.add(parent, name, kind)
}

/// The native walk: the upper tree against the lower view, on an explicit stack so the upper
/// side needs a bounded number of fds at any depth.
fn native_tree(upper: BorrowedFd<'_>, lower: Merged) -> Result<Native<Tree>> {
    let mut tree = Tree { nodes: vec![Node { name: Box::new([]), kind: None, children: Vec::new() }] };
    let hidden = opaque(upper)?;
    let root = Level {
        node: Some(0),
        cmp: Some(Cmp { lower: Some(Lower::Open(lower)), hidden, modified: false, changed: false }),
    };
    let upper = upper.try_clone_to_owned().ctx(|| "duplicating the upper dir fd".into())?;
    let mut stack = DirStack::new(upper, c"", root, Mounts::Follow).ctx(|| "listing the upper dir".into())?;
    let show = |s: &DirStack<Level>, n: Option<&CStr>| String::from_utf8_lossy(&s.path(n)).into_owned();
    loop {
        let Some(ent) = stack.next_entry() else {
            finish_dir(&mut stack, &mut tree)?;
            if stack.depth() == 1 {
                return Ok(Native::Done(tree));
            }
            let (name, done) = stack.pop().ctx(|| format!("returning from {}", show(&stack, None)))?;
            if let Some(c) = stack.data().cmp.as_mut() {
                let below = done.cmp.as_ref().and_then(|d| d.lower.as_ref()).map(Lower::view);
                if let Some(l) = c.lower.as_mut() {
                    l.unpark(below)?;
                }
            }
            if let (Some(c), Some(p)) = (done.cmp, stack.data().cmp.as_mut()) {
                if c.changed {
                    p.changed = true;
                    if !c.modified {
                        match done.node {
                            Some(n) => tree.nodes[n].kind = Some(ChangeKind::Modify),
                            None => {
                                record(&mut stack, &mut tree, name.to_bytes(), Some(ChangeKind::Modify));
                            }
                        }
                    }
                }
            }
            continue;
        };
        let name = ent.name.as_c_str();
        let mut st = None;
        if ent.file_type == FileType::CharacterDevice {
            let s = rfs::statat(stack.fd(), name, AtFlags::SYMLINK_NOFOLLOW).ctx(|| "stat in the upper dir".into())?;
            if whiteout::is_whiteout(&s) {
                let deleted = match stack.data_ref().cmp.as_ref().and_then(|c| c.lower.as_ref()).map(Lower::view) {
                    Some(l) => l.lookup(name)?.is_some(),
                    None => false,
                };
                if deleted {
                    record(&mut stack, &mut tree, name.to_bytes(), Some(ChangeKind::Delete));
                    stack.data().cmp.as_mut().expect("compared").changed = true;
                }
                continue;
            }
            st = Some(s);
        }
        let old = match stack.data_ref().cmp.as_ref().and_then(|c| c.lower.as_ref()).map(Lower::view) {
            Some(l) => l.lookup(name)?,
            None => None,
        };
        let Some(old) = old else {
            let node = record(&mut stack, &mut tree, name.to_bytes(), Some(ChangeKind::Add));
            if let Some(c) = stack.data().cmp.as_mut() {
                c.changed = true;
            }
            if ent.file_type == FileType::Directory {
                let fd = stack.open_child(name).ctx(|| format!("opening {}", show(&stack, Some(name))))?;
                if redirected(fd.as_fd())? {
                    return Ok(Native::NeedsMount(stack.path(Some(name))));
                }
                let lvl = Level { node: Some(node), cmp: None };
                stack.push(name, fd, lvl).ctx(|| format!("listing {}", show(&stack, Some(name))))?;
            }
            continue;
        };
        let new = match st {
            Some(s) => s,
            None => rfs::statat(stack.fd(), name, AtFlags::SYMLINK_NOFOLLOW).ctx(|| "stat in the upper dir".into())?,
        };
        let new_ty = FileType::from_raw_mode(new.st_mode);
        if new_ty == FileType::RegularFile && new.st_blocks == 0 && new.st_size > 0 {
            // Possibly a metacopy-only copy-up, whose data lives in the lower layer.
            if fsx::lget_xattr_at(stack.fd(), name, c"trusted.overlay.metacopy")
                .ctx(|| "reading xattrs".into())?
                .is_some()
                || fsx::lget_xattr_at(stack.fd(), name, c"user.overlay.metacopy")
                    .ctx(|| "reading xattrs".into())?
                    .is_some()
            {
                return Ok(Native::NeedsMount(stack.path(Some(name))));
            }
        }
        let cap_new = capability_at(stack.fd(), name, &new)?;
        let cmp = stack.data_ref().cmp.as_ref().expect("old found implies a compared dir");
        let lower_dir = cmp.lower.as_ref().expect("old found implies a lower view").view();
        let hidden = cmp.hidden;
        let modified = stat_different(&old.st, &new) || cap_new != lower_dir.capability(&old, name)?;
        let mut node = None;
        if modified {
            node = Some(record(&mut stack, &mut tree, name.to_bytes(), Some(ChangeKind::Modify)));
            stack.data().cmp.as_mut().expect("compared").changed = true;
        }
        if new_ty == FileType::Directory {
            let fd = stack.open_child(name).ctx(|| format!("opening {}", show(&stack, Some(name))))?;
            if redirected(fd.as_fd())? {
                return Ok(Native::NeedsMount(stack.path(Some(name))));
            }
            let hide = hidden || opaque(fd.as_fd())?;
            if let Some(l) = stack.data().cmp.as_mut().and_then(|c| c.lower.as_mut()) {
                l.park(old.dir.as_ref())?;
            }
            let lvl = Level {
                node,
                cmp: Some(Cmp { lower: old.dir.map(Lower::Open), hidden: hide, modified, changed: false }),
            };
            stack.push(name, fd, lvl).ctx(|| format!("listing {}", show(&stack, Some(name))))?;
        }
    }
}

/// At the end of a directory the parent's view still holds what an opaque upper hides.
fn finish_dir(stack: &mut DirStack<Level>, tree: &mut Tree) -> Result<()> {
    let Some(cmp) = stack.data().cmp.as_mut() else { return Ok(()) };
    if !cmp.hidden {
        return Ok(());
    }
    let Some(lower) = cmp.lower.take() else { return Ok(()) };
    let names = lower.view().list();
    stack.data().cmp.as_mut().expect("compared").lower = Some(lower);
    for n in names? {
        let present = fsutil::file_type(stack.fd(), &n).ctx(|| "stat in the upper dir".into())?.is_some();
        if !present {
            record(stack, tree, n.to_bytes(), Some(ChangeKind::Delete));
            stack.data().cmp.as_mut().expect("compared").changed = true;
        }
    }
    Ok(())
}

/// Docker's `addChanges` over two merged views, walked in full, on an explicit stack whose
/// views above the current directory are parked (see [`Lower`]), so fds stay bounded at any
/// depth.
fn naive_dir(_path: &[u8], new: Option<&Merged>, old: Option<&Merged>, out: &mut Vec<Change>) -> Result<bool> {
    struct Lv {
        new: Lower,
        old: Option<Lower>,
        names: std::collections::btree_map::IntoIter<CString, usize>,
        old_left: BTreeMap<CString, usize>,
        /// Length of `path` before this directory's `/name`.
        plen: usize,
        /// Whether the parent uses what this directory's walk found (not inside an add).
        report: bool,
        modified: bool,
        changed: bool,
        start: usize,
    }
    let Some(new) = new else { return Ok(false) };
    let level = |new: Merged, old: Option<Merged>, plen, report, modified, start| -> Result<Lv> {
        let names = new.list_top()?.into_iter();
        let old_left = match &old {
            Some(o) => o.list_top()?,
            None => BTreeMap::new(),
        };
        Ok(Lv {
            new: Lower::Open(new),
            old: old.map(Lower::Open),
            names,
            old_left,
            plen,
            report,
            modified,
            changed: false,
            start,
        })
    };
    let old = match old {
        Some(o) => Some(o.try_clone()?),
        None => None,
    };
    let mut path = Vec::new();
    let mut stack = vec![level(new.try_clone()?, old, 0, true, false, out.len())?];
    loop {
        let top = stack.last_mut().expect("non-empty until the root is done");
        let Some((n, ntop)) = top.names.next() else {
            for (n, _) in std::mem::take(&mut top.old_left) {
                push(out, &child_path(&path, &n), ChangeKind::Delete);
                top.changed = true;
            }
            let done = stack.pop().expect("non-empty");
            let changed = done.changed || out.len() > done.start;
            let Some(parent) = stack.last_mut() else { return Ok(changed) };
            parent.new.unpark(Some(done.new.view()))?;
            if let Some(o) = parent.old.as_mut() {
                o.unpark(done.old.as_ref().map(Lower::view))?;
            }
            if done.report && changed {
                parent.changed = true;
                if !done.modified {
                    push(out, &path, ChangeKind::Modify);
                }
            }
            path.truncate(done.plen);
            continue;
        };
        let Some(nf) = top.new.view().lookup_at(&n, ntop)? else { continue };
        let of = match (&top.old, top.old_left.remove(&n)) {
            (Some(o), Some(otop)) => o.view().lookup_at(&n, otop)?,
            _ => None,
        };
        let child = child_path(&path, &n);
        let (sub_new, sub_old, report, modified) = match of {
            None => {
                push(out, &child, ChangeKind::Add);
                top.changed = true;
                (nf.dir, None, false, false)
            }
            Some(of) => {
                let o = top.old.as_ref().expect("found in old").view();
                let modified =
                    stat_different(&of.st, &nf.st) || top.new.view().capability(&nf, &n)? != o.capability(&of, &n)?;
                if modified {
                    push(out, &child, ChangeKind::Modify);
                    top.changed = true;
                }
                let is_dir = FileType::from_raw_mode(nf.st.st_mode) == FileType::Directory;
                if !is_dir {
                    continue;
                }
                (nf.dir, of.dir, true, modified)
            }
        };
        let Some(sub_new) = sub_new else { continue };
        let plen = path.len();
        path = child;
        let lv = level(sub_new, sub_old, plen, report, modified, out.len())?;
        stack.push(lv);
        park_excess(stack.iter_mut().map(|l| Some(&mut l.new)).collect())?;
        park_excess(stack.iter_mut().map(|l| l.old.as_mut()).collect())?;
    }
}
