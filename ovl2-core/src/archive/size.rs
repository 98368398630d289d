//! Docker's layer size: the sum of `lstat` sizes of every non-directory in a tree, hardlinked
//! inodes counted once, whiteouts (size 0) included.

use std::collections::HashSet;
use std::io;
use std::os::fd::BorrowedFd;

use rustix::fs::{self as rfs, AtFlags, FileType};

use crate::fsutil::{DirStack, Mounts};

/// Measures the tree below `dir` (not following symlinks, not crossing mounts), with a
/// bounded number of fds at any depth. Memory grows only with multiply-linked inodes.
pub(crate) fn tree_size(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = DirStack::new(dir.try_clone_to_owned()?, c".", (), Mounts::Refuse)?;
    loop {
        let Some(ent) = stack.next_entry() else {
            if stack.depth() == 1 {
                return Ok(total);
            }
            stack.pop()?;
            continue;
        };
        if ent.file_type == FileType::Directory {
            match stack.open_child(&ent.name) {
                Ok(fd) => stack.push(&ent.name, fd, ())?,
                // A mount inside the layer is not part of it.
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {}
                Err(e) => return Err(e),
            }
        } else {
            let st = rfs::statat(stack.fd(), &ent.name, AtFlags::SYMLINK_NOFOLLOW)?;
            if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            total += st.st_size as u64;
        }
    }
}
