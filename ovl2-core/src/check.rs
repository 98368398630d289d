//! `check` and `repair`: one scan that finds what a crash or another tool left behind and,
//! when asked, fixes it. Sharing the scan keeps what `check` reports and what `repair`
//! mends from ever drifting apart. Repair never deletes a layer directory.

use std::collections::{BTreeMap, BTreeSet};

use rustix::fs::{AtFlags, FileType};

use crate::error::{Context, Result};
use crate::fsutil::{self, cstr, LockMode};
use crate::id::LayerId;
use crate::layout::{self, Malformed};
use crate::staging;
use crate::store::Store;

/// What kind of damage a [`Problem`] is. Serialized as [`ProblemKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A leftover staging or removal dir in `.ovl2/staging` whose owner is gone, or an entry
    /// in `.ovl2/staging` or `.ovl2/pending` of a type ovl2 never makes there (a FIFO, ...).
    StaleStaging,
    /// A layer dir without `diff/` (not repairable: its content is gone).
    MissingDiff,
    /// A layer without a `link` file, or with an empty one.
    MissingLink,
    /// A `link` file whose content is not a short id, or that is not a readable regular file
    /// (repairable unless it is a directory).
    MalformedLink,
    /// The layer's `l/<short>` symlink is missing.
    MissingShortLink,
    /// `l/<short>` points somewhere other than `../<id>/diff`.
    WrongShortLink,
    /// An `l/` symlink whose layer no longer exists.
    DanglingShortLink,
    /// An `l/` symlink to a live layer that nothing refers to (Docker leaks these).
    UnusedShortLink,
    /// A container whose creator died before both of its layers existed.
    IncompleteContainer,
    /// Something under `l/` that is not a symlink.
    StrayShortLink,
    /// Two layers claim the same short id.
    DuplicateShortId,
    /// A `lower` file that cannot be parsed, or is not a regular file of at most 1 MiB.
    MalformedLower,
    /// A layer with a parent (it has `work/`, or its children's `lower` files name its chain)
    /// whose `lower` file is gone. Repairable from a descendant's `lower`; without one, the
    /// parent cannot be known, and the layer is reported rather than turned into a base layer.
    MissingLower,
    /// A `lower` entry, other than the first, naming a short id no layer has: an ancestor is
    /// gone (the layer builds on an [`ProblemKind::Orphan`]).
    UnknownLower,
    /// A layer whose parent (the first short id in its `lower`) is gone, removed by another
    /// tool or by Docker's `Remove`. Not repairable: the detail names the `ovl2 rm --recursive`
    /// command that removes it and what builds on it.
    Orphan,
    /// A `lower` chain that disagrees with its parent's chain.
    InconsistentLower,
    /// A chain deeper than the store's limit.
    TooDeep,
    /// A layer with a parent but no `work/` directory (a symlink or file there is replaced by
    /// a fresh directory, never followed).
    MissingWork,
    /// A layer with children but no `committed` marker.
    MissingCommitted,
    /// A mount record in `.ovl2/mounts` that cannot be used (damaged, overflowing counts, not
    /// a regular file); repair rebuilds it from the kernel's mount table.
    BadMountRecord,
    /// Something inside `.ovl2/empty`, the always-empty lower of read-only base-layer mounts
    /// (mounts refuse it); repair empties it.
    NotEmptyEmptyDir,
    /// A layer's `merged` that is not a directory (a symlink would aim a mount outside the
    /// store; mounts refuse it); repair removes it, as `merged` exists only while mounted.
    BadMerged,
    /// A ready containerd snapshot in `ovl2-snapshotter`'s index whose layer is gone (removed
    /// with `ovl2 rm --force` or by another tool); repair drops the entry while no service runs.
    SnapshotWithoutLayer,
    /// A ready containerd snapshot whose parent snapshot the index no longer has (containerd
    /// cannot mount it; not repairable: remove it through containerd).
    SnapshotWithoutParent,
    /// A ready snapshot's short link `.ovl2/snapshotter/l/<short>` is missing, is not a
    /// symlink, or points elsewhere; repair remakes it while no service runs.
    MissingSnapshotLink,
    /// A short link under `.ovl2/snapshotter/l/` that no snapshot owns; repair removes it while
    /// no service runs.
    DanglingSnapshotLink,
    /// A file under `.ovl2/snapshotter/snapshots/` that is not a valid entry (the service
    /// refuses to start); reported, never touched.
    MalformedSnapshot,
}

impl ProblemKind {
    /// The kind's stable snake_case name ("missing_link"), the one every face uses: JSON,
    /// the C ABI's `ovl2_problem_kind_name`, Python's `Problem.kind`.
    pub fn as_str(self) -> &'static str {
        use ProblemKind as K;
        match self {
            K::StaleStaging => "stale_staging",
            K::MissingDiff => "missing_diff",
            K::MissingLink => "missing_link",
            K::MalformedLink => "malformed_link",
            K::MissingShortLink => "missing_short_link",
            K::WrongShortLink => "wrong_short_link",
            K::DanglingShortLink => "dangling_short_link",
            K::UnusedShortLink => "unused_short_link",
            K::IncompleteContainer => "incomplete_container",
            K::StrayShortLink => "stray_short_link",
            K::DuplicateShortId => "duplicate_short_id",
            K::MalformedLower => "malformed_lower",
            K::MissingLower => "missing_lower",
            K::UnknownLower => "unknown_lower",
            K::Orphan => "orphan",
            K::InconsistentLower => "inconsistent_lower",
            K::TooDeep => "too_deep",
            K::MissingWork => "missing_work",
            K::MissingCommitted => "missing_committed",
            K::BadMountRecord => "bad_mount_record",
            K::NotEmptyEmptyDir => "not_empty_empty_dir",
            K::BadMerged => "bad_merged",
            K::SnapshotWithoutLayer => "snapshot_without_layer",
            K::SnapshotWithoutParent => "snapshot_without_parent",
            K::MissingSnapshotLink => "missing_snapshot_link",
            K::DanglingSnapshotLink => "dangling_snapshot_link",
            K::MalformedSnapshot => "malformed_snapshot",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ProblemKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One thing `check` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The layer concerned, when there is one.
    pub layer: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
    /// A sentence naming the file and what was found.
    pub detail: String,
    /// Whether `repair` can fix it.
    pub repairable: bool,
}

/// What [`Driver::repair`](crate::Driver::repair) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// Problems found and fixed.
    pub repaired: Vec<Problem>,
    /// Problems still there afterwards (those repair cannot fix).
    pub remaining: Vec<Problem>,
}

struct Rec {
    id: LayerId,
    has_diff: bool,
    /// The type of `work`, `None` when missing.
    work: Option<FileType>,
    has_committed: bool,
    /// `Err`: the file cannot be read, and why (see [`crate::store::LayerFiles`]).
    link: std::result::Result<Option<Vec<u8>>, String>,
    lower: std::result::Result<Option<Vec<u8>>, String>,
    /// Whether `link` is a directory (which repair does not replace).
    link_is_dir: bool,
    lid: Option<String>,
}

impl Store {
    /// The work of [`Driver::check`](crate::Driver::check).
    pub(crate) fn check(&self) -> Result<Vec<Problem>> {
        let _lock = self.lock(LockMode::Shared)?;
        self.scan(false)
    }

    /// The work of [`Driver::repair`](crate::Driver::repair).
    pub(crate) fn repair(&self) -> Result<RepairReport> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let mut report = RepairReport::default();
        // Fixes can uncover further problems (a new link file makes a dangling link
        // visible); iterate to a fixed point, as containers/storage's recreateSymlinks does.
        for _ in 0..4 {
            let found = self.scan(true)?;
            let fixed: Vec<_> = found.iter().filter(|p| p.repairable).cloned().collect();
            if fixed.is_empty() {
                break;
            }
            report.repaired.extend(fixed);
        }
        report.remaining = self.scan(false)?;
        Ok(report)
    }

    /// One pass per concern, in the order their findings depend on each other: leftovers of
    /// interrupted work and mount records first; then each layer's `link` file (everything
    /// after is keyed by short id) and lost `lower` files; then short ids, `l/` links, lower
    /// chains with `work/` and `committed`, the `l/` entries no layer claims, and last the
    /// containerd snapshotter's index against the layers (`snapshots.rs`).
    fn scan(&self, fix: bool) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        self.scan_leftovers(fix, &mut problems)?;
        self.scan_mount_state(fix, &mut problems)?;
        let mut recs = self.read_recs()?;
        let links = self.read_short_links()?;
        self.scan_layer_files(&mut recs, &links, fix, &mut problems)?;
        let names = Names::new(&recs, &links);
        names.report_duplicates(&mut problems);
        self.scan_own_short_links(&recs, &names, fix, &mut problems)?;
        let referenced = self.scan_lower_chains(&recs, &names, fix, &mut problems)?;
        self.scan_unclaimed_short_links(&names, &referenced, fix, &mut problems)?;
        self.scan_snapshot_index(&names.ids, fix, &mut problems)?;
        Ok(problems)
    }

    /// Work entries and container records that their owners left behind (`staging::sweep`).
    fn scan_leftovers(&self, fix: bool, problems: &mut Vec<Problem>) -> Result<()> {
        for l in staging::sweep(self, fix)? {
            let kind = if l.container.is_some() { ProblemKind::IncompleteContainer } else { ProblemKind::StaleStaging };
            problems.push(Problem { layer: l.container, kind, detail: l.detail, repairable: l.repairable });
        }
        Ok(())
    }

    /// Link files first, since everything else is keyed by short id: a short id lost from both
    /// `link` and `l/` is recovered from the descendants' `lower` files that still name it.
    /// Then lost `lower` files, from the chains their descendants record.
    fn scan_layer_files(
        &self,
        recs: &mut [Rec],
        links: &BTreeMap<String, Option<Vec<u8>>>,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        let recovery = Recovery::new(recs, links);
        for rec in recs.iter_mut() {
            self.check_link_file(rec, links, &recovery, fix, problems)?;
        }
        for rec in recs.iter_mut() {
            self.check_lost_lower(rec, &recovery, fix, problems)?;
        }
        Ok(())
    }

    /// Each layer's own `l/` link (a short id claimed twice is reported on its own).
    fn scan_own_short_links(&self, recs: &[Rec], names: &Names, fix: bool, problems: &mut Vec<Problem>) -> Result<()> {
        for r in recs {
            let Some(lid) = &r.lid else { continue };
            if names.owners[lid.as_str()].len() > 1 {
                continue;
            }
            self.check_own_short_link(r, lid, names.links, fix, problems)?;
        }
        Ok(())
    }

    /// Lower chains, `work/` dirs and `committed` markers. Returns every short id some
    /// `lower` names, which keeps an `l/` link in use.
    fn scan_lower_chains(
        &self,
        recs: &[Rec],
        names: &Names,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<BTreeSet<String>> {
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        let mut needs_commit: BTreeSet<&str> = BTreeSet::new();
        for r in recs {
            let Some(lids) = self.parsed_lower(r, fix, problems)? else { continue };
            referenced.extend(lids.iter().map(|s| s.to_string()));
            self.check_chain_depth(r, &lids, problems);
            if let Some(parent) = self.check_ancestry(r, &lids, names, problems) {
                needs_commit.insert(parent);
            }
            self.check_work(r, fix, problems)?;
        }
        for r in recs {
            if needs_commit.contains(r.id.as_str()) && !r.has_committed {
                if fix {
                    self.mark_committed(&r.id)?;
                }
                problems.push(self.problem(
                    &r.id,
                    ProblemKind::MissingCommitted,
                    "layer has children but no committed marker".into(),
                    true,
                ));
            }
        }
        Ok(referenced)
    }

    /// The layer's lower chain, `None` for a base layer or an unusable `lower` (reported here;
    /// stray whitespace is reported, trimmed when fixing, and the trimmed chain returned).
    fn parsed_lower<'r>(&self, r: &'r Rec, fix: bool, problems: &mut Vec<Problem>) -> Result<Option<Vec<&'r str>>> {
        let lower = match &r.lower {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(None),
            Err(why) => {
                problems.push(self.problem(
                    &r.id,
                    ProblemKind::MalformedLower,
                    format!("lower file cannot be read: it {why}"),
                    false,
                ));
                return Ok(None);
            }
        };
        match layout::parse_lower(lower) {
            Ok(v) => Ok(Some(v)),
            Err(m) => {
                let repairable = m == Malformed::Whitespace;
                if repairable && fix {
                    self.rewrite(&r.id, layout::LOWER, lower.trim_ascii())?;
                }
                problems.push(self.problem(&r.id, ProblemKind::MalformedLower, m.describe("lower"), repairable));
                Ok(repairable.then(|| layout::parse_lower(lower.trim_ascii()).expect("trimmed parses")))
            }
        }
    }

    fn check_chain_depth(&self, r: &Rec, lids: &[&str], problems: &mut Vec<Problem>) {
        if let Err(crate::Error::MaxDepth { depth, limit, .. }) = self.check_depth(&r.id, lids) {
            let detail = format!("layer has {depth} lower layers, more than the store's max depth of {limit}");
            problems.push(self.problem(&r.id, ProblemKind::TooDeep, detail, false));
        }
    }

    /// Whether every short id of the chain names a live layer and the chain continues its
    /// parent's. Returns the parent when the whole chain is known.
    fn check_ancestry<'n>(
        &self,
        r: &Rec,
        lids: &[&str],
        names: &Names<'n>,
        problems: &mut Vec<Problem>,
    ) -> Option<&'n str> {
        if let Some(k) = lids.iter().position(|lid| names.resolve(lid).is_none()) {
            // The layer right above the first gone short id is the orphan: removing it
            // with everything built on it leaves a consistent store.
            let orphan = if k == 0 { r.id.as_str() } else { names.resolve(lids[k - 1]).expect("known") };
            let fix = format!("`ovl2 rm --recursive {orphan}` removes it and the layers built on it");
            let (kind, detail) = if k == 0 {
                (ProblemKind::Orphan, format!("parent short id {} is gone; {fix}", lids[0]))
            } else {
                (
                    ProblemKind::UnknownLower,
                    format!("lower names short id {}, which is gone: it builds on orphan {orphan:?}; {fix}", lids[k]),
                )
            };
            problems.push(self.problem(&r.id, kind, detail, false));
            return None;
        }
        let parent = names.resolve(lids[0]).expect("known");
        let expect = names.chains.get(parent).and_then(Option::as_ref);
        if expect.is_some_and(|e| e.iter().map(String::as_str).ne(lids[1..].iter().copied())) {
            problems.push(self.problem(
                &r.id,
                ProblemKind::InconsistentLower,
                format!("lower does not continue with the chain of its parent {parent:?}"),
                false,
            ));
        }
        Some(parent)
    }

    /// A layer with a parent needs `work/` as a directory; a symlink or file there is replaced,
    /// never followed.
    fn check_work(&self, r: &Rec, fix: bool, problems: &mut Vec<Problem>) -> Result<()> {
        if r.work == Some(FileType::Directory) {
            return Ok(());
        }
        if fix {
            let dir = self.layer_dir(&r.id)?;
            if r.work.is_some() {
                // Only the entry itself goes (unlink never follows a symlink); work/
                // holds nothing of value while the layer is not mounted.
                match rustix::fs::unlinkat(&dir, layout::WORK, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(crate::Error::io(format!("removing {}/work", r.id), e)),
                }
            }
            fsutil::ensure_dir(&dir, layout::WORK, layout::WORK_MODE, Some(self.root))
                .ctx(|| format!("creating {}/work", r.id))?;
            self.sync_dir(&dir, &r.id)?;
        }
        let detail = match r.work {
            None => "layer has a parent but no work/".to_string(),
            Some(t) => format!("work is {}, not a directory", fsutil::type_name(t)),
        };
        problems.push(self.problem(&r.id, ProblemKind::MissingWork, detail, true));
        Ok(())
    }

    /// `l/` entries that no layer claims: not symlinks, pointing at no layer, or at a layer
    /// that names another short id and no `lower` uses them.
    fn scan_unclaimed_short_links(
        &self,
        names: &Names,
        referenced: &BTreeSet<String>,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        for (name, target) in names.links {
            if names.owners.contains_key(name.as_str()) {
                continue;
            }
            let Some(target) = target else {
                problems.push(Problem {
                    layer: None,
                    kind: ProblemKind::StrayShortLink,
                    detail: format!("l/{name} is not a symlink"),
                    repairable: false,
                });
                continue;
            };
            let live = layout::id_from_link_target(target).filter(|id| names.ids.contains(id));
            let (kind, detail) = match live {
                None => (
                    ProblemKind::DanglingShortLink,
                    format!("l/{name} points to {:?}, which is not a layer", String::from_utf8_lossy(target)),
                ),
                Some(_) if referenced.contains(name) => continue,
                Some(id) => (
                    ProblemKind::UnusedShortLink,
                    format!(
                        "l/{name} points to layer {id:?}, whose link file names another short id, and no lower uses it"
                    ),
                ),
            };
            if fix {
                let cname = cstr(name).expect("ascii");
                match rustix::fs::unlinkat(&self.links_fd, &cname, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(crate::Error::io(format!("removing l/{name}"), e)),
                }
                self.sync_dir(&self.links_fd, "l")?;
            }
            problems.push(Problem { layer: live.map(str::to_owned), kind, detail, repairable: true });
        }
        Ok(())
    }

    fn problem(&self, id: &str, kind: ProblemKind, detail: String, repairable: bool) -> Problem {
        Problem { layer: Some(id.to_owned()), kind, detail, repairable }
    }

    fn read_recs(&self) -> Result<Vec<Rec>> {
        let mut recs = Vec::new();
        for id in self.layer_ids()? {
            let Some(dir) = self.open_layer_dir(&id)? else { continue };
            let ty = |n| fsutil::file_type(&dir, n).ctx(|| format!("stat in layer {id:?}"));
            let has_diff = ty(layout::DIFF)? == Some(FileType::Directory);
            let work = ty(layout::WORK)?;
            let has_committed = ty(layout::COMMITTED)?.is_some();
            let link_is_dir = ty(layout::LINK)? == Some(FileType::Directory);
            let read = |name| fsutil::read_small(&dir, name).map_err(|e| e.to_string());
            let (link, lower) = (read(layout::LINK), read(layout::LOWER));
            recs.push(Rec { id, has_diff, work, has_committed, link, lower, link_is_dir, lid: None });
        }
        Ok(recs)
    }

    /// `l/` entries: name -> symlink target (`None` for entries that are not symlinks).
    fn read_short_links(&self) -> Result<BTreeMap<String, Option<Vec<u8>>>> {
        let mut out = BTreeMap::new();
        for ent in fsutil::list_dir(&self.links_fd).ctx(|| "listing l/".into())? {
            let name = fsutil::os(&ent.name).to_string_lossy().into_owned();
            let target = if ent.file_type == FileType::Symlink {
                fsutil::read_link(&self.links_fd, &ent.name).ctx(|| format!("reading l/{name}"))?
            } else {
                None
            };
            out.insert(name, target);
        }
        Ok(out)
    }

    fn check_link_file(
        &self,
        rec: &mut Rec,
        links: &BTreeMap<String, Option<Vec<u8>>>,
        recovery: &Recovery,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        if !rec.has_diff {
            problems.push(self.problem(&rec.id, ProblemKind::MissingDiff, "layer dir has no diff/".into(), false));
        }
        let link = match &rec.link {
            Ok(l) => l.as_deref(),
            Err(why) => {
                // A FIFO, symlink, device or oversized file: written afresh, as a lost one is
                // (the rename replaces it without following or reading it). A directory
                // cannot be replaced without deleting what is in it.
                let p = self.problem(
                    &rec.id,
                    ProblemKind::MalformedLink,
                    format!("link file cannot be read: it {why}"),
                    true,
                );
                if rec.link_is_dir {
                    problems.push(Problem { repairable: false, ..p });
                    return Ok(());
                }
                let choice = self.choose_lid(rec, links, recovery, None);
                return self.relink(rec, choice, p, fix, problems);
            }
        };
        let (kind, detail, trimmed) = match link.map(layout::parse_link) {
            Some(Ok(lid)) => {
                rec.lid = Some(lid.to_owned());
                return Ok(());
            }
            None => (ProblemKind::MissingLink, "link file is missing".to_string(), None),
            Some(Err(Malformed::Empty)) => (ProblemKind::MissingLink, "link file is empty".to_string(), None),
            Some(Err(m @ Malformed::Whitespace)) => {
                let t = String::from_utf8_lossy(link.expect("some").trim_ascii()).into_owned();
                (ProblemKind::MalformedLink, m.describe("link"), Some(t))
            }
            Some(Err(m)) => (ProblemKind::MalformedLink, m.describe("link"), None),
        };
        let choice = self.choose_lid(rec, links, recovery, trimmed);
        self.relink(rec, choice, self.problem(&rec.id, kind, detail, true), fix, problems)
    }

    /// The short id a layer whose `link` is unusable gets back. Prefer the one it had, so the
    /// `lower` files of its descendants (which name it) stay valid: the trimmed link, an `l/`
    /// name that points at this layer, or the one its descendants name.
    fn choose_lid(
        &self,
        rec: &Rec,
        links: &BTreeMap<String, Option<Vec<u8>>>,
        recovery: &Recovery,
        trimmed: Option<String>,
    ) -> LidChoice {
        let target = layout::link_target(&rec.id);
        if let Some(t) = trimmed {
            return LidChoice::Kept(t);
        }
        if let Some((name, _)) = links.iter().find(|(_, t)| t.as_deref() == Some(target.as_bytes())) {
            return LidChoice::Kept(name.clone());
        }
        if let Some(lid) = recovery.assigned.get(rec.id.as_str()) {
            return LidChoice::Recovered(lid.clone());
        }
        match recovery.ambiguous.get(rec.id.as_str()) {
            Some(lids) => LidChoice::Ambiguous(lids.clone()),
            None => LidChoice::New,
        }
    }

    /// Reports `p` and, when fixing, writes `rec`'s `link` file afresh with the chosen short
    /// id (a new one only when nothing names the layer).
    fn relink(
        &self,
        rec: &mut Rec,
        choice: LidChoice,
        p: Problem,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        let known = match choice {
            LidChoice::Kept(lid) => Some(lid),
            LidChoice::Recovered(lid) => {
                let detail = format!("{}; its short id {lid} is recovered from its descendants' lower files", p.detail);
                problems.push(Problem { detail, ..p });
                return self.write_link(rec, Some(lid), fix);
            }
            LidChoice::Ambiguous(lids) => {
                // A new short id would orphan the descendants for good; a guess could give
                // them the wrong parent. Leave it for a person, saying why.
                let detail = format!(
                    "{}; its short id cannot be told apart: it is one of {} (named by descendants' lower \
                     files), which several layers that lost their short ids could own",
                    p.detail,
                    lids.join(", ")
                );
                problems.push(Problem { detail, repairable: false, ..p });
                return Ok(());
            }
            LidChoice::New => None,
        };
        problems.push(p);
        self.write_link(rec, known, fix)
    }

    fn write_link(&self, rec: &mut Rec, known: Option<String>, fix: bool) -> Result<()> {
        if !fix {
            // Report what the rest of the store would look like after the repair.
            rec.lid = known;
            return Ok(());
        }
        let lid = match known {
            Some(lid) => lid,
            None => self.new_short_link(&rec.id)?,
        };
        self.rewrite(&rec.id, layout::LINK, lid.as_bytes())?;
        rec.lid = Some(lid);
        Ok(())
    }

    /// A layer whose `lower` is gone or unreadable, but whose chain its descendants record
    /// (a child's `lower` minus its first entry): rewritten from theirs. A layer that has
    /// `work/` (so it had a parent) and no such descendant is reported, never made a base.
    fn check_lost_lower(
        &self,
        rec: &mut Rec,
        recovery: &Recovery,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        // `None`: missing; else what is wrong with it.
        let broken = match &rec.lower {
            Ok(None) => None,
            Ok(Some(l)) => match layout::parse_lower(l) {
                Ok(_) | Err(Malformed::Whitespace) => return Ok(()),
                Err(m) => Some(m.describe("lower")),
            },
            Err(why) => Some(format!("lower file cannot be read: it {why}")),
        };
        let chain = rec.lid.as_deref().and_then(|lid| recovery.chains.get(lid)).filter(|c| !c.is_empty());
        let what = broken.clone().unwrap_or_else(|| "lower file is missing".to_string());
        match chain {
            Some(chain) => {
                let lower = layout::format_lower(chain);
                if fix {
                    self.rewrite(&rec.id, layout::LOWER, lower.as_bytes())?;
                }
                let kind = if broken.is_some() { ProblemKind::MalformedLower } else { ProblemKind::MissingLower };
                problems.push(self.problem(
                    &rec.id,
                    kind,
                    format!(
                        "{what}; its chain ({} lower layers) is recovered from its descendants' lower files",
                        chain.len()
                    ),
                    true,
                ));
                rec.lower = Ok(Some(lower.into_bytes()));
            }
            // Unreadable lower without a descendant to recover it from: reported by the
            // lower-chain scan below.
            None if broken.is_some() => {}
            None if rec.work.is_some() => problems.push(self.problem(
                &rec.id,
                ProblemKind::MissingLower,
                format!(
                    "{what}, but work/ shows the layer had a parent, and no layer built on it records \
                     its chain, so its parent cannot be known (it is not treated as a base layer; remove \
                     it with `ovl2 rm {}` and recreate it)",
                    rec.id
                ),
                false,
            )),
            None => {}
        }
        Ok(())
    }

    fn check_own_short_link(
        &self,
        r: &Rec,
        lid: &str,
        links: &BTreeMap<String, Option<Vec<u8>>>,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        let want = layout::link_target(&r.id);
        let (kind, detail) = match links.get(lid) {
            Some(Some(t)) if t.as_slice() == want.as_bytes() => return Ok(()),
            // Created by this scan's link-file repair; nothing to report.
            None if fix && self.link_points_to(lid, &want)? => return Ok(()),
            None => (ProblemKind::MissingShortLink, format!("l/{lid} is missing")),
            Some(Some(t)) => (
                ProblemKind::WrongShortLink,
                format!("l/{lid} points to {:?} instead of {want:?}", String::from_utf8_lossy(t)),
            ),
            Some(None) => (ProblemKind::WrongShortLink, format!("l/{lid} is not a symlink")),
        };
        if fix {
            let clid = cstr(lid).expect("ascii");
            let tmp = cstr(&format!(".tmp-{lid}-{}", fsutil::random_hex(6))).expect("ascii");
            rustix::fs::symlinkat(want.as_str(), &self.links_fd, &tmp)
                .ctx(|| format!("creating a link for l/{lid}"))?;
            if let Err(e) = rustix::fs::renameat(&self.links_fd, &tmp, &self.links_fd, &clid) {
                let _ = rustix::fs::unlinkat(&self.links_fd, &tmp, AtFlags::empty());
                return Err(crate::Error::io(format!("replacing l/{lid}"), e));
            }
            self.sync_dir(&self.links_fd, "l")?;
        }
        problems.push(self.problem(&r.id, kind, detail, true));
        Ok(())
    }

    fn link_points_to(&self, lid: &str, want: &str) -> Result<bool> {
        let clid = cstr(lid).expect("ascii");
        Ok(fsutil::read_link(&self.links_fd, &clid).ctx(|| format!("reading l/{lid}"))?.as_deref()
            == Some(want.as_bytes()))
    }

    fn rewrite(&self, id: &LayerId, name: &std::ffi::CStr, content: &[u8]) -> Result<()> {
        let dir = self.layer_dir(id)?;
        fsutil::write_atomic(&dir, name, content, layout::META_FILE_MODE, self.opts.sync)
            .ctx(|| format!("rewriting {id}/{}", fsutil::os(name).to_string_lossy()))
    }
}

/// The short ids the layers claim after the link-file pass, and how a short id leads to a
/// layer: the lookups the later passes share.
struct Names<'a> {
    /// Short id -> the layers whose `link` names it (more than one is a duplicate).
    owners: BTreeMap<&'a str, Vec<&'a str>>,
    /// Every layer id.
    ids: BTreeSet<&'a str>,
    /// `l/` entries: name -> symlink target (`None` for entries that are not symlinks).
    links: &'a BTreeMap<String, Option<Vec<u8>>>,
    /// Each layer's own chain; `None` when its lower is unreadable (reported on its own).
    chains: BTreeMap<&'a str, Option<Vec<String>>>,
}

impl<'a> Names<'a> {
    fn new(recs: &'a [Rec], links: &'a BTreeMap<String, Option<Vec<u8>>>) -> Names<'a> {
        let mut owners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in recs {
            if let Some(l) = &r.lid {
                owners.entry(l.as_str()).or_default().push(&r.id);
            }
        }
        let ids = recs.iter().map(|r| r.id.as_str()).collect();
        let chains = recs
            .iter()
            .map(|r| {
                let c = match &r.lower {
                    Err(_) => None,
                    Ok(None) => Some(Vec::new()),
                    Ok(Some(l)) => {
                        layout::parse_lower(l.trim_ascii()).ok().map(|v| v.into_iter().map(str::to_owned).collect())
                    }
                };
                (r.id.as_str(), c)
            })
            .collect();
        Names { owners, ids, links, chains }
    }

    /// The layer a short id names: its owner, else the live layer its `l/` link points at.
    fn resolve(&self, lid: &str) -> Option<&'a str> {
        if let Some(v) = self.owners.get(lid) {
            return Some(v[0]);
        }
        let target = self.links.get(lid)?.as_ref()?;
        let id = layout::id_from_link_target(target)?;
        self.ids.get(id).copied()
    }

    fn report_duplicates(&self, problems: &mut Vec<Problem>) {
        for (lid, ids) in &self.owners {
            if ids.len() > 1 {
                problems.push(Problem {
                    layer: Some(ids[0].to_string()),
                    kind: ProblemKind::DuplicateShortId,
                    detail: format!("layers {} all claim short id {lid}", ids.join(", ")),
                    repairable: false,
                });
            }
        }
    }
}

/// Which short id a layer with an unusable `link` gets.
enum LidChoice {
    /// One it still has (a trimmed link, or an `l/` name pointing at it).
    Kept(String),
    /// The one its descendants' `lower` files name.
    Recovered(String),
    /// Any of these, as far as the store can tell.
    Ambiguous(Vec<String>),
    /// None: nothing names the layer, so a new one is drawn.
    New,
}

/// What the descendants' `lower` files say about short ids and chains that their owners lost.
///
/// Every `lower` file `l/P0:l/P1:...:l/Pn` records, for each entry, the chain below it: the
/// layer with short id `Pi` has the lower chain `Pi+1..Pn`. A layer that lost both its `link`
/// and its `l/` name is the owner of a short id no layer claims when its own chain matches
/// the recorded one (a base layer: empty chain and no `work/`; a layer whose `lower` is gone
/// too: any non-empty chain).
#[derive(Default)]
struct Recovery {
    /// Short id -> the chain below it, as recorded by the first `lower` file naming it.
    chains: BTreeMap<String, Vec<String>>,
    /// Layers that lost their short id -> the one the descendants name, when exactly one
    /// layer can own it and it can own only that one.
    assigned: BTreeMap<String, String>,
    /// Layers that lost their short id and could own any of several named ones.
    ambiguous: BTreeMap<String, Vec<String>>,
}

impl Recovery {
    fn new(recs: &[Rec], links: &BTreeMap<String, Option<Vec<u8>>>) -> Recovery {
        let mut r = Recovery::default();
        let ids: BTreeSet<&str> = recs.iter().map(|x| x.id.as_str()).collect();
        let parsed = |l: &std::result::Result<Option<Vec<u8>>, String>| -> Option<Vec<String>> {
            let l = l.as_ref().ok()?.as_deref()?;
            layout::parse_lower(l.trim_ascii()).ok().map(|v| v.into_iter().map(str::to_owned).collect())
        };
        for rec in recs {
            if let Some(lids) = parsed(&rec.lower) {
                for i in 0..lids.len() {
                    r.chains.entry(lids[i].clone()).or_insert_with(|| lids[i + 1..].to_vec());
                }
            }
        }
        // Short ids some layer still owns, through its link file or an l/ name.
        let mut claimed: BTreeSet<String> = BTreeSet::new();
        let linked: BTreeSet<&str> =
            links.values().filter_map(|t| t.as_deref().and_then(layout::id_from_link_target)).collect();
        let mut lidless = Vec::new();
        for rec in recs {
            let own =
                rec.link.as_ref().ok().and_then(|l| l.as_deref()).and_then(|l| layout::parse_link(l.trim_ascii()).ok());
            if let Some(l) = own {
                claimed.insert(l.to_owned());
            } else if !linked.contains(rec.id.as_str()) {
                lidless.push(rec);
            }
        }
        for (name, t) in links {
            if t.as_deref().and_then(layout::id_from_link_target).is_some_and(|id| ids.contains(id)) {
                claimed.insert(name.clone());
            }
        }
        let fits = |rec: &Rec, chain: &[String]| match parsed(&rec.lower) {
            Some(own) => own == chain,
            // No usable lower: a layer with work/ (or a broken lower file) had a parent.
            None => (rec.work.is_some() || !matches!(rec.lower, Ok(None))) != chain.is_empty(),
        };
        let mut owners: BTreeMap<&str, Vec<&Rec>> = BTreeMap::new();
        for (lid, chain) in &r.chains {
            if claimed.contains(lid) {
                continue;
            }
            let mut cands: Vec<&Rec> = lidless.iter().copied().filter(|x| fits(x, chain)).collect();
            // The owner of a named short id had a child, so ovl2 wrote its committed marker;
            // prefer the candidates that have it (Docker's stores have none: no preference).
            if cands.iter().any(|x| x.has_committed) {
                cands.retain(|x| x.has_committed);
            }
            owners.insert(lid.as_str(), cands);
        }
        // Settle the short ids only one layer can own, then what that leaves, until nothing
        // changes (a layer that lost its lower too fits any parented chain, so one settled
        // short id can decide another). What stays open with several candidates is ambiguous.
        loop {
            let settled = owners.iter().find(|(_, c)| c.len() == 1).map(|(lid, c)| (*lid, c[0].id.as_str()));
            let Some((lid, id)) = settled else { break };
            r.assigned.insert(id.to_owned(), lid.to_owned());
            owners.remove(lid);
            for c in owners.values_mut() {
                c.retain(|x| x.id != id);
            }
        }
        for (lid, cands) in &owners {
            for c in cands {
                r.ambiguous.entry(c.id.to_string()).or_default().push(lid.to_string());
            }
        }
        r
    }
}
