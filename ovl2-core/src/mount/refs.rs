//! Mount reference records: who holds a layer's mount, kept in `.ovl2/mounts/<id>` so that
//! every process using the store sees the same count.
//!
//! Holders are either the store itself ("persistent" references, e.g. each `ovl2 mount`
//! command, released only by a matching put) or a live `Driver` (released by put, or dropped
//! when its owner is found gone). A `Driver` that holds references keeps a holder file
//! `.ovl2/holders/<token>` flocked; the kernel drops that lock when the last descriptor of it
//! closes, that is when the process dies, so "is the holder alive" is a non-blocking flock
//! attempt that cannot be fooled by recycled pids, PID namespaces or odd process names.
//! Records written before holder files existed name a process by pid and start time; those
//! are still read and judged that way.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fsutil::{self, cstr, LockMode};
use crate::id::LayerId;
use crate::layout;

/// Largest record or holder file read; a record with thousands of holders is far smaller.
const MAX_RECORD: usize = 1 << 20;

/// Who holds a reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Holder {
    /// Held by the store until an explicit put.
    Store,
    /// Held by a mount ovl2 found already in place (Docker's live-restore rule).
    External,
    /// Held by one `Driver`, alive while `.ovl2/holders/<token>` is flocked.
    Lock { token: String },
    /// Held by one `Driver` in one process, as records written before holder files name it:
    /// alive while a process with that pid and start time exists.
    Process { pid: u32, start: u64, token: String },
}

/// One layer's mount record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) holders: BTreeMap<Holder, u64>,
    pub(crate) readonly: bool,
    pub(crate) method: String,
}

/// What a record file holds when it is not a usable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bad {
    /// No end marker: a write that did not finish.
    Torn,
    /// Anything else: a line ovl2 does not write, a count that overflows, a file that is not
    /// a regular file. Described for `check`.
    Corrupt(String),
}

/// A record as loaded: usable, or why not (the kernel's view then decides).
pub(crate) type Loaded = std::result::Result<Record, Bad>;

impl Record {
    /// All references. Never overflows: `add` and `decode` keep the sum within `u64`.
    pub(crate) fn total(&self) -> u64 {
        self.holders.values().fold(0u64, |a, n| a.saturating_add(*n))
    }

    /// Adds `n` references of `h`; false (and nothing changed) when the total would overflow.
    #[must_use]
    pub(crate) fn add(&mut self, h: Holder, n: u64) -> bool {
        if n == 0 || self.total().checked_add(n).is_none() {
            return n == 0;
        }
        *self.holders.entry(h).or_insert(0) += n;
        true
    }

    /// Drops one reference of `h`; false when `h` held none.
    pub(crate) fn release(&mut self, h: &Holder) -> bool {
        match self.holders.get_mut(h) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.holders.remove(h);
                true
            }
            None => false,
        }
    }

    /// Forgets holders that are gone (`holders_dir` is `.ovl2/holders`, if it exists). `me`
    /// is the caller's own token while it holds its holder file's lock: alive without a look.
    pub(crate) fn drop_dead(&mut self, holders_dir: Option<BorrowedFd<'_>>, me: Option<&str>) -> u64 {
        let before = self.total();
        self.holders.retain(|h, _| match h {
            Holder::Lock { token } if Some(token.as_str()) == me => true,
            Holder::Lock { token } => holders_dir.is_some_and(|d| holder_alive(d, token)),
            Holder::Process { pid, start, .. } => process_start_time(*pid) == Some(*start),
            Holder::Store | Holder::External => true,
        });
        before - self.total()
    }

    pub(crate) fn count_of(&self, pred: impl Fn(&Holder) -> bool) -> u64 {
        self.holders.iter().filter(|(h, _)| pred(h)).map(|(_, n)| n).sum()
    }

    fn encode(&self) -> String {
        if self.total() == 0 {
            return "end\n".to_owned();
        }
        let mut s = format!("mode {}\nmethod {}\n", if self.readonly { "ro" } else { "rw" }, self.method);
        for (h, n) in &self.holders {
            match h {
                Holder::Store => s.push_str(&format!("store {n}\n")),
                Holder::External => s.push_str(&format!("external {n}\n")),
                Holder::Lock { token } => s.push_str(&format!("holder {token} {n}\n")),
                Holder::Process { pid, start, token } => s.push_str(&format!("proc {pid} {start} {token} {n}\n")),
            }
        }
        s.push_str("end\n");
        s
    }

    fn decode(bytes: &[u8]) -> Loaded {
        let text = std::str::from_utf8(bytes).map_err(|_| Bad::Corrupt("it is not UTF-8 text".into()))?;
        let mut r = Record::default();
        for line in text.lines() {
            let bad = || Bad::Corrupt(format!("line {:?} is not a record line", preview(line)));
            let num = |s: &str| s.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad);
            let f: Vec<&str> = line.split(' ').collect();
            let (h, n) = match f.as_slice() {
                // Records are rewritten in place; whatever follows the end marker is left
                // over from a longer record.
                ["end"] => return Ok(r),
                ["mode", m @ ("ro" | "rw")] => {
                    r.readonly = *m == "ro";
                    continue;
                }
                ["method", m] => {
                    r.method = (*m).to_owned();
                    continue;
                }
                ["method"] => continue,
                ["store", n] => (Holder::Store, num(n)?),
                ["external", n] => (Holder::External, num(n)?),
                ["holder", token, n] if is_token(token) => (Holder::Lock { token: (*token).to_owned() }, num(n)?),
                ["proc", pid, start, token, n] => (
                    Holder::Process {
                        pid: pid.parse().map_err(|_| bad())?,
                        start: start.parse().map_err(|_| bad())?,
                        token: (*token).to_owned(),
                    },
                    num(n)?,
                ),
                _ => return Err(bad()),
            };
            if !r.add(h, n) {
                return Err(Bad::Corrupt(format!("its reference counts add up to more than {}", u64::MAX)));
            }
        }
        // No end marker: a torn write. Treat it as unknown; the kernel's view decides.
        Err(Bad::Torn)
    }
}

fn preview(line: &str) -> String {
    line.chars().take(64).collect()
}

/// Holder tokens are ovl2's own random hex: anything else in a record is not ours.
fn is_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Opens a store file that must be a regular file without ever blocking or following a
/// symlink (a FIFO or a device planted there would otherwise hang the open or the read).
/// `Ok(None)` when it does not exist; `Err(None)`-like cases come back as a description.
pub(crate) fn open_regular(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    flags: OFlags,
) -> std::result::Result<Option<OwnedFd>, String> {
    Ok(open_regular_stat(dir, name, flags)?.map(|(fd, _)| fd))
}

/// [`open_regular`] with the file's stat.
fn open_regular_stat(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    flags: OFlags,
) -> std::result::Result<Option<(OwnedFd, rustix::fs::Stat)>, String> {
    match fsutil::open_regular(dir, name, flags) {
        Ok(found) => Ok(found),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(format!("it {e}")),
        Err(e) => Err(format!("it cannot be opened: {e}")),
    }
}

fn read_fd(fd: &OwnedFd, st: &rustix::fs::Stat) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if fsutil::is_whole(&out, n, buf.len(), st) {
                    return Ok(out);
                }
                if out.len() > MAX_RECORD {
                    return Err(format!("it is larger than {MAX_RECORD} bytes"));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(format!("it cannot be read: {e}")),
        }
    }
}

/// Loads a layer's record. An absent one is empty; an unusable one is reported as such, and
/// callers then go by the kernel's mount table (the authority on what is mounted).
pub(crate) fn load<Fd: AsFd>(dir: Fd, id: &LayerId) -> Loaded {
    load_open(dir, id, false).0
}

/// [`load`] for a change under the layer lock: with `writable`, the record file is opened
/// read-write and handed back, so [`store_open`] writes the change without opening it again
/// (a get and a put each load and save their record). No file comes back when there was
/// none, or it was unusable: [`store`] then makes or replaces it.
pub(crate) fn load_open<Fd: AsFd>(dir: Fd, id: &LayerId, writable: bool) -> (Loaded, Option<OwnedFd>) {
    let flags = if writable { OFlags::RDWR } else { OFlags::RDONLY };
    match open_regular_stat(dir.as_fd(), id.as_c_str(), flags) {
        Ok(None) => (Ok(Record::default()), None),
        Ok(Some((fd, st))) => {
            let loaded = read_fd(&fd, &st).map_err(Bad::Corrupt).and_then(|b| Record::decode(&b));
            let keep = writable && loaded.is_ok();
            (loaded, keep.then_some(fd))
        }
        Err(why) => (Err(Bad::Corrupt(why)), None),
    }
}

/// [`store`] through the record file [`load_open`] kept open, if it did.
pub(crate) fn store_open<Fd: AsFd>(open: Option<&OwnedFd>, dir: Fd, id: &LayerId, rec: &Record) -> Result<()> {
    match open {
        Some(fd) => write_record(fd, id, rec),
        None => store(dir, id, rec),
    }
}

/// Why a record file is unusable, for `check`; `None` when it is fine or absent.
pub(crate) fn problem<Fd: AsFd>(dir: Fd, id: &LayerId) -> Option<String> {
    match load(dir, id) {
        Ok(_) => None,
        Err(Bad::Torn) => Some("it has no end line (a write that did not finish)".into()),
        Err(Bad::Corrupt(why)) => Some(why),
    }
}

/// Saves a record by rewriting the layer's record file in place with one `pwrite` (an empty
/// record is just the end marker). Creating and renaming a temp file per change cost more
/// than the mount syscalls of a short chain; a partial write is caught by the end marker.
/// Records describe live mounts, which do not survive a reboot, so they need no fsync.
/// Something other than a regular file at the record's name (only damage puts one there) is
/// replaced; the caller holds the layer lock, so no one else is using it.
pub(crate) fn store<Fd: AsFd>(dir: Fd, id: &LayerId, rec: &Record) -> Result<()> {
    let dir = dir.as_fd();
    let n = id.as_c_str();
    let fd = match open_regular(dir, n, OFlags::RDWR) {
        Ok(Some(fd)) => fd,
        Ok(None) if rec.total() == 0 => return Ok(()),
        Ok(None) => create_record(dir, id)?,
        Err(_) => {
            match rustix::fs::unlinkat(dir, n, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) => rustix::fs::unlinkat(dir, n, AtFlags::REMOVEDIR).map_err(|e| {
                    Error::io(format!("removing the directory .ovl2/mounts/{id} that stands in for a mount record"), e)
                })?,
                Err(e) => return Err(Error::io(format!("removing the damaged mount record .ovl2/mounts/{id}"), e)),
            }
            if rec.total() == 0 {
                return Ok(());
            }
            create_record(dir, id)?
        }
    };
    write_record(&fd, id, rec)
}

fn write_record(fd: &OwnedFd, id: &LayerId, rec: &Record) -> Result<()> {
    let text = rec.encode();
    let n = rustix::io::pwrite(fd, text.as_bytes(), 0)
        .map_err(|e| Error::io(format!("writing the mount record of {id:?}"), e))?;
    if n != text.len() {
        return Err(Error::io(format!("writing the mount record of {id:?}"), Errno::NOSPC));
    }
    Ok(())
}

fn create_record(dir: BorrowedFd<'_>, id: &LayerId) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        id.as_c_str(),
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        layout::PRIVATE_FILE_MODE,
    )
    .map_err(|e| Error::io(format!("creating the mount record of {id:?}"), e))
}

/// Deletes a layer's record file (the layer is being removed).
pub(crate) fn delete<Fd: AsFd>(dir: Fd, id: &LayerId) -> Result<()> {
    let dir = dir.as_fd();
    match rustix::fs::unlinkat(dir, id.as_c_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => match rustix::fs::unlinkat(dir, id.as_c_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(format!("removing the mount record of {id:?}"), e)),
        },
        Err(e) => Err(Error::io(format!("removing the mount record of {id:?}"), e)),
    }
}

/// Whether a record file may hold a reference, read without the layer lock: a cheap filter
/// so scans skip the many layers that are not mounted (anything odd counts as "maybe").
pub(crate) fn maybe_held<Fd: AsFd>(dir: Fd, id: &LayerId) -> bool {
    match open_regular(dir.as_fd(), id.as_c_str(), OFlags::RDONLY) {
        Ok(None) => false,
        Ok(Some(fd)) => {
            let mut buf = [0u8; 4];
            !matches!(rustix::io::pread(&fd, &mut buf, 0), Ok(4) if &buf == b"end\n")
        }
        Err(_) => true,
    }
}

/// This `Driver`'s holder file: created, flocked exclusively, and checked to still be the
/// file at that name (a sweep may unlink a file it found unlocked, just before we locked it).
pub(crate) fn take_holder(dir: BorrowedFd<'_>, token: &str) -> Result<Option<OwnedFd>> {
    let n = cstr(token).expect("hex token");
    let fd = rustix::fs::openat(
        dir,
        &n,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        layout::PRIVATE_FILE_MODE,
    )
    .map_err(|e| Error::io(format!("creating the holder file .ovl2/holders/{token}"), e))?;
    fsutil::flock(&fd, LockMode::Exclusive).map_err(|e| Error::io(format!("locking .ovl2/holders/{token}"), e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(format!("stat of .ovl2/holders/{token}"), e))?;
    if st.st_nlink == 0 {
        return Ok(None);
    }
    // Who holds it, for people reading the store; liveness never depends on this.
    let _ = rustix::io::pwrite(&fd, format!("{}\n", std::process::id()).as_bytes(), 0);
    Ok(Some(fd))
}

/// Whether the `Driver` behind a holder token is alive: its file exists and is flocked.
/// A holder found dead has its file removed (under a shared lock, so a holder that is just
/// taking its lock sees the unlink and starts over). When liveness cannot be told (an
/// unexpected error), the holder counts as alive: a mount is never taken down on a guess.
pub(crate) fn holder_alive(dir: BorrowedFd<'_>, token: &str) -> bool {
    let Ok(n) = cstr(token) else { return false };
    let fd = match open_regular(dir, &n, OFlags::RDONLY) {
        Ok(Some(fd)) => fd,
        Ok(None) => return false,
        // Not a file ovl2 made (a symlink, FIFO, directory): no holder can be behind it.
        Err(_) if fsutil::file_type(dir, &n).ok().flatten().is_some() => return false,
        Err(_) => return true,
    };
    match fsutil::try_flock(&fd, LockMode::Shared) {
        Ok(true) => {
            let _ = rustix::fs::unlinkat(dir, n, AtFlags::empty());
            false
        }
        Ok(false) => true,
        Err(_) => true,
    }
}

/// A process's start time (clock ticks since boot), which with its pid names it uniquely.
/// Only for records written before holder files. `/proc/<pid>/stat` is read as bytes: the
/// command name may hold any bytes, spaces and parentheses, so fields start after the last ')'.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = stat.get(close + 2..)?;
    // Field 22 overall is the 20th after the name and state.
    let field = rest.split(|&b| b == b' ').nth(19)?;
    std::str::from_utf8(field).ok()?.trim_end().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let mut r = Record { readonly: true, method: "new-fd".into(), ..Default::default() };
        assert!(r.add(Holder::Store, 2));
        assert!(r.add(Holder::Process { pid: 7, start: 99, token: "ab".into() }, 3));
        assert!(r.add(Holder::Lock { token: "0a1b".into() }, 1));
        let back = Record::decode(r.encode().as_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.total(), 6);
        assert!(matches!(Record::decode(b"store x\nend\n"), Err(Bad::Corrupt(_))));
        assert_eq!(Record::decode(b"store 1\n"), Err(Bad::Torn), "no end marker: torn");
        // Rewritten in place over a longer record: the tail after the marker is ignored.
        assert_eq!(Record::decode(b"store 2\nend\nproc 1 2 x 3\nend\n").unwrap().total(), 2);
        assert_eq!(Record::default().encode(), "end\n");
    }

    #[test]
    fn dead_processes_are_dropped() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        let mut r = Record::default();
        assert!(r.add(Holder::Process { pid: me, start, token: "t".into() }, 1));
        assert!(r.add(Holder::Process { pid: me, start: start + 1, token: "t".into() }, 4)); // pid reused
        assert!(r.add(Holder::Store, 1));
        assert!(r.add(Holder::Lock { token: "ab".into() }, 2)); // no holders dir: gone
        assert_eq!(r.drop_dead(None, None), 6);
        assert_eq!(r.total(), 2);
    }

    #[test]
    fn release_counts_down() {
        let mut r = Record::default();
        assert!(r.add(Holder::Store, 2));
        assert!(r.release(&Holder::Store));
        assert!(r.release(&Holder::Store));
        assert!(!r.release(&Holder::Store));
        assert_eq!(r.total(), 0);
    }

    /// Issue 10: `store 18446744073709551615` plus one more reference wrapped the total to 0,
    /// so the next reconcile unmounted a layer that was in use.
    #[test]
    fn counts_never_wrap() {
        let max = u64::MAX;
        let wraps = format!("mode rw\nmethod new-fd\nstore {max}\nholder ab 1\nend\n");
        let e = Record::decode(wraps.as_bytes()).unwrap_err();
        assert!(matches!(&e, Bad::Corrupt(m) if m.contains("add up to more than")), "{e:?}");
        assert!(Record::decode(format!("store {max}\nend\n").as_bytes()).is_ok(), "the maximum itself is fine");
        assert!(matches!(Record::decode(b"store 18446744073709551616\nend\n"), Err(Bad::Corrupt(_))));
        assert!(matches!(Record::decode(b"store 0\nend\n"), Err(Bad::Corrupt(_))), "a zero count is never written");
        assert!(matches!(Record::decode(b"holder ../x 1\nend\n"), Err(Bad::Corrupt(_))), "tokens are hex");
        let mut r = Record::default();
        assert!(r.add(Holder::Store, max));
        assert!(!r.add(Holder::External, 1), "adding past the maximum is refused");
        assert_eq!(r.total(), max);
    }

    /// Issue 10, item 5b: a name that is not UTF-8 (or holds ") (") must not hide the start time.
    #[test]
    fn start_time_of_any_process_name() {
        let me = std::process::id();
        let start = process_start_time(me).expect("own start time");
        let name = std::fs::read(format!("/proc/{me}/stat")).unwrap();
        assert!(name.starts_with(format!("{me} (").as_bytes()));
        assert!(start > 0);
    }
}
