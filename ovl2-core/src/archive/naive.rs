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

use std::io::Read;
use std::os::fd::AsFd;

use super::apply::Stage;
use super::naive_unpack::Naive;
use super::ApplyOpts;
use super::ApplyStats;
use crate::error::{Context, Result};
use crate::fsutil;
use crate::id::LayerId;
use crate::layout;
use crate::store::Store;

impl Store {
    /// Unpacks into a private mount of `id`'s chain over the staged upper, then swaps it in.
    pub(super) fn apply_naive(
        &self,
        id: &LayerId,
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
