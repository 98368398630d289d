//! Mount reference records: who holds a layer's mount, kept in `.ovl2/mounts/<id>` so that
//! every process using the store sees the same count.
//!
//! Holders are either the store itself ("persistent" references, e.g. each `ovl2 mount`
//! command, released only by a matching put) or a live process (released by put, or
//! dropped when the process is found dead). A process is identified by pid plus its start
//! time, so a recycled pid never inherits a dead process's references.

use std::collections::BTreeMap;
use std::ffi::CString;

use rustix::fs::AtFlags;
use rustix::io::Errno;

use crate::error::{Context, Error, Result};
use crate::fsutil::{self, cstr};
use rustix::fs::{Mode, OFlags};

/// Who holds a reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Holder {
    /// Held by the store until an explicit put.
    Store,
    /// Held by a mount ovl2 found already in place (Docker's live-restore rule).
    External,
    /// Held by one `Driver` in one live process.
    Process { pid: u32, start: u64, token: String },
}

/// One layer's mount record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) holders: BTreeMap<Holder, u64>,
    pub(crate) readonly: bool,
    pub(crate) method: String,
}

impl Record {
    pub(crate) fn total(&self) -> u64 {
        self.holders.values().sum()
    }

    pub(crate) fn add(&mut self, h: Holder, n: u64) {
        *self.holders.entry(h).or_insert(0) += n;
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

    /// Forgets processes that are gone.
    pub(crate) fn drop_dead(&mut self) -> u64 {
        let before = self.total();
        self.holders.retain(|h, _| match h {
            Holder::Process { pid, start, .. } => process_start_time(*pid) == Some(*start),
            _ => true,
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
                Holder::Process { pid, start, token } => s.push_str(&format!("proc {pid} {start} {token} {n}\n")),
            }
        }
        s.push_str("end\n");
        s
    }

    fn decode(text: &str) -> Option<Record> {
        let mut r = Record::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                // Records are rewritten in place; whatever follows the end marker is left
                // over from a longer record.
                ["end"] => return Some(r),
                ["mode", m] => r.readonly = *m == "ro",
                ["method", m] => r.method = (*m).to_owned(),
                ["method"] => {}
                ["store", n] => r.add(Holder::Store, n.parse().ok()?),
                ["external", n] => r.add(Holder::External, n.parse().ok()?),
                ["proc", pid, start, token, n] => r.add(
                    Holder::Process { pid: pid.parse().ok()?, start: start.parse().ok()?, token: (*token).to_owned() },
                    n.parse().ok()?,
                ),
                _ => return None,
            }
        }
        // No end marker: a torn write. Treat it as unknown; the kernel's view decides.
        None
    }
}

fn name(id: &str) -> CString {
    cstr(id).expect("validated id")
}

/// Loads a layer's record; an absent or unreadable one is an empty record (the kernel's
/// mount table is the authority, and callers reconcile against it).
pub(crate) fn load<Fd: std::os::fd::AsFd>(dir: Fd, id: &str) -> Result<Record> {
    match fsutil::read_small(dir, &name(id)).ctx(|| format!("reading mount record of {id:?}"))? {
        Some(bytes) => Ok(std::str::from_utf8(&bytes).ok().and_then(Record::decode).unwrap_or_default()),
        None => Ok(Record::default()),
    }
}

/// Saves a record by rewriting the layer's record file in place with one `pwrite` (an empty
/// record is just the end marker). Creating and renaming a temp file per change cost more
/// than the mount syscalls of a short chain; a partial write is caught by the end marker.
/// Records describe live mounts, which do not survive a reboot, so they need no fsync.
pub(crate) fn store<Fd: std::os::fd::AsFd>(dir: Fd, id: &str, rec: &Record) -> Result<()> {
    let dir = dir.as_fd();
    let fd = match rustix::fs::openat(dir, name(id), OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) if rec.total() == 0 => return Ok(()),
        Err(Errno::NOENT) => rustix::fs::openat(
            dir,
            name(id),
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io(format!("creating the mount record of {id:?}"), e))?,
        Err(e) => return Err(Error::io(format!("opening the mount record of {id:?}"), e)),
    };
    let text = rec.encode();
    let n = rustix::io::pwrite(&fd, text.as_bytes(), 0)
        .map_err(|e| Error::io(format!("writing the mount record of {id:?}"), e))?;
    if n != text.len() {
        return Err(Error::io(format!("writing the mount record of {id:?}"), Errno::NOSPC));
    }
    Ok(())
}

/// Deletes a layer's record file (the layer is being removed).
pub(crate) fn delete<Fd: std::os::fd::AsFd>(dir: Fd, id: &str) -> Result<()> {
    match rustix::fs::unlinkat(dir, name(id), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io(format!("removing the mount record of {id:?}"), e)),
    }
}

/// Whether a record file holds any reference, read without the layer lock: a cheap filter
/// so scans skip the many layers that are not mounted.
pub(crate) fn maybe_held<Fd: std::os::fd::AsFd>(dir: Fd, id: &str) -> bool {
    !matches!(fsutil::read_small(dir, &name(id)), Ok(Some(b)) if b.starts_with(b"end\n"))
}

/// A process's start time (clock ticks since boot), which with its pid names it uniquely.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // Field 22 overall is the 20th after the name and state.
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let mut r = Record { readonly: true, method: "new-fd".into(), ..Default::default() };
        r.add(Holder::Store, 2);
        r.add(Holder::Process { pid: 7, start: 99, token: "ab".into() }, 3);
        let back = Record::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.total(), 5);
        assert!(Record::decode("store x\nend\n").is_none());
        assert!(Record::decode("store 1\n").is_none(), "no end marker: torn");
        // Rewritten in place over a longer record: the tail after the marker is ignored.
        assert_eq!(Record::decode("store 2\nend\nproc 1 2 x 3\nend\n").unwrap().total(), 2);
        assert_eq!(Record::default().encode(), "end\n");
    }

    #[test]
    fn dead_processes_are_dropped() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        let mut r = Record::default();
        r.add(Holder::Process { pid: me, start, token: "t".into() }, 1);
        r.add(Holder::Process { pid: me, start: start + 1, token: "t".into() }, 4); // pid reused
        r.add(Holder::Store, 1);
        assert_eq!(r.drop_dead(), 4);
        assert_eq!(r.total(), 2);
    }

    #[test]
    fn release_counts_down() {
        let mut r = Record::default();
        r.add(Holder::Store, 2);
        assert!(r.release(&Holder::Store));
        assert!(r.release(&Holder::Store));
        assert!(!r.release(&Holder::Store));
        assert_eq!(r.total(), 0);
    }
}
