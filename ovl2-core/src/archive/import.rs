//! `import_chain`: an image's layer tarballs as a chain of new layers, all or nothing.

use std::io::Read;

use super::{ApplyOpts, ApplyStats};
use crate::error::{Error, Result};
use crate::id;
use crate::options::CreateOpts;
use crate::store::Store;

/// The ids [`Driver::import_chain`](crate::Driver::import_chain) gives `n` layers topped by
/// `top`: `<top>-1`, `<top>-2`, ... from the base, and `top` itself for the last.
pub fn import_chain_ids(top: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| if i == n { top.to_owned() } else { format!("{top}-{i}") }).collect()
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
        let mut made: Vec<String> = Vec::new();
        let mut below = parent.map(str::to_owned);
        let mut results = Vec::with_capacity(ids.len());
        let mut res = Ok(());
        for (tar, id) in tars.into_iter().zip(&ids) {
            let step = self
                .create(id, below.as_deref(), &CreateOpts::default())
                .inspect(|()| made.push(id.clone()))
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
        if let Err(e) = res {
            // All or nothing: take back the layers this call created, and the parent's
            // committed marker if they gave it one. The first error is what the caller needs.
            let _ = self.undo_created(&made, parent, parent_was_committed);
            return Err(e);
        }
        Ok(results)
    }
}
