//! The process's fork generation: how a `Driver` (or the mount thread) tells that it now
//! runs in a forked child, whose in-memory copy of the parent's references is not its own.
//!
//! Asking `getpid` on every get and put cost a syscall each on the hottest path (a base
//! layer's get is otherwise two stats); comparing a generation is a load. The generation is
//! bumped in the child by a `pthread_atfork` child handler, which runs in the child of every
//! fork(2) made through the C library: C's `fork`, Python's `os.fork` and `multiprocessing`.
//! Go's `syscall.ForkExec` and `posix_spawn` do not run it, but their children only exec, so
//! they never call into this library. A raw `clone` or glibc's `_Fork` would not be seen.
//!
//! Neither rustix nor std offers `pthread_atfork`, so it is declared here (it is in glibc,
//! which every target links). Linked by `cc`, glibc's static part of it passes this
//! library's DSO handle, so a `dlclose` of libovl2 unregisters the handler with it; the
//! manylinux wheel binds the older versioned symbol instead, which Python never unloads. The handler is registered once, before the first generation is
//! read, so any fork after a `Driver` exists bumps it. Should registration fail, the
//! generation falls back to the pid: correct, with the syscall back.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

extern "C" {
    /// POSIX: `int pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))`.
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

/// Forks seen by this process's line of descent (0 in the process that registered).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Forks this process has made (counted in the parent, by the `parent` handler).
static FORKS_MADE: AtomicU64 = AtomicU64::new(0);

/// Whether the child handler is in place (else the pid stands in for the generation).
static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Runs in the child right after fork, while it has a single thread: an atomic increment
/// only (async-signal-safe, no allocation, no lock).
unsafe extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Runs in the parent right after fork: an atomic increment only.
unsafe extern "C" fn in_parent() {
    FORKS_MADE.fetch_add(1, Ordering::Relaxed);
}

/// How many forks this process has made since the handlers were registered: a `Driver`
/// compares it to tell whether a child may share the lock of a file it keeps flocked (a
/// flock belongs to the open file, which a child inherits). Without the handlers it always
/// answers "maybe": a new value every call.
pub(crate) fn forks_made() -> u64 {
    if registered() {
        FORKS_MADE.load(Ordering::Relaxed)
    } else {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        CALLS.fetch_add(1, Ordering::Relaxed).wrapping_add(1 << 63)
    }
}

fn registered() -> bool {
    // SAFETY: registers handlers that only touch atomics; called once.
    *REGISTERED.get_or_init(|| unsafe { pthread_atfork(None, Some(in_parent), Some(in_child)) } == 0)
}

/// The current fork generation: differs from any value read before a fork that made this
/// process. Only comparable within one process's memory (a copy inherited from the parent
/// holds the parent's generation).
pub(crate) fn generation() -> u64 {
    if registered() {
        // Relaxed suffices: the bump happens in this very thread of the child before fork
        // returns, and no other thread of the parent ever sees a change.
        GENERATION.load(Ordering::Relaxed)
    } else {
        u64::from(std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_without_a_fork() {
        let g = generation();
        assert_eq!(generation(), g);
        assert_eq!(REGISTERED.get(), Some(&true), "pthread_atfork registration failed");
    }

    #[test]
    fn a_forked_child_is_a_new_generation() {
        let g = generation();
        // SAFETY: the child only loads atomics and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = generation() == g + 1 && generation() == g + 1;
            // SAFETY: plain exit of the child, no destructors of the parent's copies.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child saw no new generation");
        assert_eq!(generation(), g, "the parent's generation moved");
        assert!(forks_made() > 0, "the parent counted no fork");
    }
}
