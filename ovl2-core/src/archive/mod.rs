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
mod input;
mod size;
pub mod whiteout;

pub use apply::{ApplyOpts, ApplyProgress, ApplyStats};
pub use changes::{Change, ChangeKind};
pub use export::{DiffOpts, DiffStats};
pub use input::{detect as detect_compression, Compression};
use std::os::fd::OwnedFd;

use crate::driver::{describe, Driver};
use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::{id, layout};

/// A layer's upper dir and its lower chain, opened once.
pub(crate) struct Layers {
    /// `<id>/diff`.
    pub upper: OwnedFd,
    /// The parents' `diff` dirs, nearest first.
    pub lowers: Vec<OwnedFd>,
    /// The direct parent's id.
    pub parent: Option<String>,
}

impl Driver {
    /// Opens `id`'s diff and its lower chain under the shared store lock, so a concurrent
    /// remove cannot pull a layer out from under the walk once its fd is open.
    pub(crate) fn open_layers(&self, id: &str) -> Result<Layers> {
        id::validate(id)?;
        let _lock = self.lock(false)?;
        let files = self.read_layer_files(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let layer = self.open_layer_dir(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let upper = fsutil::open_dir(&layer, layout::DIFF).ctx(|| format!("opening {id}/diff"))?;
        let mut lowers = Vec::new();
        let mut parent = None;
        if let Some(lower) = files.lower {
            let lids = layout::parse_lower(&lower)
                .map_err(|m| Error::Corrupt(format!("layer {id:?}: {}", describe("lower", &m))))?;
            for (i, lid) in lids.iter().enumerate() {
                let pid = self.resolve_short_id(lid)?.ok_or_else(|| {
                    Error::Corrupt(format!("layer {id:?}: lower entry l/{lid} does not resolve (run check --repair)"))
                })?;
                let pdir = self.open_layer_dir(&pid)?.ok_or_else(|| Error::NotFound(pid.clone()))?;
                lowers.push(fsutil::open_dir(&pdir, layout::DIFF).ctx(|| format!("opening {pid}/diff"))?);
                if i == 0 {
                    parent = Some(pid);
                }
            }
        }
        Ok(Layers { upper, lowers, parent })
    }

    /// Opens the layers for a diff/changes call and says whether `parent` is the real parent
    /// (the native path) or another layer (Docker's naive path).
    pub(crate) fn layers_for(&self, id: &str, parent: Option<&str>) -> Result<(Layers, bool)> {
        if let Some(p) = parent {
            id::validate(p)?;
        }
        let l = self.open_layers(id)?;
        let native = l.parent.as_deref() == parent;
        Ok((l, native))
    }
}
