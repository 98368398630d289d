//! The mount engine: every way ovl2 can mount an overlay, in one place.
//!
//! - `new`: `fsopen("overlay")`, one `lowerdir+` per layer, `fsmount`, `move_mount`. Layers
//!   go in as fds where the kernel takes them (no length or escaping limits at all), else as
//!   path strings of at most 255 bytes each.
//! - `legacy`: `mount(2)` with one option string that must fit in a page: absolute `l/`
//!   paths when they fit; else paths relative to home, from a thread that unshared its
//!   filesystem context and chdir'ed there (never the whole process, never a re-exec); else
//!   `/proc/self/fd` numbers, a few bytes per layer, which fits 500 layers.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_fd, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags,
};

use super::probe::Features;
use super::MountStrategy;
use crate::error::{Error, Result};
use crate::layout;

/// How a particular mount was made; reported by `mounts()` and used by tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMethod {
    /// New mount API, layers passed as file descriptors.
    NewFd,
    /// New mount API, layers passed as path strings.
    NewPath,
    /// `mount(2)` with absolute `l/` paths.
    LegacyAbsolute,
    /// `mount(2)` with paths relative to home, from a thread chdir'ed there.
    LegacyRelative,
    /// `mount(2)` with `/proc/self/fd` numbers as layer names.
    LegacyFd,
}

impl MountMethod {
    /// Stable name, e.g. `new-fd` or `legacy-relative`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountMethod::NewFd => "new-fd",
            MountMethod::NewPath => "new-path",
            MountMethod::LegacyAbsolute => "legacy-absolute",
            MountMethod::LegacyRelative => "legacy-relative",
            MountMethod::LegacyFd => "legacy-fd",
        }
    }
}

impl std::fmt::Display for MountMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to mount one layer.
pub(crate) struct Request<'a> {
    pub home: &'a Path,
    pub home_fd: BorrowedFd<'a>,
    pub links_fd: BorrowedFd<'a>,
    pub id: &'a str,
    pub layer_fd: BorrowedFd<'a>,
    /// Short ids from the layer's `lower` file, nearest first.
    pub lowers: &'a [String],
    /// Mount without upper: the layer's own diff becomes the top lower.
    pub readonly: bool,
    pub label: Option<&'a str>,
    pub volatile: bool,
}

/// One layer as the engine sees it: how to name it in each method.
enum Layer<'a> {
    /// `l/<short>` (a lower).
    Short(&'a str),
    /// `<id>/<name>` (the layer's own diff or work).
    Own(&'static str),
    /// `.ovl2/empty`: overlay needs two lowers when there is no upper, so a read-only
    /// mount of a base layer gets this empty directory under its diff.
    Empty,
}

impl Request<'_> {
    fn layers(&self) -> Vec<Layer<'_>> {
        let mut v = Vec::with_capacity(self.lowers.len() + 1);
        if self.readonly {
            v.push(Layer::Own("diff"));
        }
        v.extend(self.lowers.iter().map(|l| Layer::Short(l)));
        if self.readonly && v.len() == 1 {
            v.push(Layer::Empty);
        }
        v
    }

    fn absolute(&self, l: &Layer<'_>) -> String {
        match l {
            Layer::Short(s) => format!("{}/l/{s}", self.home.display()),
            Layer::Own(n) => format!("{}/{}/{n}", self.home.display(), self.id),
            Layer::Empty => format!("{}/.ovl2/empty", self.home.display()),
        }
    }

    fn relative(&self, l: &Layer<'_>) -> String {
        match l {
            Layer::Short(s) => format!("l/{s}"),
            Layer::Own(n) => format!("{}/{n}", self.id),
            Layer::Empty => ".ovl2/empty".to_owned(),
        }
    }

    fn open(&self, l: &Layer<'_>, flags: OFlags) -> Result<OwnedFd> {
        let flags = flags | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let r = match l {
            // Follows the l/ symlink, as the kernel would for a path.
            Layer::Short(s) => rustix::fs::openat(self.links_fd, *s, flags, Mode::empty()),
            Layer::Own(n) => rustix::fs::openat(self.layer_fd, *n, flags | OFlags::NOFOLLOW, Mode::empty()),
            Layer::Empty => rustix::fs::openat(self.home_fd, c".ovl2/empty", flags | OFlags::NOFOLLOW, Mode::empty()),
        };
        r.map_err(|e| Error::io(format!("opening layer {} for mounting {:?}", self.relative(l), self.id), e))
    }
}

/// Decides how `req` will be mounted, before anything is touched, so the reference record
/// can name the method in the same write that records the intent.
pub(crate) fn choose(req: &Request<'_>, strategy: MountStrategy, f: &Features) -> Result<MountMethod> {
    let new_ok = f.new_api && (f.fd_layers || f.lowerdir_plus);
    Ok(match strategy {
        MountStrategy::New if !new_ok => {
            return Err(Error::Unsupported(
                "the new mount API with lowerdir+ is not available on this kernel (use the legacy strategy)".into(),
            ))
        }
        MountStrategy::New | MountStrategy::Auto if new_ok => {
            if f.fd_layers {
                MountMethod::NewFd
            } else {
                MountMethod::NewPath
            }
        }
        _ if fits(&legacy_data(req, f, &|l| req.absolute(l))) => MountMethod::LegacyAbsolute,
        _ if fits(&legacy_data(req, f, &|l| req.relative(l))) => MountMethod::LegacyRelative,
        _ => MountMethod::LegacyFd,
    })
}

/// Mounts `req` on `<id>/merged` the way [`choose`] decided.
pub(crate) fn mount(req: &Request<'_>, method: MountMethod, f: &Features) -> Result<()> {
    match method {
        MountMethod::NewFd | MountMethod::NewPath => mount_new(req, f, method == MountMethod::NewFd),
        MountMethod::LegacyAbsolute => {
            let target = format!("{}/{}/merged", req.home.display(), req.id);
            legacy_mount_call(req, None, &target, &legacy_data(req, f, &|l| req.absolute(l)))
        }
        MountMethod::LegacyRelative => {
            let target = format!("{}/merged", req.id);
            legacy_mount_call(req, Some(req.home_fd), &target, &legacy_data(req, f, &|l| req.relative(l)))
        }
        MountMethod::LegacyFd => mount_legacy_fd(req, f),
    }
}

/// Mounts `req` the way [`choose`] decided but attaches it nowhere a path could reach: the
/// returned fd is the mount's root, and the mount goes away with the last fd on it (or with
/// the process). Used for private views, such as applying a tar through a staged upper.
/// The new API never attaches the mount; a legacy mount sits on `<id>/merged` only until
/// it is opened and lazily detached.
pub(crate) fn mount_detached(req: &Request<'_>, method: MountMethod, f: &Features) -> Result<OwnedFd> {
    let attached = match method {
        MountMethod::NewFd | MountMethod::NewPath => return new_mount_fd(req, f, method == MountMethod::NewFd),
        _ => {
            mount(req, method, f)?;
            rustix::fs::openat(
                req.layer_fd,
                layout::MERGED,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        }
    };
    let target = format!("/proc/self/fd/{}/merged", req.layer_fd.as_raw_fd());
    let detached = rustix::mount::unmount(target.as_str(), rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| Error::io(format!("detaching the private mount at {}/merged", req.id), e));
    let root = attached.map_err(|e| Error::io(format!("opening the private mount at {}/merged", req.id), e))?;
    detached?;
    Ok(root)
}

fn mount_new(req: &Request<'_>, f: &Features, use_fds: bool) -> Result<()> {
    let mnt = new_mount_fd(req, f, use_fds)?;
    move_mount(&mnt, c"", req.layer_fd, layout::MERGED, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| Error::io(format!("attaching the mount of {:?} at {}/merged", req.id, req.id), e))
}

/// Builds the overlay with the new mount API and returns the detached mount.
fn new_mount_fd(req: &Request<'_>, f: &Features, use_fds: bool) -> Result<OwnedFd> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| Error::io("fsopen(\"overlay\")", e))?;
    let fd_flags = if f.opath_fds { OFlags::PATH } else { OFlags::RDONLY };
    // Keep every fd alive until the superblock exists.
    let mut keep: Vec<OwnedFd> = Vec::new();
    let configure = |keep: &mut Vec<OwnedFd>| -> Result<()> {
        let set_str = |k: &str, v: &str| fsconfig_set_string(&fs, k, v).map_err(|e| (k.to_owned(), e));
        let layer = |key: &str, l: &Layer<'_>, keep: &mut Vec<OwnedFd>| -> Result<()> {
            if use_fds {
                let fd = req.open(l, fd_flags)?;
                fsconfig_set_fd(&fs, key, &fd).map_err(|e| config_error(&fs, key, e))?;
                keep.push(fd);
            } else {
                // lowerdir+ values are taken raw; upperdir and workdir strings are unescaped
                // by the kernel like legacy options.
                let abs = if key == "lowerdir+" { req.absolute(l) } else { escape(&req.absolute(l)) };
                let value = if abs.len() <= 255 {
                    abs
                } else {
                    // Too long for fsconfig: name it through an O_PATH fd instead.
                    let fd = req.open(l, OFlags::PATH)?;
                    let v = format!("/proc/self/fd/{}", fd.as_raw_fd());
                    keep.push(fd);
                    v
                };
                fsconfig_set_string(&fs, key, value.as_str()).map_err(|e| config_error(&fs, key, e))?;
            }
            Ok(())
        };
        set_str("source", "overlay").map_err(|(k, e)| config_error(&fs, &k, e))?;
        if f.index_param {
            set_str("index", "off").map_err(|(k, e)| config_error(&fs, &k, e))?;
        }
        if f.userxattr {
            fsconfig_set_flag(&fs, "userxattr").map_err(|e| config_error(&fs, "userxattr", e))?;
        }
        if req.volatile && !req.readonly {
            fsconfig_set_flag(&fs, "volatile").map_err(|e| config_error(&fs, "volatile", e))?;
        }
        if let Some(label) = req.label {
            set_str("context", label).map_err(|(k, e)| config_error(&fs, &k, e))?;
        }
        for l in req.layers() {
            layer("lowerdir+", &l, keep)?;
        }
        if !req.readonly {
            layer("upperdir", &Layer::Own("diff"), keep)?;
            layer("workdir", &Layer::Own("work"), keep)?;
        }
        fsconfig_create(&fs).map_err(|e| config_error(&fs, "create", e))
    };
    configure(&mut keep)?;
    drop(keep);
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| Error::io(format!("fsmount of layer {:?}", req.id), e))
}

/// An fsconfig failure with the kernel's own explanation from the context's message log.
fn config_error(fs: &OwnedFd, key: &str, e: rustix::io::Errno) -> Error {
    let mut log = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        log.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
    }
    let detail = if log.is_empty() { String::new() } else { format!(" ({})", log.join("; ")) };
    Error::io(format!("overlay fsconfig {key:?} failed{detail}"), e)
}

/// Escapes a path for the legacy option string: the kernel splits options on `,` and
/// lowerdir on `:`, and unescapes backslashes.
pub(crate) fn escape(p: &str) -> String {
    let mut s = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '\\' | ':' | ',') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// The legacy option string for the given way of naming layers.
fn legacy_data(req: &Request<'_>, f: &Features, name: &dyn Fn(&Layer<'_>) -> String) -> String {
    let mut opts = Vec::new();
    if f.index_param {
        opts.push("index=off".to_owned());
    }
    if f.userxattr {
        opts.push("userxattr".to_owned());
    }
    if req.volatile && !req.readonly {
        opts.push("volatile".to_owned());
    }
    let lowers: Vec<String> = req.layers().iter().map(|l| escape(&name(l))).collect();
    opts.push(format!("lowerdir={}", lowers.join(":")));
    if !req.readonly {
        opts.push(format!("upperdir={}", escape(&name(&Layer::Own("diff")))));
        opts.push(format!("workdir={}", escape(&name(&Layer::Own("work")))));
    }
    if let Some(label) = req.label {
        opts.push(format!("context=\"{label}\""));
    }
    opts.join(",")
}

fn fits(data: &str) -> bool {
    // The kernel copies the string into one page, including the trailing NUL.
    data.len() < rustix::param::page_size()
}

fn mount_legacy_fd(req: &Request<'_>, f: &Features) -> Result<()> {
    // Name every layer by an fd number relative to /proc/self/fd.
    let mut fds: std::collections::HashMap<String, OwnedFd> = std::collections::HashMap::new();
    let mut all = req.layers();
    if !req.readonly {
        all.extend([Layer::Own("diff"), Layer::Own("work")]);
    }
    for l in &all {
        fds.insert(req.relative(l), req.open(l, OFlags::PATH)?);
    }
    let data = legacy_data(req, f, &|l| fds[&req.relative(l)].as_raw_fd().to_string());
    if !fits(&data) {
        return Err(Error::Unsupported(format!(
            "cannot mount layer {:?}: mount options too large even as fd numbers ({} bytes, page is {})",
            req.id,
            data.len(),
            rustix::param::page_size()
        )));
    }
    let proc_fd =
        crate::fsutil::open_dir_path(Path::new("/proc/self/fd")).map_err(|e| Error::io("opening /proc/self/fd", e))?;
    let target = format!("{}/merged", req.layer_fd.as_raw_fd());
    legacy_mount_call(req, Some(proc_fd.as_fd()), &target, &data)
}

/// `mount(2)` with an option string; with `cwd`, from the mount thread sitting in that
/// directory, so relative layer names resolve there.
fn legacy_mount_call(req: &Request<'_>, cwd: Option<BorrowedFd<'_>>, target: &str, data: &str) -> Result<()> {
    let data = CString::new(data).map_err(|_| Error::InvalidArgument("mount options contain NUL".into()))?;
    let target_c = CString::new(target).map_err(|_| Error::InvalidArgument("mount target contains NUL".into()))?;
    let res = match cwd {
        None => rustix::mount::mount(c"overlay", target_c.as_c_str(), c"overlay", MountFlags::empty(), data.as_c_str()),
        Some(dir) => {
            let dir = dir.try_clone_to_owned().map_err(|e| Error::io("duplicating a directory fd", e))?;
            mount_thread::run(dir, target_c, data.clone())?
        }
    };
    res.map_err(|e| {
        Error::io(
            format!("error creating overlay mount to {}/merged ({} bytes of options)", req.id, data.as_bytes().len()),
            e,
        )
    })
}

/// One long-lived thread per process for mounts that need a working directory. It unshares
/// its filesystem context once, so its chdirs never affect the rest of the process, and it
/// saves spawning a thread per mount. After a fork the child starts its own.
mod mount_thread {
    use std::ffi::CString;
    use std::os::fd::OwnedFd;
    use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
    use std::sync::Mutex;

    use crate::error::{Error, Result};

    struct Job {
        dir: OwnedFd,
        target: CString,
        data: CString,
        reply: SyncSender<rustix::io::Result<()>>,
    }

    static THREAD: Mutex<Option<(u32, Sender<Job>)>> = Mutex::new(None);

    pub(super) fn run(dir: OwnedFd, target: CString, data: CString) -> Result<rustix::io::Result<()>> {
        let (reply, answer) = sync_channel(1);
        let mut job = Job { dir, target, data, reply };
        for _ in 0..2 {
            let tx = sender()?;
            match tx.send(job) {
                Ok(()) => return answer.recv().map_err(|_| Error::Corrupt("the mount thread died".into())),
                // The thread is gone (it exited after a failure): start another once.
                Err(e) => {
                    job = e.0;
                    *THREAD.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
        }
        Err(Error::Corrupt("the mount thread cannot be started".into()))
    }

    fn sender() -> Result<Sender<Job>> {
        let mut slot = THREAD.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        if let Some((owner, tx)) = slot.as_ref() {
            if *owner == pid {
                return Ok(tx.clone());
            }
        }
        let (tx, rx) = channel::<Job>();
        let (ready_tx, ready_rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("ovl2-mount".into())
            .spawn(move || {
                // SAFETY: CLONE_FS only detaches this thread's cwd/root/umask; the fd table
                // stays shared, so fds remain valid on every thread.
                let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) };
                let ok = unshared.is_ok();
                let _ = ready_tx.send(unshared);
                if !ok {
                    return;
                }
                for job in rx {
                    let r = rustix::process::fchdir(&job.dir).and_then(|()| {
                        rustix::mount::mount(
                            c"overlay",
                            job.target.as_c_str(),
                            c"overlay",
                            rustix::mount::MountFlags::empty(),
                            job.data.as_c_str(),
                        )
                    });
                    let _ = job.reply.send(r);
                }
            })
            .map_err(|e| Error::io("starting the mount thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::io("unshare(CLONE_FS) on the mount thread", e)),
            Err(_) => return Err(Error::Corrupt("the mount thread died while starting".into())),
        }
        *slot = Some((pid, tx.clone()));
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(index: bool, userxattr: bool) -> Features {
        Features { index_param: index, userxattr, ..Features::default() }
    }

    fn with_request<T>(readonly: bool, label: Option<&str>, volatile: bool, f: impl FnOnce(&Request<'_>) -> T) -> T {
        let root = crate::fsutil::open_dir_path(Path::new("/")).unwrap();
        let lowers = vec!["AAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(), "BBBBBBBBBBBBBBBBBBBBBBBBBB".to_string()];
        let req = Request {
            home: Path::new("/var/lib/o:v,l\\2"),
            home_fd: root.as_fd(),
            links_fd: root.as_fd(),
            id: "ctr",
            layer_fd: root.as_fd(),
            lowers: &lowers,
            readonly,
            label,
            volatile,
        };
        f(&req)
    }

    #[test]
    fn legacy_options_match_docker_and_escape_the_home() {
        let data = with_request(false, Some("system_u:object_r:container_file_t:s0"), false, |r| {
            legacy_data(r, &features(true, false), &|l| r.absolute(l))
        });
        assert_eq!(
            data,
            "index=off,lowerdir=/var/lib/o\\:v\\,l\\\\2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA:/var/lib/o\\:v\\,l\\\\2/l/BBBBBBBBBBBBBBBBBBBBBBBBBB,\
             upperdir=/var/lib/o\\:v\\,l\\\\2/ctr/diff,workdir=/var/lib/o\\:v\\,l\\\\2/ctr/work,\
             context=\"system_u:object_r:container_file_t:s0\""
        );
    }

    #[test]
    fn readonly_relative_userxattr_and_volatile_options() {
        let ro = with_request(true, None, true, |r| legacy_data(r, &features(false, true), &|l| r.relative(l)));
        // Read-only: own diff on top, no upper or work, and volatile has no meaning.
        assert_eq!(ro, "userxattr,lowerdir=ctr/diff:l/AAAAAAAAAAAAAAAAAAAAAAAAAA:l/BBBBBBBBBBBBBBBBBBBBBBBBBB");
        let rw = with_request(false, None, true, |r| legacy_data(r, &features(true, false), &|l| r.relative(l)));
        assert!(rw.starts_with("index=off,volatile,lowerdir=l/AAAA"), "{rw}");
    }

    #[test]
    fn choose_follows_the_strategy_and_the_page() {
        let all =
            Features { new_api: true, lowerdir_plus: true, fd_layers: true, opath_fds: true, ..Features::default() };
        with_request(false, None, false, |r| {
            assert_eq!(choose(r, MountStrategy::Auto, &all).unwrap(), MountMethod::NewFd);
            let paths = Features { fd_layers: false, opath_fds: false, ..all.clone() };
            assert_eq!(choose(r, MountStrategy::New, &paths).unwrap(), MountMethod::NewPath);
            assert_eq!(choose(r, MountStrategy::Legacy, &all).unwrap(), MountMethod::LegacyAbsolute);
            assert!(choose(r, MountStrategy::New, &Features::default()).is_err());
            assert_eq!(choose(r, MountStrategy::Auto, &Features::default()).unwrap(), MountMethod::LegacyAbsolute);
        });
    }

    #[test]
    fn escapes_option_separators() {
        assert_eq!(escape("/a:b,c\\d"), "/a\\:b\\,c\\\\d");
        assert_eq!(escape("/plain/path"), "/plain/path");
    }
}
