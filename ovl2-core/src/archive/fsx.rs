//! fd-relative helpers the archive code shares: resolving inside a layer root with
//! `openat2(RESOLVE_IN_ROOT)`, and xattrs on entries that cannot be opened for I/O.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How every path inside a layer is resolved: as if the layer were `/`, never through
/// `/proc` magic links, never onto another mount.
pub const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS).union(ResolveFlags::NO_XDEV);

/// Opens the directory `path` (relative, `/`-separated) inside `root`, following symlinks as
/// a chroot would. An empty path is the root itself.
pub fn open_dir_in_root(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    let p: &[u8] = if path.is_empty() { b"." } else { path };
    loop {
        match rfs::openat2(root, p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), IN_ROOT) {
            // openat2 asks the caller to retry when a rename raced with the lookup.
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// A `/proc/self/fd/N/name` path that reaches `name` in `dir` without re-resolving anything
/// the caller controls, for the xattr calls that have no `*at` form.
pub fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).expect("no NUL")
}

/// Reads an xattr of `name` in `dir` without following a final symlink; `None` when absent.
pub fn lget_xattr_at(dir: BorrowedFd<'_>, name: &CStr, key: &CStr) -> io::Result<Option<Vec<u8>>> {
    get_xattr(|buf| rfs::lgetxattr(proc_path(dir, name).as_c_str(), key, buf))
}

/// Reads an xattr of an open file; `None` when absent.
pub fn fget_xattr<Fd: AsFd>(fd: Fd, key: &CStr) -> io::Result<Option<Vec<u8>>> {
    let fd = fd.as_fd();
    get_xattr(|buf| rfs::fgetxattr(fd, key, buf))
}

/// The names of an open file's xattrs (`listxattr`'s NUL-separated list; empty where the
/// filesystem has none or no xattr support).
pub fn flist_xattrs<Fd: AsFd>(fd: Fd) -> io::Result<Vec<u8>> {
    let fd = fd.as_fd();
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::flistxattr(fd, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a `listxattr` list holds `key`.
pub fn listed(list: &[u8], key: &CStr) -> bool {
    list.split(|&b| b == 0).any(|n| n == key.to_bytes())
}

fn get_xattr(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets an xattr on `name` in `dir` without following a final symlink.
pub fn lset_xattr_at(dir: BorrowedFd<'_>, name: &CStr, key: &[u8], value: &[u8]) -> rustix::io::Result<()> {
    rfs::lsetxattr(proc_path(dir, name).as_c_str(), key, value, rfs::XattrFlags::empty())
}
