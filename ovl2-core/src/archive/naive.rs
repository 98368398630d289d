//! Docker's naive `ApplyDiff`, for a `parent` that is not the layer's own: the tar is
//! unpacked into the layer's mounted view, so a whiteout deletes what the lower layers show
//! and an opaque marker deletes everything in its directory that the same tar did not
//! unpack (moby's `UnpackLayer` without the overlay whiteout format).
//!
//! Unlike Docker, the view is never the layer's own mount: ovl2 mounts a private overlay of
//! the layer's lower chain with a staged, empty upper, unpacks into that mount's root fd with
//! the same confined extractor as the native path (every name resolved with
//! `RESOLVE_IN_ROOT` against the mount root), drops the mount, and swaps the staged upper in
//! as the layer's `diff` exactly as the native path does. The layer therefore changes in one
//! atomic rename or not at all.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;

use super::apply::{refuse, sys, At, Stage};
use super::ApplyOpts;
use super::ApplyStats;
use crate::error::{Context, Result};
use crate::fsutil;
use crate::layout;
use crate::store::Store;

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
    pub(crate) fn whiteout(parent: BorrowedFd<'_>, name: &[u8], at: &At<'_>) -> Result<()> {
        let cname = CString::new(name).map_err(|_| refuse(at, "name contains NUL"))?;
        fsutil::remove_tree(parent, &cname).map_err(|e| sys(at, "deleting the whited-out entry", errno(&e)))
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

impl Store {
    /// Unpacks into a private mount of `id`'s chain over the staged upper, then swaps it in.
    pub(super) fn apply_naive(
        &self,
        id: &str,
        stage: &Stage,
        reader: impl Read,
        opts: &ApplyOpts<'_>,
    ) -> Result<ApplyStats> {
        let lowers = self.lower_chain(id)?;
        let stats = if lowers.is_empty() {
            // A base layer's mounted view is its diff: no mount needed.
            self.extract(stage.diff.as_fd(), Some(Naive::default()), reader, opts)?
        } else {
            fsutil::mkdir(stage.entry.fd(), layout::WORK, layout::WORK_MODE, Some(self.root))
                .ctx(|| "creating the staged work dir".into())?;
            fsutil::mkdir(stage.entry.fd(), layout::MERGED, layout::MERGED_MODE, Some(self.root))
                .ctx(|| "creating the staged mount point".into())?;
            let name = stage.entry.name().to_str().expect("ascii");
            let (private, staging) = (layout::PRIVATE_DIR.to_str(), layout::STAGING.to_str());
            let rel = format!("{}/{}/{name}", private.expect("ascii"), staging.expect("ascii"));
            let root = self.mount_private(stage.entry.fd().as_fd(), &rel, &lowers)?;
            let res = self.extract(root.as_fd(), Some(Naive::default()), reader, opts);
            // Closing the last fd on the detached mount unmounts it before the swap.
            drop(root);
            res?
        };
        self.finish_staged(id, stage, stats, opts)
    }
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}
