//! What Docker's naive unpack keeps track of while it writes into a layer's mounted view:
//! the header sizes it counted and the paths it unpacked, which an opaque marker keeps.
//! (The naive apply itself, which mounts the view, is in `naive.rs`.)

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;

use crate::fsutil;

/// State of a naive unpack: what it counted and what it wrote.
#[derive(Default)]
pub(crate) struct Naive {
    /// Sum of every entry's header size: what Docker's unpacker returns as the layer size.
    pub(crate) header_bytes: u64,
    /// Cleaned paths of the entries this tar unpacked, which an opaque marker keeps.
    unpacked: HashSet<Vec<u8>>,
}

impl Naive {
    /// Records an entry the tar unpacked (not a whiteout).
    pub(crate) fn unpacked(&mut self, path: Vec<u8>) {
        self.unpacked.insert(path);
    }

    /// `.wh.NAME`: deletes `NAME` (a whole tree) from the view; absent is fine, as in Docker.
    pub(crate) fn whiteout(parent: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<()> {
        fsutil::remove_tree(parent, name).map_err(|e| errno(&e))
    }

    /// `.wh..wh..opq` in `dir` (at `path`): deletes everything below it that this tar did not
    /// unpack, descending into what it did.
    pub(crate) fn opaque(&self, dir: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<()> {
        for ent in fsutil::list_dir(dir).map_err(|e| errno(&e))? {
            let mut child = path.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(ent.name.to_bytes());
            if !self.unpacked.contains(&child) {
                fsutil::remove_tree(dir, &ent.name).map_err(|e| errno(&e))?;
            } else if ent.file_type == FileType::Directory {
                let st = rfs::statat(dir, &ent.name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let fd = fsutil::open_dir(dir, &ent.name).map_err(|e| errno(&e))?;
                    self.opaque(fd.as_fd(), &child)?;
                }
            }
        }
        Ok(())
    }
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}
