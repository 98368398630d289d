//! `usage()`: a layer's own disk usage and inode count, as containerd's `ctr snapshots usage`
//! reports a snapshot's (its `diff/` only, never its parents').

use std::collections::HashSet;
use std::io;

use rustix::fs::{self as rfs, AtFlags, FileType};

use crate::error::{Context, Result};
use crate::fsutil::{self, DirStack, LockMode, Mounts};
use crate::id::LayerId;
use crate::layout;
use crate::store::Store;

/// What one layer's own `diff/` occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Bytes allocated on disk (`st_blocks` × 512, as `du` and containerd count), every inode
    /// once, directories and the `diff/` directory itself included.
    pub bytes: u64,
    /// Distinct inodes: hardlinks count once, `diff/` itself counts.
    pub inodes: u64,
}

impl Store {
    /// The work of [`Driver::usage`](crate::Driver::usage).
    pub(crate) fn usage(&self, id: &str) -> Result<Usage> {
        let id = &LayerId::new(id)?;
        let diff = {
            let _lock = self.lock(LockMode::Shared)?;
            let layer = self.layer_dir(id)?;
            fsutil::open_dir(&layer, layout::DIFF).ctx(|| format!("opening {id}/diff"))?
        };
        let root = rfs::fstat(&diff).ctx(|| format!("stat of {id}/diff"))?;
        tree_usage(diff, &root).ctx(|| format!("measuring the disk usage of layer {id:?}"))
    }
}

/// Memory grows only with multiply-linked files: a directory or a file with one link cannot
/// be met twice, so only the others are remembered.
fn tree_usage(diff: std::os::fd::OwnedFd, root: &rfs::Stat) -> io::Result<Usage> {
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    let mut count = |u: &mut Usage, st: &rfs::Stat, dir: bool| {
        if dir || st.st_nlink <= 1 || seen.insert((st.st_dev, st.st_ino)) {
            u.inodes += 1;
            u.bytes += st.st_blocks as u64 * 512;
        }
    };
    count(&mut u, root, true);
    let mut stack = DirStack::new(diff, c".", (), Mounts::Refuse)?;
    loop {
        let Some(ent) = stack.next_entry() else {
            if stack.depth() == 1 {
                return Ok(u);
            }
            stack.pop()?;
            continue;
        };
        let st = rfs::statat(stack.fd(), &ent.name, AtFlags::SYMLINK_NOFOLLOW)?;
        if ent.file_type == FileType::Directory {
            match stack.open_child(&ent.name) {
                Ok(fd) => {
                    count(&mut u, &st, true);
                    stack.push(&ent.name, fd, ())?;
                }
                // A mount inside the layer is not part of it.
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {}
                Err(e) => return Err(e),
            }
        } else {
            count(&mut u, &st, false);
        }
    }
}
