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
    pub uid: rfs::Uid,
    /// Owner gid.
    pub gid: rfs::Gid,
}

impl Owner {
    /// An owner from raw ids, as the C ABI, Python and the command line take them. As for
    /// chown(2), `u32::MAX` (`-1`) leaves that id as it is.
    pub const fn from_raw(uid: u32, gid: u32) -> Owner {
        Owner { uid: rfs::Uid::from_raw_unchecked(uid), gid: rfs::Gid::from_raw_unchecked(gid) }
    }

    /// This process's effective uid and gid.
    pub fn current() -> Owner {
        Owner { uid: rustix::process::geteuid(), gid: rustix::process::getegid() }
    }

    /// Whether a file with this `stat` already has this owner.
    pub(crate) fn owns(self, st: &rfs::Stat) -> bool {
        (st.st_uid, st.st_gid) == (self.uid.as_raw(), self.gid.as_raw())
    }

    /// `fchown` of an open file to this owner.
    pub(crate) fn fchown<Fd: AsFd>(self, fd: Fd) -> rustix::io::Result<()> {
        rfs::fchown(fd, Some(self.uid), Some(self.gid))
    }

    /// `fchownat` of `dir/name` to this owner, never following a final symlink.
    pub(crate) fn chown_at<Fd: AsFd, P: rustix::path::Arg>(self, dir: Fd, name: P) -> rustix::io::Result<()> {
        rfs::chownat(dir, name, Some(self.uid), Some(self.gid), AtFlags::SYMLINK_NOFOLLOW)
    }
}

/// Opens a directory below `dir` without following a final symlink.
pub fn open_dir<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?)
}

/// [`open_dir`], `None` when nothing is there or what is there is not a directory (a file or a
/// symlink under that name is not the directory the store means).
pub fn open_dir_if_any<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<Option<OwnedFd>> {
    match rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
    {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens a path (absolute or relative to the cwd) as a directory fd.
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Creates a directory with exactly `mode` (whatever the umask) and, if given, `owner`.
pub fn mkdir<Fd: AsFd>(dir: Fd, name: &CStr, mode: Mode, owner: Option<Owner>) -> io::Result<()> {
    let dir = dir.as_fd();
    rfs::mkdirat(dir, name, mode)?;
    set_mode_owner(dir, name, mode, owner)
}

/// Makes sure a directory exists with exactly `mode` and `owner`, creating it when missing.
pub fn ensure_dir<Fd: AsFd>(dir: Fd, name: &CStr, mode: Mode, owner: Option<Owner>) -> io::Result<()> {
    let dir = dir.as_fd();
    match rfs::mkdirat(dir, name, mode) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"));
    }
    set_mode_owner(dir, name, mode, owner)
}

fn set_mode_owner(dir: BorrowedFd<'_>, name: &CStr, mode: Mode, owner: Option<Owner>) -> io::Result<()> {
    // chown before chmod: chown clears setuid/setgid bits.
    if let Some(o) = owner {
        o.chown_at(dir, name)?;
    }
    rfs::chmodat(dir, name, mode, AtFlags::empty())?;
    Ok(())
}

/// Creates a new file holding `data` with exactly `mode`; fsyncs it when `sync`.
pub fn write_new<Fd: AsFd>(dir: Fd, name: &CStr, data: &[u8], mode: Mode, sync: bool) -> io::Result<()> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode,
    )?;
    write_all(&fd, data)?;
    rfs::fchmod(&fd, mode)?;
    if sync {
        rfs::fsync(&fd)?;
    }
    Ok(())
}

/// Replaces `name` atomically with a file holding `data` (temp file, fsync, rename, fsync of
/// the directory), so a crash leaves either the old or the new content, never an empty file.
pub fn write_atomic<Fd: AsFd>(dir: Fd, name: &CStr, data: &[u8], mode: Mode, sync: bool) -> io::Result<()> {
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
    let Some((fd, st)) = open_regular(dir, name, OFlags::RDONLY)? else { return Ok(None) };
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
                if is_whole(&out, n, buf.len(), &st) {
                    return Ok(Some(out));
                }
                if out.len() > MAX_SMALL_FILE {
                    return Err(bad_file(&format!("grew over the {MAX_SMALL_FILE}-byte limit while being read")));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a read of a regular file that just returned `n` of the `asked` bytes, `out` now
/// holding all read so far, has read the whole file: a short read of a regular file means
/// its end, and the size at open says it was the end then. Saves the read that would return
/// 0 (one syscall per small file, and a mount reads several).
pub(crate) fn is_whole(out: &[u8], n: usize, asked: usize, st: &rfs::Stat) -> bool {
    n < asked && out.len() as u64 == st.st_size as u64
}

/// Opens `name` (with `flags`, e.g. `RDONLY` or `RDWR`) only if it is a regular file, with its
/// stat; `Ok(None)` when it does not exist. The open is `O_NOFOLLOW | O_NONBLOCK`, so a
/// symlink is never followed and a FIFO or device planted there cannot hang the caller;
/// anything but a regular file is `InvalidData`, saying what was found.
pub fn open_regular<Fd: AsFd>(dir: Fd, name: &CStr, flags: OFlags) -> io::Result<Option<(OwnedFd, rfs::Stat)>> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(bad_file("is a symlink (ovl2 never follows one here)")),
        Err(Errno::ISDIR) => return Err(bad_file("is a directory, not a regular file")),
        Err(e) => return Err(e.into()),
    };
    let st = rfs::fstat(&fd)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft != FileType::RegularFile {
        return Err(bad_file(&format!("is {}, not a regular file", type_name(ft))));
    }
    Ok(Some((fd, st)))
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
pub fn file_type<Fd: AsFd, P: rustix::path::Arg>(dir: Fd, name: P) -> io::Result<Option<FileType>> {
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
/// Reads through a private open of `.`, so the fd's offset (which dups and other threads
/// share) is left alone.
pub fn list_dir<Fd: AsFd>(dir: Fd) -> io::Result<Vec<Entry>> {
    let dir = dir.as_fd();
    let mut d = rfs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        if let Some(e) = entry_of(dir, ent.file_name(), ent.file_type())? {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// [`list_dir`] reading `dir`'s own fd from its current offset: no `fcntl` + `openat(".")` +
/// `close` per listing, for a walk's fds, which only the walk uses. `dir` must be at its
/// start (freshly opened, or rewound).
fn list_own_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Entry>> {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut d = rfs::RawDir::new(dir, &mut buf);
    let mut out = Vec::new();
    while let Some(ent) = d.next() {
        let ent = ent?;
        if let Some(e) = entry_of(dir, ent.file_name(), ent.file_type())? {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// [`list_dir`] for a walk's own fds (opened for the walk, or dups of them, read by no other
/// thread): rewinds `dir` and reads it directly, one `lseek` where `list_dir` takes `fcntl` +
/// `openat(".")` + `close`.
pub fn list_walk_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Entry>> {
    rfs::seek(dir, rfs::SeekFrom::Start(0))?;
    list_own_dir(dir)
}

/// One listed name as an [`Entry`]; `None` for `.`, `..` and a name gone since the listing.
fn entry_of(dir: BorrowedFd<'_>, name: &CStr, mut ft: FileType) -> io::Result<Option<Entry>> {
    if name == c"." || name == c".." {
        return Ok(None);
    }
    if ft == FileType::Unknown {
        ft = match file_type(dir, name)? {
            Some(t) => t,
            None => return Ok(None),
        };
    }
    Ok(Some(Entry { name: name.to_owned(), file_type: ft }))
}

/// Open directory fds a walk keeps at most (the deepest ones). Ancestors above them are
/// closed and re-opened through `..` (checked against the recorded device and inode) when the
/// walk climbs back, so a walk needs the same few fds at any depth.
pub const WALK_FDS: usize = 16;

/// How a walk treats a directory that is a mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounts {
    /// Descend like into any directory (export and changes report what the kernel shows).
    Follow,
    /// Never cross a mount point: [`DirStack::open_child`] fails with a [`MountPoint`] error.
    Refuse,
}

/// The error a walk gives instead of crossing into another mount (a bind mount of the same
/// filesystem included): carries the mount's path relative to where the walk started. Its
/// `io::ErrorKind` is `ResourceBusy`, so it maps to a busy error.
#[derive(Debug)]
pub struct MountPoint {
    /// The mount point, relative to the walk's start (the name given to the walk first).
    pub path: Vec<u8>,
}

impl std::fmt::Display for MountPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is a mount point; ovl2 never deletes across a mount (unmount it first)", self.path_lossy())
    }
}

impl MountPoint {
    fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
    fn err(path: Vec<u8>) -> io::Error {
        io::Error::new(io::ErrorKind::ResourceBusy, MountPoint { path })
    }
}

impl std::error::Error for MountPoint {}

struct Level<T> {
    /// Name in the parent level (the walk's start name for the first level).
    name: CString,
    /// The directory's device and inode, taken when its fd is closed (to check the
    /// directory re-opened through `..` is the same one).
    id: Option<(u64, u64)>,
    /// Open for the deepest [`WALK_FDS`] levels only.
    fd: Option<OwnedFd>,
    /// The part of this directory's sorted listing not handed out yet.
    rest: std::vec::IntoIter<Entry>,
    data: T,
}

/// An explicit stack for depth-first walks: one level per directory on the current path,
/// each with its name, identity, the rest of its sorted listing and the caller's `T`. At most
/// [`WALK_FDS`] fds are open whatever the depth, and memory is the current path plus the
/// unread listings along it, never the whole tree. Entries come in byte order of names
/// (Go's `filepath.Walk` order).
pub struct DirStack<T> {
    levels: Vec<Level<T>>,
    mounts: Mounts,
}

impl<T> DirStack<T> {
    /// Starts a walk at the open directory `root` (listed now, from its start), known as
    /// `name` in messages.
    pub fn new(root: OwnedFd, name: &CStr, data: T, mounts: Mounts) -> io::Result<Self> {
        // `root` may be a dup of an fd that was listed before, sharing its offset.
        rfs::seek(&root, rfs::SeekFrom::Start(0))?;
        let mut s = DirStack { levels: Vec::new(), mounts };
        s.push(name, root, data)?;
        Ok(s)
    }

    /// How many directories are on the current path (1 at the start).
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The current directory (always open).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.levels.last().and_then(|l| l.fd.as_ref()).expect("the top level is open").as_fd()
    }

    /// The caller's data for the current directory.
    pub fn data(&mut self) -> &mut T {
        &mut self.levels.last_mut().expect("walk not finished").data
    }

    /// The caller's data for the current directory, read-only.
    pub fn data_ref(&self) -> &T {
        &self.levels.last().expect("walk not finished").data
    }

    /// The caller's data for the directory `up` levels above the current one (0 = current).
    pub fn data_at(&mut self, up: usize) -> Option<&mut T> {
        let n = self.levels.len();
        if up >= n {
            return None;
        }
        Some(&mut self.levels[n - 1 - up].data)
    }

    /// The name of the directory `up` levels above the current one (0 = current).
    pub fn name_at(&self, up: usize) -> &CStr {
        &self.levels[self.levels.len() - 1 - up].name
    }

    /// The path of the current directory from the walk's start (start name included), or of
    /// `child` in it, for messages.
    pub fn path(&self, child: Option<&CStr>) -> Vec<u8> {
        let mut p = Vec::new();
        for (i, l) in self.levels.iter().enumerate() {
            if i > 0 {
                p.push(b'/');
            }
            p.extend_from_slice(l.name.to_bytes());
        }
        if let Some(c) = child {
            p.push(b'/');
            p.extend_from_slice(c.to_bytes());
        }
        p
    }

    /// Entries listed but not handed out yet, in every directory on the current path: what
    /// the walk already knows it has still to visit.
    pub fn unread(&self) -> usize {
        self.levels.iter().map(|l| l.rest.len()).sum()
    }

    /// The next entry of the current directory, in name order; `None` when it is done.
    pub fn next_entry(&mut self) -> Option<Entry> {
        self.levels.last_mut().and_then(|l| l.rest.next())
    }

    /// Opens the subdirectory `name` of the current directory without following a symlink;
    /// with [`Mounts::Refuse`], never onto another mount (a [`MountPoint`] error instead).
    pub fn open_child(&self, name: &CStr) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match self.mounts {
            Mounts::Follow => open_dir(self.fd(), name),
            Mounts::Refuse => match openat2_retry(self.fd(), name, flags, NO_CROSS) {
                Err(Errno::XDEV) => Err(MountPoint::err(self.path(Some(name)))),
                r => Ok(r?),
            },
        }
    }

    /// Descends into `name`, freshly opened as `fd` (by [`DirStack::open_child`] or the
    /// caller) and not shared, listing it now through `fd` itself.
    pub fn push(&mut self, name: &CStr, fd: OwnedFd, data: T) -> io::Result<()> {
        let rest = list_own_dir(fd.as_fd())?.into_iter();
        self.levels.push(Level { name: name.to_owned(), id: None, fd: Some(fd), rest, data });
        let n = self.levels.len();
        if n > WALK_FDS {
            // Open levels are always the deepest ones: closing the one just above them keeps that.
            // Its identity is taken now, as only a closed level is ever re-opened.
            let l = &mut self.levels[n - 1 - WALK_FDS];
            let st = rfs::fstat(l.fd.as_ref().expect("open until now"))?;
            l.id = Some((st.st_dev, st.st_ino));
            l.fd = None;
        }
        Ok(())
    }

    /// Climbs out of the current directory and returns its name and data. The parent is
    /// re-opened through `..` when it was closed, and must still be the directory it was.
    pub fn pop(&mut self) -> io::Result<(CString, T)> {
        let top = self.levels.pop().expect("walk not finished");
        if let Some(parent) = self.levels.last_mut() {
            if parent.fd.is_none() {
                let child = top.fd.as_ref().expect("the top level is open");
                let fd = match self.mounts {
                    Mounts::Follow => open_dir(child, c"..")?,
                    Mounts::Refuse => openat2_retry(
                        child,
                        c"..",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        NO_CROSS,
                    )?,
                };
                let st = rfs::fstat(&fd)?;
                if parent.id != Some((st.st_dev, st.st_ino)) {
                    return Err(io::Error::other("a directory was moved while the tree was being walked"));
                }
                parent.fd = Some(fd);
            }
        }
        Ok((top.name, top.data))
    }
}

/// Mount points strictly below `dir` (an absolute path), from `/proc/self/mountinfo`, as
/// paths relative to `dir`. Used to refuse a removal before anything is touched; the walk
/// itself refuses too, whatever this finds.
pub fn mounts_below(dir: &std::path::Path) -> io::Result<Vec<Vec<u8>>> {
    let info = std::fs::read("/proc/self/mountinfo")?;
    let mut base = dir.as_os_str().as_bytes().to_vec();
    if base.last() != Some(&b'/') {
        base.push(b'/');
    }
    let mut out = Vec::new();
    for line in info.split(|&b| b == b'\n') {
        let Some(mp) = line.split(|&b| b == b' ').nth(4) else { continue };
        let mp = unescape_mountinfo(mp);
        if let Some(rel) = mp.strip_prefix(base.as_slice()) {
            if !rel.is_empty() {
                out.push(rel.to_vec());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// `openat2` resolution for walks that must stay inside one mount.
const NO_CROSS: rfs::ResolveFlags =
    rfs::ResolveFlags::NO_XDEV.union(rfs::ResolveFlags::NO_SYMLINKS).union(rfs::ResolveFlags::NO_MAGICLINKS);

fn openat2_retry<Fd: AsFd>(dir: Fd, name: &CStr, flags: OFlags, how: rfs::ResolveFlags) -> rustix::io::Result<OwnedFd> {
    let dir = dir.as_fd();
    match openat2(dir, name, flags, how) {
        // Kernels before 5.6, and valgrind, lack openat2: the same walk by hand.
        Err(Errno::NOSYS) => openat_no_cross(dir, name, flags),
        r => r,
    }
}

/// `openat2`, asked again for as long as the kernel says a rename raced with the lookup
/// (`EAGAIN`) or a signal came (`EINTR`).
pub(crate) fn openat2<P: rustix::path::Arg + Copy>(
    dir: BorrowedFd<'_>,
    name: P,
    flags: OFlags,
    how: rfs::ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    loop {
        match rfs::openat2(dir, name, flags, Mode::empty(), how) {
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// [`NO_CROSS`] without `openat2`: one component at a time with `O_NOFOLLOW`, each result on
/// the same mount as `dir` (compared by mount id where `statx` has it, else by device).
fn openat_no_cross(dir: BorrowedFd<'_>, name: &CStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mount = mount_id(dir)?;
    let comps: Vec<&[u8]> = name.to_bytes().split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
    let mut cur: Option<OwnedFd> = None;
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let f = if last { flags } else { OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC };
        let c = CString::new(*comp).map_err(|_| Errno::INVAL)?;
        let at = cur.as_ref().map_or(dir, |fd| fd.as_fd());
        let fd = rfs::openat(at, &c, f | OFlags::NOFOLLOW, Mode::empty())?;
        if mount_id(fd.as_fd())? != mount {
            return Err(Errno::XDEV);
        }
        cur = Some(fd);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => rfs::openat(dir, c".", flags, Mode::empty()),
    }
}

/// The mount an fd is on: its mount id where `statx` reports one, else its device (which
/// cannot tell a bind mount of the same filesystem apart; only kernels before 5.8 get that).
fn mount_id(fd: BorrowedFd<'_>) -> rustix::io::Result<(bool, u64)> {
    match rfs::statx(fd, c"", AtFlags::EMPTY_PATH, rfs::StatxFlags::MNT_ID) {
        Ok(st) if rfs::StatxFlags::from_bits_retain(st.stx_mask).contains(rfs::StatxFlags::MNT_ID) => {
            Ok((true, st.stx_mnt_id))
        }
        _ => Ok((false, rfs::fstat(fd)?.st_dev)),
    }
}

/// Removes `name` below `dir` (a single name or a relative path without symlinks) and
/// everything under it, never following symlinks and never crossing into another mount, not
/// even a bind mount of the same filesystem: reaching one fails with a [`MountPoint`] error
/// and leaves the mounted tree untouched. Entries that vanish while we work are fine: another
/// process may be removing the same tree. Works at any depth with at most [`WALK_FDS`] fds.
pub fn remove_tree<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<()> {
    let dir = dir.as_fd();
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return unlink_entry(dir, name, 0, &|| name.to_bytes().to_vec());
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open = || match openat2_retry(dir, name, flags, NO_CROSS) {
        Err(Errno::XDEV) => Err(MountPoint::err(name.to_bytes().to_vec())),
        r => Ok(r?),
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(Errno::ACCESS.raw_os_error()) => {
            // A mode-000 directory inside a layer: make it ours to empty.
            rfs::chmodat(dir, name, Mode::RWXU, AtFlags::empty())?;
            open()?
        }
        Err(e) => return Err(e),
    };
    let mut stack = DirStack::new(fd, name, (), Mounts::Refuse)?;
    loop {
        match stack.next_entry() {
            Some(ent) if ent.file_type == FileType::Directory => {
                let fd = match stack.open_child(&ent.name) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => continue,
                    Err(e) if e.raw_os_error() == Some(Errno::ACCESS.raw_os_error()) => {
                        rfs::chmodat(stack.fd(), &ent.name, Mode::RWXU, AtFlags::empty())?;
                        stack.open_child(&ent.name)?
                    }
                    Err(e) => return Err(e),
                };
                stack.push(&ent.name, fd, ())?;
            }
            Some(ent) => unlink_entry(stack.fd(), &ent.name, 0, &|| stack.path(Some(&ent.name)))?,
            None if stack.depth() == 1 => break,
            None => {
                let (child, ()) = stack.pop()?;
                unlink_entry(stack.fd(), &child, AtFlags::REMOVEDIR.bits(), &|| stack.path(Some(&child)))?;
            }
        }
    }
    drop(stack);
    unlink_entry(dir, name, AtFlags::REMOVEDIR.bits(), &|| name.to_bytes().to_vec())
}

/// Unlinks one entry; gone already is fine, and EBUSY (something is mounted on it) becomes
/// a [`MountPoint`] error naming it.
fn unlink_entry(dir: BorrowedFd<'_>, name: &CStr, flags: u32, path: &dyn Fn() -> Vec<u8>) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::from_bits_retain(flags)) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::BUSY) => Err(MountPoint::err(path())),
        Err(e) => Err(e.into()),
    }
}

/// Which whole-file lock (`flock`) to take: shared by readers, exclusive for a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    /// Many holders at once; excludes only [`LockMode::Exclusive`].
    Shared,
    /// One holder; excludes every other lock.
    Exclusive,
}

impl LockMode {
    fn op(self, wait: bool) -> FlockOperation {
        match (self, wait) {
            (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
            (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
            (LockMode::Shared, true) => FlockOperation::LockShared,
            (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
        }
    }
}

/// Takes a whole-file lock on an open file or directory, waiting out any conflicting holder.
pub(crate) fn flock<Fd: AsFd>(fd: Fd, mode: LockMode) -> io::Result<()> {
    loop {
        match rfs::flock(fd.as_fd(), mode.op(true)) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes a whole-file lock without waiting: `Ok(false)` when someone else holds a
/// conflicting one (a live owner, for the liveness and leftover checks that use it).
pub(crate) fn try_flock<Fd: AsFd>(fd: Fd, mode: LockMode) -> io::Result<bool> {
    loop {
        match rfs::flock(fd.as_fd(), mode.op(false)) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) => return Ok(false),
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
    data_encoding::HEXLOWER.encode(&raw)
}

/// Converts a name to a C string, failing cleanly on an interior NUL.
pub fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// A C string's bytes as an `OsStr`.
pub fn os(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}

/// JSON strings are Unicode: a path that is not UTF-8 is refused, naming it, because a lossy
/// copy (U+FFFD) would name a different, missing path.
pub(crate) fn utf8<S: serde::Serializer, P: AsRef<std::ffi::OsStr>>(
    p: &P,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let p = p.as_ref();
    match p.to_str() {
        Some(v) => s.serialize_str(v),
        None => Err(serde::ser::Error::custom(format!(
            "the path {} is not valid UTF-8, which JSON cannot carry (the plain output prints it as raw bytes)",
            p.to_string_lossy()
        ))),
    }
}

pub(crate) fn utf8_opt<S: serde::Serializer>(
    p: &Option<std::ffi::OsString>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match p {
        Some(p) => utf8(p, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for kernels (and valgrind) without openat2 keeps openat2's promises:
    /// no symlink followed, no mount crossed, not even a bind mount of the same filesystem.
    #[test]
    fn fallback_without_openat2_never_crosses_a_mount_or_follows_a_symlink() {
        let root = std::env::temp_dir().join(format!("ovl2-nocross-{}", random_hex(6)));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("host")).unwrap();
        std::os::unix::fs::symlink("a", root.join("s")).unwrap();
        let dir = open_dir_path(&root).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        assert!(openat_no_cross(dir.as_fd(), c"a/b", flags).is_ok());
        assert!(openat_no_cross(dir.as_fd(), c"s", flags).is_err(), "a symlink was followed");
        assert!(openat_no_cross(dir.as_fd(), c"s/b", flags).is_err(), "a symlink was followed");
        let mounted = rustix::mount::mount_bind(root.join("host"), root.join("a/b"));
        let ci = std::env::var("CI").is_ok_and(|v| v == "true") || std::env::var("OVL2_REQUIRE_MOUNT").is_ok();
        match mounted {
            Ok(()) => {
                let r = openat_no_cross(dir.as_fd(), c"a/b", flags);
                let _ = rustix::mount::unmount(root.join("a/b"), rustix::mount::UnmountFlags::DETACH);
                assert_eq!(r.err(), Some(Errno::XDEV), "a bind mount was crossed");
            }
            Err(e) => assert!(!ci, "bind mount needed under CI=true: {e}"),
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The walk itself never crosses a mount, whatever a pre-check saw (a mount can appear
    /// while the removal runs): it stops with an error naming the mount and leaves it alone.
    /// (Moved here from tests/walks.rs when fsutil became crate-private.)
    #[test]
    fn remove_tree_never_crosses_a_bind_mount() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("OVL2_REQUIRE_MOUNT").is_ok_and(|v| v == "1");
        if !rustix::process::geteuid().is_root() {
            assert!(!ci, "this test needs root and CI=true/OVL2_REQUIRE_MOUNT=1 forbids skipping it");
            return;
        }
        use rustix::mount::{mount_bind, unmount, UnmountFlags};
        let root = std::env::temp_dir().join(format!("ovl2-rmtree-bind-{}", random_hex(6)));
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
        let host = root.join("host");
        std::fs::create_dir_all(host.join("sub")).unwrap();
        std::fs::write(host.join("keep"), "precious").unwrap();
        std::fs::write(host.join("sub/keep2"), "precious too").unwrap();
        let assert_host_intact = || {
            assert_eq!(read(host.join("keep")), "precious", "the bind-mounted host dir was emptied");
            assert_eq!(read(host.join("sub/keep2")), "precious too");
        };
        let victim = root.join("victim");
        std::fs::create_dir_all(victim.join("a/b/mnt")).unwrap();
        std::fs::write(victim.join("a/b/file"), "x").unwrap();
        mount_bind(&host, victim.join("a/b/mnt")).unwrap();
        let dir = open_dir_path(&root).unwrap();
        let res = remove_tree(&dir, c"victim");
        unmount(victim.join("a/b/mnt"), UnmountFlags::DETACH).unwrap();
        let e = res.expect_err("removal must stop at the mount");
        assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
        assert!(e.to_string().contains("victim/a/b/mnt"), "names the mount: {e}");
        assert_host_intact();
        // A bind mount on a file cannot be unlinked either, and says so.
        std::fs::write(victim.join("a/target"), "t").unwrap();
        mount_bind(host.join("keep"), victim.join("a/target")).unwrap();
        let res = remove_tree(&dir, c"victim");
        unmount(victim.join("a/target"), UnmountFlags::DETACH).unwrap();
        let e = res.expect_err("removal must stop at the file mount");
        assert!(e.to_string().contains("victim/a/target"), "names the mount: {e}");
        assert_host_intact();
        remove_tree(&dir, c"victim").unwrap();
        assert!(!victim.exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
