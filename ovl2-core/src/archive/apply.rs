//! `apply_diff`: extract a layer tar into a fresh `diff` in staging, fd-relative and confined
//! to that tree, then swap it in atomically.

use std::ffi::{CStr, CString};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::gotar::Kind;
use super::input::{self, Compression, Counters};
use super::naive_unpack::Naive;
use super::whiteout::{self, TarName};
use super::{fsx, gotar, size};
use crate::error::{Context, Error, Result};
use crate::fsutil::{self, LockMode, Owner};
use crate::id::LayerId;
use crate::staging::WorkEntry;
use crate::store::Store;
use crate::{layout, lexical};

/// How [`Driver::apply_diff_with`](crate::Driver::apply_diff_with) runs.
#[derive(Clone, Copy)]
pub struct ApplyOpts<'a> {
    /// Flush the applied data to disk (one `syncfs`) before the layer counts as complete.
    /// Off, a power cut may lose or tear the layer's files; a killed process still cannot.
    pub sync: bool,
    /// Called after each tar entry, for progress displays.
    pub progress: Option<&'a (dyn Fn(&ApplyProgress) + Sync)>,
    /// The DiffID the stream must have (`sha256:<hex>`, as in an image config). On a
    /// mismatch the apply fails as a corrupt archive and the layer stays as it was.
    pub expect_digest: Option<&'a str>,
}

impl Default for ApplyOpts<'_> {
    fn default() -> Self {
        ApplyOpts { sync: true, progress: None, expect_digest: None }
    }
}

impl std::fmt::Debug for ApplyOpts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyOpts")
            .field("sync", &self.sync)
            .field("progress", &self.progress.is_some())
            .field("expect_digest", &self.expect_digest)
            .finish()
    }
}

/// Where an apply is, as reported to [`ApplyOpts::progress`].
#[derive(Debug, Clone, Copy)]
pub struct ApplyProgress {
    /// Tar entries done.
    pub entries: u64,
    /// Bytes read from the caller's reader (compressed, when the input is).
    pub input_bytes: u64,
    /// Uncompressed tar bytes read.
    pub tar_bytes: u64,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplyStats {
    /// Docker's ApplyDiff value. Onto the layer's own parent: the sum of `lstat` sizes of
    /// every non-directory in the layer, hardlinks counted once, whiteouts as 0. Onto any
    /// other parent (Docker's naive path): the sum of the tar's entry sizes, as moby's
    /// `ApplyUncompressedLayer` returns.
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed tar stream (the layer's DiffID).
    pub digest: String,
    /// Length of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// How the input was compressed.
    pub compression: Compression,
    /// Tar entries read (extension headers not counted).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Whiteouts (`.wh.NAME`) turned into overlay whiteouts.
    pub whiteouts: u64,
    /// Directories marked opaque (`.wh..wh..opq`).
    pub opaque_dirs: u64,
    /// Character and block devices and fifos created.
    pub special: u64,
    /// Entries deliberately not applied: PAX global headers, AUFS metadata, and devices
    /// inside a user namespace (as Docker does).
    pub skipped: u64,
    /// Overlay-private xattrs (`trusted.overlay.*`, `user.overlay.*`) found and dropped.
    pub dropped_xattrs: u64,
}

impl Store {
    /// The work of [`Driver::apply_diff`](crate::Driver::apply_diff).
    pub(crate) fn apply_diff(&self, id: &str, parent: Option<&str>, reader: impl Read) -> Result<ApplyStats> {
        self.apply_diff_with(id, parent, reader, &ApplyOpts { sync: self.opts.sync, ..ApplyOpts::default() })
    }

    /// The work of [`Driver::apply_diff_with`](crate::Driver::apply_diff_with).
    pub(crate) fn apply_diff_with(
        &self,
        id: &str,
        parent: Option<&str>,
        reader: impl Read,
        opts: &ApplyOpts<'_>,
    ) -> Result<ApplyStats> {
        let id = &LayerId::new(id)?;
        let parent = LayerId::opt(parent)?;
        self.writable("applying a layer archive")?;
        let native = self.parent_of(id)?.as_deref() == parent.as_deref();
        if let (false, Some(p)) = (native, &parent) {
            // Docker's naive path never looks at the parent, but a name that is no layer is
            // a caller's mistake worth reporting.
            if !self.exists_unlocked(p)? {
                return Err(Error::NotFound(p.to_string()));
            }
        }
        // Fail fast before reading the stream; checked again under the layer lock at the swap.
        {
            let layer = self.layer_dir(id)?;
            check_target(self, id, &layer)?;
        }
        let stage = Stage::new(self)?;
        let res = if native {
            self.extract(stage.diff.as_fd(), None, reader, opts)
                .and_then(|stats| self.finish_staged(id, &stage, stats, opts))
        } else {
            self.apply_naive(id, &stage, reader, opts)
        };
        // The failed extraction, or the old empty diff after a swap, goes with the stage.
        drop(stage);
        res
    }

    /// Extracts the tar into `root`. With `naive`, whiteouts and opaque markers delete what
    /// `root` shows instead of becoming overlay whiteouts (Docker's naive unpack).
    pub(super) fn extract(
        &self,
        root: BorrowedFd<'_>,
        naive: Option<Naive>,
        reader: impl Read,
        opts: &ApplyOpts<'_>,
    ) -> Result<ApplyStats> {
        let counters = Arc::new(Counters::default());
        let (stream, compression) = input::open(reader, counters.clone())?;
        let mut x = Extractor {
            naive,
            root,
            owner: self.root,
            opaque_xattr: whiteout::opaque_xattr_for_apply(),
            userns: crate::kernel::in_user_namespace(),
            cache: None,
            dir_times: Vec::new(),
            buf: vec![0u8; 256 * 1024],
            size_exact: true,
            temps: 0,
            me: Owner::current(),
            umask: read_umask(),
            stats: ApplyStats {
                size: 0,
                digest: String::new(),
                tar_bytes: 0,
                compression,
                entries: 0,
                files: 0,
                dirs: 0,
                symlinks: 0,
                hardlinks: 0,
                whiteouts: 0,
                opaque_dirs: 0,
                special: 0,
                skipped: 0,
                dropped_xattrs: 0,
            },
        };
        let (writer, reader) = input::pipe();
        let mut stream = stream;
        let progress = opts.progress;
        let worker = std::thread::scope(|sc| {
            let c = &counters;
            let h = sc.spawn(move || x.run(reader, c, progress).map(|(end_pos, last)| (x, end_pos, last)));
            writer.pump(&mut stream);
            h.join()
        });
        let (mut x, end_pos, last) = match worker {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if stream.pos < end_pos + 512 {
            // Go's reader takes a clean EOF at an entry boundary as the end; a truncated
            // download looks exactly like that, so ovl2 insists on the end-of-archive block.
            return Err(Error::CorruptArchive {
                at: format!("byte {} (after {last})", stream.pos),
                reason: "unexpected EOF: the stream ends without the end-of-archive block (truncated)".into(),
            });
        }
        x.stats.tar_bytes = stream.pos;
        x.stats.digest = stream.digest();
        if let Some(want) = opts.expect_digest {
            if !want.eq_ignore_ascii_case(&x.stats.digest) {
                return Err(Error::CorruptArchive {
                    at: "the whole stream".into(),
                    reason: format!("its digest is {}, expected {want}", x.stats.digest),
                });
            }
        }
        if let Some(n) = &x.naive {
            // Docker's naive ApplyDiff returns what its unpacker counted: every header's size.
            x.stats.size = n.header_bytes;
        } else if !x.size_exact {
            x.stats.size = size::tree_size(root).ctx(|| "measuring the applied layer".into())?;
        }
        if let Some(p) = opts.progress {
            p(&ApplyProgress {
                entries: x.stats.entries,
                input_bytes: counters.input.load(Ordering::Relaxed),
                tar_bytes: x.stats.tar_bytes,
            });
        }
        Ok(x.stats)
    }

    /// Syncs the staged `diff` (when asked) and swaps it into the layer.
    pub(super) fn finish_staged(
        &self,
        id: &LayerId,
        stage: &Stage,
        stats: ApplyStats,
        opts: &ApplyOpts<'_>,
    ) -> Result<ApplyStats> {
        if opts.sync {
            rfs::syncfs(&stage.diff).ctx(|| "syncing the applied layer (syncfs)".into())?;
        }
        self.swap_in(id, stage, opts.sync)?;
        Ok(stats)
    }

    /// Exchanges the staged `diff` with the layer's (empty) one under the layer's lock.
    fn swap_in(&self, id: &LayerId, stage: &Stage, sync: bool) -> Result<()> {
        let layer = self.layer_dir(id)?;
        fsutil::flock(&layer, LockMode::Exclusive).ctx(|| format!("locking layer {id:?}"))?;
        // The fd must still be the layer: a concurrent remove renames it away first.
        let here = rfs::fstat(&layer).ctx(|| format!("stat of layer {id:?}"))?;
        match rfs::statat(&self.home_fd, id.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_dev == here.st_dev && st.st_ino == here.st_ino => {}
            _ => return Err(Error::NotFound(id.to_string())),
        }
        check_target(self, id, &layer)?;
        rfs::renameat_with(stage.entry.fd(), layout::DIFF, &layer, layout::DIFF, RenameFlags::EXCHANGE)
            .ctx(|| format!("swapping the applied diff into layer {id:?}"))?;
        if sync {
            let synced = fsutil::fsync(&layer)
                .ctx(|| format!("syncing layer {id:?}"))
                .and_then(|()| fsutil::fsync(stage.entry.fd()).ctx(|| "syncing the staging dir".into()));
            if let Err(e) = synced {
                // The caller gets an error, so the layer must be as it was: swap back.
                let _ = rfs::renameat_with(stage.entry.fd(), layout::DIFF, &layer, layout::DIFF, RenameFlags::EXCHANGE);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Refuses a layer that is mounted, that a mounted layer builds on, or whose `diff` already
/// has content.
fn check_target(d: &Store, id: &LayerId, layer: &OwnedFd) -> Result<()> {
    let here = rfs::fstat(layer).ctx(|| format!("stat of layer {id:?}"))?;
    if let Ok(st) = rfs::statat(layer, layout::MERGED, AtFlags::SYMLINK_NOFOLLOW) {
        if st.st_dev != here.st_dev {
            return Err(Error::Busy {
                id: id.to_string(),
                reason: format!("it is mounted; {}", Error::unmount_first(id)),
            });
        }
    }
    d.refuse_if_lower_of_a_mount(id)?;
    let diff = match fsutil::open_dir(layer, layout::DIFF) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
            return Err(Error::Corrupt(format!("layer {id:?} has no diff directory; run `ovl2 check --repair`")))
        }
        Err(e) => return Err(Error::io(format!("opening {id}/diff"), e)),
    };
    if !fsutil::list_dir(&diff).ctx(|| format!("listing {id}/diff"))?.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "layer {id:?} already has content; apply_diff fills an empty layer"
        )));
    }
    Ok(())
}

/// `.ovl2/staging/apply-<random>/diff`: a work entry (locked so repair leaves it alone while
/// we work, deleted when dropped) holding the diff being extracted.
pub(super) struct Stage<'s> {
    pub(super) entry: WorkEntry<'s>,
    pub(super) diff: OwnedFd,
}

impl<'s> Stage<'s> {
    fn new(d: &'s Store) -> Result<Stage<'s>> {
        d.staging("applying a layer archive")?;
        let store = d.lock(LockMode::Shared)?;
        let entry = WorkEntry::create(
            d,
            &store,
            "apply",
            layout::PRIVATE_MODE,
            d.owner,
            "applying a layer archive",
            "an apply staging dir",
        )?;
        drop(store);
        fsutil::mkdir(entry.fd(), layout::DIFF, layout::DIFF_MODE, Some(d.root))
            .ctx(|| "creating the staged diff".into())?;
        let diff = fsutil::open_dir(entry.fd(), layout::DIFF).ctx(|| "opening the staged diff".into())?;
        Ok(Stage { entry, diff })
    }
}

/// An entry, named in error messages; formatted only when an error is reported.
pub(crate) struct At<'a>(pub &'a [u8]);

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}", show(self.0))
    }
}

/// Printable form of a tar name for error messages.
pub(crate) fn show(name: &[u8]) -> String {
    if name.len() > 160 {
        let mut s = String::from_utf8_lossy(&name[..160]).into_owned();
        s.push_str("...");
        return format!("{s:?}");
    }
    format!("{:?}", String::from_utf8_lossy(name))
}

/// What a header says about an entry's metadata.
struct Meta<'a> {
    mode: Mode,
    owner: Owner,
    times: Timestamps,
    /// Borrowed from the header's PAX records: a header may hold a great many.
    xattrs: Vec<(&'a [u8], &'a [u8])>,
}

struct Extractor<'a> {
    /// Docker's naive unpack (into a mounted view) instead of the overlay whiteout format.
    naive: Option<Naive>,
    root: BorrowedFd<'a>,
    owner: Owner,
    opaque_xattr: &'static CStr,
    userns: bool,
    /// The parent directory of the last entry: tars list siblings together.
    cache: Option<(Vec<u8>, OwnedFd, bool)>,
    /// This process's euid and egid: files it creates already have them.
    me: Owner,
    /// The process umask, when /proc tells it.
    umask: Option<Mode>,
    dir_times: Vec<(Vec<u8>, Timestamps)>,
    buf: Vec<u8>,
    stats: ApplyStats,
    /// `stats.size` is exact unless a directory was replaced (then the tree is measured).
    size_exact: bool,
    /// Temporary names handed out so far (see [`Extractor::replacement`]).
    temps: u64,
}

fn refuse(at: &At<'_>, reason: impl Into<String>) -> Error {
    Error::CorruptArchive { at: at.to_string(), reason: reason.into() }
}

/// A failed system call on behalf of an entry: the tar's fault when the errno says the tree
/// contradicts it (missing parent, a file where a dir should be, a loop, a name too long,
/// an escape attempt), an I/O error otherwise.
fn sys(at: &At<'_>, what: &str, e: Errno) -> Error {
    match e {
        Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV | Errno::NAMETOOLONG | Errno::EXIST | Errno::ISDIR => {
            Error::CorruptArchive { at: at.to_string(), reason: format!("{what}: {}", io::Error::from(e)) }
        }
        e => Error::io(format!("{what} for {at}"), e),
    }
}

/// The last second Go's `time.Unix(0, 1<<63-1)` reaches (Docker's `unixMaxTime`).
const MAX_UNIX_SECS: i64 = i64::MAX / 1_000_000_000;

/// A failed chown for an entry. In a user namespace the kernel answers EINVAL for an id its
/// uid_map/gid_map does not cover; say so, with the ids, instead of a bare "Invalid argument".
fn chown_err(at: &At<'_>, what: &str, m: &Meta<'_>, userns: bool, e: Errno) -> Error {
    if e == Errno::INVAL && userns {
        return Error::io(
            format!(
                "{what} of {at} to uid {}, gid {}: the id is not mapped in this user namespace (a rootless \
                 apply can only use the ids its uid_map and gid_map cover; map more, e.g. through /etc/subuid \
                 and /etc/subgid)",
                m.owner.uid.as_raw(),
                m.owner.gid.as_raw()
            ),
            e,
        );
    }
    sys(at, what, e)
}

/// Parses a PAX time (`secs[.frac]`), clamped to the range Docker applies (before 1970
/// becomes the epoch).
fn pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    if s.starts_with('-') {
        return Some(Timespec { tv_sec: 0, tv_nsec: 0 });
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some(Timespec { tv_sec: secs, tv_nsec: digits.parse().ok()? })
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// One tar entry as apply reads it, before anything is written.
struct Parsed<'e> {
    kind: Kind,
    /// The cleaned path's components (none for the layer root).
    comps: Vec<&'e [u8]>,
    /// What the name asks of the tree.
    target: Target<'e>,
    /// A link's target.
    link: &'e [u8],
    /// A device's number.
    dev: u64,
    meta: Meta<'e>,
    /// Xattrs the header carries that a layer may not: counted, never applied.
    dropped_xattrs: u64,
}

/// What an entry's name asks of the tree.
enum Target<'e> {
    /// Nothing: the layer root, or AUFS bookkeeping (skipped as Docker's UnpackLayer does).
    Skip,
    /// `.wh..wh..opq`: the containing directory is opaque.
    Opaque,
    /// `.wh.NAME`: `NAME` in the containing directory is deleted.
    Whiteout(&'e [u8]),
    /// An ordinary file, directory, link or node.
    Plain,
}

/// The pure parse step: what a header means, or why it is refused. `None` for a PAX global
/// header, which Go's reader hands back as an entry and Docker skips.
fn parse<'e>(e: &'e gotar::Entry, at: &At<'_>) -> Result<Option<Parsed<'e>>> {
    let raw_name = &e.name;
    // Go's reader rejects NUL in PAX names too; no path may carry one to the kernel.
    if raw_name.contains(&0) || e.link.contains(&0) {
        return Err(refuse(at, "name or link target contains NUL"));
    }
    let kind = match (e.flag, Kind::from_flag(e.flag)) {
        // A pre-POSIX tar marks a directory by its name's trailing slash.
        (b'\0', _) if raw_name.ends_with(b"/") => Kind::Dir,
        (_, Some(k)) => k,
        (b'g', None) => return Ok(None),
        (b'S', None) => return Err(refuse(at, "GNU sparse files are not supported in layers")),
        (t, None) => return Err(refuse(at, format!("unsupported entry type {:?}", t as char))),
    };
    // Go's reader (Docker's) reads no data for header-only types and takes what follows
    // as the next header; another parser would skip it as data. ovl2 refuses such tars
    // rather than let two parsers see different archives.
    if kind != Kind::Reg && e.size != 0 {
        return Err(refuse(at, format!("a {} entry carries {} bytes of data", kind.name(), e.size)));
    }
    let bad = |what: &str| refuse(at, format!("malformed {what} field"));
    let mode = Mode::from_raw_mode((e.mode & 0o7777) as u32);
    let uid = u32::try_from(e.uid).map_err(|_| bad("uid"))?;
    let gid = u32::try_from(e.gid).map_err(|_| bad("gid"))?;
    let owner = Owner::from_raw(uid, gid);
    let dev = match kind {
        Kind::Char | Kind::Block => {
            let maj = u32::try_from(e.devmajor).map_err(|_| bad("devmajor"))?;
            let min = u32::try_from(e.devminor).map_err(|_| bad("devminor"))?;
            rfs::makedev(maj, min)
        }
        _ => 0,
    };
    // Docker's boundTime: times Go cannot represent in nanoseconds become the epoch.
    let secs = if (0..=MAX_UNIX_SECS).contains(&e.mtime) { e.mtime } else { 0 };
    let mut mtime = Timespec { tv_sec: secs, tv_nsec: 0 };
    let mut atime = None;
    // One value per name: Go keeps PAX records in a map, the last record of a key wins.
    let mut xattrs = Vec::new();
    let mut dropped_xattrs = 0;
    for (k, v) in e.pax.iter() {
        if let Some(x) = k.strip_prefix(b"SCHILY.xattr.") {
            if !whiteout::xattr_allowed(x) {
                dropped_xattrs += 1;
                continue;
            }
            if x.contains(&0) {
                return Err(refuse(at, "xattr name contains NUL"));
            }
            xattrs.push((x, v));
        } else if v.is_empty() {
            // Go's mergePAX: an empty value keeps the header's.
        } else if k == b"mtime" {
            mtime = pax_time(v).ok_or_else(|| bad("PAX mtime"))?;
        } else if k == b"atime" {
            atime = Some(pax_time(v).ok_or_else(|| bad("PAX atime"))?);
        } else if k.starts_with(b"GNU.sparse.") {
            return Err(refuse(at, "PAX sparse files are not supported in layers"));
        }
    }
    // Docker: atime is the later of the two.
    let atime = match atime {
        Some(a) if (a.tv_sec, a.tv_nsec) > (mtime.tv_sec, mtime.tv_nsec) => a,
        _ => mtime,
    };
    let meta = Meta { mode, owner, times: Timestamps { last_access: atime, last_modification: mtime }, xattrs };

    let comps = lexical::clean(raw_name).ok_or_else(|| refuse(at, "name climbs out of the layer (..)"))?;
    let target = match comps.split_last() {
        // The layer root: its mode and owner are the store's, as Docker leaves them.
        None if kind == Kind::Dir => Target::Skip,
        None => return Err(refuse(at, "a non-directory entry for the layer root")),
        // AUFS bookkeeping (`.wh..wh.plnk` and the like).
        Some(_) if comps[0].starts_with(whiteout::WH_META_PREFIX) && comps[0] != whiteout::WH_OPAQUE => Target::Skip,
        Some((base, dir)) => match whiteout::classify(base, dir.is_empty()) {
            TarName::Invalid => return Err(refuse(at, "invalid whiteout name")),
            TarName::AufsMeta => Target::Skip,
            TarName::Opaque => Target::Opaque,
            TarName::Whiteout(name) => Target::Whiteout(name),
            TarName::Plain => Target::Plain,
        },
    };
    Ok(Some(Parsed { kind, comps, target, link: &e.link, dev, meta, dropped_xattrs }))
}

/// Where a plain entry goes: its parent directory, its name there and its whole path.
struct Place<'p, 'e> {
    parent: BorrowedFd<'p>,
    /// Files created in the parent get this process's ids and the umask's mode.
    plain_parent: bool,
    name: CString,
    comps: &'p [&'e [u8]],
}

impl Extractor<'_> {
    /// Parses the tar from the pipe and writes every entry; then reads the stream to its end
    /// so the digest covers all of it. Returns where the end-of-archive block must start and
    /// the last entry's name, for the caller's truncation check.
    fn run(
        &mut self,
        reader: input::PipeReader,
        counters: &Counters,
        progress: Option<&(dyn Fn(&ApplyProgress) + Sync)>,
    ) -> Result<(u64, String)> {
        let mut tr = gotar::Reader::new(BufReader::with_capacity(64 * 1024, reader));
        // The last entry's name, formatted only when an error needs it.
        let mut last: Vec<u8> = Vec::new();
        let after = |last: &[u8]| {
            if last.is_empty() {
                "the start of the stream".to_owned()
            } else {
                At(last).to_string()
            }
        };
        // Where the header after the last entry starts: the end-of-archive block must be there.
        let mut end_pos = 0u64;
        loop {
            let e = match tr.next() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(err) => {
                    let at = if last.is_empty() {
                        "the first header".to_owned()
                    } else {
                        format!("the header after {}", At(&last))
                    };
                    return Err(input::stream_error(counters, at, err));
                }
            };
            last.clear();
            last.extend_from_slice(&e.name);
            self.entry(&e, &mut tr, &At(&last))?;
            self.stats.entries += 1;
            end_pos = (e.data_pos + e.data_len).div_ceil(512) * 512;
            if let Some(p) = progress {
                p(&ApplyProgress {
                    entries: self.stats.entries,
                    input_bytes: counters.input.load(Ordering::Relaxed),
                    tar_bytes: e.data_pos + e.data_len,
                });
            }
        }
        let mut rest = tr.into_inner();
        io::copy(&mut rest, &mut io::sink())
            .map_err(|e| input::stream_error(counters, format!("the end of the stream after {}", after(&last)), e))?;
        self.fix_dir_times()?;
        Ok((end_pos, after(&last)))
    }

    /// Parses one entry and hands it to the writer for what it is.
    fn entry<R: Read>(&mut self, e: &gotar::Entry, data: &mut gotar::Reader<R>, at: &At<'_>) -> Result<()> {
        let Some(p) = parse(e, at)? else {
            self.stats.skipped += 1;
            return Ok(());
        };
        self.stats.dropped_xattrs += p.dropped_xattrs;
        if let Some(n) = &mut self.naive {
            // Not negative: a regular file's size was checked by the reader.
            n.header_bytes += e.size as u64;
        }
        let dir_path = join(&p.comps[..p.comps.len().saturating_sub(1)]);
        match p.target {
            Target::Skip => {
                self.stats.skipped += 1;
                Ok(())
            }
            Target::Opaque => self.opaque(dir_path, at),
            Target::Whiteout(name) => {
                let (parent, plain) = self.parent(&dir_path, at)?;
                let r = match &self.naive {
                    Some(_) => CString::new(name).map_err(|_| refuse(at, "name contains NUL")).and_then(|n| {
                        Naive::whiteout(parent.as_fd(), &n).map_err(|e| sys(at, "deleting the whited-out entry", e))
                    }),
                    None => self.whiteout(parent.as_fd(), name, &p.meta, at),
                };
                // A naive whiteout deletes (`a/s/.wh.s` removes `a/s -> .` itself): the next
                // entry must resolve its parent afresh.
                if self.naive.is_none() {
                    self.cache = Some((dir_path, parent, plain));
                }
                r
            }
            Target::Plain => {
                let (parent, plain_parent) = self.parent(&dir_path, at)?;
                let base = p.comps[p.comps.len() - 1];
                let name = CString::new(base).map_err(|_| refuse(at, "name contains NUL"))?;
                let to = Place { parent: parent.as_fd(), plain_parent, name, comps: &p.comps };
                // Each writer creates first and looks only on a clash: layers rarely
                // overwrite, and a stat per entry is measurable.
                let r = match p.kind {
                    Kind::Reg => self.file(&to, &p.meta, data, at),
                    Kind::Dir => self.dir(&to, &p.meta, at),
                    Kind::Symlink => self.symlink(&to, p.link, &p.meta, at),
                    Kind::Link => self.hardlink(&to, p.link, &p.meta, at),
                    Kind::Char | Kind::Block | Kind::Fifo => self.node(&to, p.kind, p.dev, &p.meta, at),
                };
                self.cache = Some((dir_path, parent, plain_parent));
                if let (Ok(()), Some(n)) = (&r, &mut self.naive) {
                    n.unpacked(join(&p.comps));
                }
                r
            }
        }
    }

    /// `.wh..wh..opq`: an overlay opaque directory, or (naive) the directory emptied.
    fn opaque(&mut self, dir_path: Vec<u8>, at: &At<'_>) -> Result<()> {
        let (parent, plain) = self.parent(&dir_path, at)?;
        let r = match &self.naive {
            Some(n) => n.opaque(parent.as_fd(), &dir_path).map_err(|e| sys(at, "emptying the opaque directory", e)),
            None => rfs::fsetxattr(&parent, self.opaque_xattr, b"y", rfs::XattrFlags::empty())
                .map_err(|e| sys(at, "marking the directory opaque", e)),
        };
        // A naive opaque marker deletes entries, possibly a component of this very path
        // (`a/s -> .`): the next entry must resolve its parent afresh.
        if self.naive.is_none() {
            self.cache = Some((dir_path, parent, plain));
        }
        r?;
        if self.naive.is_none() {
            self.stats.opaque_dirs += 1;
        }
        Ok(())
    }

    /// The directory `dir` inside the root, creating missing components 0755 owned by the
    /// store's root as Docker does for implied parents.
    /// Also says whether files created in it simply get this process's ids and the umask's
    /// mode (no setgid bit, no default ACL), so chown and chmod can be skipped for them.
    fn parent(&mut self, dir: &[u8], at: &At<'_>) -> Result<(OwnedFd, bool)> {
        if let Some((p, fd, plain)) = self.cache.take() {
            if p == dir {
                return Ok((fd, plain));
            }
        }
        let fd = self.resolve_parent(dir, at)?;
        let st = rfs::fstat(&fd).map_err(|e| sys(at, "stat of the parent directory", e))?;
        let acl = fsx::fget_xattr(&fd, c"system.posix_acl_default")
            .map_err(|e| sys(at, "reading the parent's ACL", errno(&e)))?;
        Ok((fd, st.st_mode & 0o2000 == 0 && acl.is_none()))
    }

    fn resolve_parent(&mut self, dir: &[u8], at: &At<'_>) -> Result<OwnedFd> {
        match fsx::open_dir_in_root(self.root, dir) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(sys(at, "resolving the parent directory", e)),
        }
        let mut cur: Option<OwnedFd> = None;
        let mut end = 0;
        for comp in dir.split(|&b| b == b'/') {
            end += comp.len();
            match fsx::open_dir_in_root(self.root, &dir[..end]) {
                Ok(fd) => cur = Some(fd),
                Err(Errno::NOENT) => {
                    let p = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.root);
                    let name = CString::new(comp).map_err(|_| refuse(at, "name contains NUL"))?;
                    rfs::mkdirat(p, &name, IMPLIED_DIR_MODE).map_err(|e| match e {
                        // The name exists but did not resolve: a symlink that leads nowhere
                        // inside the layer (Docker's open then fails the same way).
                        Errno::EXIST => refuse(
                            at,
                            format!(
                                "parent {} is a symlink that does not lead to a directory inside the layer: \
                                 no such file or directory",
                                show(&dir[..end])
                            ),
                        ),
                        e => sys(at, "creating an implied parent directory", e),
                    })?;
                    let fd = fsutil::open_dir(p, &name).map_err(|e| sys(at, "opening an implied parent", errno(&e)))?;
                    self.owner
                        .fchown(&fd)
                        .and_then(|()| rfs::fchmod(&fd, IMPLIED_DIR_MODE))
                        .map_err(|e| sys(at, "setting up an implied parent", e))?;
                    cur = Some(fd);
                }
                Err(e) => return Err(sys(at, "resolving the parent directory", e)),
            }
            end += 1;
        }
        Ok(cur.expect("a non-empty dir path has components"))
    }

    fn whiteout(&mut self, parent: BorrowedFd<'_>, name: &[u8], meta: &Meta<'_>, at: &At<'_>) -> Result<()> {
        let cname = CString::new(name).map_err(|_| refuse(at, "name contains NUL"))?;
        match rfs::statat(parent, &cname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if whiteout::is_whiteout(&st) => {}
            Ok(_) => return Err(refuse(at, "whiteout for an entry this same archive creates")),
            Err(Errno::NOENT) => match rfs::mknodat(parent, &cname, FileType::CharacterDevice, Mode::empty(), 0) {
                Ok(()) => {}
                Err(Errno::PERM) => {
                    return Err(Error::Unsupported(format!(
                        "{at}: creating a whiteout (character device 0:0) is not permitted here; \
                             it needs CAP_MKNOD or Linux >= 5.8 in a user namespace"
                    )))
                }
                Err(e) => return Err(sys(at, "creating a whiteout", e)),
            },
            Err(e) => return Err(sys(at, "looking up the whiteout target", e)),
        }
        meta.owner
            .chown_at(parent, &cname)
            .map_err(|e| chown_err(at, "setting the whiteout's owner", meta, self.userns, e))?;
        // The header's times, so exporting the applied layer gives back the same bytes (and
        // digest). Docker leaves them at the time of the apply; nothing reads them but export.
        rfs::utimensat(parent, &cname, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| sys(at, "setting the whiteout's times", e))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        to: &Place<'_, '_>,
        meta: &Meta<'_>,
        e: &mut gotar::Reader<R>,
        at: &At<'_>,
    ) -> Result<()> {
        let open = || {
            rfs::openat(
                to.parent,
                &to.name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                meta.mode & PERMISSIONS,
            )
        };
        let (fd, temp) = match open() {
            Err(Errno::EXIST) => match self.replacement(to, meta, at)? {
                Some((fd, temp)) => (fd, Some(temp)),
                None => {
                    self.clear(to, Kind::Reg, at)?;
                    (open().map_err(|e| sys(at, "creating the file", e))?, None)
                }
            },
            r => (r.map_err(|e| sys(at, "creating the file", e))?, None),
        };
        let written = self.file_body(&fd, to, meta, e, temp.as_deref(), at);
        if let (Err(_), Some(temp)) = (&written, &temp) {
            // Not left behind in the layer (a failed apply discards its tree anyway).
            let _ = rfs::unlinkat(to.parent, temp, AtFlags::empty());
        }
        self.stats.size += written?;
        self.stats.files += 1;
        Ok(())
    }

    /// A regular file's data and metadata, then, when it was written under `temp`, its move
    /// over the entry it replaces. Returns the bytes written.
    fn file_body<R: Read>(
        &mut self,
        fd: &OwnedFd,
        to: &Place<'_, '_>,
        meta: &Meta<'_>,
        e: &mut gotar::Reader<R>,
        temp: Option<&CStr>,
        at: &At<'_>,
    ) -> Result<u64> {
        let n = self.copy_data(fd, e, at)?;
        // A new file already has our ids and, when the umask keeps every bit, its mode:
        // most files in a layer then need neither chown nor chmod.
        let skip_chown = to.plain_parent && meta.owner == self.me;
        let skip_chmod =
            to.plain_parent && PERMISSIONS.contains(meta.mode) && self.umask.is_some_and(|u| !meta.mode.intersects(u));
        self.meta_file(fd, meta, skip_chown, skip_chmod, at)?;
        if let Some(temp) = temp {
            rfs::renameat(to.parent, temp, to.parent, &to.name).map_err(|e| sys(at, "replacing the entry", e))?;
        }
        Ok(n)
    }

    /// In a mounted view (the naive apply), for a regular file over an existing entry that
    /// is neither a directory nor a symlink (those go through [`Extractor::clear`], whose path
    /// checks they need): a new file under a temporary name in the same directory, to be
    /// renamed over the entry once written. The result is the one Docker's remove-then-create
    /// gives, but there an unlink of a lower file makes overlayfs write a whiteout that the
    /// create then has to take away again, four metadata operations where a rename is one
    /// (measured: the whiteout work was a third of a naive apply's time). Not in a plain
    /// directory, where an unlink is cheap and frees the old file's space before the new one
    /// needs it. `None` means clear and create.
    fn replacement(&mut self, to: &Place<'_, '_>, meta: &Meta<'_>, at: &At<'_>) -> Result<Option<(OwnedFd, CString)>> {
        if self.naive.is_none() {
            return Ok(None);
        }
        let st = rfs::statat(to.parent, &to.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| sys(at, "looking up the entry", e))?;
        if matches!(FileType::from_raw_mode(st.st_mode), FileType::Directory | FileType::Symlink) {
            return Ok(None);
        }
        for _ in 0..16 {
            self.temps += 1;
            let temp = CString::new(format!(".ovl2-replace-{}", self.temps)).expect("no NUL");
            match rfs::openat(
                to.parent,
                &temp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                meta.mode & PERMISSIONS,
            ) {
                Ok(fd) => {
                    if st.st_nlink == 1 {
                        self.stats.size = self.stats.size.saturating_sub(st.st_size as u64);
                    }
                    return Ok(Some((fd, temp)));
                }
                // A name the tar itself used: take the next.
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(sys(at, "creating the file", e)),
            }
        }
        Ok(None)
    }

    fn dir(&mut self, to: &Place<'_, '_>, meta: &Meta<'_>, at: &At<'_>) -> Result<()> {
        let mk = || rfs::mkdirat(to.parent, &to.name, Mode::RWXU);
        match mk() {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                if !self.clear(to, Kind::Dir, at)? {
                    mk().map_err(|e| sys(at, "creating the directory", e))?;
                }
            }
            Err(e) => return Err(sys(at, "creating the directory", e)),
        }
        let fd = fsutil::open_dir(to.parent, &to.name).map_err(|e| sys(at, "opening the directory", errno(&e)))?;
        self.meta_fd(&fd, meta, false, at)?;
        self.dir_times.push((join(to.comps), clone_ts(&meta.times)));
        self.stats.dirs += 1;
        Ok(())
    }

    fn symlink(&mut self, to: &Place<'_, '_>, target: &[u8], meta: &Meta<'_>, at: &At<'_>) -> Result<()> {
        let mk = || rfs::symlinkat(target, to.parent, &to.name);
        match mk() {
            Err(Errno::EXIST) => {
                self.clear(to, Kind::Symlink, at)?;
                mk()
            }
            r => r,
        }
        .map_err(|e| sys(at, "creating the symlink", e))?;
        self.meta_at(to.parent, &to.name, meta, false, at)?;
        self.stats.size += target.len() as u64;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink(&mut self, to: &Place<'_, '_>, target: &[u8], meta: &Meta<'_>, at: &At<'_>) -> Result<()> {
        let tcomps =
            lexical::clean(target).ok_or_else(|| refuse(at, "hardlink target climbs out of the layer (..)"))?;
        let Some((tbase, tdir)) = tcomps.split_last() else {
            return Err(refuse(at, "hardlink to the layer root"));
        };
        let tparent = fsx::open_dir_in_root(self.root, &join(tdir))
            .map_err(|e| sys(at, &format!("resolving hardlink target {}", show(target)), e))?;
        let tname = CString::new(*tbase).map_err(|_| refuse(at, "name contains NUL"))?;
        let st = rfs::statat(&tparent, &tname, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| sys(at, &format!("hardlink target {}", show(target)), e))?;
        let tty = FileType::from_raw_mode(st.st_mode);
        if tty == FileType::Directory {
            return Err(refuse(at, format!("hardlink to a directory ({})", show(target))));
        }
        if to.comps == tcomps.as_slice() {
            return Err(refuse(at, "hardlink to itself"));
        }
        let mk = || rfs::linkat(&tparent, &tname, to.parent, &to.name, AtFlags::empty());
        match mk() {
            Err(Errno::EXIST) => {
                self.clear(to, Kind::Link, at)?;
                // Docker resolves the target's path after the removal, too.
                self.still_resolves(tparent.as_fd(), tdir, at)?;
                mk()
            }
            r => r,
        }
        .map_err(|e| sys(at, "creating the hardlink", e))?;
        self.meta_at(to.parent, &to.name, meta, tty != FileType::Symlink, at)?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// A device or FIFO. In a user namespace devices cannot be made and are skipped.
    fn node(&mut self, to: &Place<'_, '_>, kind: Kind, dev: u64, meta: &Meta<'_>, at: &At<'_>) -> Result<()> {
        let ft = match kind {
            Kind::Char => FileType::CharacterDevice,
            Kind::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        if self.userns && kind != Kind::Fifo {
            self.stats.skipped += 1;
            return Ok(());
        }
        let mk = || rfs::mknodat(to.parent, &to.name, ft, Mode::RUSR | Mode::WUSR, dev);
        let r = match mk() {
            Err(Errno::EXIST) => {
                self.clear(to, kind, at)?;
                mk()
            }
            r => r,
        };
        match r {
            Ok(()) => {}
            Err(Errno::PERM) if self.userns => {
                self.stats.skipped += 1;
                return Ok(());
            }
            Err(e) => return Err(sys(at, "creating the device node", e)),
        }
        self.meta_at(to.parent, &to.name, meta, true, at)?;
        self.stats.special += 1;
        Ok(())
    }

    /// Makes room for an entry whose name exists: a directory over a directory merges
    /// (returns true); anything else replaces what is there, keeping the size count right.
    ///
    /// Removing a directory or symlink can change what the entry's own parent path means
    /// (`etc/x -> .` then `etc/x/x/` removes `etc/x`, a component of `etc/x` itself). Docker
    /// resolves every path afresh and then fails; so the parent is checked again here, and
    /// the cached parent fd stays valid only because of that check.
    fn clear(&mut self, to: &Place<'_, '_>, kind: Kind, at: &At<'_>) -> Result<bool> {
        let (parent, name, comps) = (to.parent, to.name.as_c_str(), to.comps);
        let st =
            rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| sys(at, "looking up the entry", e))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            if kind == Kind::Dir {
                return Ok(true);
            }
            // Sizes below it may be shared with hardlinks elsewhere: measure at the end.
            self.size_exact = false;
            fsutil::remove_tree(parent, name).map_err(|e| sys(at, "replacing a directory", errno(&e)))?;
        } else {
            if st.st_nlink == 1 {
                self.stats.size = self.stats.size.saturating_sub(st.st_size as u64);
            }
            rfs::unlinkat(parent, name, AtFlags::empty()).map_err(|e| sys(at, "replacing an entry", e))?;
        }
        if matches!(ft, FileType::Directory | FileType::Symlink) {
            self.still_resolves(parent, &comps[..comps.len() - 1], at)?;
        }
        Ok(false)
    }

    /// Refuses the entry unless `dir` (inside the root) still resolves to `fd`: a removal
    /// took away a component of the path, and Docker's next step there fails (ENOENT).
    fn still_resolves(&self, fd: BorrowedFd<'_>, dir: &[&[u8]], at: &At<'_>) -> Result<()> {
        let path = join(dir);
        let gone = || {
            refuse(
                at,
                format!(
                    "replacing the entry removed a component of its own path {}; the path no longer \
                     exists (Docker's unpack fails here too: no such file or directory)",
                    show(&path)
                ),
            )
        };
        let now = match fsx::open_dir_in_root(self.root, &path) {
            Ok(now) => now,
            Err(Errno::NOENT | Errno::NOTDIR) => return Err(gone()),
            Err(e) => return Err(sys(at, "resolving the parent directory again", e)),
        };
        let (a, b) = (
            rfs::fstat(fd).map_err(|e| sys(at, "stat of the parent directory", e))?,
            rfs::fstat(&now).map_err(|e| sys(at, "stat of the parent directory", e))?,
        );
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Err(gone());
        }
        Ok(())
    }

    fn copy_data<R: Read>(&mut self, fd: &OwnedFd, e: &mut gotar::Reader<R>, at: &At<'_>) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let n = match e.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(match err.kind() {
                        io::ErrorKind::UnexpectedEof => {
                            refuse(at, format!("unexpected EOF, data ends early (truncated): {err}"))
                        }
                        _ => refuse(at, format!("reading the entry's data: {err}")),
                    })
                }
            };
            total += n as u64;
            let mut data = &self.buf[..n];
            while !data.is_empty() {
                match rustix::io::write(fd, data) {
                    Ok(0) => return Err(Error::io(format!("writing {at}"), io::Error::from(io::ErrorKind::WriteZero))),
                    Ok(w) => data = &data[w..],
                    Err(Errno::INTR) => {}
                    Err(err) => return Err(Error::io(format!("writing {at}"), err)),
                }
            }
        }
    }

    /// Owner, xattrs, mode and (unless deferred for directories) times, in Docker's order:
    /// chown clears setuid bits and file capabilities, so it goes first.
    fn meta_fd(&mut self, fd: &OwnedFd, m: &Meta<'_>, times: bool, at: &At<'_>) -> Result<()> {
        m.owner.fchown(fd).map_err(|e| chown_err(at, "setting the owner", m, self.userns, e))?;
        self.meta_rest(fd, m, false, times, at)
    }

    fn meta_file(&mut self, fd: &OwnedFd, m: &Meta<'_>, skip_chown: bool, skip_chmod: bool, at: &At<'_>) -> Result<()> {
        if !skip_chown {
            m.owner.fchown(fd).map_err(|e| chown_err(at, "setting the owner", m, self.userns, e))?;
        }
        self.meta_rest(fd, m, skip_chmod, true, at)
    }

    fn meta_rest(&mut self, fd: &OwnedFd, m: &Meta<'_>, skip_chmod: bool, times: bool, at: &At<'_>) -> Result<()> {
        for (k, v) in &m.xattrs {
            match rfs::fsetxattr(fd, *k, v, rfs::XattrFlags::empty()) {
                Ok(()) | Err(Errno::PERM) => {}
                Err(e) => return Err(sys(at, &format!("setting xattr {}", show(k)), e)),
            }
        }
        if !skip_chmod {
            rfs::fchmod(fd, m.mode).map_err(|e| sys(at, "setting the mode", e))?;
        }
        if times {
            rfs::futimens(fd, &m.times).map_err(|e| sys(at, "setting the times", e))?;
        }
        Ok(())
    }

    /// The same for entries that cannot be opened for I/O (symlinks, devices, fifos, links).
    /// `mode_and_times` is false for symlinks (no lchmod) and links to symlinks.
    fn meta_at(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        m: &Meta<'_>,
        mode_and_times: bool,
        at: &At<'_>,
    ) -> Result<()> {
        m.owner.chown_at(parent, name).map_err(|e| chown_err(at, "setting the owner", m, self.userns, e))?;
        for (k, v) in &m.xattrs {
            match fsx::lset_xattr_at(parent, name, k, v) {
                Ok(()) | Err(Errno::PERM) => {}
                Err(e) => return Err(sys(at, &format!("setting xattr {}", show(k)), e)),
            }
        }
        if mode_and_times {
            // Not a symlink (checked by the caller), so following is the same as not.
            rfs::chmodat(parent, name, m.mode, AtFlags::empty()).map_err(|e| sys(at, "setting the mode", e))?;
        }
        // Symlinks get their own times (lutimes), as Docker does.
        rfs::utimensat(parent, name, &m.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| sys(at, "setting the times", e))?;
        Ok(())
    }

    /// Directory mtimes last, once nothing more is created inside them. A directory that a
    /// later entry removed or replaced is skipped.
    fn fix_dir_times(&mut self) -> Result<()> {
        self.cache = None;
        for (path, ts) in std::mem::take(&mut self.dir_times) {
            let fd = match rfs::openat2(
                self.root,
                path.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                fsx::IN_ROOT,
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(Error::io(format!("reopening directory {}", show(&path)), e)),
            };
            rfs::futimens(&fd, &ts).ctx(|| format!("setting the times of {}", show(&path)))?;
        }
        Ok(())
    }
}

/// The umask from `/proc/self/status` (Linux >= 4.7); reading it never changes it, unlike
/// umask(2), which would race with other threads.
fn read_umask() -> Option<Mode> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let v = s.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(v.trim(), 8).ok().map(Mode::from_raw_mode)
}

/// The permission bits (no setuid, setgid or sticky bit): what a new file may be created
/// with before its full mode is set.
const PERMISSIONS: Mode = Mode::from_raw_mode(0o777);

/// Mode of a parent directory a tar implies without an entry of its own (Docker's `0755`).
const IMPLIED_DIR_MODE: Mode = Mode::from_raw_mode(0o755);

fn errno(e: &io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

fn clone_ts(t: &Timestamps) -> Timestamps {
    Timestamps { last_access: t.last_access, last_modification: t.last_modification }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"12.5").map(|t| (t.tv_sec, t.tv_nsec)), Some((12, 500_000_000)));
        assert_eq!(pax_time(b"12").map(|t| (t.tv_sec, t.tv_nsec)), Some((12, 0)));
        assert_eq!(pax_time(b"-3.25").map(|t| (t.tv_sec, t.tv_nsec)), Some((0, 0)));
        assert_eq!(pax_time(b"1.1234567891").map(|t| t.tv_nsec), Some(123_456_789));
        assert!(pax_time(b"x").is_none());
    }
}
