//! `status()`: what the store sits on and what the kernel offers, as Docker's ordered pairs
//! plus ovl2's own.

use crate::error::{Context, Result};
use crate::kernel::{fs_name, in_user_namespace, overlay_param, overlay_params, overlay_registered};
use crate::store::Store;

impl Store {
    /// The work of [`Driver::status`](crate::Driver::status).
    pub(crate) fn status(&self) -> Result<Vec<(String, String)>> {
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
}
