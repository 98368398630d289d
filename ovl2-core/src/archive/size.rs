//! Docker's layer size: the sum of `lstat` sizes of every non-directory in a tree, hardlinked
//! inodes counted once, whiteouts (size 0) included.

use std::collections::HashSet;
use std::io;
use std::os::fd::BorrowedFd;

use rustix::fs::{self as rfs, AtFlags, FileType};

use crate::fsutil;

/// Measures the tree below `dir` (not following symlinks, not crossing mounts).
pub(crate) fn tree_size(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let dev = rfs::fstat(dir)?.st_dev;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    walk(dir, dev, &mut seen, &mut total)?;
    Ok(total)
}

fn walk(dir: BorrowedFd<'_>, dev: u64, seen: &mut HashSet<(u64, u64)>, total: &mut u64) -> io::Result<()> {
    for ent in fsutil::list_dir(dir)? {
        if ent.file_type == FileType::Directory {
            let fd = fsutil::open_dir(dir, &ent.name)?;
            if rfs::fstat(&fd)?.st_dev != dev {
                continue;
            }
            walk(rustix::fd::AsFd::as_fd(&fd), dev, seen, total)?;
        } else {
            let st = rfs::statat(dir, &ent.name, AtFlags::SYMLINK_NOFOLLOW)?;
            if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            *total += st.st_size as u64;
        }
    }
    Ok(())
}
