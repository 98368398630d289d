//! The harness the CLI tests share: a scratch dir holding a store, and `ovl2` run in it as
//! a user would, one process per command.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch dir with the store at `<scratch>/home`; dropping it unmounts and deletes all.
pub struct Home(PathBuf);

impl Home {
    pub fn new(tag: &str) -> Home {
        let p = std::env::temp_dir().join(format!("ovl2-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Home(p)
    }
    /// The store.
    pub fn home(&self) -> PathBuf {
        self.0.join("home")
    }
    /// Room for tarballs and exports beside the store.
    pub fn scratch(&self) -> &Path {
        &self.0
    }
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ovl2"));
        c.arg("--home").arg(self.home()).env_remove("OVL2_HOME").env_remove("OVL2_MOUNT_STRATEGY");
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "ovl2 {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }
    /// Runs a command that must fail with one line on stderr, starting "ovl2: " (with
    /// `--json`: one `{"error": {...}}` object).
    pub fn fail(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "ovl2 {args:?} should fail");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "an error is one line: {err:?}");
        if args.contains(&"--json") {
            let v: serde_json::Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
            assert!(v["error"]["message"].is_string() && v["error"]["kind"].is_string(), "{err}");
        } else {
            assert!(err.starts_with("ovl2: "), "{err}");
        }
        err
    }
    /// A tarball (GNU tar, as users make them) of the files given as (path, content);
    /// an empty content with a `.wh.` name makes a whiteout marker.
    pub fn tarball(&self, name: &str, files: &[(&str, &str)], compress: Option<&str>) -> PathBuf {
        let src = self.0.join(format!("src-{name}"));
        for (p, c) in files {
            let f = src.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, c).unwrap();
        }
        let out = self.0.join(name);
        let mut tar = Command::new("tar");
        tar.arg("-C").arg(&src).arg("--sort=name").arg("-cf").arg(&out);
        if let Some(z) = compress {
            tar.arg(format!("--{z}"));
        }
        assert!(tar.arg(".").status().unwrap().success());
        out
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.cmd().arg("cleanup").output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether root-only tests run; under CI=true or OVL2_REQUIRE_MOUNT=1 a missing root fails.
pub fn require_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root
        && (std::env::var("CI").as_deref() == Ok("true") || std::env::var("OVL2_REQUIRE_MOUNT").as_deref() == Ok("1"))
    {
        panic!("needs root; CI=true forbids skipping");
    }
    root
}
