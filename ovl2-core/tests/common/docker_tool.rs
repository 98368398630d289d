//! Builds Docker's own archive code (tests/archive-interop, github.com/moby/go-archive) for
//! reference comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The built tool; `None` (a skip) only outside CI when Go is missing.
pub fn docker_tar_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let strict = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/archive-interop");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ovl2-dockertar");
        let st = std::process::Command::new("go").arg("build").arg("-o").arg(&out).arg(".").current_dir(&src).status();
        match st {
            Ok(s) if s.success() => Some(out),
            other => {
                assert!(!strict, "building tests/archive-interop with Go failed ({other:?}); CI needs it");
                eprintln!("skipping: cannot build the Go reference tool ({other:?})");
                None
            }
        }
    })
    .clone()
}
