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
        if v.len() == 1 {
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

/// Mounts `req` on `<id>/merged` with the chosen strategy.
pub(crate) fn mount(req: &Request<'_>, strategy: MountStrategy, f: &Features) -> Result<MountMethod> {
    let new_ok = f.new_api && (f.fd_layers || f.lowerdir_plus);
    match strategy {
        MountStrategy::New if !new_ok => Err(Error::Unsupported(
            "the new mount API with lowerdir+ is not available on this kernel (use the legacy strategy)".into(),
        )),
        MountStrategy::New | MountStrategy::Auto if new_ok => mount_new(req, f),
        _ => mount_legacy(req, f),
    }
}

fn mount_new(req: &Request<'_>, f: &Features) -> Result<MountMethod> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| Error::io("fsopen(\"overlay\")", e))?;
    let fd_flags = if f.opath_fds { OFlags::PATH } else { OFlags::RDONLY };
    // Keep every fd alive until the superblock exists.
    let mut keep: Vec<OwnedFd> = Vec::new();
    let method = if f.fd_layers { MountMethod::NewFd } else { MountMethod::NewPath };
    let configure = |keep: &mut Vec<OwnedFd>| -> Result<()> {
        let set_str = |k: &str, v: &str| fsconfig_set_string(&fs, k, v).map_err(|e| (k.to_owned(), e));
        let layer = |key: &str, l: &Layer<'_>, keep: &mut Vec<OwnedFd>| -> Result<()> {
            if f.fd_layers {
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
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| Error::io(format!("fsmount of layer {:?}", req.id), e))?;
    move_mount(&mnt, c"", req.layer_fd, layout::MERGED, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| Error::io(format!("attaching the mount of {:?} at {}/merged", req.id, req.id), e))?;
    Ok(method)
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

fn mount_legacy(req: &Request<'_>, f: &Features) -> Result<MountMethod> {
    let abs = legacy_data(req, f, &|l| req.absolute(l));
    if fits(&abs) {
        let target = format!("{}/{}/merged", req.home.display(), req.id);
        legacy_mount_call(req, &target, &abs)?;
        return Ok(MountMethod::LegacyAbsolute);
    }
    let rel = legacy_data(req, f, &|l| req.relative(l));
    if fits(&rel) {
        let target = format!("{}/merged", req.id);
        let home_fd = req.home_fd;
        on_private_thread(home_fd, |_| legacy_mount_call(req, &target, &rel))?;
        return Ok(MountMethod::LegacyRelative);
    }
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
    let proc_fd = crate::fsutil::open_dir_path(Path::new("/proc/self/fd"))
        .map_err(|e| Error::io("opening /proc/self/fd", e))?;
    let target = format!("{}/merged", req.layer_fd.as_raw_fd());
    on_private_thread(proc_fd.as_fd(), |_| legacy_mount_call(req, &target, &data))?;
    Ok(MountMethod::LegacyFd)
}

fn legacy_mount_call(req: &Request<'_>, target: &str, data: &str) -> Result<()> {
    let data = CString::new(data).map_err(|_| Error::InvalidArgument("mount options contain NUL".into()))?;
    rustix::mount::mount("overlay", target, "overlay", MountFlags::empty(), data.as_c_str())
        .map_err(|e| Error::io(format!("error creating overlay mount to {}/merged ({} bytes of options)", req.id, data.as_bytes().len()), e))
}

/// Runs `f` on a fresh thread whose working directory is `dir`. The thread first unshares
/// its filesystem context, so the chdir never affects the rest of the process.
fn on_private_thread<T: Send>(dir: BorrowedFd<'_>, f: impl FnOnce(()) -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: CLONE_FS only detaches this thread's cwd/root/umask; no fd table is
            // unshared, so fds stay valid on every thread.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| Error::io("unshare(CLONE_FS) on the mount thread", e))?;
            rustix::process::fchdir(dir).map_err(|e| Error::io("chdir on the mount thread", e))?;
            f(())
        })
        .join()
        .map_err(|_| Error::Corrupt("the mount thread panicked".into()))?
    })
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_option_separators() {
        assert_eq!(escape("/a:b,c\\d"), "/a\\:b\\,c\\\\d");
        assert_eq!(escape("/plain/path"), "/plain/path");
    }
}
