//! The index of `ovl2-snapshotter` (ovl2 as a containerd snapshotter), in one place: the service
//! writes it through [`Index`], and `check`, `repair` and `remove` read it with the same rules
//! (docs/containerd.md).
//!
//! Each snapshot is one small JSON file, `HOME/.ovl2/snapshotter/snapshots/<layer id>`, replaced
//! whole (write `<layer id>.tmp`, fsync, rename over, fsync the directory): a crash leaves the
//! old or the new entry, never a torn one. One file per snapshot keeps every change O(1) (a
//! 500-layer import writes 500 small files, not 500 copies of a growing index); a database would
//! add a second on-disk format for `ovl2 check` and other tools to read. The file is named by the
//! layer id, which never changes, so Commit (key → name) is one rename. Each snapshot also has a
//! short link `HOME/.ovl2/snapshotter/l/<short>` → `../../../<layer id>/diff`, so mounts name
//! their lowers briefly.
//!
//! Steps that touch layers are written as intents first (`state` `creating` or `removing`), so
//! the service's next start finishes or rolls back whatever a SIGKILL interrupted; only `ready`
//! entries are snapshots containerd sees, and only they are held against `ovl2 rm` and checked
//! against the layers. A running service flocks `.ovl2/snapshotter/lock` for its whole life:
//! that is how a second service is refused and how `repair` knows to leave the index alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::check::{Problem, ProblemKind};
use crate::error::{Context, Error, Result};
use crate::fsutil::{self, LockMode};
use crate::store::Store;

/// The snapshotter's directory inside the store's private `.ovl2/`.
pub const SNAPSHOTTER_DIR: &str = "snapshotter";
/// The directory (inside the snapshotter dir) of the per-snapshot entry files.
pub const ENTRIES_DIR: &str = "snapshots";
/// The directory (inside the snapshotter dir) of the snapshots' short links: `l/<short>` →
/// `../../../<layer id>/diff`.
pub const LINKS_DIR: &str = "l";
/// The file (inside the snapshotter dir) a running service holds flocked.
pub const LOCK_FILE: &str = "lock";
/// The entry format this version reads and writes.
pub const VERSION: u32 = 1;
/// The suffix of a write in flight (an entry or a link), which the rename commits.
const TEMP_SUFFIX: &str = ".tmp";

/// `HOME/.ovl2/snapshotter`.
pub fn dir(home: &Path) -> PathBuf {
    home.join(".ovl2").join(SNAPSHOTTER_DIR)
}

/// What a snapshot's short link points to, relative to the links dir.
pub fn link_target(id: &str) -> String {
    format!("../../../{id}/diff")
}

/// Whether an entry or link name is a write in flight (or a crash's leftover of one), which
/// the service drops at start and nothing else reads.
pub fn is_temp(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}

/// A snapshot's kind, as containerd names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only, made by View.
    View,
    /// Writable, made by Prepare.
    Active,
    /// Immutable, made by Commit.
    Committed,
}

impl Kind {
    /// containerd's name for the kind, as filters compare it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// Where an entry is in its life: only `Ready` entries are visible to containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Usable.
    #[default]
    Ready,
    /// Its layer may be half made: the next start removes it.
    Creating,
    /// Its layer is being removed: the next start finishes that.
    Removing,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The ovl2 layer holding it.
    pub id: String,
    /// Its name under `l/`: the shortest unused base-36 number, so a mount's lowerdir stays
    /// short.
    pub short: String,
    /// Its kind.
    pub kind: Kind,
    /// The parent snapshot's key (always a committed one), `None` for a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// containerd's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was made (committed snapshots: when committed).
    pub created: SystemTime,
    /// Last change of labels or kind.
    pub updated: SystemTime,
    /// `(bytes, inodes)` of its diff, recorded at commit (committed diffs never change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<(i64, i64)>,
    /// Intent of an unfinished step.
    #[serde(default, skip_serializing_if = "is_ready")]
    pub state: State,
}

fn is_ready(s: &State) -> bool {
    *s == State::Ready
}

#[derive(Deserialize)]
struct OnDisk {
    version: u32,
    key: String,
    #[serde(flatten)]
    entry: Entry,
}

#[derive(Serialize)]
struct OnDiskRef<'a> {
    version: u32,
    key: &'a str,
    #[serde(flatten)]
    entry: &'a Entry,
}

/// Parses the entry file `name` (a layer id): its snapshot key and entry, or why it is not a
/// valid entry (bad JSON, another version, or naming another layer than its file name).
pub fn decode(name: &str, data: &[u8]) -> std::result::Result<(String, Entry), String> {
    let d: OnDisk = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    if d.version != VERSION {
        return Err(format!("version {}; this ovl2 reads version {VERSION}", d.version));
    }
    if d.entry.id != name {
        return Err(format!("it names layer {}", d.entry.id));
    }
    crate::id::validate(name).map_err(|e| format!("its name is not a layer id: {e}"))?;
    // The short name becomes a path under `l/`: only what the service makes (base 36).
    if d.entry.short.is_empty() || !d.entry.short.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()) {
        return Err(format!("short link name {:?} is not a base-36 number", d.entry.short));
    }
    Ok((d.key, d.entry))
}

/// The bytes of the entry file of snapshot `key`.
pub fn encode(key: &str, entry: &Entry) -> io::Result<Vec<u8>> {
    serde_json::to_vec(&OnDiskRef { version: VERSION, key, entry })
        .map_err(|e| io::Error::other(format!("encoding the snapshot entry of {key:?}: {e}")))
}

/// Takes the service lock of the snapshotter dir `dir` (creating the lock file), exclusive and
/// without waiting: `Ok(None)` when someone else holds it (a running service, or a repair
/// that is looking at the index this moment). Held until the file is dropped.
pub fn lock(dir: &Path) -> io::Result<Option<File>> {
    let p = dir.join(LOCK_FILE);
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&p)?;
    Ok(fsutil::try_flock(&f, LockMode::Exclusive)?.then_some(f))
}

/// Whether a service holds the lock of the snapshotter dir open as `dir`, found by trying it
/// in `mode` without waiting and without creating anything: `Ok(Some(fd))` holds it (when
/// exclusive, no service can start meanwhile) until dropped, `Ok(None)` means a service (or a
/// repair) holds it.
pub(crate) fn try_lock_at(dir: &OwnedFd, mode: LockMode) -> io::Result<Option<Option<OwnedFd>>> {
    let name = fsutil::cstr(LOCK_FILE)?;
    let fd = match fsutil::open_regular(dir, &name, rustix::fs::OFlags::RDONLY)? {
        None => return Ok(Some(None)),
        Some((fd, _)) => fd,
    };
    Ok(fsutil::try_flock(&fd, mode)?.then_some(Some(fd)))
}

/// The index in memory, with the directory it is kept in (the service's view).
pub struct Index {
    /// `HOME/.ovl2/snapshotter`.
    pub dir: PathBuf,
    /// Every snapshot by key.
    pub snapshots: BTreeMap<String, Entry>,
    sync: bool,
}

fn bad(p: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a valid snapshot entry: {what}", p.display()))
}

impl Index {
    /// Loads every entry under `dir` (creating the directories when missing); a leftover temp
    /// file from a crash is dropped, since the rename is what commits a write.
    pub fn load(dir: &Path, sync: bool) -> io::Result<Index> {
        fs::create_dir_all(dir.join(LINKS_DIR))?;
        let entries = dir.join(ENTRIES_DIR);
        fs::create_dir_all(&entries)?;
        let mut snapshots = BTreeMap::new();
        for ent in fs::read_dir(&entries)? {
            let ent = ent?;
            let p = ent.path();
            let name = ent.file_name();
            let name = name.to_str().ok_or_else(|| bad(&p, "the name is not UTF-8"))?;
            if is_temp(name) {
                fs::remove_file(&p)?;
                continue;
            }
            let (key, entry) = decode(name, &fs::read(&p)?).map_err(|e| bad(&p, e))?;
            if let Some(other) = snapshots.insert(key.clone(), entry) {
                return Err(bad(&p, format_args!("key {key:?} is also held by layer {}", other.id)));
            }
        }
        Ok(Index { dir: dir.to_owned(), snapshots, sync })
    }

    /// Writes the entry of `key` atomically.
    pub fn save(&self, key: &str) -> io::Result<()> {
        let entry = &self.snapshots[key];
        let data = encode(key, entry)?;
        let dir = self.dir.join(ENTRIES_DIR);
        let tmp = dir.join(format!("{}{TEMP_SUFFIX}", entry.id));
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&data)?;
        if self.sync {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, dir.join(&entry.id))?;
        self.sync_entries()
    }

    /// Removes the entry file of layer `id` (gone already is fine).
    pub fn delete(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(ENTRIES_DIR).join(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.sync_entries()
    }

    fn sync_entries(&self) -> io::Result<()> {
        if self.sync {
            File::open(self.dir.join(ENTRIES_DIR))?.sync_all()?;
        }
        Ok(())
    }

    /// The short link of a snapshot.
    pub fn link_path(&self, short: &str) -> PathBuf {
        self.dir.join(LINKS_DIR).join(short)
    }

    /// The temp name a new short link is made under before its rename.
    pub fn temp_link_path(&self, short: &str) -> PathBuf {
        self.dir.join(LINKS_DIR).join(format!("{short}{TEMP_SUFFIX}"))
    }
}

// The store's side: `check`/`repair` compare the index with the layers, and `remove` refuses
// a layer containerd holds. Both read through the store's fds and never follow a symlink.

/// An `l/` entry of the snapshotter dir, as found.
enum LinkFound {
    Symlink(Vec<u8>),
    Dir,
    Other,
}

/// What repair would do about one finding.
enum Mend {
    /// Drop the entry file of layer `id` and its short link (when it points at that layer).
    Drop { id: String, short: String },
    /// Point `l/<short>` at layer `id`.
    Relink { id: String, short: String },
    /// Remove `l/<name>`, which no snapshot owns.
    Unlink(String),
}

/// `.ovl2/snapshotter/…`, for messages.
fn shown(sub: &str, name: &str) -> String {
    format!(".ovl2/{SNAPSHOTTER_DIR}/{sub}/{name}")
}

fn open_sub(dir: &OwnedFd, name: &str) -> io::Result<Option<OwnedFd>> {
    match fsutil::open_dir(dir, &fsutil::cstr(name)?) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Store {
    /// `.ovl2/snapshotter`, when this store has one (a symlink or file there is not an index).
    fn snapshotter_fd(&self) -> Result<Option<OwnedFd>> {
        let Some(private) = &self.private_fd else { return Ok(None) };
        fsutil::open_dir_if_any(private, c"snapshotter")
            .map_err(|e| Error::io(format!("opening .ovl2/{SNAPSHOTTER_DIR}"), e))
    }

    /// Refuses to remove layer `id` while it is a ready snapshot of the snapshotter's index (or
    /// an entry names it that cannot be read): containerd would keep a snapshot without its
    /// layer. The service's own removals pass, since it marks the entry `removing` first.
    pub(crate) fn refuse_if_snapshot(&self, id: &str) -> Result<()> {
        let Some(dir) = self.snapshotter_fd()? else { return Ok(()) };
        let Some(entries) =
            open_sub(&dir, ENTRIES_DIR).ctx(|| format!("opening .ovl2/{SNAPSHOTTER_DIR}/{ENTRIES_DIR}"))?
        else {
            return Ok(());
        };
        let file = shown(ENTRIES_DIR, id);
        let force =
            "or remove the layer with force (`--force`), which leaves the entry for `ovl2 check --repair` to drop";
        let reason = match fsutil::read_small(&entries, &fsutil::cstr(id).ctx(|| "layer id".into())?) {
            Ok(None) => return Ok(()),
            Ok(Some(data)) => match decode(id, &data) {
                Ok((_, e)) if e.state != State::Ready => return Ok(()),
                Ok((key, _)) => format!(
                    "it is containerd snapshot {key:?} of ovl2-snapshotter ({file}); remove the snapshot through \
                     containerd, {force}"
                ),
                Err(why) => format!("ovl2-snapshotter's index entry {file} names it but is not valid ({why}); {force}"),
            },
            Err(e) => format!("ovl2-snapshotter's index entry {file} names it but cannot be read ({e}); {force}"),
        };
        Err(Error::Busy { id: id.to_owned(), reason })
    }

    /// The snapshotter's index against the layers: ready entries whose layer is gone, whose
    /// parent snapshot is gone, or whose short link is missing or wrong; entry files that do
    /// not parse; short links no snapshot owns. Entries still `creating` or `removing` are the
    /// service's unfinished steps (its next start finishes them) and temp names are writes in
    /// flight: neither is damage. Repair mends only while no service runs (it holds the lock,
    /// and keeps the index in memory); otherwise every finding says so and stays.
    pub(crate) fn scan_snapshot_index(
        &self,
        layers: &BTreeSet<&str>,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        let Some(dir) = self.snapshotter_fd()? else { return Ok(()) };
        let what = || format!("locking .ovl2/{SNAPSHOTTER_DIR}/{LOCK_FILE}");
        // Held to the end: no service starts while repair changes the index.
        let mode = if fix { LockMode::Exclusive } else { LockMode::Shared };
        let guard = try_lock_at(&dir, mode).ctx(what)?;
        let index = OnDiskIndex::read(&dir)?;
        let mut found = index.entry_findings(layers);
        found.extend(index.unowned_links());
        let running = guard.is_none();
        for (p, mend) in found {
            let p = match mend {
                None => Problem { repairable: false, ..p },
                Some(_) if running => Problem {
                    detail: format!(
                        "{}; left alone while ovl2-snapshotter serves this store (it holds .ovl2/{SNAPSHOTTER_DIR}/\
                         {LOCK_FILE}): stop it and run `ovl2 check --repair`",
                        p.detail
                    ),
                    repairable: false,
                    ..p
                },
                Some(m) => {
                    if fix {
                        self.mend(&m, index.entries_fd.as_ref(), index.links_fd.as_ref())?;
                    }
                    p
                }
            };
            problems.push(p);
        }
        Ok(())
    }

    fn mend(&self, m: &Mend, entries: Option<&OwnedFd>, links: Option<&OwnedFd>) -> Result<()> {
        let unlink = |dir: &OwnedFd, sub: &str, name: &str| -> Result<()> {
            let c = fsutil::cstr(name).ctx(|| format!("naming {}", shown(sub, name)))?;
            match rustix::fs::unlinkat(dir, &c, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io(format!("removing {}", shown(sub, name)), e)),
            }
            self.sync_dir(dir, &shown(sub, ""))
        };
        match m {
            Mend::Drop { id, short } => {
                if let Some(links) = links {
                    let c = fsutil::cstr(short).ctx(|| format!("naming {}", shown(LINKS_DIR, short)))?;
                    let t = fsutil::read_link(links, &c).ctx(|| format!("reading {}", shown(LINKS_DIR, short)))?;
                    if t.as_deref() == Some(link_target(id).as_bytes()) {
                        unlink(links, LINKS_DIR, short)?;
                    }
                }
                match entries {
                    Some(entries) => unlink(entries, ENTRIES_DIR, id),
                    None => Ok(()),
                }
            }
            Mend::Unlink(name) => match links {
                Some(links) => unlink(links, LINKS_DIR, name),
                None => Ok(()),
            },
            Mend::Relink { id, short } => {
                let Some(links) = links else { return Ok(()) };
                let link = shown(LINKS_DIR, short);
                let c = fsutil::cstr(short).ctx(|| format!("naming {link}"))?;
                let tmp = fsutil::cstr(&format!("{short}{TEMP_SUFFIX}")).ctx(|| format!("naming {link}"))?;
                let _ = rustix::fs::unlinkat(links, &tmp, AtFlags::empty());
                rustix::fs::symlinkat(link_target(id).as_str(), links, &tmp).ctx(|| format!("creating {link}"))?;
                if let Err(e) = rustix::fs::renameat(links, &tmp, links, &c) {
                    let _ = rustix::fs::unlinkat(links, &tmp, AtFlags::empty());
                    return Err(Error::io(format!("replacing {link}"), e));
                }
                self.sync_dir(links, &shown(LINKS_DIR, ""))
            }
        }
    }
}

/// A finding about the index, with what repair would do about it (`None`: nothing safe).
type Finding = (Problem, Option<Mend>);

/// The index as `check` reads it: every entry file and every short link, as found.
struct OnDiskIndex {
    entries_fd: Option<OwnedFd>,
    links_fd: Option<OwnedFd>,
    entries: Vec<EntryFile>,
    links: BTreeMap<String, LinkFound>,
}

impl OnDiskIndex {
    fn read(dir: &OwnedFd) -> Result<OnDiskIndex> {
        let entries_fd = open_sub(dir, ENTRIES_DIR).ctx(|| format!("opening {}", shown(ENTRIES_DIR, "")))?;
        let links_fd = open_sub(dir, LINKS_DIR).ctx(|| format!("opening {}", shown(LINKS_DIR, "")))?;
        let entries = entries_fd.as_ref().map_or(Ok(Vec::new()), read_entries)?;
        let links = links_fd.as_ref().map_or(Ok(BTreeMap::new()), read_links)?;
        Ok(OnDiskIndex { entries_fd, links_fd, entries, links })
    }

    /// Entries that do not read or repeat a key, then each ready entry against the layers.
    fn entry_findings(&self, layers: &BTreeSet<&str>) -> Vec<Finding> {
        let mut found = Vec::new();
        let mut keys: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, parsed) in &self.entries {
            match parsed {
                Err(why) => found.push((malformed(name, why), None)),
                Ok((key, e)) => {
                    if let Some(other) = keys.insert(key, &e.id) {
                        found.push((malformed(name, &format!("key {key:?} is also held by layer {other}")), None));
                    }
                }
            }
        }
        let ready = self.entries.iter().filter_map(|(_, p)| p.as_ref().ok()).filter(|(_, e)| e.state == State::Ready);
        for (key, e) in ready {
            if !layers.contains(e.id.as_str()) {
                found.push(without_layer(key, e));
                continue;
            }
            if let Some(p) = e.parent.as_deref().filter(|p| !keys.contains_key(p)) {
                found.push(without_parent(key, e, p));
            }
            found.extend(self.link_finding(key, e));
        }
        found
    }

    /// A ready snapshot's own short link, unless it points where it should.
    fn link_finding(&self, key: &str, e: &Entry) -> Option<Finding> {
        let want = link_target(&e.id);
        let link = shown(LINKS_DIR, &e.short);
        let (detail, mendable) = match self.links.get(e.short.as_str()) {
            Some(LinkFound::Symlink(t)) if t.as_slice() == want.as_bytes() => return None,
            None => (format!("{link} of containerd snapshot {key:?} is missing"), true),
            Some(LinkFound::Symlink(t)) => {
                let t = String::from_utf8_lossy(t);
                (format!("{link} of containerd snapshot {key:?} points to {t:?} instead of {want:?}"), true)
            }
            Some(LinkFound::Dir) => (format!("{link} of containerd snapshot {key:?} is a directory"), false),
            Some(LinkFound::Other) => (format!("{link} of containerd snapshot {key:?} is not a symlink"), true),
        };
        let mend = mendable.then(|| Mend::Relink { id: e.id.clone(), short: e.short.clone() });
        Some((snapshot_problem(&e.id, ProblemKind::MissingSnapshotLink, detail), mend))
    }

    /// Short links no entry owns. An entry that does not read may own any link, so none
    /// counts as unowned meanwhile.
    fn unowned_links(&self) -> Vec<Finding> {
        if self.entries.iter().any(|(_, p)| p.is_err()) {
            return Vec::new();
        }
        let owned: BTreeSet<&str> =
            self.entries.iter().filter_map(|(_, p)| p.as_ref().ok()).map(|(_, e)| e.short.as_str()).collect();
        let unowned = self.links.iter().filter(|(name, _)| !owned.contains(name.as_str()) && !is_temp(name));
        unowned
            .map(|(name, l)| {
                let detail = format!("{} belongs to no containerd snapshot", shown(LINKS_DIR, name));
                let mend = (!matches!(l, LinkFound::Dir)).then(|| Mend::Unlink(name.clone()));
                (Problem { layer: None, kind: ProblemKind::DanglingSnapshotLink, detail, repairable: true }, mend)
            })
            .collect()
    }
}

fn without_layer(key: &str, e: &Entry) -> Finding {
    let detail = format!(
        "containerd snapshot {key:?} ({}) names layer {}, which is gone (removed with `ovl2 rm --force` or by \
         another tool); repair drops the entry",
        shown(ENTRIES_DIR, &e.id),
        e.id
    );
    let mend = Mend::Drop { id: e.id.clone(), short: e.short.clone() };
    (snapshot_problem(&e.id, ProblemKind::SnapshotWithoutLayer, detail), Some(mend))
}

fn without_parent(key: &str, e: &Entry, parent: &str) -> Finding {
    let detail = format!(
        "containerd snapshot {key:?} ({}) builds on snapshot {parent:?}, which the index no longer has, so \
         containerd cannot mount it; remove it through containerd",
        shown(ENTRIES_DIR, &e.id)
    );
    (snapshot_problem(&e.id, ProblemKind::SnapshotWithoutParent, detail), None)
}

/// One entry file as read: its name, and its key and entry or why it is not valid.
type EntryFile = (String, std::result::Result<(String, Entry), String>);

/// Every entry file (temp names aside) with its key and entry, or why it is not valid. A file
/// removed between the listing and the read (the service dropped it) is skipped.
fn read_entries(fd: &OwnedFd) -> Result<Vec<EntryFile>> {
    let mut out = Vec::new();
    for ent in fsutil::list_dir(fd).ctx(|| format!("listing {}", shown(ENTRIES_DIR, "")))? {
        let name = fsutil::os(&ent.name).to_string_lossy().into_owned();
        if is_temp(&name) {
            continue;
        }
        let parsed = match ent.name.to_str() {
            Err(_) => Err("the name is not UTF-8".to_owned()),
            Ok(_) => match fsutil::read_small(fd, &ent.name) {
                Ok(None) => continue,
                Ok(Some(data)) => decode(&name, &data),
                Err(e) => Err(format!("it cannot be read: it {e}")),
            },
        };
        out.push((name, parsed));
    }
    Ok(out)
}

fn read_links(fd: &OwnedFd) -> Result<BTreeMap<String, LinkFound>> {
    let mut out = BTreeMap::new();
    for ent in fsutil::list_dir(fd).ctx(|| format!("listing {}", shown(LINKS_DIR, "")))? {
        let name = fsutil::os(&ent.name).to_string_lossy().into_owned();
        let found = match ent.file_type {
            FileType::Symlink => {
                match fsutil::read_link(fd, &ent.name).ctx(|| format!("reading {}", shown(LINKS_DIR, &name)))? {
                    Some(t) => LinkFound::Symlink(t),
                    None => continue,
                }
            }
            FileType::Directory => LinkFound::Dir,
            _ => LinkFound::Other,
        };
        out.insert(name, found);
    }
    Ok(out)
}

fn malformed(name: &str, why: &str) -> Problem {
    Problem {
        layer: None,
        kind: ProblemKind::MalformedSnapshot,
        detail: format!(
            "{} is not a valid snapshot entry: {why}; ovl2-snapshotter will not start until it is fixed or moved away",
            shown(ENTRIES_DIR, name)
        ),
        repairable: false,
    }
}

fn snapshot_problem(id: &str, kind: ProblemKind, detail: String) -> Problem {
    Problem { layer: Some(id.to_owned()), kind, detail, repairable: true }
}
