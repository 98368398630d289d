//! `import_chain`: an image's layer tarballs as a chain of new layers, all or nothing, even
//! when the process is killed half way.
//!
//! Before the first layer is created, a [`PendingRecord`] (`.ovl2/pending/.import-<random>`)
//! names the parent and whether it was committed; each layer's id and short id are appended
//! to it before that layer is published, and `done` after the last apply. Whoever finds the
//! record unlocked (a dead importer: open's repair or `check --repair`, through
//! [`staging::sweep`](crate::staging::sweep)) rolls back what it names, exactly as a failed
//! import rolls itself back in-process, unless it says `done`.
//!
//! The record is a sequence of NUL-terminated fields (ids never contain NUL): `import`,
//! `committed`/`uncommitted`, the parent (empty for none), then `layer`, id, short id per
//! layer, and `done`. A field cut off by a kill has no NUL yet and is ignored, so a torn
//! append is simply not there; a layer is only published after its entry is complete.

use std::io::Read;

use super::{ApplyOpts, ApplyStats};
use crate::error::{Error, Result};
use crate::fsutil::LockMode;
use crate::id::{self, LayerId};
use crate::options::CreateOpts;
use crate::staging::PendingRecord;
use crate::store::Store;

/// The ids [`Driver::import_chain`](crate::Driver::import_chain) gives `n` layers topped by
/// `top`: `<top>-1`, `<top>-2`, ... from the base, and `top` itself for the last.
pub fn import_chain_ids(top: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| if i == n { top.to_owned() } else { format!("{top}-{i}") }).collect()
}

/// What an import has done so far, as its pending record holds it.
#[derive(Debug, Default, PartialEq, Eq)]
struct ImportRecord {
    parent: Option<String>,
    parent_was_committed: bool,
    /// Each layer published (or about to be) with the short id it was given, base first.
    layers: Vec<(String, String)>,
    /// Every layer is complete: nothing to roll back.
    done: bool,
}

fn fields(out: &mut Vec<u8>, fs: &[&str]) {
    for f in fs {
        out.extend_from_slice(f.as_bytes());
        out.push(0);
    }
}

impl ImportRecord {
    fn header(parent: Option<&str>, parent_was_committed: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let committed = if parent_was_committed { "committed" } else { "uncommitted" };
        fields(&mut out, &["import", committed, parent.unwrap_or("")]);
        out
    }

    fn layer(id: &str, lid: &str) -> Vec<u8> {
        let mut out = Vec::new();
        fields(&mut out, &["layer", id, lid]);
        out
    }

    /// Reads a record; `None` when even its header is incomplete (the importer died before
    /// creating anything).
    fn parse(bytes: &[u8]) -> Option<ImportRecord> {
        let mut complete: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
        // What follows the last NUL is a torn field (or nothing).
        complete.pop();
        let text = |f: &[u8]| String::from_utf8(f.to_vec()).ok();
        let mut it = complete.into_iter();
        if it.next()? != b"import" {
            return None;
        }
        let parent_was_committed = it.next()? == b"committed";
        let parent = text(it.next()?)?;
        let mut rec = ImportRecord {
            parent: (!parent.is_empty()).then_some(parent),
            parent_was_committed,
            ..ImportRecord::default()
        };
        while let Some(tag) = it.next() {
            match tag {
                b"layer" => match (it.next().and_then(text), it.next().and_then(text)) {
                    (Some(id), Some(lid)) => rec.layers.push((id, lid)),
                    _ => break,
                },
                b"done" => rec.done = true,
                _ => break,
            }
        }
        Some(rec)
    }
}

impl Store {
    /// The work of [`Driver::import_chain`](crate::Driver::import_chain).
    pub(crate) fn import_chain<R: Read>(
        &self,
        top: &str,
        parent: Option<&str>,
        tars: Vec<R>,
        opts: &ApplyOpts<'_>,
    ) -> Result<Vec<(String, ApplyStats)>> {
        if tars.is_empty() {
            return Err(Error::InvalidArgument("importing a chain needs at least one layer tarball".into()));
        }
        let ids = import_chain_ids(top, tars.len());
        for id in &ids {
            id::validate(id)?;
        }
        if let Some(p) = parent {
            id::validate(p)?;
        }
        let parent_was_committed = match parent {
            Some(p) => self.is_committed(p)?,
            None => true,
        };
        let mut record = PendingRecord::begin_import(self, &ImportRecord::header(parent, parent_was_committed))?;
        let mut made =
            ImportRecord { parent: parent.map(str::to_owned), parent_was_committed, ..ImportRecord::default() };
        let mut below = parent.map(str::to_owned);
        let mut results = Vec::with_capacity(ids.len());
        let mut res = Ok(());
        for (tar, id) in tars.into_iter().zip(&ids) {
            // The record names the layer before it is published, so no kill can leave it
            // unnamed; the short id tells the sweep it is this import's layer and not one
            // another process made under the same id after this one failed to.
            let mut note = |lid: &str| -> Result<()> {
                record
                    .append(&ImportRecord::layer(id, lid))
                    .map_err(|e| Error::io("recording an import's layer", e))?;
                made.layers.push((id.clone(), lid.to_owned()));
                Ok(())
            };
            let step = self
                .create_noting(id, below.as_deref(), &CreateOpts::default(), &mut note)
                .and_then(|()| self.apply_diff_with(id, below.as_deref(), tar, opts));
            match step {
                Ok(st) => results.push((id.clone(), st)),
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
            below = Some(id.clone());
        }
        let res = res.and_then(|()| {
            let mut done = Vec::new();
            fields(&mut done, &["done"]);
            record.append(&done).map_err(|e| Error::io("recording a finished import", e))
        });
        if let Err(e) = res {
            // All or nothing: the same rollback the sweep does for a dead importer. The first
            // error is what the caller needs; a failed rollback is left to the next sweep.
            if let Ok(_lock) = self.lock(LockMode::Exclusive) {
                if self.roll_back_import_locked(&made).is_ok() {
                    drop(record);
                    return Err(e);
                }
            }
            // Keep the record on disk for the sweep: forget it without removing it.
            record.keep();
            return Err(e);
        }
        drop(record);
        Ok(results)
    }

    /// The sweep's half for the record of an importer that died: a sentence for `check`
    /// saying what it holds and, with `fix`, the repair. Unless the import finished, the
    /// layers it names are removed (top first) and the parent's `committed` marker taken back
    /// if they gave it one. With `fix`, runs under the exclusive store lock. A method of the
    /// store, as the container record's half is, so the sweep needs no import of this module.
    pub(crate) fn sweep_pending_import(&self, record: &[u8], fix: bool) -> Result<String> {
        let parsed = ImportRecord::parse(record);
        if let (true, Some(r)) = (fix, &parsed) {
            if !r.done {
                self.roll_back_import_locked(r)?;
            }
        }
        Ok(match parsed {
            Some(r) if r.done => "an import finished all its layers, then its process died".into(),
            Some(r) if !r.layers.is_empty() => {
                let ids: Vec<&str> = r.layers.iter().map(|(id, _)| id.as_str()).collect();
                format!("an import was cut off by a process that died; its layers {} are rolled back", ids.join(", "))
            }
            _ => "an import was cut off by a process that died before it created a layer".into(),
        })
    }

    fn roll_back_import_locked(&self, r: &ImportRecord) -> Result<()> {
        for (id, lid) in r.layers.iter().rev() {
            // A name that is no layer id was never made by an import.
            let Ok(id) = LayerId::new(id) else { continue };
            let id = &id;
            // Only a layer this import made: its short id is the one the record names.
            let ours = self.read_layer(id)?.is_some_and(|f| f.lid() == Some(lid.as_str()));
            if !ours {
                continue;
            }
            self.force_unmount(id)?;
            match self.unlink_layer_locked(id, false) {
                Ok(gone) => gone.delete()?,
                // Something was built on it since (by a process that had the store open
                // before this one died): it is in use, so it and what is below it stay.
                Err(e) if e.kind() == crate::ErrorKind::Busy => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if let (Some(p), false) = (&r.parent, r.parent_was_committed) {
            if let (false, Ok(p)) = (r.layers.is_empty(), LayerId::new(p)) {
                if self.exists(p.as_str())? {
                    self.uncommit_if_childless_locked(&p)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_torn_tail_is_ignored() {
        let mut bytes = ImportRecord::header(Some("p"), false);
        bytes.extend(ImportRecord::layer("img-1", "AAAA"));
        let whole = bytes.len();
        bytes.extend(ImportRecord::layer("img", "BBBB"));
        let r = ImportRecord::parse(&bytes).unwrap();
        assert_eq!(r.parent.as_deref(), Some("p"));
        assert!(!r.parent_was_committed && !r.done);
        assert_eq!(r.layers, [("img-1".into(), "AAAA".into()), ("img".into(), "BBBB".into())]);
        // Cut anywhere inside the second entry: only the first layer is named.
        for cut in whole..bytes.len() {
            assert_eq!(ImportRecord::parse(&bytes[..cut]).unwrap().layers.len(), 1, "cut at {cut}");
        }
        assert_eq!(ImportRecord::parse(&ImportRecord::header(None, true)[..3]), None);
        let mut done = ImportRecord::header(None, true);
        fields(&mut done, &["done"]);
        assert!(ImportRecord::parse(&done).unwrap().done);
    }
}
