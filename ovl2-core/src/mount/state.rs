//! Per-store mount state: the strategy and features in force, `.ovl2/mounts`, and the
//! references this process holds. Kept apart from the mount operations so the store can own
//! it without importing them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::engine::MountStrategy;
use super::probe::Features;
use super::refs::Holder;
use crate::error::{Error, Result};
use crate::{forkgen, fsutil};

/// Per-`Driver` mount state.
#[derive(Debug)]
pub(crate) struct MountState {
    pub(super) strategy: MountStrategy,
    pub(super) disabled: Vec<String>,
    /// `.ovl2/mounts`: one reference record per mounted layer.
    pub(super) records_fd: Option<std::os::fd::OwnedFd>,
    pub(super) features: OnceLock<Features>,
    /// Who this `Driver` is in records, and in which process.
    pub(super) me: Mutex<Me>,
    /// References this `Driver` holds per layer; a slot's mutex also serialises this
    /// process's get/put of that layer.
    pub(super) held: Mutex<HashMap<String, Arc<Mutex<Held>>>>,
}

/// This `Driver`'s identity as a holder. `generation` tells a forked child (which inherits a
/// copy of all of this) from the process that made it: a child's references are its own,
/// under its own token and holder file, and the parent's stay the parent's.
#[derive(Debug)]
pub(super) struct Me {
    /// The fork generation ([`crate::forkgen`]) this identity was made in.
    pub(super) generation: u64,
    pub(super) token: String,
    /// `.ovl2/holders/<token>`, flocked while this `Driver` may hold references; taken at
    /// the first process-held get and kept until the `Driver` closes (or a failed operation
    /// that made it rolls back), so mounting again makes no file.
    pub(super) lock: Option<std::os::fd::OwnedFd>,
    /// References recorded under `token` (and gets in flight that will record one).
    pub(super) refs: u64,
    /// [`forkgen::forks_made`] when `lock` was taken: a child forked since shares the lock,
    /// so the file is made anew before it vouches for new references.
    pub(super) forks_at_lock: u64,
}

impl Me {
    /// A fresh identity in this process: a new token, no holder file, no references.
    pub(super) fn new() -> Me {
        Me { generation: forkgen::generation(), token: fsutil::random_hex(8), lock: None, refs: 0, forks_at_lock: 0 }
    }

    /// Whether this `Driver` holds its holder file's lock in this very process (so it is
    /// alive, and the file is its own to keep or remove).
    pub(super) fn live(&self) -> bool {
        self.lock.is_some() && !self.forked()
    }

    /// Whether this is a forked child's inherited copy of its parent's identity.
    pub(super) fn forked(&self) -> bool {
        self.generation != forkgen::generation()
    }
}

impl MountState {
    /// The mount state for a store opened with these options: `strategy` or else
    /// `OVL2_MOUNT_STRATEGY` (else auto), `disabled` or, when empty, `OVL2_DISABLE_FEATURES`
    /// (comma-separated). Checked before the store is touched; the records dir comes later
    /// ([`MountState::set_records_dir`]).
    pub(crate) fn new(strategy: Option<MountStrategy>, disabled: &[String]) -> Result<MountState> {
        let strategy = match strategy {
            Some(s) => s,
            None => MountStrategy::from_env()?.unwrap_or_default(),
        };
        let mut disabled = disabled.to_vec();
        if disabled.is_empty() {
            if let Ok(v) = std::env::var("OVL2_DISABLE_FEATURES") {
                disabled = v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            }
        }
        if let Some(bad) = disabled.iter().find(|d| !Features::ALL.contains(&d.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "unknown feature {bad:?} to disable (known: {})",
                Features::ALL.join(", ")
            )));
        }
        Ok(MountState {
            strategy,
            disabled,
            records_fd: None,
            features: OnceLock::new(),
            me: Mutex::new(Me::new()),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Hands over `.ovl2/mounts` (`None` only on a read-only open of a store without it).
    pub(crate) fn set_records_dir(&mut self, fd: Option<std::os::fd::OwnedFd>) {
        self.records_fd = fd;
    }

    /// Starts afresh in a forked child: the references in memory and the holder file belong
    /// to the parent. Closing the child's copy of the holder fd leaves the parent's lock in
    /// place (the parent still has the file open). Call with no other mount-state lock held.
    /// No syscall: it runs on every get and put.
    pub(super) fn after_fork(&self) {
        let mut me = self.me.lock().unwrap_or_else(|e| e.into_inner());
        if !me.forked() {
            return;
        }
        *me = Me::new();
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// This `Driver` as a holder in records.
    pub(super) fn me(&self) -> Holder {
        Holder::Lock { token: self.me.lock().unwrap_or_else(|e| e.into_inner()).token.clone() }
    }

    pub(super) fn slot(&self, id: &str) -> Arc<Mutex<Held>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before inserting: a repeated get makes no copy of the id.
        if let Some(slot) = held.get(id) {
            return slot.clone();
        }
        held.entry(id.to_owned()).or_default().clone()
    }
}

/// This `Driver`'s references to one layer's mount, and whether that mount is read-only
/// (so a repeated get is answered from memory only when the mount fits the request).
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) count: u64,
    pub(super) readonly: bool,
    /// A plain `get` (no explicit read-only) would ask for this very mount.
    pub(super) plain_ok: bool,
    /// Plain gets of a base layer, answered with its `diff` and no reference (Docker's
    /// rule); each matching put is consumed here, so it never releases a reference that
    /// someone else holds on a read-only mount of the same layer.
    pub(super) base_gets: u64,
}
