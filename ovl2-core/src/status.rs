//! `status()`: what the store sits on and what the kernel offers, as Docker's ordered pairs
//! plus ovl2's own.

use rustix::fs::{FileType, OFlags};

use crate::driver::Driver;
use crate::error::{Context, Result};
use crate::kernel::{fs_name, in_user_namespace, overlay_param, overlay_params, overlay_registered};
use crate::layout;

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
        let params = overlay_params();
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
