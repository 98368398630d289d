//! containerd's Snapshotter contract over an ovl2 store.
//!
//! Every snapshot is one ovl2 layer made through the public `Driver` API: an active snapshot
//! is a read-write layer, a view a read-only layer, a committed snapshot an image layer. The
//! layer logic (chains, depth, crash-safe create and remove) stays in ovl2-core; this module
//! keeps only the key → layer index (its format is `ovl2_core::snapshots`, which `ovl2 check`
//! and `ovl2 rm` read too) and answers containerd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{tonic, Info, Snapshotter, Usage};
use ovl2_core::snapshots::{self, Entry, Index, Kind, State, LINKS_DIR};
use ovl2_core::{CreateOpts, Driver, ErrorKind, RemoveOpts};

use crate::filters::{Fields, Filter};

/// containerd's limit on one label's key plus value (`labels.Validate`).
const MAX_LABEL_SIZE: usize = 4096;

/// Why a snapshot operation failed, in the gRPC codes containerd's proxy client turns back into
/// its `errdefs` (not found, already exists, failed precondition, invalid argument).
#[derive(Debug)]
pub enum Error {
    /// No such snapshot (or parent).
    NotFound(String),
    /// The key or name is taken.
    AlreadyExists(String),
    /// The snapshot is not in a state that allows the operation.
    FailedPrecondition(String),
    /// The request itself is malformed.
    InvalidArgument(String),
    /// Anything else (I/O, a damaged store).
    Internal(String),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        match e {
            Error::NotFound(m) => tonic::Status::not_found(m),
            Error::AlreadyExists(m) => tonic::Status::already_exists(m),
            Error::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            Error::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Error::Internal(m) => tonic::Status::internal(m),
        }
    }
}

impl From<ovl2_core::Error> for Error {
    fn from(e: ovl2_core::Error) -> Error {
        let m = e.to_string();
        match e.kind() {
            ErrorKind::NotFound => Error::NotFound(m),
            ErrorKind::Exists => Error::AlreadyExists(m),
            ErrorKind::InvalidArgument => Error::InvalidArgument(m),
            ErrorKind::MaxDepth | ErrorKind::Busy => Error::FailedPrecondition(m),
            _ => Error::Internal(m),
        }
    }
}

fn io_err(what: impl std::fmt::Display, e: io::Error) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// The service state: the store and the index, behind one lock (containerd's own snapshotters
/// serialize their metadata transactions the same way).
struct Inner {
    driver: Driver,
    index: Index,
    /// The store's absolute path, as mounts must name it.
    home: String,
    /// `index=off` / `userxattr`, as ovl2's own mounts pass them on this kernel.
    overlay_opts: Vec<String>,
}

/// ovl2 as a containerd snapshotter.
#[derive(Clone)]
pub struct Ovl2Snapshotter {
    inner: Arc<Mutex<Inner>>,
    /// Keeps `.ovl2/snapshotter/lock` flocked while the service lives.
    _lock: Arc<fs::File>,
}

impl Ovl2Snapshotter {
    /// Opens (creating when needed) the store at `home` and the snapshotter index in it, and
    /// finishes or rolls back whatever a killed predecessor left half done.
    pub fn open(home: &Path) -> Result<Ovl2Snapshotter> {
        Self::open_with(home, ovl2_core::Options::default())
    }

    /// As [`Ovl2Snapshotter::open`], with the store's options (tests skip fsync with them).
    fn open_with(home: &Path, options: ovl2_core::Options) -> Result<Ovl2Snapshotter> {
        let driver = Driver::open(home, options)?;
        let home = fs::canonicalize(driver.home()).map_err(|e| io_err(format!("resolving {}", home.display()), e))?;
        let home_str = home
            .to_str()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the home {} is not valid UTF-8, which containerd's mount messages cannot carry",
                    home.to_string_lossy()
                ))
            })?
            .to_owned();
        let dir = snapshotter_dir(&home);
        fs::create_dir_all(&dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
        let lock = lock_dir(&dir)?;
        let index = Index::load(&dir, driver.options().sync).map_err(|e| io_err("loading the snapshotter index", e))?;
        let f = driver.features();
        let mut overlay_opts = Vec::new();
        if f.index_param {
            overlay_opts.push("index=off".to_owned());
        }
        if f.userxattr {
            overlay_opts.push("userxattr".to_owned());
        }
        let mut inner = Inner { driver, index, home: home_str, overlay_opts };
        inner.recover()?;
        Ok(Ovl2Snapshotter { inner: Arc::new(Mutex::new(inner)), _lock: Arc::new(lock) })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(|e| Error::Internal(format!("snapshot operation panicked: {e}")))?
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic in one request must not wedge the service: the index on disk is always whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `HOME/.ovl2/snapshotter`: ovl2's private dir, which Docker's driver never looks at.
pub fn snapshotter_dir(home: &Path) -> PathBuf {
    snapshots::dir(home)
}

/// Takes the service lock for the service's whole life. `ovl2 check` and `repair` try the
/// same lock for a moment (repair holds it while it mends the index), so a busy lock is
/// retried briefly before it is taken for another service's.
fn lock_dir(dir: &Path) -> Result<fs::File> {
    let p = dir.join(snapshots::LOCK_FILE);
    for _ in 0..40 {
        match snapshots::lock(dir) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => return Err(io_err(format!("locking {}", p.display()), e)),
        }
    }
    Err(Error::FailedPrecondition(format!(
        "another ovl2-snapshotter already serves this store (it holds {})",
        p.display()
    )))
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    let mut filled = 0;
    while filled < b.len() {
        match rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `n` in base 36 (`0`–`9`, `a`–`z`), the shortest spelling.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "label {k:?}: key and value are {} bytes, the limit is {MAX_LABEL_SIZE}",
                k.len() + v.len()
            )));
        }
    }
    Ok(())
}

struct Visible<'a>(&'a str, &'a Entry);

impl Fields for Visible<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let (key, e) = (self.0, self.1);
        match path {
            [f] if f == "name" => Some(key.to_owned()),
            [f] if f == "kind" => Some(e.kind.as_str().to_owned()),
            // containerd's adaptor: the parent is always present, "" for a base.
            [f] if f == "parent" => Some(e.parent.clone().unwrap_or_default()),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => e.labels.get(&rest.join(".")).cloned(),
            _ => None,
        }
    }
}

fn info(key: &str, e: &Entry) -> Info {
    Info {
        kind: match e.kind {
            Kind::View => containerd_snapshots::Kind::View,
            Kind::Active => containerd_snapshots::Kind::Active,
            Kind::Committed => containerd_snapshots::Kind::Committed,
        },
        name: key.to_owned(),
        parent: e.parent.clone().unwrap_or_default(),
        labels: e.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        created_at: e.created,
        updated_at: e.updated,
    }
}

/// containerd's `fs.DiskUsage`: allocated bytes and distinct inodes under `root`, itself included.
fn disk_usage(root: &Path) -> io::Result<(i64, i64)> {
    let mut seen = HashSet::new();
    let mut size = 0i64;
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p)?;
        if seen.insert((md.dev(), md.ino())) {
            size = size.saturating_add((md.blocks() as i64).saturating_mul(512));
        }
        if md.is_dir() {
            for ent in fs::read_dir(&p)? {
                stack.push(ent?.path());
            }
        }
    }
    Ok((size, seen.len() as i64))
}

impl Inner {
    fn ready(&self, key: &str) -> Result<&Entry> {
        match self.index.snapshots.get(key) {
            Some(e) if e.state == State::Ready => Ok(e),
            _ => Err(Error::NotFound(format!("snapshot {key:?} does not exist"))),
        }
    }

    fn save(&self, key: &str) -> Result<()> {
        self.index.save(key).map_err(|e| io_err(format!("writing the snapshotter entry of {key:?}"), e))
    }

    fn delete(&self, id: &str) -> Result<()> {
        self.index.delete(id).map_err(|e| io_err(format!("removing the snapshotter entry of layer {id}"), e))
    }

    fn layer_path(&self, id: &str, sub: &str) -> String {
        format!("{}/{id}/{sub}", self.home)
    }

    /// The shortest base-36 name no snapshot uses.
    fn free_short(&self) -> String {
        let used: HashSet<&str> = self.index.snapshots.values().map(|e| e.short.as_str()).collect();
        (0u64..).map(base36).find(|n| !used.contains(n.as_str())).expect("an unused name exists")
    }

    /// Points `l/<short>` at the layer's `diff` (replacing whatever a crash left there). One
    /// link per snapshot, made once: a mount names its lowers as `L/<short>:L/<short>:…`, and
    /// once containerd shortens a long option string to paths relative to their common parent
    /// (it does so from 3584 bytes on), that is at most 4 bytes per layer for the kernel's 500
    /// (the names in use are the shortest free ones), on any home.
    fn write_link(&self, short: &str, id: &str) -> Result<()> {
        let p = self.index.link_path(short);
        let target = snapshots::link_target(id);
        if fs::read_link(&p).is_ok_and(|t| t.as_os_str() == target.as_str()) {
            return Ok(());
        }
        let tmp = self.index.temp_link_path(short);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| io_err(format!("linking {}", tmp.display()), e))?;
        fs::rename(&tmp, &p).map_err(|e| io_err(format!("renaming {} into place", tmp.display()), e))
    }

    fn remove_link(&self, short: &str) -> Result<()> {
        let p = self.index.link_path(short);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(format!("removing {}", p.display()), e)),
            _ => Ok(()),
        }
    }

    /// The lowerdir option value for a parent chain (keys, nearest first).
    fn lowerdir(&self, parent: Option<&str>) -> Result<(String, usize)> {
        let l = self.index.dir.join(LINKS_DIR);
        let l = l.to_str().expect("the home is UTF-8");
        let mut dirs = Vec::new();
        let mut parent = parent;
        while let Some(p) = parent {
            let e = self
                .index
                .snapshots
                .get(p)
                .ok_or_else(|| Error::Internal(format!("the snapshotter index names a missing parent {p:?}")))?;
            dirs.push(format!("{l}/{}", e.short));
            parent = e.parent.as_deref();
        }
        Ok((dirs.join(":"), dirs.len()))
    }

    /// Finishes what a killed predecessor left: entries still `creating` or `removing` lose
    /// their layer, link and entry; links that no entry owns go; a ready entry's missing or
    /// wrong link is rewritten.
    fn recover(&mut self) -> Result<()> {
        let unfinished: Vec<String> =
            self.index.snapshots.iter().filter(|(_, e)| e.state != State::Ready).map(|(k, _)| k.clone()).collect();
        for key in &unfinished {
            let (id, short) = {
                let e = &self.index.snapshots[key];
                (e.id.clone(), e.short.clone())
            };
            match self.driver.remove_with(&id, RemoveOpts { force: true, ignore_children: false }) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    eprintln!("ovl2-snapshotter: could not finish removing snapshot {key:?} (layer {id}): {e}; will retry at the next start");
                    continue;
                }
            }
            self.remove_link(&short)?;
            self.delete(&id)?;
            self.index.snapshots.remove(key);
        }
        self.sweep_links()?;
        for e in self.index.snapshots.values().filter(|e| e.state == State::Ready) {
            self.write_link(&e.short, &e.id)?;
        }
        Ok(())
    }

    /// Removes links (and temp links) that belong to no snapshot.
    fn sweep_links(&self) -> Result<()> {
        let owned: HashSet<&str> = self.index.snapshots.values().map(|e| e.short.as_str()).collect();
        let dir = self.index.dir.join(LINKS_DIR);
        for ent in fs::read_dir(&dir).map_err(|e| io_err(format!("listing {}", dir.display()), e))? {
            let ent = ent.map_err(|e| io_err(format!("listing {}", dir.display()), e))?;
            if !ent.file_name().to_str().is_some_and(|n| owned.contains(n)) {
                let p = ent.path();
                let r = if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| io_err(format!("removing {}", p.display()), e))?;
            }
        }
        Ok(())
    }

    fn create(
        &mut self,
        kind: Kind,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let labels: BTreeMap<String, String> = labels.into_iter().collect();
        validate_labels(&labels)?;
        if key.is_empty() {
            return Err(Error::InvalidArgument("the snapshot key is empty".into()));
        }
        if self.index.snapshots.contains_key(&key) {
            return Err(Error::AlreadyExists(format!("snapshot {key:?} already exists")));
        }
        let parent = (!parent.is_empty()).then_some(parent);
        let parent_id = match &parent {
            None => None,
            Some(p) => {
                let e = self.ready(p).map_err(|_| Error::NotFound(format!("parent snapshot {p:?} does not exist")))?;
                if e.kind != Kind::Committed {
                    return Err(Error::InvalidArgument(format!(
                        "parent snapshot {p:?} is {}, not committed",
                        e.kind.as_str()
                    )));
                }
                Some(e.id.clone())
            }
        };
        let id = random_id();
        let short = self.free_short();
        let now = SystemTime::now();
        self.index.snapshots.insert(
            key.clone(),
            Entry {
                id: id.clone(),
                short: short.clone(),
                kind,
                parent,
                labels,
                created: now,
                updated: now,
                usage: None,
                state: State::Creating,
            },
        );
        if let Err(e) = self.save(&key) {
            self.index.snapshots.remove(&key);
            let _ = self.index.delete(&id);
            return Err(e);
        }
        let made = match kind {
            Kind::View => self.driver.create(&id, parent_id.as_deref(), &CreateOpts::default()),
            _ => self.driver.create_rw(&id, parent_id.as_deref(), &CreateOpts::default()),
        }
        .map_err(Error::from)
        .and_then(|()| self.write_link(&short, &id));
        if let Err(e) = made {
            let _ = self.driver.remove_with(&id, RemoveOpts { force: true, ignore_children: false });
            let _ = self.remove_link(&short);
            self.delete(&id)?;
            self.index.snapshots.remove(&key);
            return Err(e);
        }
        self.index.snapshots.get_mut(&key).expect("just inserted").state = State::Ready;
        self.save(&key)?;
        self.mounts(&key)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let e = self.ready(key)?;
        let (lowerdir, depth) = self.lowerdir(e.parent.as_deref())?;
        let bind = |source: String, rw: &str| Mount {
            r#type: "bind".into(),
            source,
            options: vec![rw.into(), "rbind".into()],
            ..Default::default()
        };
        let overlay = |mut options: Vec<String>| {
            let mut o = self.overlay_opts.clone();
            o.append(&mut options);
            Mount { r#type: "overlay".into(), source: "overlay".into(), options: o, ..Default::default() }
        };
        Ok(match e.kind {
            Kind::Committed => {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is committed; only active snapshots and views have mounts"
                )))
            }
            Kind::Active if depth == 0 => vec![bind(self.layer_path(&e.id, "diff"), "rw")],
            // The upperdir goes through the snapshot's own short link, beside its lowerdirs:
            // containerd 2.x mounts an active snapshot read-only (to read the rootfs' /etc/group)
            // by moving the upperdir to the top of the lowerdirs, and its trimming to their
            // common parent keeps 500 layers within a page only if that parent is `l/`.
            Kind::Active => vec![overlay(vec![
                format!("workdir={}", self.layer_path(&e.id, "work")),
                format!("upperdir={}", self.index.link_path(&e.short).to_str().expect("the home is UTF-8")),
                format!("lowerdir={lowerdir}"),
            ])],
            Kind::View if depth == 0 => vec![bind(self.layer_path(&e.id, "diff"), "ro")],
            Kind::View if depth == 1 => {
                let p = &self.index.snapshots[e.parent.as_deref().expect("depth 1 has a parent")];
                vec![bind(self.layer_path(&p.id, "diff"), "ro")]
            }
            Kind::View => vec![overlay(vec![format!("lowerdir={lowerdir}")])],
        })
    }

    fn commit(&mut self, name: String, key: String, labels: HashMap<String, String>) -> Result<()> {
        let labels: BTreeMap<String, String> = labels.into_iter().collect();
        validate_labels(&labels)?;
        let e = self.ready(&key)?;
        if e.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!("snapshot {key:?} is {}, not active", e.kind.as_str())));
        }
        if self.index.snapshots.contains_key(&name) {
            return Err(Error::AlreadyExists(format!("snapshot {name:?} already exists")));
        }
        let diff = PathBuf::from(self.layer_path(&e.id, "diff"));
        let usage = disk_usage(&diff).map_err(|err| io_err(format!("measuring {}", diff.display()), err))?;
        let now = SystemTime::now();
        let old = self.index.snapshots.remove(&key).expect("checked above");
        let new = Entry {
            kind: Kind::Committed,
            labels,
            created: now,
            updated: now,
            usage: Some(usage),
            state: State::Ready,
            ..old.clone()
        };
        self.index.snapshots.insert(name.clone(), new);
        if let Err(err) = self.save(&name) {
            self.index.snapshots.remove(&name);
            self.index.snapshots.insert(key, old);
            return Err(err);
        }
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<()> {
        let e = self.ready(key)?;
        let (id, short) = (e.id.clone(), e.short.clone());
        if let Some((child, _)) = self.index.snapshots.iter().find(|(_, c)| c.parent.as_deref() == Some(key)) {
            return Err(Error::FailedPrecondition(format!(
                "cannot remove snapshot {key:?}: snapshot {child:?} builds on it"
            )));
        }
        self.set_state(key, State::Removing)?;
        match self.driver.remove_with(&id, RemoveOpts { force: false, ignore_children: false }) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                self.set_state(key, State::Ready)?;
                return Err(err.into());
            }
        }
        self.remove_link(&short)?;
        self.delete(&id)?;
        self.index.snapshots.remove(key);
        Ok(())
    }

    fn set_state(&mut self, key: &str, state: State) -> Result<()> {
        let e = self.index.snapshots.get_mut(key).expect("caller checked the key");
        let old = std::mem::replace(&mut e.state, state);
        if let Err(err) = self.save(key) {
            self.index.snapshots.get_mut(key).expect("caller checked the key").state = old;
            return Err(err);
        }
        Ok(())
    }

    /// containerd's `UpdateInfo`: with no field paths the labels are replaced; `labels` replaces
    /// them too; `labels.KEY` sets one label (an empty value removes it); other fields are
    /// immutable.
    fn update(&mut self, new: Info, fieldpaths: Option<Vec<String>>) -> Result<Info> {
        let key = new.name.clone();
        let mut e = self.ready(&key)?.clone();
        let given: BTreeMap<String, String> = new.labels.into_iter().collect();
        let paths = fieldpaths.unwrap_or_default();
        if paths.is_empty() {
            e.labels = given;
        } else {
            for p in &paths {
                if let Some(l) = p.strip_prefix("labels.") {
                    match given.get(l) {
                        Some(v) if !v.is_empty() => {
                            e.labels.insert(l.to_owned(), v.clone());
                        }
                        _ => {
                            e.labels.remove(l);
                        }
                    }
                } else if p == "labels" {
                    e.labels = given.clone();
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update field {p:?} of snapshot {key:?}: only labels can change"
                    )));
                }
            }
        }
        validate_labels(&e.labels)?;
        e.updated = SystemTime::now();
        let old = self.index.snapshots.insert(key.clone(), e.clone()).expect("checked above");
        if let Err(err) = self.save(&key) {
            self.index.snapshots.insert(key, old);
            return Err(err);
        }
        Ok(info(&key, &e))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let e = self.ready(key)?;
        let (size, inodes) = match (e.kind, e.usage) {
            (Kind::Active, _) => {
                let diff = PathBuf::from(self.layer_path(&e.id, "diff"));
                disk_usage(&diff).map_err(|err| io_err(format!("measuring {}", diff.display()), err))?
            }
            (_, Some(u)) => u,
            (_, None) => (0, 0),
        };
        Ok(Usage { size, inodes })
    }
}

#[tonic::async_trait]
impl Snapshotter for Ovl2Snapshotter {
    type Error = Error;

    async fn stat(&self, key: String) -> Result<Info> {
        self.run(move |i| Ok(info(&key, i.ready(&key)?))).await
    }

    async fn update(&self, info: Info, fieldpaths: Option<Vec<String>>) -> Result<Info> {
        self.run(move |i| i.update(info, fieldpaths)).await
    }

    async fn usage(&self, key: String) -> Result<Usage> {
        self.run(move |i| i.usage(&key)).await
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>> {
        self.run(move |i| i.mounts(&key)).await
    }

    async fn prepare(&self, key: String, parent: String, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.run(move |i| i.create(Kind::Active, key, parent, labels)).await
    }

    async fn view(&self, key: String, parent: String, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.run(move |i| i.create(Kind::View, key, parent, labels)).await
    }

    async fn commit(&self, name: String, key: String, labels: HashMap<String, String>) -> Result<()> {
        self.run(move |i| i.commit(name, key, labels)).await
    }

    async fn remove(&self, key: String) -> Result<()> {
        self.run(move |i| i.remove(&key)).await
    }

    async fn clear(&self) -> Result<()> {
        self.run(|i| i.sweep_links()).await
    }

    type InfoStream = futures::stream::Iter<std::vec::IntoIter<Result<Info>>>;

    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<Self::InfoStream> {
        let filter = Filter::parse_all(&filters).map_err(Error::InvalidArgument)?;
        let infos = self
            .run(move |i| {
                Ok(i.index
                    .snapshots
                    .iter()
                    .filter(|(_, e)| e.state == State::Ready)
                    .filter(|(k, e)| filter.matches(&Visible(k, e)))
                    .map(|(k, e)| Ok(info(k, e)))
                    .collect::<Vec<_>>())
            })
            .await?;
        Ok(futures::stream::iter(infos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("ovl2-snap-{name}-{}", random_id()));
        fs::create_dir(&p).unwrap();
        p
    }

    fn labels() -> HashMap<String, String> {
        [("containerd.io/gc.root".to_owned(), "x".to_owned())].into_iter().collect()
    }

    #[test]
    fn commit_renames_the_key_and_survives_a_restart() {
        let h = home("commit");
        {
            let s = Ovl2Snapshotter::open(&h).unwrap();
            let mut i = lock(&s.inner);
            i.create(Kind::Active, "default/1/a b/c".into(), String::new(), labels()).unwrap();
            fs::write(h.join(&i.index.snapshots["default/1/a b/c"].id).join("diff/f"), b"x").unwrap();
            i.commit("default/2/sha256:abc".into(), "default/1/a b/c".into(), labels()).unwrap();
            let m = i.create(Kind::Active, "default/3/top".into(), "default/2/sha256:abc".into(), labels()).unwrap();
            assert_eq!(m[0].r#type, "overlay");
        }
        let s = Ovl2Snapshotter::open(&h).unwrap();
        let i = lock(&s.inner);
        assert!(i.ready("default/1/a b/c").is_err());
        let c = i.ready("default/2/sha256:abc").unwrap();
        assert_eq!(c.kind, Kind::Committed);
        assert!(c.usage.unwrap().1 >= 2, "the diff dir and its file");
        let m = i.mounts("default/3/top").unwrap();
        let lower = m[0].options.iter().find_map(|o| o.strip_prefix("lowerdir=")).unwrap();
        assert_eq!(fs::read(Path::new(lower).join("f")).unwrap(), b"x", "the short link reaches the parent's diff");
        drop(i);
        drop(s);
        fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn a_snapshot_left_half_made_or_half_removed_is_gone_after_a_restart() {
        let h = home("recover");
        let (half_made, half_removed, kept) = {
            let s = Ovl2Snapshotter::open(&h).unwrap();
            let mut i = lock(&s.inner);
            i.create(Kind::Active, "base-tmp".into(), String::new(), labels()).unwrap();
            i.commit("base".into(), "base-tmp".into(), labels()).unwrap();
            i.create(Kind::Active, "made".into(), "base".into(), labels()).unwrap();
            i.create(Kind::View, "removed".into(), "base".into(), labels()).unwrap();
            // What a SIGKILL leaves between the intent and the end of each step.
            i.set_state("made", State::Creating).unwrap();
            i.set_state("removed", State::Removing).unwrap();
            fs::write(i.index.dir.join(LINKS_DIR).join("zz"), b"").unwrap();
            let id = |k: &str| i.index.snapshots[k].id.clone();
            (id("made"), id("removed"), id("base"))
        };
        let s = Ovl2Snapshotter::open(&h).unwrap();
        let i = lock(&s.inner);
        assert_eq!(i.index.snapshots.keys().collect::<Vec<_>>(), ["base"]);
        assert!(!h.join(&half_made).exists() && !h.join(&half_removed).exists());
        assert!(h.join(&kept).join("diff").is_dir());
        let links: Vec<_> =
            fs::read_dir(i.index.dir.join(LINKS_DIR)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(links, [std::ffi::OsString::from(&i.index.snapshots["base"].short)]);
        assert!(i.driver.check().unwrap().is_empty(), "ovl2 check is clean: {:?}", i.driver.check());
        drop(i);
        drop(s);
        fs::remove_dir_all(&h).unwrap();
    }

    /// The mount data containerd (1.6 and 2.x, `core/mount/mount_linux.go`) passes to mount(2)
    /// for these overlay options; `readonly` first applies its `readonlyOverlay` (the upperdir
    /// becomes the top lowerdir), as 2.x's `ctr run` does to read the rootfs' /etc/group.
    fn containerd_mount_data(options: &[String], readonly: bool) -> String {
        let mut opts: Vec<String> = options.iter().filter(|o| *o != "rw" && *o != "ro").cloned().collect();
        if readonly {
            let upper = opts.iter().find_map(|o| o.strip_prefix("upperdir=")).map(str::to_owned);
            opts.retain(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="));
            if let Some(u) = upper {
                for o in opts.iter_mut().filter(|o| o.starts_with("lowerdir=")) {
                    *o = format!("lowerdir={u}:{}", &o["lowerdir=".len()..]);
                }
            }
        }
        // compactLowerdirOption, used once the options reach a page less 512 bytes: lowerdirs
        // become relative to the parent of their longest common prefix.
        if opts.iter().map(String::len).sum::<usize>() >= 4096 - 512 {
            let i = opts.iter().position(|o| o.starts_with("lowerdir=")).unwrap();
            let lower = opts[i]["lowerdir=".len()..].to_owned();
            let dirs: Vec<&str> = lower.split(':').collect();
            let (min, max) = (dirs.iter().min().unwrap(), dirs.iter().max().unwrap());
            let lcp = min.bytes().zip(max.bytes()).take_while(|(a, b)| a == b).count();
            let common = Path::new(&min[..lcp]).parent().unwrap().to_str().unwrap().to_owned() + "/";
            if common != "//" && dirs.iter().all(|d| d.len() > common.len()) {
                let rel: Vec<&str> = dirs.iter().map(|d| &d[common.len()..]).collect();
                opts.remove(i);
                opts.push(format!("lowerdir={}", rel.join(":")));
            }
        }
        opts.join(",")
    }

    #[test]
    fn a_500_layer_active_snapshot_mounts_read_only_within_a_page_as_containerd_2_mounts_it() {
        // containerd 2.x's `ctr run` mounts the new container's snapshot read-only to read its
        // /etc/group: the upperdir joins the lowerdirs, and only a common parent shared by all
        // of them keeps containerd's trimming under mount(2)'s one page at 500 layers.
        let h = home("deep-ro");
        // Without fsync: 1,000 steps, and no crash to survive here.
        let s = Ovl2Snapshotter::open_with(&h, ovl2_core::Options { sync: false, ..Default::default() }).unwrap();
        let mut i = lock(&s.inner);
        let mut parent = String::new();
        for n in 0..500 {
            i.create(Kind::Active, format!("tmp{n}"), parent.clone(), labels()).unwrap();
            i.commit(format!("l{n}"), format!("tmp{n}"), labels()).unwrap();
            parent = format!("l{n}");
        }
        let m = i.create(Kind::Active, "ctr".into(), parent, labels()).unwrap();
        assert_eq!(m[0].r#type, "overlay");
        for readonly in [false, true] {
            let data = containerd_mount_data(&m[0].options, readonly);
            assert!(data.len() <= 4096, "readonly={readonly}: {} bytes of mount data: {data}", data.len());
        }
        drop(i);
        drop(s);
        fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn ovl2_rm_is_refused_while_containerd_holds_the_snapshot_and_a_forced_one_heals_at_start() {
        let h = home("rm");
        let id = {
            let s = Ovl2Snapshotter::open(&h).unwrap();
            let mut i = lock(&s.inner);
            i.create(Kind::Active, "default/1/a".into(), String::new(), labels()).unwrap();
            let id = i.index.snapshots["default/1/a"].id.clone();
            // Another process (`ovl2 rm`) while the service runs.
            let other = Driver::open(&h, ovl2_core::Options::default()).unwrap();
            let e = other.remove(&id, false).unwrap_err();
            assert!(e.to_string().contains("containerd snapshot \"default/1/a\""), "{e}");
            assert!(other.check().unwrap().is_empty(), "a live index is not damage: {:?}", other.check());
            other.remove(&id, true).unwrap();
            let p = other.check().unwrap();
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(!p[0].repairable, "the running service's index is left alone: {p:?}");
            id
        };
        // The next start's repair drops the entry whose layer is gone, and the service starts.
        let s = Ovl2Snapshotter::open(&h).unwrap();
        let i = lock(&s.inner);
        assert!(i.index.snapshots.is_empty(), "{:?}", i.index.snapshots.keys().collect::<Vec<_>>());
        assert!(!i.index.dir.join("snapshots").join(&id).exists());
        assert!(i.driver.check().unwrap().is_empty(), "{:?}", i.driver.check());
        drop(i);
        drop(s);
        fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn a_second_service_on_the_same_home_is_refused() {
        let h = home("lock");
        let s = Ovl2Snapshotter::open(&h).unwrap();
        match Ovl2Snapshotter::open(&h) {
            Err(Error::FailedPrecondition(m)) => assert!(m.contains("already serves"), "{m}"),
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
        drop(s);
        fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn short_names_are_the_shortest_free_base36_numbers() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(499), "dv");
    }
}
