//! Kernel feature probes for mounting, run once per store and boot and cached in
//! `.ovl2/features` (keyed by boot id, kernel release and user namespace), because the only
//! reliable answer is to try: distributions backport features, so versions prove nothing.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{fsconfig_create, fsconfig_set_fd, fsconfig_set_flag, fsconfig_set_string, fsopen, FsOpenFlags};

use crate::fsutil::{self, cstr};
use crate::kernel::{in_user_namespace, overlay_param};
use crate::layout;

/// What the running kernel's overlayfs accepts, as found by trying it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// `fsopen("overlay")` works (new mount API, Linux 5.2+).
    pub new_api: bool,
    /// `lowerdir+` accepts path strings (Linux 6.7/6.8+).
    pub lowerdir_plus: bool,
    /// `lowerdir+` accepts layers as fds (`FSCONFIG_SET_FD`, Linux 6.13+).
    pub fd_layers: bool,
    /// Those fds may be `O_PATH` (Linux 6.15+); otherwise they must be opened read-only.
    pub opath_fds: bool,
    /// `/sys/module/overlay/parameters/index` exists, so mounts pass `index=off`.
    pub index_param: bool,
    /// Mounts need `userxattr` (running inside a user namespace).
    pub userxattr: bool,
}

impl Features {
    /// Every feature name, in `status()` order.
    pub const ALL: &'static [&'static str] =
        &["fsopen", "lowerdir+", "lowerdir+fd", "O_PATH-fds", "index-param", "userxattr"];

    /// These features minus the named ones (and what depends on them).
    pub fn without(&self, names: &[String]) -> Features {
        let off = |n: &str| names.iter().any(|x| x == n);
        let mut f = Features {
            new_api: self.new_api && !off("fsopen"),
            lowerdir_plus: self.lowerdir_plus && !off("lowerdir+"),
            fd_layers: self.fd_layers && !off("lowerdir+fd"),
            opath_fds: self.opath_fds && !off("O_PATH-fds"),
            index_param: self.index_param && !off("index-param"),
            userxattr: self.userxattr && !off("userxattr"),
        };
        f.lowerdir_plus &= f.new_api;
        f.fd_layers &= f.new_api;
        f.opath_fds &= f.fd_layers;
        f
    }

    /// The feature names found, for `status()`.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, n) in [
            (self.new_api, "fsopen"),
            (self.lowerdir_plus, "lowerdir+"),
            (self.fd_layers, "lowerdir+fd"),
            (self.opath_fds, "O_PATH-fds"),
            (self.index_param, "index-param"),
            (self.userxattr, "userxattr"),
        ] {
            if on {
                v.push(n);
            }
        }
        v
    }

    fn encode(&self) -> String {
        self.names().join(",")
    }

    fn decode(s: &str) -> Features {
        let has = |n: &str| s.split(',').any(|x| x == n);
        Features {
            new_api: has("fsopen"),
            lowerdir_plus: has("lowerdir+"),
            fd_layers: has("lowerdir+fd"),
            opath_fds: has("O_PATH-fds"),
            index_param: has("index-param"),
            userxattr: has("userxattr"),
        }
    }
}

fn cache_key() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    format!("{} {} userns={}", boot.trim(), release, in_user_namespace())
}

/// Returns the cached features for this boot, probing (and caching) when there are none.
pub(crate) fn load_or_probe(private_fd: &OwnedFd) -> Features {
    if let Some(f) = load_cached(private_fd) {
        return f;
    }
    let f = probe(private_fd);
    let key = cache_key();
    let _ = fsutil::write_atomic(
        private_fd,
        c"features",
        format!("{key}\n{}\n", f.encode()).as_bytes(),
        layout::PRIVATE_FILE_MODE,
        false,
    );
    f
}

/// The features cached for this boot, if any; never writes.
pub(crate) fn load_cached(private_fd: &OwnedFd) -> Option<Features> {
    let bytes = fsutil::read_small(private_fd, c"features").ok()??;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    (lines.next() == Some(cache_key().as_str())).then(|| Features::decode(lines.next().unwrap_or("")))
}

/// Probes in a scratch dir under the system temp dir, for a store opened read-only.
pub(crate) fn probe_elsewhere() -> Features {
    match fsutil::open_dir_path(&std::env::temp_dir()) {
        Ok(tmp) => probe(&tmp),
        Err(_) => Features {
            index_param: overlay_param("index").is_some(),
            userxattr: in_user_namespace(),
            ..Features::default()
        },
    }
}

/// Tries each feature on scratch dirs in `.ovl2/probe-<random>`. Only the superblock is
/// created (`FSCONFIG_CMD_CREATE`); nothing is ever attached to the tree.
pub(crate) fn probe(private_fd: &OwnedFd) -> Features {
    let mut f = Features {
        index_param: overlay_param("index").is_some(),
        userxattr: in_user_namespace(),
        ..Features::default()
    };
    let name = cstr(&format!("probe-{}", fsutil::random_hex(6))).expect("ascii");
    if fsutil::mkdir(private_fd, &name, layout::PRIVATE_MODE, None).is_err() {
        return f;
    }
    if let Ok(dir) = fsutil::open_dir(private_fd, &name) {
        let made = ["a", "b"].iter().all(|d| fsutil::mkdir(&dir, &cstr(d).unwrap(), layout::DIFF_MODE, None).is_ok());
        if made {
            f.new_api = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).is_ok();
            if f.new_api {
                let path = |d: &str| format!("/proc/self/fd/{}/{d}", rustix::fd::AsRawFd::as_raw_fd(&dir));
                f.lowerdir_plus = try_create(f.userxattr, |fs| {
                    fsconfig_set_string(fs, "lowerdir+", path("a"))?;
                    fsconfig_set_string(fs, "lowerdir+", path("b"))
                });
                let open = |d: &str, flags: OFlags| {
                    rustix::fs::openat(&dir, d, flags | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                };
                let with_fds = |flags: OFlags| {
                    try_create(f.userxattr, |fs| {
                        let (a, b) = (open("a", flags)?, open("b", flags)?);
                        fsconfig_set_fd(fs, "lowerdir+", &a)?;
                        fsconfig_set_fd(fs, "lowerdir+", &b)
                    })
                };
                f.opath_fds = with_fds(OFlags::PATH);
                f.fd_layers = f.opath_fds || with_fds(OFlags::RDONLY);
            }
        }
    }
    let _ = fsutil::remove_tree(private_fd, &name);
    f
}

fn try_create(userxattr: bool, set: impl FnOnce(&OwnedFd) -> rustix::io::Result<()>) -> bool {
    let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else { return false };
    let ok = (|| {
        if userxattr {
            fsconfig_set_flag(fs.as_fd(), "userxattr")?;
        }
        set(&fs)?;
        fsconfig_create(&fs)
    })();
    ok.is_ok()
}
