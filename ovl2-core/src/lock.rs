//! The store lock: a `flock` on `home/.ovl2/lock`.
//!
//! Each acquisition opens its own file description, so the kernel arbitrates between threads
//! of one process exactly as between processes (flock conflicts are per open file
//! description), and a process that dies releases its locks with its descriptors: nothing is
//! ever left held by a dead owner, and no in-process table can disagree with the kernel.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

use crate::error::{Context, Result};
use crate::fsutil;
use crate::layout;

/// A held store lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _fd: OwnedFd,
}

/// Takes the store lock, shared (readers) or exclusive (anything that changes the layout).
pub fn lock_store<Fd: AsFd>(private_dir: Fd, exclusive: bool) -> Result<StoreLock> {
    let fd = rustix::fs::openat(
        private_dir,
        layout::LOCK,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .ctx(|| "opening the store lock .ovl2/lock".into())?;
    fsutil::flock(&fd, exclusive, false).ctx(|| "locking the store".into())?;
    Ok(StoreLock { _fd: fd })
}
