//! The snapshotter's own state: containerd's snapshot keys, each mapped to an ovl2 layer id,
//! with kind, parent, labels, times and the usage recorded at commit.
//!
//! It is one JSON file, `HOME/.ovl2/snapshotter/index.json`, replaced whole by ovl2's staging
//! protocol (write a temp file, fsync, rename over, fsync the directory): a crash leaves the old
//! or the new index, never a torn one. A file is enough because the index is small (hundreds of
//! entries for the deepest images) and every change is already serialized by one lock; a
//! database would add a second on-disk format for `ovl2 check` and other tools to understand.
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

/// The file name of the index inside [`Index::dir`].
pub const INDEX_FILE: &str = "index.json";
/// The temp name the index is written under before it is renamed over [`INDEX_FILE`].
pub const INDEX_TMP: &str = "index.json.tmp";
/// The directory (inside the snapshotter dir) of per-snapshot lower-link directories.
pub const LOWERS_DIR: &str = "lowers";

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
    snapshots: BTreeMap<String, Entry>,
}

#[derive(Serialize)]
struct OnDiskRef<'a> {
    version: u32,
    snapshots: &'a BTreeMap<String, Entry>,
}

/// The index in memory, with the directory it is kept in.
pub struct Index {
    /// `HOME/.ovl2/snapshotter`.
    pub dir: PathBuf,
    /// Every snapshot by key.
    pub snapshots: BTreeMap<String, Entry>,
    sync: bool,
}

impl Index {
    /// Loads the index from `dir` (created when missing); a leftover temp file from a crash is
    /// dropped, since the rename is what commits a write.
    pub fn load(dir: &Path, sync: bool) -> io::Result<Index> {
        fs::create_dir_all(dir.join(LOWERS_DIR))?;
        match fs::remove_file(dir.join(INDEX_TMP)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let snapshots = match fs::read(dir.join(INDEX_FILE)) {
            Ok(b) => {
                let d: OnDisk = serde_json::from_slice(&b).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a valid snapshotter index: {e}", dir.join(INDEX_FILE).display()),
                    )
                })?;
                if d.version != 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} has version {}; this ovl2-snapshotter reads version 1", dir.display(), d.version),
                    ));
                }
                d.snapshots
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Index { dir: dir.to_owned(), snapshots, sync })
    }

    /// Writes the index atomically.
    pub fn save(&self) -> io::Result<()> {
        let data = serde_json::to_vec(&OnDiskRef { version: 1, snapshots: &self.snapshots })
            .map_err(|e| io::Error::other(format!("encoding the snapshotter index: {e}")))?;
        let tmp = self.dir.join(INDEX_TMP);
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&data)?;
        if self.sync {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, self.dir.join(INDEX_FILE))?;
        if self.sync {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The lower-link directory of layer `id`.
    pub fn lowers_dir(&self, id: &str) -> PathBuf {
        self.dir.join(LOWERS_DIR).join(id)
    }
}
