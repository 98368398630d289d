//! `status()`: what the store sits on and what the kernel offers, as Docker's ordered pairs
//! plus ovl2's own.

use rustix::fs::{FileType, OFlags};

use crate::driver::Driver;
use crate::error::{Context, Result};
use crate::layout;

/// Docker's names for backing filesystems, by statfs magic.
fn fs_name(magic: i64) -> &'static str {
    match magic as u64 {
        0xEF53 => "extfs",
        0x58465342 => "xfs",
        0x9123683E => "btrfs",
        0x01021994 => "tmpfs",
        0x794C7630 => "overlayfs",
        0x2FC12FC1 => "zfs",
        0xF2F52010 => "f2fs",
        0x6969 => "nfs",
        0x858458F6 => "ramfs",
        0x73717368 => "squashfs",
        0x65735546 => "fuse",
        0x28CD3D45 => "cramfs",
        0xE0F5E1E2 => "erofs",
        0x5346544E => "ntfs",
        0x4D44 => "vfat",
        _ => "<unknown>",
    }
}

/// A kernel overlay module parameter, if the module exposes it.
pub(crate) fn overlay_param(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/module/overlay/parameters/{name}")).ok().map(|s| s.trim().to_owned())
}

/// Whether this process runs in a user namespace other than the initial one.
pub(crate) fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

impl Driver {
    /// Ordered key/value pairs: Docker's keys first (`Backing Filesystem`, `Supports d_type`,
    /// `Using metacopy`, `Native Overlay Diff`, `userxattr`), then ovl2's.
    pub fn status(&self) -> Result<Vec<(String, String)>> {
        let st = rustix::fs::fstatfs(&self.home_fd).ctx(|| format!("statfs of {}", self.home.display()))?;
        let yes = |b: bool| if b { "true" } else { "false" }.to_string();
        let param_on = |n: &str| overlay_param(n).is_some_and(|v| v == "Y" || v == "on");
        let metacopy = param_on("metacopy");
        let redirect = overlay_param("redirect_dir").is_some_and(|v| v == "Y" || v == "on");
        let userns = in_user_namespace();
        let layers = self.layer_ids()?.len();
        let mut params: Vec<String> = match std::fs::read_dir("/sys/module/overlay/parameters") {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    overlay_param(&n).map(|v| format!("{n}={v}"))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        params.sort();
        Ok(vec![
            ("Backing Filesystem".into(), fs_name(st.f_type as i64).into()),
            ("Supports d_type".into(), yes(self.supports_d_type()?)),
            ("Using metacopy".into(), yes(metacopy)),
            // A native diff (tarring diff/ directly) is only valid while uppers never get
            // redirect or metacopy xattrs.
            ("Native Overlay Diff".into(), yes(!metacopy && !redirect)),
            ("userxattr".into(), yes(userns)),
            ("Home".into(), self.home.display().to_string()),
            ("Layers".into(), layers.to_string()),
            ("Max depth".into(), self.opts.max_depth.to_string()),
            ("Kernel".into(), rustix::system::uname().release().to_string_lossy().into_owned()),
            ("Overlay filesystem".into(), yes(overlay_registered())),
            ("Mount strategy".into(), self.mount_strategy().as_str().into()),
            ("Mount features".into(), self.features().names().join(",")),
            ("Overlay parameters".into(), params.join(",")),
        ])
    }

    /// Whether readdir on the backing filesystem reports entry types (Docker refuses without).
    /// Looks at `l/` in `home`, which every store has (`.ovl2/` may be missing read-only).
    pub(crate) fn supports_d_type(&self) -> Result<bool> {
        let fd = rustix::fs::openat(
            &self.home_fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ctx(|| format!("opening {}", self.home.display()))?;
        let mut dir = rustix::fs::Dir::read_from(&fd).ctx(|| format!("reading {}", self.home.display()))?;
        while let Some(ent) = dir.read() {
            let ent = ent.ctx(|| format!("reading {}", self.home.display()))?;
            if ent.file_name() == layout::LINK_DIR {
                return Ok(ent.file_type() != FileType::Unknown);
            }
        }
        Ok(false)
    }
}

fn overlay_registered() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some("overlay")))
        .unwrap_or(false)
}
