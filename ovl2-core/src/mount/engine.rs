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
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::str::FromStr;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_fd, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags,
};

use super::probe::Features;
use crate::error::{Error, Result};
use crate::layout;

/// Which kernel interface mounts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountStrategy {
    /// The best the kernel offers: `new` when available, else `legacy`.
    #[default]
    Auto,
    /// `fsopen`/`fsconfig` with one `lowerdir+` per layer (as fds where possible).
    New,
    /// `mount(2)` with an option string (absolute, relative, or fd-number layer names).
    Legacy,
}

impl MountStrategy {
    /// The name used by the option, the CLI flag and `OVL2_MOUNT_STRATEGY`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountStrategy::Auto => "auto",
            MountStrategy::New => "new",
            MountStrategy::Legacy => "legacy",
        }
    }

    /// The strategy named by `OVL2_MOUNT_STRATEGY`, if set.
    pub fn from_env() -> Result<Option<MountStrategy>> {
        match std::env::var("OVL2_MOUNT_STRATEGY") {
            Ok(v) if !v.is_empty() => {
                v.parse().map(Some).map_err(|e| Error::InvalidArgument(format!("OVL2_MOUNT_STRATEGY: {e}")))
            }
            _ => Ok(None),
        }
    }
}

impl FromStr for MountStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(MountStrategy::Auto),
            "new" => Ok(MountStrategy::New),
            "legacy" => Ok(MountStrategy::Legacy),
            other => Err(format!("unknown mount strategy {other:?} (expected auto, new or legacy)")),
        }
    }
}

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
    pub private_fd: BorrowedFd<'a>,
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
#[derive(Clone, Copy)]
enum Layer<'a> {
    /// `l/<short>` (a lower).
    Short(&'a str),
    /// `<id>/<name>` (the layer's own diff or work).
    Own(&'static str),
    /// `.ovl2/empty`: overlay needs two lowers when there is no upper, so a read-only
    /// mount of a base layer gets this empty directory under its diff.
    Empty,
}

/// A layer directory opened without following any symlink inside the home, with the
/// identity the kernel must find when it resolves the layer's path string (taken only
/// for the methods that hand the kernel path strings, see [`Request::open`]).
struct Opened {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

/// How [`Request::open`] opens `<id>/diff` below the home: `openat2` refusing every symlink
/// (one syscall), or, where the kernel lacks it, one `O_NOFOLLOW` open per component.
static OPENAT2_MISSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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

    /// Every layer the mount names: lowers, then upper and work when read-write.
    fn all_layers(&self) -> Vec<Layer<'_>> {
        let mut v = self.layers();
        if !self.readonly {
            v.extend([Layer::Own("diff"), Layer::Own("work")]);
        }
        v
    }

    /// The absolute path of a layer, as bytes: a home need not be UTF-8.
    fn absolute(&self, l: &Layer<'_>) -> Vec<u8> {
        let mut v = self.home.as_os_str().as_bytes().to_vec();
        v.push(b'/');
        v.extend_from_slice(&self.relative(l));
        v
    }

    fn relative(&self, l: &Layer<'_>) -> Vec<u8> {
        match l {
            Layer::Short(s) => format!("l/{s}").into_bytes(),
            Layer::Own(n) => format!("{}/{n}", self.id).into_bytes(),
            Layer::Empty => b".ovl2/empty".to_vec(),
        }
    }

    fn shown(&self, l: &Layer<'_>) -> String {
        String::from_utf8_lossy(&self.relative(l)).into_owned()
    }

    /// Opens a layer directory from the home's fds without following a symlink anywhere
    /// inside the home: `l/<short>` is read (it must point to `../<id>/diff`, as Docker
    /// writes it) and `<id>` and `diff` are opened with `O_NOFOLLOW`. A layer dir that is a
    /// symlink (to a host directory, say) is refused, so the kernel never receives one.
    ///
    /// With `identify`, the directory's device and inode are read too, for [`Self::verify`];
    /// methods that hand the kernel the fds themselves need no identity.
    fn open(&self, l: &Layer<'_>, flags: OFlags, identify: bool) -> Result<Opened> {
        let flags = flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match l {
            Layer::Short(s) => {
                let target = rustix::fs::readlinkat(self.links_fd, *s, Vec::new())
                    .map_err(|e| Error::io(format!("reading l/{s}, a lower layer of {:?}", self.id), e))?;
                let Some(lower) = layout::id_from_link_target(target.as_bytes()) else {
                    return Err(Error::Corrupt(format!(
                        "cannot mount layer {:?}: l/{s} points to {:?}, not to ../<id>/diff; refusing to follow it \
                         (run `ovl2 check --repair`)",
                        self.id,
                        String::from_utf8_lossy(target.as_bytes())
                    )));
                };
                match self.open_beneath(lower, flags) {
                    Some(fd) => fd,
                    // Refused or failed: the open by components names what is wrong.
                    None => {
                        let what = format!("{lower}/diff (lower layer l/{s})");
                        let dir = self.open_one(self.home_fd, lower, OFlags::PATH | OFlags::DIRECTORY, &what, lower)?;
                        self.open_one(dir.as_fd(), "diff", flags, &what, &format!("{lower}/diff"))?
                    }
                }
            }
            Layer::Own(n) => self.open_one(self.layer_fd, n, flags, &format!("{}/{n}", self.id), &self.shown(l))?,
            Layer::Empty => {
                // Readable (not O_PATH), to see that it is empty.
                let readable = flags.difference(OFlags::PATH);
                let fd = self.open_one(self.private_fd, "empty", readable, ".ovl2/empty", ".ovl2/empty")?;
                if let Some(why) = not_empty(&fd) {
                    return Err(Error::Corrupt(format!(
                        "cannot mount layer {:?} read-only: .ovl2/empty {why}; anything there would show in the \
                         mount (run `ovl2 check --repair`)",
                        self.id
                    )));
                }
                fd
            }
        };
        if !identify {
            return Ok(Opened { fd, dev: 0, ino: 0 });
        }
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(format!("stat of {}", self.shown(l)), e))?;
        Ok(Opened { fd, dev: st.st_dev, ino: st.st_ino })
    }

    /// `<lower>/diff` below the home in one `openat2` that follows no symlink at all; `None`
    /// when that fails for any reason (the caller then opens component by component, which
    /// says what is wrong) or the kernel has no `openat2`.
    fn open_beneath(&self, lower: &str, flags: OFlags) -> Option<OwnedFd> {
        use std::sync::atomic::Ordering::Relaxed;
        if OPENAT2_MISSING.load(Relaxed) {
            return None;
        }
        let mut path = Vec::with_capacity(lower.len() + 5);
        path.extend_from_slice(lower.as_bytes());
        path.extend_from_slice(b"/diff");
        let how = rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::NO_MAGICLINKS;
        match crate::fsutil::openat2(self.home_fd, path.as_slice(), flags, how) {
            Ok(fd) => Some(fd),
            // Kernels before 5.6, valgrind, and seccomp filters that refuse it.
            Err(Errno::NOSYS) | Err(Errno::PERM) => {
                OPENAT2_MISSING.store(true, Relaxed);
                None
            }
            Err(_) => None,
        }
    }

    /// Opens `name` below `dir` with `flags` (which include `O_NOFOLLOW|O_DIRECTORY`),
    /// naming a symlink or non-directory in the error.
    fn open_one(&self, dir: BorrowedFd<'_>, name: &str, flags: OFlags, what: &str, shown: &str) -> Result<OwnedFd> {
        let flags = flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| {
            match crate::fsutil::file_type(dir, crate::fsutil::cstr(name).unwrap_or_default()) {
                Ok(Some(t)) if t != FileType::Directory => Error::Corrupt(format!(
                    "cannot mount layer {:?}: {shown} is {}, not a directory; refusing to mount {what} through it \
                     (run `ovl2 check`)",
                    self.id,
                    crate::fsutil::type_name(t)
                )),
                _ => Error::io(format!("opening {what} to mount layer {:?}", self.id), e),
            }
        })
    }

    /// Checks, right before the kernel gets `path` (absolute, or relative to `base`), that it
    /// leads to the very directory opened safely: the kernel follows symlinks in path
    /// strings, so a layer dir swapped for a symlink would otherwise be followed.
    fn verify(&self, base: Option<BorrowedFd<'_>>, path: &[u8], l: &Layer<'_>, opened: &Opened) -> Result<()> {
        let st = rustix::fs::statat(base.unwrap_or(rustix::fs::CWD), path, AtFlags::empty());
        match st {
            Ok(st) if st.st_dev == opened.dev && st.st_ino == opened.ino => Ok(()),
            _ => Err(Error::Corrupt(format!(
                "cannot mount layer {:?}: the path {} does not lead to the directory {} inside the store (a symlink \
                 or a moved home); refusing",
                self.id,
                String::from_utf8_lossy(path),
                self.shown(l)
            ))),
        }
    }

    /// Checks once, for every `l/<short>` string at a time, what [`Self::verify`] checks per
    /// layer: that `l` (absolute, or relative to `base`) leads to the very `l/` directory the
    /// links were read from, and that this directory's parent, from which each link's
    /// `../<id>/diff` resolves, is the home. Beyond that the kernel resolves only what
    /// [`Self::open`] checked: the link, which read `../<id>/diff`, and `<id>/diff`, opened
    /// from the home with no symlink followed. Two `stat`s per mount instead of one per
    /// lower (a path resolution each, about as costly as the kernel's own).
    fn verify_links(&self, base: Option<BorrowedFd<'_>>) -> Result<()> {
        let path = match base {
            Some(_) => b"l".to_vec(),
            None => [self.home.as_os_str().as_bytes(), b"/l"].concat(),
        };
        let at = base.unwrap_or(rustix::fs::CWD);
        let same = |p: &[u8], fd: BorrowedFd<'_>| -> Result<bool> {
            let want = rustix::fs::fstat(fd).map_err(|e| Error::io("stat of the store's directories", e))?;
            Ok(matches!(rustix::fs::statat(at, p, AtFlags::empty()),
                Ok(st) if st.st_dev == want.st_dev && st.st_ino == want.st_ino))
        };
        let parent = [path.as_slice(), b"/.."].concat();
        match same(&path, self.links_fd)? && same(&parent, self.home_fd)? {
            true => Ok(()),
            false => Err(Error::Corrupt(format!(
                "cannot mount layer {:?}: the path {} does not lead to the store's l/ directory inside its home (a \
                 symlink, a moved l/ or a moved home); refusing",
                self.id,
                String::from_utf8_lossy(&path)
            ))),
        }
    }

    /// [`Self::verify`] for every layer in `opened` as `name` names it, the short links
    /// through [`Self::verify_links`].
    fn verify_all(
        &self,
        base: Option<BorrowedFd<'_>>,
        opened: &[(Layer<'_>, Opened)],
        name: &dyn Fn(&Layer<'_>) -> Vec<u8>,
    ) -> Result<()> {
        if opened.iter().any(|(l, _)| matches!(l, Layer::Short(_))) {
            self.verify_links(base)?;
        }
        for (l, o) in opened {
            if !matches!(l, Layer::Short(_)) {
                self.verify(base, &name(l), l, o)?;
            }
        }
        Ok(())
    }

    /// Opens every layer safely, in [`Request::all_layers`] order. With `identify`, the
    /// layers that [`Self::verify`] checks one by one (all but the short links) carry their
    /// identity (see [`Self::open`]).
    fn open_all(&self, flags: OFlags, identify: bool) -> Result<Vec<(Layer<'_>, Opened)>> {
        self.all_layers()
            .into_iter()
            .map(|l| Ok((l, self.open(&l, flags, identify && !matches!(l, Layer::Short(_)))?)))
            .collect()
    }

    /// `merged/`, checked to be a real directory (it is the mount target).
    fn open_merged(&self) -> Result<Opened> {
        let shown = format!("{}/merged", self.id);
        let fd = self.open_one(self.layer_fd, "merged", OFlags::PATH, &shown, &shown)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(format!("stat of {shown}"), e))?;
        Ok(Opened { fd, dev: st.st_dev, ino: st.st_ino })
    }
}

/// Why a directory opened as `fd` is not empty, if it is not.
fn not_empty(fd: &OwnedFd) -> Option<String> {
    let mut dir = match rustix::fs::Dir::read_from(fd) {
        Ok(d) => d,
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    while let Some(ent) = dir.read() {
        match ent {
            Ok(ent) if ent.file_name() == c"." || ent.file_name() == c".." => {}
            Ok(ent) => return Some(format!("is not empty (it holds {:?})", ent.file_name().to_string_lossy())),
            Err(e) => return Some(format!("cannot be read: {e}")),
        }
    }
    None
}

/// What is wrong with `.ovl2/empty`, if anything: for `check`.
pub(crate) fn empty_dir_problem(private_fd: &OwnedFd) -> Option<String> {
    let n = layout::EMPTY;
    match rustix::fs::openat(
        private_fd,
        n,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => not_empty(&fd),
        Err(e) => match crate::fsutil::file_type(private_fd, n) {
            Ok(Some(t)) if t != FileType::Directory => {
                Some(format!("is {}, not a directory", crate::fsutil::type_name(t)))
            }
            Ok(None) => Some("is missing".into()),
            _ => Some(format!("cannot be opened: {e}")),
        },
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

/// Mounts `req` on `<id>/merged` the way [`choose`] decided. Every layer is first opened
/// without following symlinks; methods that hand the kernel path strings check each one
/// against those fds right before the call.
pub(crate) fn mount(req: &Request<'_>, method: MountMethod, f: &Features) -> Result<()> {
    match method {
        MountMethod::NewFd | MountMethod::NewPath => mount_new(req, f, method == MountMethod::NewFd),
        MountMethod::LegacyAbsolute => {
            let opened = req.open_all(OFlags::PATH, true)?;
            let merged = req.open_merged()?;
            let mut target = req.home.as_os_str().as_bytes().to_vec();
            target.extend_from_slice(format!("/{}/merged", req.id).as_bytes());
            let data = legacy_data(req, f, &|l| req.absolute(l));
            req.verify_all(None, &opened, &|l| req.absolute(l))?;
            req.verify(None, &target, &Layer::Own("merged"), &merged)?;
            legacy_mount_call(req, None, target, data)
        }
        MountMethod::LegacyRelative => {
            let opened = req.open_all(OFlags::PATH, true)?;
            let merged = req.open_merged()?;
            let target = format!("{}/merged", req.id).into_bytes();
            let data = legacy_data(req, f, &|l| req.relative(l));
            req.verify_all(Some(req.home_fd), &opened, &|l| req.relative(l))?;
            req.verify(Some(req.home_fd), &target, &Layer::Own("merged"), &merged)?;
            legacy_mount_call(req, Some(req.home_fd), target, data)
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
    // No MOVE_MOUNT_T_SYMLINKS: a merged/ swapped for a symlink is not followed, and the
    // kernel refuses to attach a directory's mount on anything but a directory (merged/ was
    // made, or found to be a directory, under the layer lock just before).
    move_mount(&mnt, c"", req.layer_fd, layout::MERGED, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| Error::io(format!("attaching the mount of {:?} at {}/merged", req.id, req.id), e))
}

/// Builds the overlay with the new mount API and returns the detached mount.
fn new_mount_fd(req: &Request<'_>, f: &Features, use_fds: bool) -> Result<OwnedFd> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| Error::io("fsopen(\"overlay\")", e))?;
    let fd_flags = if use_fds && !f.opath_fds { OFlags::RDONLY } else { OFlags::PATH };
    // Every layer opened safely up front, and kept open until the superblock exists.
    let opened = req.open_all(fd_flags, !use_fds)?;
    if !use_fds && opened.iter().any(|(l, _)| matches!(l, Layer::Short(_))) {
        req.verify_links(None)?;
    }
    let configure = || -> Result<()> {
        let layer = |key: &str, l: &Layer<'_>, o: &Opened| -> Result<()> {
            if use_fds {
                return fsconfig_set_fd(&fs, key, &o.fd).map_err(|e| config_error(&fs, req, key, e));
            }
            // lowerdir+ values are taken raw; upperdir and workdir strings are unescaped
            // by the kernel like legacy options.
            let abs = req.absolute(l);
            let value = if abs.len() <= 255 {
                // Short links were checked as one (`verify_links` above).
                if !matches!(l, Layer::Short(_)) {
                    req.verify(None, &abs, l, o)?;
                }
                if key == "lowerdir+" {
                    abs
                } else {
                    escape(&abs)
                }
            } else {
                // Too long for fsconfig: name the safely opened dir through its fd.
                format!("/proc/self/fd/{}", o.fd.as_raw_fd()).into_bytes()
            };
            fsconfig_set_string(&fs, key, value.as_slice()).map_err(|e| config_error(&fs, req, key, e))
        };
        let set_str = |k: &str, v: &str| fsconfig_set_string(&fs, k, v).map_err(|e| config_error(&fs, req, k, e));
        set_str("source", "overlay")?;
        if f.index_param {
            set_str("index", "off")?;
        }
        if f.userxattr {
            fsconfig_set_flag(&fs, "userxattr").map_err(|e| config_error(&fs, req, "userxattr", e))?;
        }
        if req.volatile && !req.readonly {
            fsconfig_set_flag(&fs, "volatile").map_err(|e| config_error(&fs, req, "volatile", e))?;
        }
        if let Some(label) = req.label {
            set_str("context", label)?;
        }
        for (l, o) in &opened {
            let key = match l {
                Layer::Own("work") => "workdir",
                Layer::Own("diff") if !req.readonly => "upperdir",
                _ => "lowerdir+",
            };
            layer(key, l, o)?;
        }
        fsconfig_create(&fs).map_err(|e| config_error(&fs, req, "create", e))
    };
    configure()?;
    drop(opened);
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| Error::io(format!("fsmount of layer {:?}", req.id), e))
}

/// Whether the kernel has SELinux, the only security module that applies `context=`.
fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
        || std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| s.lines().any(|l| l.ends_with("selinuxfs")))
}

/// Why the kernel would refuse a mount label, as a sentence naming it.
fn label_refused(label: &str) -> String {
    if selinux_enabled() {
        format!("the kernel refused mount label {label:?}")
    } else {
        format!("mount label {label:?} cannot be applied: SELinux is not enabled on this kernel")
    }
}

/// An fsconfig failure with the kernel's own explanation from the context's message log
/// (without the log's `e `/`w `/`i ` severity prefixes).
fn config_error(fs: &OwnedFd, req: &Request<'_>, key: &str, e: rustix::io::Errno) -> Error {
    let mut log = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        let line = ["e ", "w ", "i "].iter().find_map(|p| line.strip_prefix(p)).map(str::to_owned).unwrap_or(line);
        log.push(line);
    }
    let detail = if log.is_empty() { String::new() } else { format!(" ({})", log.join("; ")) };
    match (key, req.label) {
        ("context", Some(label)) => Error::io(format!("{}{detail}", label_refused(label)), e),
        _ => Error::io(format!("overlay refused {key:?} for layer {:?}{detail}", req.id), e),
    }
}

/// Escapes a path for the legacy option string: the kernel splits options on `,` and
/// lowerdir on `:`, and unescapes backslashes.
pub(crate) fn escape(p: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(p.len());
    for &c in p {
        if matches!(c, b'\\' | b':' | b',') {
            s.push(b'\\');
        }
        s.push(c);
    }
    s
}

/// The legacy option string for the given way of naming layers.
fn legacy_data(req: &Request<'_>, f: &Features, name: &dyn Fn(&Layer<'_>) -> Vec<u8>) -> Vec<u8> {
    let mut opts: Vec<Vec<u8>> = Vec::new();
    if f.index_param {
        opts.push(b"index=off".to_vec());
    }
    if f.userxattr {
        opts.push(b"userxattr".to_vec());
    }
    if req.volatile && !req.readonly {
        opts.push(b"volatile".to_vec());
    }
    let lowers: Vec<Vec<u8>> = req.layers().iter().map(|l| escape(&name(l))).collect();
    opts.push([b"lowerdir=".to_vec(), lowers.join(&b':')].concat());
    if !req.readonly {
        opts.push([b"upperdir=".to_vec(), escape(&name(&Layer::Own("diff")))].concat());
        opts.push([b"workdir=".to_vec(), escape(&name(&Layer::Own("work")))].concat());
    }
    if let Some(label) = req.label {
        opts.push(format!("context=\"{label}\"").into_bytes());
    }
    opts.join(&b',')
}

fn fits(data: &[u8]) -> bool {
    // The kernel copies the string into one page, including the trailing NUL.
    data.len() < rustix::param::page_size()
}

fn mount_legacy_fd(req: &Request<'_>, f: &Features) -> Result<()> {
    // Name every layer by the number of its safely opened fd, relative to /proc/self/fd.
    let opened = req.open_all(OFlags::PATH, false)?;
    let merged = req.open_merged()?;
    let fds: std::collections::HashMap<Vec<u8>, i32> =
        opened.iter().map(|(l, o)| (req.relative(l), o.fd.as_raw_fd())).collect();
    let data = legacy_data(req, f, &|l| fds[&req.relative(l)].to_string().into_bytes());
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
    let target = format!("{}/merged", req.layer_fd.as_raw_fd()).into_bytes();
    req.verify(Some(proc_fd.as_fd()), &target, &Layer::Own("merged"), &merged)?;
    let r = legacy_mount_call(req, Some(proc_fd.as_fd()), target, data);
    drop(opened);
    r
}

/// `mount(2)` with an option string; with `cwd`, from the mount thread sitting in that
/// directory, so relative layer names resolve there.
fn legacy_mount_call(req: &Request<'_>, cwd: Option<BorrowedFd<'_>>, target: Vec<u8>, data: Vec<u8>) -> Result<()> {
    let len = data.len();
    let data = CString::new(data).map_err(|_| Error::InvalidArgument("mount options contain NUL".into()))?;
    let target_c = CString::new(target).map_err(|_| Error::InvalidArgument("mount target contains NUL".into()))?;
    let res = match cwd {
        None => rustix::mount::mount(c"overlay", target_c.as_c_str(), c"overlay", MountFlags::empty(), data.as_c_str()),
        Some(dir) => {
            let dir = dir.try_clone_to_owned().map_err(|e| Error::io("duplicating a directory fd", e))?;
            mount_thread::run(dir, target_c, data)?
        }
    };
    res.map_err(|e| match req.label {
        // mount(2) says only EINVAL; with a label, that is by far the likeliest cause.
        Some(label) if e == rustix::io::Errno::INVAL => {
            Error::io(format!("error creating overlay mount to {}/merged: {}", req.id, label_refused(label)), e)
        }
        _ => Error::io(format!("error creating overlay mount to {}/merged ({len} bytes of options)", req.id), e),
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

    /// The thread's queue, with the fork generation that started it (a forked child has the
    /// sender but not the thread).
    static THREAD: Mutex<Option<(u64, Sender<Job>)>> = Mutex::new(None);

    pub(super) fn run(dir: OwnedFd, target: CString, data: CString) -> Result<rustix::io::Result<()>> {
        let (reply, answer) = sync_channel(1);
        let mut job = Job { dir, target, data, reply };
        for _ in 0..2 {
            let tx = sender()?;
            match tx.send(job) {
                Ok(()) => return answer.recv().map_err(|_| gone("died before answering")),
                // The thread is gone (it exited after a failure): start another once.
                Err(e) => {
                    job = e.0;
                    *THREAD.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
        }
        Err(gone("exited again as soon as it was restarted"))
    }

    /// The error for a mount thread that is gone. It is this process's worker that failed,
    /// not the store, so it is an I/O error (never `Corrupt`, which tells the user to repair
    /// the store), and it says at which step the thread was lost.
    pub(super) fn gone(when: &str) -> Error {
        Error::io("mounting through the ovl2-mount thread", std::io::Error::other(format!("the thread {when}")))
    }

    fn sender() -> Result<Sender<Job>> {
        let mut slot = THREAD.lock().unwrap_or_else(|e| e.into_inner());
        let generation = crate::forkgen::generation();
        if let Some((owner, tx)) = slot.as_ref() {
            if *owner == generation {
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
            Err(_) => return Err(gone("died while starting")),
        }
        *slot = Some((generation, tx.clone()));
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
            private_fd: root.as_fd(),
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
            String::from_utf8(data).unwrap(),
            "index=off,lowerdir=/var/lib/o\\:v\\,l\\\\2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA:/var/lib/o\\:v\\,l\\\\2/l/BBBBBBBBBBBBBBBBBBBBBBBBBB,\
             upperdir=/var/lib/o\\:v\\,l\\\\2/ctr/diff,workdir=/var/lib/o\\:v\\,l\\\\2/ctr/work,\
             context=\"system_u:object_r:container_file_t:s0\""
        );
    }

    #[test]
    fn readonly_relative_userxattr_and_volatile_options() {
        let ro = with_request(true, None, true, |r| legacy_data(r, &features(false, true), &|l| r.relative(l)));
        let ro = String::from_utf8(ro).unwrap();
        // Read-only: own diff on top, no upper or work, and volatile has no meaning.
        assert_eq!(ro, "userxattr,lowerdir=ctr/diff:l/AAAAAAAAAAAAAAAAAAAAAAAAAA:l/BBBBBBBBBBBBBBBBBBBBBBBBBB");
        let rw = with_request(false, None, true, |r| legacy_data(r, &features(true, false), &|l| r.relative(l)));
        let rw = String::from_utf8(rw).unwrap();
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

    /// A lost mount thread is this process's failure, not store damage: reporting it as
    /// `Corrupt` sent users to `check --repair` for nothing (it was `Corrupt` before).
    #[test]
    fn a_dead_mount_thread_is_io_not_corrupt() {
        for when in ["died before answering", "died while starting", "exited again as soon as it was restarted"] {
            let e = mount_thread::gone(when);
            assert_eq!(e.kind(), crate::ErrorKind::Io, "{e}");
            let msg = e.to_string();
            assert!(msg.contains("ovl2-mount thread") && msg.contains(when), "{msg}");
            assert!(!msg.contains("corrupt"), "{msg}");
        }
    }

    #[test]
    fn escapes_option_separators() {
        assert_eq!(escape(b"/a:b,c\\d"), b"/a\\:b\\,c\\\\d");
        assert_eq!(escape(b"/plain/path"), b"/plain/path");
        assert_eq!(escape(b"/\xff:"), b"/\xff\\:", "bytes, not UTF-8");
    }
}
