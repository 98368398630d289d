//! The store lock: a `flock` on `home/.ovl2/lock`.
//!
//! Each acquisition opens its own file description, so the kernel arbitrates between threads
//! of one process exactly as between processes (flock conflicts are per open file
//! description), and a process that dies releases its locks with its descriptors: nothing is
//! ever left held by a dead owner, and no in-process table can disagree with the kernel.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::OFlags;

use crate::error::{Context, Result};
use crate::fsutil::{self, LockMode};
use crate::layout;

/// A held store lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _fd: Option<OwnedFd>,
}

impl StoreLock {
    /// No lock: a read-only open of a store no ovl2 writer has ever locked.
    pub(crate) fn none() -> StoreLock {
        StoreLock { _fd: None }
    }
}

/// Takes the store lock, shared (readers) or exclusive (anything that changes the layout).
/// A read-only opener never creates the lock file: without one, no ovl2 writer is at work
/// (every writer creates it before changing anything), so there is nothing to wait for.
pub fn lock_store<Fd: AsFd>(private_dir: Fd, mode: LockMode, read_only: bool) -> Result<StoreLock> {
    let flags = if read_only { OFlags::RDONLY } else { OFlags::RDWR | OFlags::CREATE };
    // NONBLOCK: a FIFO planted as the lock file must not hang the open.
    let fd = match rustix::fs::openat(
        private_dir,
        layout::LOCK,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        layout::PRIVATE_FILE_MODE,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if read_only => return Ok(StoreLock::none()),
        Err(e) => return Err(crate::Error::io("opening the store lock .ovl2/lock", e)),
    };
    fsutil::flock(&fd, mode).ctx(|| "locking the store".into())?;
    Ok(StoreLock { _fd: Some(fd) })
}
