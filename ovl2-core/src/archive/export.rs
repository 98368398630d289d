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
use super::gotar::{Header, Writer};
use super::input::hex_digest;
use super::{fsx, whiteout};
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
    /// Compute the stream's sha256 (on a helper thread). Off, the export does no more work
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
        self.export(id, parent, writer, opts.digest)
    }

    /// The work of [`Driver::diff`](crate::Driver::diff).
    pub(crate) fn diff(&self, id: &str, parent: Option<&str>, writer: impl Write) -> Result<DiffStats> {
        self.export(id, parent, writer, true)
    }

    fn export(&self, id: &str, parent: Option<&str>, writer: impl Write, digest: bool) -> Result<DiffStats> {
        let (layers, native) = self.layers_for(id, parent)?;
        let mut out = Out::new(writer, digest);
        let mut ex = Exporter {
            tw: Writer::new(&mut out),
            native,
            seen: HashMap::new(),
            entries: 0,
            buf: vec![0u8; 256 * 1024],
        };
        let mut prefix = Vec::new();
        // Redirected directories (renamed with redirect_dir on) make the upper unreadable on
        // its own: check before writing anything, and take Docker's mounted path instead.
        let redirected = native && dirs_redirected(layers.upper.as_fd())?;
        if native && !redirected {
            ex.walk(layers.upper.as_fd(), &mut prefix)?;
        } else if redirected {
            drop(layers);
            ex.native = false;
            let (_mounted, new, old) = self.mounted_views(id, parent)?;
            match parent {
                None => ex.walk_merged(&new, &mut prefix)?,
                Some(_) => {
                    for c in changes::naive(&new, &old)? {
                        ex.change(&new, &c)?;
                    }
                }
            }
        } else {
            let (new, old) = self.naive_views(layers, parent)?;
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
        }
        ex.tw.finish().ctx(|| "writing the end of the tar".into())?;
        let entries = ex.entries;
        drop(ex);
        let (tar_bytes, digest) = out.finish().ctx(|| "flushing the tar stream".into())?;
        Ok(DiffStats { tar_bytes, digest, entries })
    }
}

/// Hashing batch: large, so the helper thread wakes rarely.
const CHUNK: usize = 256 * 1024;
/// Write size: small enough that a pipe (64 KiB) never makes the writer wait for a whole
/// batch to drain, which costs a context switch per page.
const WRITE: usize = 32 * 1024;

/// The output: buffered in chunks, each written to the caller's writer and then hashed on a
/// helper thread, so the digest costs no time on the exporting thread.
struct Out<W: Write> {
    w: W,
    cur: Vec<u8>,
    /// Bytes of `cur` already written to `w`.
    written: usize,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    hasher: Option<std::thread::JoinHandle<[u8; 32]>>,
    n: u64,
}

impl<W: Write> Out<W> {
    fn new(w: W, digest: bool) -> Self {
        if !digest {
            let (_, back) = std::sync::mpsc::channel();
            return Out { w, cur: Vec::with_capacity(CHUNK), written: 0, tx: None, back, hasher: None, n: 0 };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let (btx, brx) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(&chunk);
                let _ = btx.send(chunk);
            }
            h.finalize().into()
        });
        Out { w, cur: Vec::with_capacity(CHUNK), written: 0, tx: Some(tx), back: brx, hasher: Some(hasher), n: 0 }
    }

    fn ship(&mut self) -> io::Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        self.w.write_all(&self.cur[self.written..])?;
        self.written = 0;
        let next = self.back.try_recv().map(|mut b| {
            b.clear();
            b
        });
        let full = std::mem::replace(&mut self.cur, next.unwrap_or_else(|_| Vec::with_capacity(CHUNK)));
        if let Some(tx) = &self.tx {
            tx.send(full).map_err(|_| io::Error::other("the hashing thread stopped"))?;
        }
        Ok(())
    }

    /// Flushes everything and returns the stream's length and digest.
    fn finish(mut self) -> io::Result<(u64, Option<String>)> {
        self.ship()?;
        self.w.flush()?;
        drop(self.tx.take());
        let d = match self.hasher.take() {
            Some(h) => Some(hex_digest(h.join().map_err(|_| io::Error::other("the hashing thread panicked"))?)),
            None => None,
        };
        Ok((self.n, d))
    }
}

impl<W: Write> Drop for Out<W> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
    }
}

impl<W: Write> Write for Out<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.cur.len();
        let n = room.min(buf.len());
        self.cur.extend_from_slice(&buf[..n]);
        self.n += n as u64;
        while self.cur.len() - self.written >= WRITE {
            self.w.write_all(&self.cur[self.written..self.written + WRITE])?;
            self.written += WRITE;
        }
        if self.cur.len() == CHUNK {
            self.ship()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Exporter<W: Write> {
    tw: Writer<W>,
    /// Docker's native Diff (overlay whiteouts and opaque dirs converted to AUFS markers)
    /// rather than a plain tar of a merged view.
    native: bool,
    /// First path written for each multiply-linked inode (Go keys by inode number alone).
    seen: HashMap<u64, Vec<u8>>,
    entries: u64,
    buf: Vec<u8>,
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
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match list(&mut buf) {
            Ok(n) => break n,
            Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(Errno::OPNOTSUPP) => return Ok(Xattrs::default()),
            Err(e) => return Err(e.into()),
        }
    };
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

impl<W: Write> Exporter<W> {
    /// Docker's walk of a directory (names in byte order, parents before children), on an
    /// explicit stack so it needs a bounded number of fds at any depth. Each level remembers
    /// how long `prefix` was before its name was added.
    fn walk(&mut self, dir: BorrowedFd<'_>, prefix: &mut Vec<u8>) -> Result<()> {
        let root = dir.try_clone_to_owned().ctx(|| "duplicating the upper dir fd".into())?;
        let mut stack =
            DirStack::new(root, c".", prefix.len(), Mounts::Follow).ctx(|| format!("listing {}", show(prefix)))?;
        loop {
            let Some(ent) = stack.next_entry() else {
                if stack.depth() == 1 {
                    return Ok(());
                }
                let (_, plen) = stack.pop().ctx(|| format!("returning from {}", show(prefix)))?;
                prefix.truncate(plen);
                continue;
            };
            let plen = prefix.len();
            prefix.extend_from_slice(ent.name.to_bytes());
            let st = rfs::statat(stack.fd(), &ent.name, AtFlags::SYMLINK_NOFOLLOW)
                .ctx(|| format!("stat of {}", show(prefix)))?;
            match self.entry(stack.fd(), &ent.name, &st, prefix)? {
                Some(sub) => stack.push(&ent.name, sub, plen).ctx(|| format!("listing {}", show(prefix)))?,
                None => prefix.truncate(plen),
            }
        }
    }

    /// The same walk over a merged view (Docker's naive diff of a whole layer), on an explicit
    /// stack whose views above the current directory are parked, so fds stay bounded.
    fn walk_merged(&mut self, m: &Merged, prefix: &mut Vec<u8>) -> Result<()> {
        struct Lv {
            view: Lower,
            names: std::collections::btree_set::IntoIter<std::ffi::CString>,
            plen: usize,
        }
        let root = m.try_clone()?;
        let names = root.list()?.into_iter();
        let mut stack = vec![Lv { view: Lower::Open(root), names, plen: prefix.len() }];
        loop {
            let top = stack.last_mut().expect("non-empty until the root is done");
            let Some(name) = top.names.next() else {
                let done = stack.pop().expect("non-empty");
                prefix.truncate(done.plen);
                match stack.last_mut() {
                    None => return Ok(()),
                    Some(p) => p.view.unpark(Some(done.view.view()))?,
                }
                continue;
            };
            let Some(f) = top.view.view().lookup(&name)? else { continue };
            let plen = prefix.len();
            prefix.extend_from_slice(name.to_bytes());
            let sub = self.entry(top.view.view().layer(&f), &name, &f.st, prefix)?;
            match (sub, f.dir) {
                (Some(_), Some(d)) => {
                    let names = d.list()?.into_iter();
                    top.view.park(Some(&d))?;
                    stack.push(Lv { view: Lower::Open(d), names, plen });
                }
                _ => prefix.truncate(plen),
            }
        }
    }

    /// Writes one entry; for a directory, returns it opened so the caller can descend.
    /// `rel` gets the directory's trailing `/`.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, st: &Stat, rel: &mut Vec<u8>) -> Result<Option<OwnedFd>> {
        let ft = FileType::from_raw_mode(st.st_mode);
        let mode = (st.st_mode & 0o7777) as i64;
        let mut h = Header {
            name: &[],
            link: &[],
            flag: b'0',
            mode,
            uid: st.st_uid as i64,
            gid: st.st_gid as i64,
            size: 0,
            mtime: Some(st.st_mtime),
            devmajor: 0,
            devminor: 0,
            records: Vec::new(),
        };
        let at = show(rel);
        match ft {
            FileType::Directory => {
                let fd = fsutil::open_dir(dir, name).ctx(|| format!("opening {at}"))?;
                let x = read_xattrs(|b| rfs::flistxattr(&fd, b), |k| fsx::fget_xattr(&fd, k))
                    .ctx(|| format!("reading xattrs of {at}"))?;
                if x.redirect {
                    return Err(redirect_error(&at));
                }
                if let Some(c) = x.capability {
                    h.records.push((b"SCHILY.xattr.security.capability".to_vec(), cap_v2(c)));
                }
                rel.push(b'/');
                h.flag = b'5';
                let dname = rel.clone();
                h.name = &dname;
                self.put(&h, &at)?;
                if x.opaque && self.native {
                    let mut oname = dname.clone();
                    oname.extend_from_slice(whiteout::WH_OPAQUE);
                    let wo = Header {
                        name: &oname,
                        link: &[],
                        flag: b'0',
                        mode: mode & 0o777,
                        uid: h.uid,
                        gid: h.gid,
                        size: 0,
                        mtime: None,
                        devmajor: 0,
                        devminor: 0,
                        records: Vec::new(),
                    };
                    self.put(&wo, &at)?;
                }
                return Ok(Some(fd));
            }
            FileType::RegularFile => {
                let fd = open_regular(dir, name, st).ctx(|| format!("opening {at}"))?;
                let x = read_xattrs(|b| rfs::flistxattr(&fd, b), |k| fsx::fget_xattr(&fd, k))
                    .ctx(|| format!("reading xattrs of {at}"))?;
                if x.redirect {
                    return Err(redirect_error(&at));
                }
                if let Some(c) = x.capability {
                    h.records.push((b"SCHILY.xattr.security.capability".to_vec(), cap_v2(c)));
                }
                h.size = st.st_size;
                let link = self.hardlink(st, rel);
                let name = rel.clone();
                h.name = &name;
                if let Some(l) = &link {
                    h.flag = b'1';
                    h.link = l;
                    h.size = 0;
                }
                self.put(&h, &at)?;
                if link.is_none() {
                    self.copy(&fd, st.st_size as u64, &at)?;
                }
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new()).ctx(|| format!("reading link {at}"))?;
                let target = target.into_bytes();
                let link = self.hardlink(st, rel);
                let name = rel.clone();
                h.name = &name;
                h.flag = b'2';
                h.link = &target;
                if let Some(l) = &link {
                    h.flag = b'1';
                    h.link = l;
                }
                self.put(&h, &at)?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                h.flag = match ft {
                    FileType::CharacterDevice => b'3',
                    FileType::BlockDevice => b'4',
                    _ => b'6',
                };
                if ft != FileType::Fifo {
                    h.devmajor = rfs::major(st.st_rdev) as i64;
                    h.devminor = rfs::minor(st.st_rdev) as i64;
                }
                let link = self.hardlink(st, rel);
                if let Some(l) = &link {
                    h.flag = b'1';
                    h.link = l;
                }
                let mut name = rel.clone();
                if self.native && whiteout::is_whiteout(st) {
                    // Docker's converter turns the device into an empty `.wh.` file, after the
                    // hardlink rule ran, so a linked whiteout keeps its link name.
                    let cut = rel.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
                    name.truncate(cut);
                    name.extend_from_slice(&whiteout::whiteout_name(&rel[cut..]));
                    h.flag = b'0';
                    h.mode = 0o600;
                    h.size = 0;
                }
                h.name = &name;
                self.put(&h, &at)?;
            }
            // Go's tar cannot write sockets; Docker logs and skips them.
            _ => {}
        }
        Ok(None)
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
                flag: b'0',
                mode: 0,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: Some(now),
                devmajor: 0,
                devminor: 0,
                records: Vec::new(),
            };
            return self.put(&h, &show(rel));
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
        self.entry(dir.as_fd(), &name, &f.st, &mut r)?;
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

    fn put(&mut self, h: &Header<'_>, at: &str) -> Result<()> {
        self.entries += 1;
        self.tw.header(h).ctx(|| format!("writing the tar header of {at}"))
    }

    fn copy(&mut self, fd: &rustix::fd::OwnedFd, size: u64, at: &str) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let want = self.buf.len().min(left as usize);
            let n = match rustix::io::read(fd, &mut self.buf[..want]) {
                Ok(0) => {
                    return Err(Error::io(
                        format!("reading {at}"),
                        io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being exported"),
                    ))
                }
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::io(format!("reading {at}"), e)),
            };
            self.tw.data(&self.buf[..n]).ctx(|| format!("writing the data of {at}"))?;
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
    rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
    Ok(fd)
}

fn redirect_error(at: &str) -> Error {
    Error::Unsupported(format!(
        "{at} carries an {}, which a native diff cannot express; ovl2 mounts without redirect_dir \
         and metacopy, so this layer was written by another tool",
        super::REDIRECT_MARK
    ))
}

/// Whether any directory of an upper carries a redirect xattr (a directory renamed through
/// a mount with `redirect_dir`).
fn dirs_redirected(dir: BorrowedFd<'_>) -> Result<bool> {
    let x = read_xattrs(|b| rfs::flistxattr(dir, b), |k| fsx::fget_xattr(dir, k)).ctx(|| "reading xattrs".into())?;
    if x.redirect {
        return Ok(true);
    }
    let root = dir.try_clone_to_owned().ctx(|| "duplicating the upper dir fd".into())?;
    let mut stack = DirStack::new(root, c".", (), Mounts::Follow).ctx(|| "listing the upper".into())?;
    loop {
        let Some(ent) = stack.next_entry() else {
            if stack.depth() == 1 {
                return Ok(false);
            }
            stack.pop().ctx(|| "walking the upper".into())?;
            continue;
        };
        if ent.file_type == FileType::Directory {
            let fd = stack.open_child(&ent.name).ctx(|| "opening an upper dir".into())?;
            let x = read_xattrs(|b| rfs::flistxattr(&fd, b), |k| fsx::fget_xattr(&fd, k))
                .ctx(|| "reading xattrs".into())?;
            if x.redirect {
                return Ok(true);
            }
            stack.push(&ent.name, fd, ()).ctx(|| "listing an upper dir".into())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
