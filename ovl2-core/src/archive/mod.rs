//! Layer archives: applying a layer tar into a layer (`apply_diff`), exporting a layer as a
//! tar in Docker's format (`diff`), and listing or sizing what a layer changes relative to
//! its parent (`changes`, `diff_size`).
//!
//! Everything works on fds inside the layer: names from a tar are resolved with `openat2`
//! and `RESOLVE_IN_ROOT`, so an absolute symlink in an image points inside the layer, as in
//! the container, never at the host.

mod apply;
mod changes;
mod export;
mod fsx;
mod gotar;
pub(crate) mod import;
mod input;
mod naive;
mod naive_unpack;
mod size;
pub mod whiteout;

pub use apply::{ApplyOpts, ApplyProgress, ApplyStats};
pub use changes::{Change, ChangeKind};
pub use export::{DiffOpts, DiffStats};
pub use import::import_chain_ids;
pub use input::{detect as detect_compression, Compression};
use std::os::fd::OwnedFd;

use crate::error::{Context, Error, Result};
use crate::fsutil::{self, LockMode};
use crate::id::LayerId;
use crate::layout;
use crate::store::{orphaned, parse_chain, Store};

/// A layer's upper dir and its lower chain, opened once.
pub(crate) struct Layers {
    /// `<id>/diff`.
    pub upper: OwnedFd,
    /// The parents' `diff` dirs, nearest first.
    pub lowers: Vec<OwnedFd>,
    /// The direct parent's id.
    pub parent: Option<String>,
}

impl Store {
    /// Opens `id`'s diff and its lower chain under the shared store lock, so a concurrent
    /// remove cannot pull a layer out from under the walk once its fd is open.
    pub(crate) fn open_layers(&self, id: &str) -> Result<Layers> {
        let id = &LayerId::new(id)?;
        let _lock = self.lock(LockMode::Shared)?;
        // One open of the layer gives both its `lower` and its `diff`; its `link` (its own
        // short id) plays no part in reading it.
        let layer = self.layer_dir(id)?;
        let lower = fsutil::read_small(&layer, layout::LOWER).ctx(|| format!("reading {id}/lower"))?;
        let upper = fsutil::open_dir(&layer, layout::DIFF).ctx(|| format!("opening {id}/diff"))?;
        let mut lowers = Vec::new();
        let mut parent = None;
        for (i, lid) in parse_chain(id, lower.as_deref())?.iter().enumerate() {
            let pid = self.resolve_short_id(lid)?.ok_or_else(|| orphaned(id, lid))?;
            let pdir = self.layer_dir(&pid)?;
            lowers.push(fsutil::open_dir(&pdir, layout::DIFF).ctx(|| format!("opening {pid}/diff"))?);
            if i == 0 {
                parent = Some(pid.into());
            }
        }
        Ok(Layers { upper, lowers, parent })
    }

    /// Refuses to change `id`'s diff while a layer that builds on it is mounted: that mount
    /// uses the diff as a lower, and overlayfs leaves changes to a live lower undefined.
    pub(crate) fn refuse_if_lower_of_a_mount(&self, id: &LayerId) -> Result<()> {
        let (link, _) = self.read_layer_files(id)?;
        let Some(lid) = link.as_deref().and_then(|l| layout::parse_link(l).ok()) else { return Ok(()) };
        // One stat per layer finds the mounted ones (merged/ on another device); only their
        // lower chains are read, so an apply stays cheap in a store of many layers.
        let home_dev = rustix::fs::fstat(&self.home_fd).ctx(|| format!("stat of {}", self.home.display()))?.st_dev;
        for other in self.layer_ids()? {
            let merged = format!("{other}/merged");
            match rustix::fs::statat(&self.home_fd, merged.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_dev != home_dev && other != *id => {}
                _ => continue,
            }
            // A damaged layer's lower cannot be read; `check` reports it, and it must not
            // stop an apply into another layer.
            let Some(meta) = self.read_layer(&other)? else { continue };
            if meta.lower_lids().is_ok_and(|lids| lids.is_some_and(|l| l.contains(&lid))) {
                return Err(Error::Busy {
                    id: id.to_string(),
                    reason: format!("layer {other:?} builds on it and is mounted; {}", Error::unmount_first(&other)),
                });
            }
        }
        Ok(())
    }

    /// Opens the layers for a diff/changes call and says whether `parent` is the real parent
    /// (the native path) or another layer (Docker's naive path).
    pub(crate) fn layers_for(&self, id: &str, parent: Option<&str>) -> Result<(Layers, bool)> {
        LayerId::opt(parent)?;
        let l = self.open_layers(id)?;
        let native = l.parent.as_deref() == parent;
        Ok((l, native))
    }
}

/// What a native walk (one that reads the upper dir on its own) found: its result, or an
/// entry with an overlay redirect or metacopy xattr, which only a mounted view (overlayfs
/// following the redirect) can read. The callers fall back to mounted views on the second.
pub(crate) enum Native<T> {
    Done(T),
    /// The entry's path relative to the upper, for the message when no fallback is possible.
    NeedsMount(Vec<u8>),
}

/// The error for an upper entry a native walk cannot read (`path` relative to the upper),
/// where there is no mounted view to fall back to; `why` says what could not be done.
pub(crate) fn needs_mount_error(path: &[u8], why: &str) -> Error {
    Error::Unsupported(format!(
        "{} carries an overlay redirect or metacopy xattr; {why}",
        String::from_utf8_lossy(path)
    ))
}

/// Layers mounted with `get` for a naive comparison; put again when dropped.
pub(crate) struct Mounted<'d> {
    d: &'d Store,
    ids: Vec<String>,
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        for id in self.ids.iter().rev() {
            let _ = self.d.put(id);
        }
    }
}

impl Store {
    /// Docker's naive path for uppers a native walk cannot read (redirects, metacopy): mount
    /// the layer and the parent with `get` (overlayfs follows existing redirects) and compare
    /// the mounted trees.
    pub(crate) fn mounted_views(
        &self,
        id: &str,
        parent: Option<&str>,
    ) -> Result<(Mounted<'_>, changes::Merged, changes::Merged)> {
        let mut guard = Mounted { d: self, ids: Vec::new() };
        let view = |layer: &str, guard: &mut Mounted<'_>| -> Result<changes::Merged> {
            let path = self.get(layer, None)?;
            guard.ids.push(layer.to_owned());
            let fd = fsutil::open_dir_path(&path).ctx(|| format!("opening {}", path.display()))?;
            changes::Merged::from_owned(vec![fd])
        };
        let new = view(id, &mut guard)?;
        let old = match parent {
            Some(p) => view(p, &mut guard)?,
            None => changes::Merged::from_owned(Vec::new())?,
        };
        Ok((guard, new, old))
    }
}
