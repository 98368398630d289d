//! Small fd-relative file system helpers. Everything here works on a directory fd plus a
//! single name, never on joined host paths, so a hostile entry cannot redirect it.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// Largest metadata file ovl2 reads (`lower` with 500 entries is about 15 KiB).
const MAX_SMALL_FILE: usize = 1 << 20;

/// A uid/gid pair to chown created entries to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

fn uid(u: u32) -> Option<rfs::Uid> {
    Some(rfs::Uid::from_raw(u))
}
fn gid(g: u32) -> Option<rfs::Gid> {
    Some(rfs::Gid::from_raw(g))
}

/// Opens a directory below `dir` without following a final symlink.
pub fn open_dir<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?)
}

/// Opens a path (absolute or relative to the cwd) as a directory fd.
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Creates a directory with exactly `mode` (whatever the umask) and, if given, `owner`.
pub fn mkdir<Fd: AsFd>(dir: Fd, name: &CStr, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    let dir = dir.as_fd();
    rfs::mkdirat(dir, name, Mode::from_raw_mode(mode))?;
    set_mode_owner(dir, name, mode, owner)
}

/// Makes sure a directory exists with exactly `mode` and `owner`, creating it when missing.
pub fn ensure_dir<Fd: AsFd>(dir: Fd, name: &CStr, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    let dir = dir.as_fd();
    match rfs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"));
    }
    set_mode_owner(dir, name, mode, owner)
}

fn set_mode_owner(dir: BorrowedFd<'_>, name: &CStr, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    // chown before chmod: chown clears setuid/setgid bits.
    if let Some(o) = owner {
        rfs::chownat(dir, name, uid(o.uid), gid(o.gid), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    rfs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
    Ok(())
}

/// Creates a new file holding `data` with exactly `mode`; fsyncs it when `sync`.
pub fn write_new<Fd: AsFd>(dir: Fd, name: &CStr, data: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    write_all(&fd, data)?;
    rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    if sync {
        rfs::fsync(&fd)?;
    }
    Ok(())
}

/// Replaces `name` atomically with a file holding `data` (temp file, fsync, rename, fsync of
/// the directory), so a crash leaves either the old or the new content, never an empty file.
pub fn write_atomic<Fd: AsFd>(dir: Fd, name: &CStr, data: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let dir = dir.as_fd();
    let mut tmp = b".tmp-".to_vec();
    tmp.extend_from_slice(name.to_bytes());
    tmp.push(b'-');
    tmp.extend_from_slice(random_hex(8).as_bytes());
    let tmp = CString::new(tmp).expect("no NUL in temp name");
    let res = write_new(dir, &tmp, data, mode, sync).and_then(|()| Ok(rfs::renameat(dir, &tmp, dir, name)?));
    if res.is_err() {
        let _ = rfs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    res?;
    if sync {
        rfs::fsync(dir)?;
    }
    Ok(())
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads a small metadata file; `Ok(None)` when it does not exist.
///
/// Never blocks and never follows: the open is `O_NOFOLLOW | O_NONBLOCK`, so a FIFO or a
/// device planted in the store cannot hang the caller, and anything but a regular file of at
/// most 1 MiB is refused (`InvalidData`, saying what was found) without reading it.
pub fn read_small<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(bad_file("is a symlink (ovl2 never follows one here)")),
        Err(e) => return Err(e.into()),
    };
    let st = rfs::fstat(&fd)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft != FileType::RegularFile {
        return Err(bad_file(&format!("is {}, not a regular file", type_name(ft))));
    }
    if st.st_size > MAX_SMALL_FILE as i64 {
        return Err(bad_file(&format!("is {} bytes, over the {MAX_SMALL_FILE}-byte limit", st.st_size)));
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => return Ok(Some(out)),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > MAX_SMALL_FILE {
                    return Err(bad_file(&format!("grew over the {MAX_SMALL_FILE}-byte limit while being read")));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn bad_file(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// "a directory", "a FIFO", ...: what a file type is, for messages.
pub fn type_name(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of unknown type",
    }
}

/// Reads a symlink's target; `Ok(None)` when `name` does not exist.
pub fn read_link<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    match rfs::readlinkat(dir, name, Vec::new()) {
        Ok(t) => Ok(Some(t.into_bytes())),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The type of `name` without following symlinks; `None` when it does not exist.
pub fn file_type<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<Option<FileType>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Flushes a directory's entries to disk.
pub fn fsync<Fd: AsFd>(fd: Fd) -> io::Result<()> {
    Ok(rfs::fsync(fd)?)
}

/// One directory entry: its name and type (from d_type, or lstat when the fs has none).
pub struct Entry {
    /// Entry name.
    pub name: CString,
    /// Entry type.
    pub file_type: FileType,
}

/// Lists a directory (without `.` and `..`), sorted by name so results are deterministic.
pub fn list_dir<Fd: AsFd>(dir: Fd) -> io::Result<Vec<Entry>> {
    let dir = dir.as_fd();
    let mut d = rfs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let name = ent.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let mut ft = ent.file_type();
        if ft == FileType::Unknown {
            ft = match file_type(dir, name)? {
                Some(t) => t,
                None => continue,
            };
        }
        out.push(Entry { name: name.to_owned(), file_type: ft });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes `name` below `dir` and everything under it, never following symlinks and never
/// crossing into another mount (that fails with EBUSY instead). Entries that vanish while
/// we work are fine: another process may be removing the same tree.
pub fn remove_tree<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<()> {
    let dir = dir.as_fd();
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let parent_dev = rfs::fstat(dir)?.st_dev;
        if st.st_dev != parent_dev {
            return Err(Errno::BUSY.into());
        }
        remove_dir_contents(dir, name, st.st_dev)?;
        ignore_noent(rfs::unlinkat(dir, name, AtFlags::REMOVEDIR))
    } else {
        ignore_noent(rfs::unlinkat(dir, name, AtFlags::empty()))
    }
}

fn remove_dir_contents(parent: BorrowedFd<'_>, name: &CStr, dev: u64) -> io::Result<()> {
    let fd = match open_dir(parent, name) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(Errno::ACCESS.raw_os_error()) => {
            // A mode-000 directory inside a layer: make it ours to empty.
            rfs::chmodat(parent, name, Mode::RWXU, AtFlags::empty())?;
            open_dir(parent, name)?
        }
        Err(e) => return Err(e),
    };
    for ent in list_dir(&fd)? {
        if ent.file_type == FileType::Directory {
            let st = match rfs::statat(&fd, &ent.name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if st.st_dev != dev {
                return Err(Errno::BUSY.into());
            }
            remove_dir_contents(fd.as_fd(), &ent.name, dev)?;
            ignore_noent(rfs::unlinkat(&fd, &ent.name, AtFlags::REMOVEDIR))?;
        } else {
            ignore_noent(rfs::unlinkat(&fd, &ent.name, AtFlags::empty()))?;
        }
    }
    Ok(())
}

fn ignore_noent(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Takes a whole-file lock on an open file or directory: shared or exclusive, blocking or not.
/// Returns `Ok(false)` when `nonblocking` and someone else holds a conflicting lock.
pub fn flock<Fd: AsFd>(fd: Fd, exclusive: bool, nonblocking: bool) -> io::Result<bool> {
    let op = match (exclusive, nonblocking) {
        (true, false) => FlockOperation::LockExclusive,
        (true, true) => FlockOperation::NonBlockingLockExclusive,
        (false, false) => FlockOperation::LockShared,
        (false, true) => FlockOperation::NonBlockingLockShared,
    };
    loop {
        match rfs::flock(fd.as_fd(), op) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) if nonblocking => return Ok(false),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Random lowercase hex for private temp names (not security relevant: uniqueness only,
/// creation always uses O_EXCL or RENAME_NOREPLACE).
pub fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    let mut filled = 0;
    while filled < raw.len() {
        match rustix::rand::getrandom(&mut raw[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(_) => {
                // Fall back to time and pid: names only need to be unique.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let seed = t ^ (u128::from(std::process::id()) << 64);
                for (i, b) in raw.iter_mut().enumerate().skip(filled) {
                    *b = (seed >> ((i % 16) * 8)) as u8;
                }
                filled = raw.len();
            }
        }
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Converts a name to a C string, failing cleanly on an interior NUL.
pub fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// A C string's bytes as an `OsStr`.
pub fn os(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}
