//! The snapshotter's own state: containerd's snapshot keys, each mapped to an ovl2 layer id,
//! with kind, parent, labels, times and the usage recorded at commit.
//!
//! Each snapshot is one small JSON file, `HOME/.ovl2/snapshotter/snapshots/<layer id>`, replaced
//! whole by ovl2's staging protocol (write `<layer id>.tmp`, fsync, rename over, fsync the
//! directory): a crash leaves the old or the new entry, never a torn one. One file per snapshot
//! keeps every change O(1) (a 500-layer import writes 500 small files, not 500 copies of a growing
//! index); a database would add a second on-disk format for `ovl2 check` and other tools to read.
//! The file is named by the layer id, which never changes, so Commit (key → name) is one rename.
//!
//! Steps that touch layers are written as intents first (`state` `creating` or `removing`),
//! so the next start finishes or rolls back whatever a SIGKILL interrupted: no snapshot is
//! ever half made.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The directory (inside the snapshotter dir) of the per-snapshot entry files.
pub const ENTRIES_DIR: &str = "snapshots";
/// The directory (inside the snapshotter dir) of the snapshots' short links: `l/<short>` →
/// `../../../<layer id>/diff`.
pub const LINKS_DIR: &str = "l";

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The ovl2 layer holding it.
    pub id: String,
    /// Its name under `l/`: the shortest unused base-36 number, so a mount's lowerdir stays
    /// short (see `Inner::lowerdir`).
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

/// The index in memory, with the directory it is kept in.
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
            if name.ends_with(".tmp") {
                fs::remove_file(&p)?;
                continue;
            }
            let d: OnDisk = serde_json::from_slice(&fs::read(&p)?).map_err(|e| bad(&p, e))?;
            if d.version != 1 {
                return Err(bad(&p, format_args!("version {}; this ovl2-snapshotter reads version 1", d.version)));
            }
            if d.entry.id != name {
                return Err(bad(&p, format_args!("it names layer {}", d.entry.id)));
            }
            if let Some(other) = snapshots.insert(d.key.clone(), d.entry) {
                return Err(bad(&p, format_args!("key {:?} is also held by layer {}", d.key, other.id)));
            }
        }
        Ok(Index { dir: dir.to_owned(), snapshots, sync })
    }

    /// Writes the entry of `key` atomically.
    pub fn save(&self, key: &str) -> io::Result<()> {
        let entry = &self.snapshots[key];
        let data = serde_json::to_vec(&OnDiskRef { version: 1, key, entry })
            .map_err(|e| io::Error::other(format!("encoding the snapshot entry of {key:?}: {e}")))?;
        let dir = self.dir.join(ENTRIES_DIR);
        let tmp = dir.join(format!("{}.tmp", entry.id));
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
}
