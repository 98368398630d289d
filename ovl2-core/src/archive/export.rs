//! `diff`: a layer's `diff/` as a tar in Docker's layer format, byte-identical to Docker's
//! native overlay2 Diff of the same directory.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, OFlags, Stat};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::changes::{self, Change, ChangeKind, Lower, Merged};
use super::gotar::{Header, Kind, Writer};
use super::input::hex_digest;
use super::{fsx, whiteout, Native};
use crate::error::{Context, Error, Result};
use crate::fsutil::{self, DirStack, Mounts};
use crate::store::Store;

/// What a [`Driver::diff`](crate::Driver::diff) wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffStats {
    /// Length of the (uncompressed) tar stream.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the tar stream (the layer's DiffID); `None` when
    /// [`DiffOpts::digest`] was off.
    pub digest: Option<String>,
    /// Tar entries written (opaque markers and whiteouts included).
    pub entries: u64,
}

/// How [`Driver::diff_with`](crate::Driver::diff_with) runs.
#[derive(Debug, Clone, Copy)]
pub struct DiffOpts {
    /// Compute the stream's sha256 (on the exporting thread, each piece as it goes out). Off, the export does no more work
    /// than `tar -c`; callers that hash the stream themselves can turn it off.
    pub digest: bool,
}

impl Default for DiffOpts {
    fn default() -> Self {
        DiffOpts { digest: true }
    }
}

impl Store {
    /// The work of [`Driver::diff_with`](crate::Driver::diff_with).
    pub(crate) fn diff_with(
        &self,
        id: &str,
        parent: Option<&str>,
        writer: impl Write,
        opts: &DiffOpts,
    ) -> Result<DiffStats> {
        self.export(id, parent, Plain(writer), opts.digest)
    }

    /// The work of [`Driver::diff_to_fd`](crate::Driver::diff_to_fd).
    pub(crate) fn diff_to_fd(
        &self,
        id: &str,
        parent: Option<&str>,
        fd: BorrowedFd<'_>,
        opts: &DiffOpts,
    ) -> Result<DiffStats> {
        self.export(id, parent, FdSink(fd), opts.digest)
    }

    /// The work of [`Driver::diff`](crate::Driver::diff).
    pub(crate) fn diff(&self, id: &str, parent: Option<&str>, writer: impl Write) -> Result<DiffStats> {
        self.export(id, parent, Plain(writer), true)
    }

    /// The work of [`Driver::diff_small`](crate::Driver::diff_small): the native export
    /// into memory, given up (`None`) once it would pass `limit` bytes or
    /// [`SMALL_ENTRIES`] entries, or needs mounted views. It reads what a streaming export
    /// would, so a stream that fits costs no more than writing it; one with too many
    /// entries is given up on as soon as a listing shows them.
    pub(crate) fn diff_small(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &DiffOpts,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, DiffStats)>> {
        let (layers, native) = self.layers_for(id, parent)?;
        if !native {
            return Ok(None);
        }
        let mut out = Out::new(Plain(io::sink()), opts.digest);
        out.held = Some(Vec::new());
        let mut prefix = Vec::new();
        let limit = limit.min(HOLD);
        let mut ex = Exporter::new(&mut out, true, None);
        ex.small = Some(limit);
        match ex.walk(layers.upper.as_fd(), &mut prefix)? {
            // The walk keeps to the limit entry by entry; the end blocks come after it.
            Native::Done(()) => {
                let (tar, st) = ex.finish_held()?;
                Ok((tar.len() as u64 <= limit).then_some((tar, st)))
            }
            Native::NeedsMount(_) => Ok(None),
        }
    }

    fn export(&self, id: &str, parent: Option<&str>, writer: impl Sink, digest: bool) -> Result<DiffStats> {
        let (layers, native) = self.layers_for(id, parent)?;
        let mut out = Out::new(writer, digest);
        let mut prefix = Vec::new();
        let views = if native {
            // Redirected directories (renamed with redirect_dir on) make the upper unreadable
            // on its own, and Docker's mounted path must be taken before anything is written:
            // the output is held back while the walk looks, and the whole upper is checked
            // only when the held bytes pass HOLD (see Exporter::settle). A base layer has no
            // such path (its `get` is its own upper, where a redirect leads nowhere), so its
            // upper is never checked ahead: a redirect found there is an error either way.
            let fallback = !layers.lowers.is_empty();
            out.held = Some(Vec::new());
            let mut ex = Exporter::new(&mut out, true, fallback.then(|| layers.upper.as_fd()));
            match ex.walk(layers.upper.as_fd(), &mut prefix)? {
                Native::Done(()) => return ex.finish(),
                Native::NeedsMount(path) => {
                    drop(ex);
                    if !fallback {
                        return Err(redirect_error(&path));
                    }
                    if !out.discard() {
                        return Err(super::needs_mount_error(&path, "the tar stream was already written"));
                    }
                }
            }
            drop(layers);
            prefix.clear();
            let (mounted, new, old) = self.mounted_views(id, parent)?;
            (Some(mounted), new, old)
        } else {
            let (new, old) = self.naive_views(layers, parent)?;
            (None, new, old)
        };
        let (_mounted, new, old) = views;
        let mut ex = Exporter::new(&mut out, false, None);
        match parent {
            // Docker tars the whole layer as mounted.
            None => ex.walk_merged(&new, &mut prefix)?,
            // Docker exports the changes against the other layer, whiteouts stamped now.
            Some(_) => {
                for c in changes::naive(&new, &old)? {
                    ex.change(&new, &c)?;
                }
            }
        }
        ex.finish()
    }
}

/// Output buffer: file data is read into it up to `READ` at a time, and it goes out in
/// `WRITE`s.
const CHUNK: usize = 256 * 1024;
/// Write size: a default pipe's capacity (64 KiB). Each write wakes the reader, which then
/// empties the pipe, so halving the writes halves the wake-ups: measured on the Go
/// toolchain's tree into `cat`, 4-13% less CPU than 32 KiB writes, and 16 KiB cost 10-17%
/// more. Each write is hashed just before it goes out, while the bytes are still in cache
/// from the read.
const WRITE: usize = 64 * 1024;
/// Most of a file read at once: 64 KiB keeps the read, the pipe write and the hashing in
/// cache (measured: 20% less CPU than 256 KiB on a large tree).
const READ: u64 = 64 * 1024;
/// Files at least this large go into a pipe output with `splice` (when nothing needs the
/// bytes in user space): below it, reading into the output batches small files into few
/// writes, which costs fewer syscalls than a `splice` and a `write` per file.
const SPLICE_MIN: u64 = 64 * 1024;
/// A native export holds its output back up to this many bytes (see `Exporter::settle`).
const HOLD: u64 = 1 << 20;
/// The most tar entries an export into memory ([`Store::diff_small`]) makes. It gives up
/// as soon as the directory listings show more (before reading them), so a larger layer
/// costs the attempt a few listings, not its files.
const SMALL_ENTRIES: u64 = 16;

/// Where an export's bytes go: any writer, or an fd that the data of large files can be
/// spliced into.
trait Sink: Write {
    /// The output's fd, when it is one the export may `splice` into.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A caller's writer: everything goes through its `write`.
struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Sink for Plain<W> {}

/// A caller's fd, written with `write(2)` directly (no buffering of its own: [`Out`]
/// writes whole pieces).
struct FdSink<'a>(BorrowedFd<'a>);

impl Write for FdSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(self.0, buf)?)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for FdSink<'_> {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0)
    }
}

/// Whether file data may be spliced into the output, found out on the first large file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Splice {
    Unknown,
    No,
    Yes,
}

/// The output: buffered in chunks, each piece hashed and written to the caller's writer.
/// File data is read straight into the chunk ([`Out::read_from`]), not through a buffer of
/// its own and a copy. The digest is computed on this thread: a helper thread cost more CPU
/// (the hand-offs, and every byte pulled into another core's cache) than it saved.
struct Out<W: Sink> {
    w: W,
    /// `CHUNK` long from the first byte that goes through it (initialised once, so reads
    /// can fill it without a copy or a `memset` per read; empty until then, because a held
    /// stream that is taken whole never needs it); the first `fill` bytes are the stream's.
    cur: Vec<u8>,
    fill: usize,
    /// Bytes of `cur` already written to `w` (and hashed).
    written: usize,
    hash: Option<Sha256>,
    n: u64,
    /// While set, the stream so far, not yet written nor hashed (it may still be thrown
    /// away for the mounted path).
    held: Option<Vec<u8>>,
    splice: Splice,
}

impl<W: Sink> Out<W> {
    fn new(w: W, digest: bool) -> Self {
        let hash = digest.then(Sha256::new);
        Out { w, cur: Vec::new(), fill: 0, written: 0, hash, n: 0, held: None, splice: Splice::Unknown }
    }

    /// Moves at most `want` bytes of `fd` into the output with `splice(2)`, after what is
    /// buffered: the page cache's pages go into the pipe without a copy through user space.
    /// `None` when that cannot be done here, and the caller reads instead: the digest (or
    /// output held back) needs the bytes, the output is no pipe or a non-blocking one (a
    /// full pipe would fail the splice where a `write` error is the caller's to see), or
    /// the file's filesystem cannot splice. A read error is returned as the `Errno` it was,
    /// as in [`Out::read_from`].
    fn splice_from(
        &mut self,
        fd: BorrowedFd<'_>,
        want: usize,
    ) -> io::Result<Option<std::result::Result<usize, Errno>>> {
        if self.hash.is_some() || self.held.is_some() {
            return Ok(None);
        }
        if self.splice == Splice::Unknown {
            let pipe = self.w.fd().is_some_and(|o| {
                let fifo = rfs::fstat(o).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Fifo);
                fifo && rfs::fcntl_getfl(o).is_ok_and(|fl| !fl.contains(OFlags::NONBLOCK))
            });
            self.splice = if pipe { Splice::Yes } else { Splice::No };
        }
        if self.splice == Splice::No {
            return Ok(None);
        }
        self.drain()?;
        let Some(out) = self.w.fd() else { return Ok(None) };
        match rustix::pipe::splice(fd, None, out, None, want, rustix::pipe::SpliceFlags::empty()) {
            Ok(n) => {
                self.n += n as u64;
                Ok(Some(Ok(n)))
            }
            // The file's filesystem has no splice, or the pipe was made non-blocking since:
            // read this file (and every later one) instead, as if splicing had never been on.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::AGAIN) => {
                self.splice = Splice::No;
                Ok(None)
            }
            Err(e) => Ok(Some(Err(e))),
        }
    }

    /// `cur`, allocated on first use.
    fn chunk(&mut self) -> &mut [u8] {
        if self.cur.is_empty() {
            self.cur = vec![0; CHUNK];
        }
        &mut self.cur
    }

    /// Reads at most `want` bytes of `fd` into the stream (0 at its end). A read error is
    /// returned as the `Errno` it was, so the caller can retry `EINTR` and `EAGAIN`.
    fn read_from(&mut self, fd: BorrowedFd<'_>, want: usize) -> io::Result<std::result::Result<usize, Errno>> {
        if let Some(h) = &mut self.held {
            let len = h.len();
            h.resize(len + want, 0);
            let r = rustix::io::read(fd, &mut h[len..]);
            h.truncate(len + *r.as_ref().unwrap_or(&0));
            if let Ok(n) = r {
                self.n += n as u64;
            }
            return Ok(r);
        }
        let want = want.min(CHUNK - self.fill);
        let fill = self.fill;
        let n = match rustix::io::read(fd, &mut self.chunk()[fill..fill + want]) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        self.filled(n)?;
        Ok(Ok(n))
    }

    /// Accounts for `n` bytes put into `cur` after `fill`, writes what makes whole `WRITE`s
    /// and starts over at the front of `cur` once it is full.
    fn filled(&mut self, n: usize) -> io::Result<()> {
        self.fill += n;
        self.n += n as u64;
        while self.fill - self.written >= WRITE {
            self.emit(self.written + WRITE)?;
        }
        if self.fill == CHUNK {
            self.emit(CHUNK)?;
            (self.fill, self.written) = (0, 0);
        }
        Ok(())
    }

    /// Hashes and writes `cur[written..end]`.
    fn emit(&mut self, end: usize) -> io::Result<()> {
        let piece = &self.cur[self.written..end];
        if let Some(h) = &mut self.hash {
            h.update(piece);
        }
        self.w.write_all(piece)?;
        self.written = end;
        Ok(())
    }

    /// Bytes held back.
    fn held_len(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.len() as u64)
    }

    /// Stops holding back: what was held goes out (and into the digest) now.
    fn release(&mut self) -> io::Result<()> {
        let Some(held) = self.held.take() else { return Ok(()) };
        self.n -= held.len() as u64;
        self.write_all(&held)
    }

    /// Throws the held stream away and stops holding, as if nothing had been written;
    /// `false` when the output was no longer held (bytes went out).
    fn discard(&mut self) -> bool {
        if self.held.take().is_none() {
            return false;
        }
        self.n = 0;
        true
    }

    /// Takes the whole stream while it is still held, with its digest: nothing was written.
    fn take_held(&mut self) -> (Vec<u8>, Option<String>) {
        let held = self.held.take().unwrap_or_default();
        let digest = self.hash.take().map(|mut h| {
            h.update(&held);
            hex_digest(h.finalize())
        });
        (held, digest)
    }

    /// Hashes and writes everything buffered in `cur`, which starts over empty.
    fn drain(&mut self) -> io::Result<()> {
        self.emit(self.fill)?;
        (self.fill, self.written) = (0, 0);
        Ok(())
    }

    /// Flushes everything and returns the stream's length and digest.
    fn finish(&mut self) -> io::Result<(u64, Option<String>)> {
        self.release()?;
        self.drain()?;
        self.w.flush()?;
        Ok((self.n, self.hash.take().map(|h| hex_digest(h.finalize()))))
    }
}

impl<W: Sink> Write for Out<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(h) = &mut self.held {
            h.extend_from_slice(buf);
            self.n += buf.len() as u64;
            return Ok(buf.len());
        }
        let n = (CHUNK - self.fill).min(buf.len());
        let fill = self.fill;
        self.chunk()[fill..fill + n].copy_from_slice(&buf[..n]);
        self.filled(n)?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Exporter<'a, W: Sink> {
    tw: Writer<&'a mut Out<W>>,
    /// Docker's native Diff (overlay whiteouts and opaque dirs converted to AUFS markers)
    /// rather than a plain tar of a merged view.
    native: bool,
    /// For a native export of a layer with a parent whose output is still held back: the
    /// upper, to check for redirected directories before the output is released.
    upper: Option<BorrowedFd<'a>>,
    /// First path written for each multiply-linked inode (Go keys by inode number alone).
    seen: HashMap<u64, Vec<u8>>,
    entries: u64,
    /// For an export into memory ([`Store::diff_small`]): the most bytes it may hold.
    /// Past it the walk stops as though it needed mounted views: either way the caller
    /// streams instead, and the streaming export makes its own choice.
    small: Option<u64>,
    /// The current entry's path for messages, reused from entry to entry.
    at: Vec<u8>,
}

impl<'a, W: Sink> Exporter<'a, W> {
    /// A native export or a merged one; `upper` is checked for redirects before held output
    /// is released.
    fn new(out: &'a mut Out<W>, native: bool, upper: Option<BorrowedFd<'a>>) -> Self {
        Exporter { tw: Writer::new(out), native, upper, seen: HashMap::new(), entries: 0, small: None, at: Vec::new() }
    }

    /// Ends the tar and takes it from memory, where it was held whole.
    fn finish_held(mut self) -> Result<(Vec<u8>, DiffStats)> {
        self.tw.finish().ctx(|| "writing the end of the tar".into())?;
        let (tar, digest) = self.tw.w.take_held();
        let stats = DiffStats { tar_bytes: tar.len() as u64, digest, entries: self.entries };
        Ok((tar, stats))
    }

    /// Ends the tar and flushes it.
    fn finish(mut self) -> Result<DiffStats> {
        self.tw.finish().ctx(|| "writing the end of the tar".into())?;
        let (tar_bytes, digest) = self.tw.w.finish().ctx(|| "flushing the tar stream".into())?;
        Ok(DiffStats { tar_bytes, digest, entries: self.entries })
    }

    /// Called while a native export holds its output back, before `more` bytes are added:
    /// past [`HOLD`] bytes, checks the whole upper for redirected directories (the one thing
    /// that sends the export to the mounted path) when there is an upper to check, and
    /// releases the output. So a layer whose tar fits in `HOLD` is walked once, and a larger
    /// one with a parent walked twice (the second time only its directories). An export
    /// into memory never releases: past its limits it stops (`NeedsMount`, see `small`).
    fn settle(&mut self, more: u64) -> Result<Native<()>> {
        if self.tw.w.held.is_none() {
            return Ok(Native::Done(()));
        }
        let held = self.tw.w.held_len() + more;
        if let Some(limit) = self.small {
            let fits = held <= limit && self.entries <= SMALL_ENTRIES;
            return Ok(if fits { Native::Done(()) } else { Native::NeedsMount(Vec::new()) });
        }
        if held <= HOLD {
            return Ok(Native::Done(()));
        }
        if let Some(upper) = self.upper.take() {
            if let Some(path) = dirs_redirected(upper)? {
                return Ok(Native::NeedsMount(path));
            }
        }
        self.tw.w.release().ctx(|| "writing the tar stream".into())?;
        Ok(Native::Done(()))
    }
}

/// The xattrs of an entry that matter to export, read with one `listxattr` in the common
/// case of none at all.
#[derive(Default)]
struct Xattrs {
    capability: Option<Vec<u8>>,
    opaque: bool,
    redirect: bool,
}

fn read_xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&CStr) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<Xattrs> {
    // On the stack first: most entries have a short list or none, and a heap buffer per
    // entry was an allocation and a 1 KiB clear for each.
    let mut small = [0u8; 1024];
    let mut big = Vec::new();
    let n = loop {
        let buf: &mut [u8] = if big.is_empty() { &mut small } else { &mut big };
        match list(buf) {
            Ok(n) => break n,
            Err(Errno::RANGE) if buf.len() < 1 << 20 => {
                let len = buf.len() * 4;
                big.resize(len, 0);
            }
            Err(Errno::OPNOTSUPP) => return Ok(Xattrs::default()),
            Err(e) => return Err(e.into()),
        }
    };
    let buf: &[u8] = if big.is_empty() { &small } else { &big };
    let mut x = Xattrs::default();
    for name in buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        match name {
            b"security.capability" => {
                x.capability = get(c"security.capability")?;
            }
            b"trusted.overlay.opaque" | b"user.overlay.opaque" => {
                let key = if name.starts_with(b"t") { whiteout::OPAQUE_TRUSTED } else { whiteout::OPAQUE_USER };
                x.opaque |= get(key)?.is_some_and(|v| whiteout::is_opaque_value(&v));
            }
            n if whiteout::REDIRECT_XATTRS.iter().any(|r| r.to_bytes() == n) => x.redirect = true,
            _ => {}
        }
    }
    Ok(x)
}

/// Docker writes a v3 (namespaced) capability as v2: the root uid means nothing outside
/// the user namespace the archive was built in.
fn cap_v2(mut c: Vec<u8>) -> Vec<u8> {
    if c.len() > 3 && c[3] == 3 {
        c[3] = 2;
        c.truncate(20);
    }
    c
}

fn show(p: &[u8]) -> String {
    super::apply::show(p)
}

/// An entry's path in messages, formatted only when a message is made: building it for
/// every entry was a few percent of a large export's CPU.
struct Show<'a>(&'a [u8]);

impl std::fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&show(self.0))
    }
}

/// A file the walk found: the directory it is in, its name and stat, and the file itself
/// when the walk opened it to take the stat.
struct Found<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    st: &'a Stat,
    file: Option<OwnedFd>,
}

/// The header fields a file's stat gives (Docker's `FileInfoHeader`); name, link and size
/// are the kind's writer's to fill in.
fn header_of<'a>(kind: Kind, st: &Stat) -> Header<'a> {
    Header {
        name: &[],
        link: &[],
        kind,
        mode: (st.st_mode & 0o7777) as i64,
        uid: st.st_uid as i64,
        gid: st.st_gid as i64,
        size: 0,
        mtime: Some(st.st_mtime),
        devmajor: 0,
        devminor: 0,
        records: Vec::new(),
    }
}

/// Reads the xattrs export cares about, the capability into the header.
fn entry_xattrs(fd: &OwnedFd, h: &mut Header<'_>, at: &Show<'_>) -> Result<Xattrs> {
    let mut x = read_xattrs(|b| rfs::flistxattr(fd, b), |k| fsx::fget_xattr(fd, k))
        .ctx(|| format!("reading xattrs of {at}"))?;
    if let Some(c) = x.capability.take() {
        h.records.push((b"SCHILY.xattr.security.capability".to_vec(), cap_v2(c)));
    }
    Ok(x)
}

impl<W: Sink> Exporter<'_, W> {
    /// Docker's walk of a directory (names in byte order, parents before children), on an
    /// explicit stack so it needs a bounded number of fds at any depth. Each level remembers
    /// how long `prefix` was before its name was added.
    fn walk(&mut self, dir: BorrowedFd<'_>, prefix: &mut Vec<u8>) -> Result<Native<()>> {
        let root = dir.try_clone_to_owned().ctx(|| "duplicating the upper dir fd".into())?;
        let mut stack =
            DirStack::new(root, c".", prefix.len(), Mounts::Follow).ctx(|| format!("listing {}", show(prefix)))?;
        loop {
            // An export into memory gives up as soon as the listings show it has more
            // entries than it may make, before reading any of them.
            if self.small.is_some() && self.entries + stack.unread() as u64 > SMALL_ENTRIES {
                return Ok(Native::NeedsMount(Vec::new()));
            }
            let Some(ent) = stack.next_entry() else {
                if stack.depth() == 1 {
                    return Ok(Native::Done(()));
                }
                let (_, plen) = stack.pop().ctx(|| format!("returning from {}", show(prefix)))?;
                prefix.truncate(plen);
                continue;
            };
            let plen = prefix.len();
            prefix.extend_from_slice(ent.name.to_bytes());
            // A file readdir calls regular is opened first and its stat taken from the open
            // fd: one stat per file. If it is something else by now, the path below sees that.
            let opened = match ent.file_type {
                FileType::RegularFile => match fsutil::open_regular(stack.fd(), &ent.name, OFlags::RDONLY) {
                    Ok(found) => found,
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => None,
                    Err(e) => return Err(Error::io(format!("opening {}", show(prefix)), e)),
                },
                _ => None,
            };
            let (st, file) = match opened {
                Some((fd, st)) => (st, Some(fd)),
                None => (
                    rfs::statat(stack.fd(), &ent.name, AtFlags::SYMLINK_NOFOLLOW)
                        .ctx(|| format!("stat of {}", show(prefix)))?,
                    None,
                ),
            };
            match self.entry(Found { dir: stack.fd(), name: &ent.name, st: &st, file }, prefix)? {
                Native::NeedsMount(p) => return Ok(Native::NeedsMount(p)),
                Native::Done(Some(sub)) => {
                    stack.push(&ent.name, sub, plen).ctx(|| format!("listing {}", show(prefix)))?
                }
                Native::Done(None) => prefix.truncate(plen),
            }
            if let Native::NeedsMount(p) = self.settle(0)? {
                return Ok(Native::NeedsMount(p));
            }
        }
    }

    /// The same walk over a merged view (Docker's naive diff of a whole layer), on an explicit
    /// stack whose views above the current directory are parked, so fds stay bounded.
    fn walk_merged(&mut self, m: &Merged, prefix: &mut Vec<u8>) -> Result<()> {
        struct Lv {
            view: Lower,
            names: std::collections::btree_map::IntoIter<std::ffi::CString, usize>,
            plen: usize,
        }
        let root = m.try_clone()?;
        let names = root.list_top()?.into_iter();
        let mut stack = vec![Lv { view: Lower::Open(root), names, plen: prefix.len() }];
        loop {
            let top = stack.last_mut().expect("non-empty until the root is done");
            let Some((name, ntop)) = top.names.next() else {
                let done = stack.pop().expect("non-empty");
                prefix.truncate(done.plen);
                match stack.last_mut() {
                    None => return Ok(()),
                    Some(p) => p.view.unpark(Some(done.view.view()))?,
                }
                continue;
            };
            let Some(f) = top.view.view().lookup_at(&name, ntop)? else { continue };
            let plen = prefix.len();
            prefix.extend_from_slice(name.to_bytes());
            let sub =
                self.entry(Found { dir: top.view.view().layer(&f), name: &name, st: &f.st, file: None }, prefix)?;
            let sub = merged_entry(sub, prefix)?;
            match (sub, f.dir) {
                (Some(_), Some(d)) => {
                    let names = d.list_top()?.into_iter();
                    stack.push(Lv { view: Lower::Open(d), names, plen });
                    changes::park_excess(stack.iter_mut().map(|l| Some(&mut l.view)).collect())?;
                }
                _ => prefix.truncate(plen),
            }
        }
    }

    /// Writes one entry; for a directory, returns it opened so the caller can descend.
    /// `rel` gets the directory's trailing `/`. A redirected directory (which only a mounted
    /// view can read) is written nothing for.
    fn entry(&mut self, f: Found<'_>, rel: &mut Vec<u8>) -> Result<Native<Option<OwnedFd>>> {
        // Go's tar cannot write sockets; Docker logs and skips them.
        let Some(kind) = Kind::of(FileType::from_raw_mode(f.st.st_mode)) else { return Ok(Native::Done(None)) };
        // The path as it is now (`dir` adds a `/` to `rel`), in a buffer kept between entries.
        let mut at = std::mem::take(&mut self.at);
        at.clear();
        at.extend_from_slice(rel);
        let r = self.entry_of(kind, f, rel, &Show(&at));
        self.at = at;
        r
    }

    fn entry_of(
        &mut self,
        kind: Kind,
        f: Found<'_>,
        rel: &mut Vec<u8>,
        at: &Show<'_>,
    ) -> Result<Native<Option<OwnedFd>>> {
        match kind {
            Kind::Dir => return self.dir(&f, rel, at),
            Kind::Reg => {
                if let Native::NeedsMount(p) = self.file(f, rel, at)? {
                    return Ok(Native::NeedsMount(p));
                }
            }
            Kind::Symlink => self.symlink(&f, rel, at)?,
            Kind::Char | Kind::Block | Kind::Fifo => self.node(kind, f.st, rel, at)?,
            Kind::Link => unreachable!("no file on disk is a hardlink entry"),
        }
        Ok(Native::Done(None))
    }

    /// A directory, then its opaque marker when the layer format says it is opaque.
    fn dir(&mut self, f: &Found<'_>, rel: &mut Vec<u8>, at: &Show<'_>) -> Result<Native<Option<OwnedFd>>> {
        let mut h = header_of(Kind::Dir, f.st);
        let fd = fsutil::open_dir(f.dir, f.name).ctx(|| format!("opening {at}"))?;
        let x = entry_xattrs(&fd, &mut h, at)?;
        if x.redirect {
            return Ok(Native::NeedsMount(rel.clone()));
        }
        rel.push(b'/');
        let dname = rel.clone();
        h.name = &dname;
        self.put(&h, at)?;
        if x.opaque && self.native {
            let mut oname = dname.clone();
            oname.extend_from_slice(whiteout::WH_OPAQUE);
            let wo = Header {
                name: &oname,
                link: &[],
                kind: Kind::Reg,
                mode: h.mode & 0o777,
                uid: h.uid,
                gid: h.gid,
                size: 0,
                mtime: None,
                devmajor: 0,
                devminor: 0,
                records: Vec::new(),
            };
            self.put(&wo, at)?;
        }
        Ok(Native::Done(Some(fd)))
    }

    /// A regular file and its data, or a hardlink to the first path of its inode. A file
    /// with a redirect or metacopy xattr is refused: its data lives in another layer, and a
    /// mounted view without metacopy cannot read it either.
    fn file(&mut self, f: Found<'_>, rel: &[u8], at: &Show<'_>) -> Result<Native<()>> {
        let mut h = header_of(Kind::Reg, f.st);
        let fd = match f.file {
            Some(fd) => fd,
            None => open_regular(f.dir, f.name, f.st).ctx(|| format!("opening {at}"))?,
        };
        if entry_xattrs(&fd, &mut h, at)?.redirect {
            return Err(redirect_error(rel));
        }
        // Keep what is held back bounded, whatever the file's size. A later link to a file
        // already written carries no data.
        let later_link = f.st.st_nlink > 1 && self.seen.contains_key(&f.st.st_ino);
        let data = if later_link { 0 } else { f.st.st_size as u64 };
        if let Native::NeedsMount(p) = self.settle(data + 1024)? {
            return Ok(Native::NeedsMount(p));
        }
        h.size = f.st.st_size;
        let link = self.hardlink(f.st, rel);
        h.name = rel;
        if let Some(l) = &link {
            (h.kind, h.link, h.size) = (Kind::Link, l, 0);
        }
        self.put(&h, at)?;
        if link.is_none() {
            self.copy(&fd, f.st.st_size as u64, at)?;
        }
        Ok(Native::Done(()))
    }

    fn symlink(&mut self, f: &Found<'_>, rel: &[u8], at: &Show<'_>) -> Result<()> {
        let mut h = header_of(Kind::Symlink, f.st);
        let target = rfs::readlinkat(f.dir, f.name, Vec::new()).ctx(|| format!("reading link {at}"))?.into_bytes();
        let link = self.hardlink(f.st, rel);
        h.name = rel;
        h.link = link.as_deref().unwrap_or(&target);
        if link.is_some() {
            h.kind = Kind::Link;
        }
        self.put(&h, at)
    }

    /// A device or FIFO; in the layer format a 0:0 character device is a whiteout, written
    /// as Docker's converter writes it: an empty `.wh.` file, after the hardlink rule ran (so
    /// a linked whiteout keeps its link name).
    fn node(&mut self, kind: Kind, st: &Stat, rel: &[u8], at: &Show<'_>) -> Result<()> {
        let mut h = header_of(kind, st);
        if h.kind != Kind::Fifo {
            h.devmajor = rfs::major(st.st_rdev) as i64;
            h.devminor = rfs::minor(st.st_rdev) as i64;
        }
        let link = self.hardlink(st, rel);
        if let Some(l) = &link {
            (h.kind, h.link) = (Kind::Link, l);
        }
        let mut name = rel.to_vec();
        if self.native && whiteout::is_whiteout(st) {
            let cut = rel.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
            name.truncate(cut);
            name.extend_from_slice(&whiteout::whiteout_name(&rel[cut..]));
            (h.kind, h.mode, h.size) = (Kind::Reg, 0o600, 0);
        }
        h.name = &name;
        self.put(&h, at)
    }

    /// One entry of Docker's `ExportChanges`: a deletion becomes a `.wh.` marker stamped with
    /// the current time; anything else is the path as the layer's view has it.
    fn change(&mut self, view: &Merged, c: &Change) -> Result<()> {
        let path = c.path.as_os_str().as_bytes();
        let rel = &path[1..];
        if c.kind == ChangeKind::Delete {
            let cut = rel.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
            let mut name = rel[..cut].to_vec();
            name.extend_from_slice(&whiteout::whiteout_name(&rel[cut..]));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000)) as i64)
                .unwrap_or(0);
            let h = Header {
                name: &name,
                link: &[],
                kind: Kind::Reg,
                mode: 0,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: Some(now),
                devmajor: 0,
                devminor: 0,
                records: Vec::new(),
            };
            return self.put(&h, &Show(rel));
        }
        let Some((dir, f)) = view.lookup_path_in(rel)? else {
            return Err(Error::Io {
                context: format!("exporting {}", show(rel)),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        };
        let cut = rel.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let name = std::ffi::CString::new(&rel[cut..]).map_err(|_| Error::InvalidArgument("NUL in a path".into()))?;
        let mut r = rel.to_vec();
        let sub = self.entry(Found { dir: dir.as_fd(), name: &name, st: &f.st, file: None }, &mut r)?;
        merged_entry(sub, &r)?;
        Ok(())
    }

    /// The first path of a multiply-linked non-directory, if this is a later one.
    fn hardlink(&mut self, st: &Stat, rel: &[u8]) -> Option<Vec<u8>> {
        if st.st_nlink <= 1 {
            return None;
        }
        match self.seen.get(&st.st_ino) {
            Some(first) => Some(first.clone()),
            None => {
                self.seen.insert(st.st_ino, rel.to_vec());
                None
            }
        }
    }

    fn put(&mut self, h: &Header<'_>, at: &Show<'_>) -> Result<()> {
        self.entries += 1;
        self.tw.header(h).ctx(|| format!("writing the tar header of {at}"))
    }

    fn copy(&mut self, fd: &rustix::fd::OwnedFd, size: u64, at: &Show<'_>) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let w = &mut self.tw.w;
            let spliced = match size >= SPLICE_MIN {
                true => w.splice_from(fd.as_fd(), left.min(isize::MAX as u64) as usize),
                false => Ok(None),
            };
            let read = match spliced.ctx(|| format!("writing the data of {at}"))? {
                Some(r) => r,
                None => w.read_from(fd.as_fd(), READ.min(left) as usize).ctx(|| format!("writing the data of {at}"))?,
            };
            let n = match read {
                Ok(0) => {
                    return Err(Error::io(
                        format!("reading {at}"),
                        io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being exported"),
                    ))
                }
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                // The file was opened O_NONBLOCK, which regular files on local filesystems
                // ignore; one that honours it (FUSE) gets the flag cleared and is read again.
                Err(Errno::AGAIN) => {
                    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| Error::io(format!("reading {at}"), e))?;
                    rustix::fs::fcntl_setfl(fd, flags - OFlags::NONBLOCK)
                        .map_err(|e| Error::io(format!("reading {at}"), e))?;
                    continue;
                }
                Err(e) => return Err(Error::io(format!("reading {at}"), e)),
            };
            self.tw.data_written(n as u64).ctx(|| format!("writing the data of {at}"))?;
            left -= n as u64;
        }
        debug_assert!(self.tw.entry_done());
        Ok(())
    }
}

/// Opens a file the walk saw as regular for reading. A running container can swap in a FIFO
/// (whose open would block until a writer comes) or another file between the `lstat` and the
/// open: O_NONBLOCK makes the open return at once whatever the entry now is, and the entry is
/// refused unless it is still the regular file (same inode) the header describes.
pub(crate) fn open_regular(dir: BorrowedFd<'_>, name: &CStr, st: &Stat) -> io::Result<OwnedFd> {
    let replaced = || io::Error::other("the file was replaced while being exported");
    let (fd, now) = match fsutil::open_regular(dir, name, OFlags::RDONLY) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(Errno::NOENT.into()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(replaced()),
        Err(e) => return Err(e),
    };
    if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
        return Err(replaced());
    }
    // O_NONBLOCK stays: a regular file's reads ignore it (the copy clears it on EAGAIN).
    Ok(fd)
}

/// The error for an entry no diff can express (`rel`, relative to the upper).
fn redirect_error(rel: &[u8]) -> Error {
    super::needs_mount_error(
        rel,
        "a diff cannot express it; ovl2 mounts without redirect_dir and metacopy, so this layer was \
         written by another tool",
    )
}

/// An entry of a merged-view export, where a redirect xattr is an error (there is no other
/// view to fall back to).
fn merged_entry(e: Native<Option<OwnedFd>>, rel: &[u8]) -> Result<Option<OwnedFd>> {
    match e {
        Native::Done(fd) => Ok(fd),
        Native::NeedsMount(p) => Err(redirect_error(if p.is_empty() { rel } else { &p })),
    }
}

/// The first directory of an upper (its path relative to the upper) that carries a redirect
/// xattr (a directory renamed through a mount with `redirect_dir`), if any.
fn dirs_redirected(dir: BorrowedFd<'_>) -> Result<Option<Vec<u8>>> {
    let x = read_xattrs(|b| rfs::flistxattr(dir, b), |k| fsx::fget_xattr(dir, k)).ctx(|| "reading xattrs".into())?;
    if x.redirect {
        return Ok(Some(b".".to_vec()));
    }
    let root = dir.try_clone_to_owned().ctx(|| "duplicating the upper dir fd".into())?;
    let mut stack = DirStack::new(root, c".", (), Mounts::Follow).ctx(|| "listing the upper".into())?;
    loop {
        let Some(ent) = stack.next_entry() else {
            if stack.depth() == 1 {
                return Ok(None);
            }
            stack.pop().ctx(|| "walking the upper".into())?;
            continue;
        };
        if ent.file_type == FileType::Directory {
            let fd = stack.open_child(&ent.name).ctx(|| "opening an upper dir".into())?;
            let x = read_xattrs(|b| rfs::flistxattr(&fd, b), |k| fsx::fget_xattr(&fd, k))
                .ctx(|| "reading xattrs".into())?;
            if x.redirect {
                return Ok(Some(stack.path(Some(&ent.name))[2..].to_vec()));
            }
            stack.push(&ent.name, fd, ()).ctx(|| "listing an upper dir".into())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length the digest was once computed inline up to (a helper thread took over
    /// past it); the streams below still cross it and several chunks.
    const INLINE_HASH: u64 = 4 * CHUNK as u64;

    /// The digest is the stream's sha256 for short streams and long ones, written in any
    /// size of pieces, and the bytes reach the writer unchanged.
    #[test]
    fn digest_is_the_streams_on_both_sides_of_the_inline_limit() {
        let limit = INLINE_HASH as usize;
        for len in [0, 1, WRITE + 3, CHUNK - 1, CHUNK, limit, limit + 1, limit + CHUNK, 3 * limit + 12345] {
            for piece in [512, 7919, 100_000] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let mut sink = Vec::new();
                let mut out = Out::new(Plain(&mut sink), true);
                for c in data.chunks(piece) {
                    out.write_all(c).unwrap();
                }
                let (n, d) = out.finish().unwrap();
                drop(out);
                assert_eq!(n, len as u64);
                assert_eq!(d.unwrap(), hex_digest(Sha256::digest(&data)), "len {len}");
                assert!(sink == data, "len {len}, pieces of {piece}");
            }
        }
        let mut sink = Vec::new();
        let mut out = Out::new(Plain(&mut sink), false);
        out.write_all(&[1u8; 3 * CHUNK]).unwrap();
        assert_eq!(out.finish().unwrap(), (3 * CHUNK as u64, None));
    }

    /// Held output reaches neither the writer nor the digest until released; discarded, it
    /// leaves the stream as if never written. Released past the inline-hash limit, the bytes
    /// and the digest are those of the whole stream.
    #[test]
    fn held_output_is_released_whole_or_discarded_without_a_trace() {
        let data: Vec<u8> = (0..3 * INLINE_HASH as usize + 5).map(|i| (i % 253) as u8).collect();
        let mut sink = Vec::new();
        let mut out = Out::new(Plain(&mut sink), true);
        out.held = Some(Vec::new());
        out.write_all(b"thrown away").unwrap();
        assert_eq!(out.held_len(), 11);
        assert!(out.discard());
        assert!(!out.discard(), "no longer held");
        out.write_all(&data[..10]).unwrap();
        let (n, d) = out.finish().unwrap();
        drop(out);
        assert_eq!((n, d.unwrap()), (10, hex_digest(Sha256::digest(&data[..10]))));
        assert!(sink == data[..10]);

        let mut sink = Vec::new();
        let mut out = Out::new(Plain(&mut sink), true);
        out.held = Some(Vec::new());
        let (a, b) = data.split_at(INLINE_HASH as usize + 7);
        out.write_all(a).unwrap();
        out.release().unwrap();
        out.write_all(b).unwrap();
        let (n, d) = out.finish().unwrap();
        drop(out);
        assert_eq!((n, d.unwrap()), (data.len() as u64, hex_digest(Sha256::digest(&data))));
        assert!(sink == data);
    }

    /// File data read straight into the output, across chunk and write boundaries and
    /// while held, gives the same bytes and digest as writing it.
    #[test]
    fn reading_into_the_output_gives_the_files_bytes() {
        let data: Vec<u8> = (0..3 * INLINE_HASH as usize + 77).map(|i| (i * 7 % 251) as u8).collect();
        let path = std::env::temp_dir().join(format!("ovl2-read-from-{}", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        for (held, prefix) in [(false, 0usize), (false, 1000), (true, 0), (true, 5)] {
            let file = std::fs::File::open(&path).unwrap();
            let mut sink = Vec::new();
            let mut out = Out::new(Plain(&mut sink), true);
            if held {
                out.held = Some(Vec::new());
            }
            out.write_all(&data[..prefix]).unwrap();
            let mut left = data.len() - prefix;
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(prefix as u64)).unwrap();
            while left > 0 {
                let n = out.read_from(file.as_fd(), 7919.min(left)).unwrap().unwrap();
                assert!(n > 0);
                left -= n;
                if held && out.held_len() > HOLD {
                    out.release().unwrap();
                }
            }
            let (n, d) = out.finish().unwrap();
            drop(out);
            assert_eq!((n, d.unwrap()), (data.len() as u64, hex_digest(Sha256::digest(&data))), "{held} {prefix}");
            assert!(sink == data, "{held} {prefix}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    /// A FIFO where the walk saw a regular file: the open returns at once with an error
    /// instead of waiting for a writer that never comes.
    #[test]
    fn open_regular_refuses_a_fifo_without_blocking() {
        let dir = std::env::temp_dir().join(format!("ovl2-open-regular-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), "data").unwrap();
        let dfd = fsutil::open_dir_path(&dir).unwrap();
        let st = rfs::statat(&dfd, c"f", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        assert!(open_regular(dfd.as_fd(), c"f", &st).is_ok());
        std::fs::remove_file(dir.join("f")).unwrap();
        rfs::mknodat(&dfd, c"f", FileType::Fifo, rfs::Mode::from_raw_mode(0o644), 0).unwrap();
        let e = open_regular(dfd.as_fd(), c"f", &st).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        // Another regular file swapped in (a different inode) is refused too.
        std::fs::remove_file(dir.join("f")).unwrap();
        std::fs::write(dir.join("g"), "other").unwrap();
        std::fs::rename(dir.join("g"), dir.join("f")).unwrap();
        let st2 = rfs::statat(&dfd, c"f", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        if st2.st_ino != st.st_ino {
            assert!(open_regular(dfd.as_fd(), c"f", &st).is_err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
