//! The `ovl2` command line, run as a user would: one process per command.

use std::path::{Path, PathBuf};

mod common;
use common::*;

/// Read as bytes: a parallel test's mount at a non-UTF-8 path must not make this fail.
fn is_mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap().as_bytes();
    std::fs::read("/proc/self/mountinfo")
        .unwrap()
        .split(|&b| b == b'\n')
        .any(|l| l.split(|&b| b == b' ').nth(4) == Some(want))
}

#[test]
fn create_ls_inspect_rm_check() {
    let h = Home::new("basic");
    h.ok(&["create", "base"]);
    h.ok(&["create", "app", "--parent", "base"]);
    h.ok(&["create", "ctr", "--parent", "app", "--rw"]);
    assert_eq!(h.ok(&["ls"]), "base\n└── app\n    └── ctr\n");
    let ls: serde_json::Value = serde_json::from_str(&h.ok(&["ls", "--json"])).unwrap();
    let ctr = ls.as_array().unwrap().iter().find(|l| l["id"] == "ctr").unwrap();
    assert_eq!((ctr["parent"].as_str(), ctr["depth"].as_u64()), (Some("app"), Some(2)));
    let ins: serde_json::Value = serde_json::from_str(&h.ok(&["inspect", "ctr", "--json"])).unwrap();
    let meta = &ins[0]["metadata"];
    let home = h.home().display().to_string();
    assert_eq!(meta["LowerDir"], format!("{home}/app/diff:{home}/base/diff"));
    assert_eq!(meta["UpperDir"], format!("{home}/ctr/diff"));
    // Docker's status keys first, in Docker's order, in the CLI's one casing (snake_case).
    let status = h.ok(&["status", "--json"]);
    let keys: Vec<&str> = status.lines().filter_map(|l| l.trim().split('"').nth(1)).collect();
    assert_eq!(
        &keys[..5],
        ["backing_filesystem", "supports_d_type", "using_metacopy", "native_overlay_diff", "userxattr"]
    );
    assert_eq!(h.ok(&["check"]), "no problems\n");
    let e = h.fail(&["rm", "base"]);
    assert!(e.contains("busy") && e.contains("`ovl2 rm --recursive base`"), "{e}");
    h.fail(&["create", "../evil"]);
    h.fail(&["create", "x", "--parent", "missing"]);
    h.fail(&["inspect", "missing"]);
    h.ok(&["rm", "ctr"]);
    // --force unmounts first; it never orphans a child.
    let e = h.fail(&["rm", "base", "--force"]);
    assert!(e.contains("busy") && e.contains("app"), "{e}");
    assert_eq!(h.ok(&["rm", "-r", "base"]), "removed app\nremoved base\n");
    assert_eq!(h.ok(&["ls"]), "");
    assert_eq!(h.ok(&["check"]), "no problems\n");
}

#[test]
fn repair_gives_a_lost_short_id_back_to_the_parent() {
    // The classic Docker corruption: every l/ link and mid/link lost.
    let h = Home::new("lostlid");
    h.ok(&["create", "base"]);
    h.ok(&["create", "mid", "--parent", "base"]);
    h.ok(&["create", "top", "--parent", "mid"]);
    let lid = std::fs::read_to_string(h.home().join("mid/link")).unwrap();
    for e in std::fs::read_dir(h.home().join("l")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::remove_file(h.home().join("mid/link")).unwrap();
    let out = h.ok(&["check", "--repair"]);
    assert!(out.ends_with("no problems\n"), "{out}");
    assert_eq!(std::fs::read_to_string(h.home().join("mid/link")).unwrap(), lid);
    assert_eq!(h.ok(&["check"]), "no problems\n");
    let home = h.home().display().to_string();
    assert!(h.ok(&["inspect", "top"]).contains(&format!("{home}/mid/diff:{home}/base/diff")));
}

#[test]
fn orphans_are_explained_and_check_exit_codes_differ() {
    let h = Home::new("orphan");
    h.ok(&["create", "p"]);
    h.ok(&["create", "ch", "--parent", "p"]);
    // Another tool removes p with its l/ name, as Docker's Remove would.
    let lid = std::fs::read_to_string(h.home().join("p/link")).unwrap();
    std::fs::remove_dir_all(h.home().join("p")).unwrap();
    std::fs::remove_file(h.home().join("l").join(&lid)).unwrap();
    let o = h.run(&["check"]);
    assert_eq!(o.status.code(), Some(1), "problems remain: exit 1");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "problem   ch: orphan: parent short id {lid} is gone; `ovl2 rm --recursive ch` removes it and the \
             layers built on it\n"
        )
    );
    assert_eq!(h.run(&["check", "--repair"]).status.code(), Some(1));
    let ls: serde_json::Value = serde_json::from_str(&h.ok(&["ls", "--json"])).unwrap();
    let ch = &ls[0];
    assert_eq!((ch["id"].as_str(), ch["parent"].as_str(), ch["orphan"].as_bool()), (Some("ch"), None, Some(true)));
    assert!(h.ok(&["ls"]).contains("ch  [orphan"));
    let e = h.fail(&["inspect", "ch"]);
    assert_eq!(e.matches("check").count(), 1, "one instruction: {e}");
    h.ok(&["rm", "--recursive", "ch"]);
    assert_eq!(h.run(&["check"]).status.code(), Some(0));
    // A check that cannot run says so with its own status.
    let o = h.run(&["--max-depth", "0", "check"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn check_reports_then_repairs() {
    let h = Home::new("check");
    h.ok(&["create", "a"]);
    h.ok(&["create", "b", "--parent", "a"]);
    for e in std::fs::read_dir(h.home().join("l")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let o = h.run(&["check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "problems remain: exit 1");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 2);
    assert_eq!(v["problems"][0]["kind"], "missing_short_link");
    let out = h.ok(&["check", "--repair"]);
    assert!(out.contains("repaired") && out.contains("no problems"), "{out}");
    assert_eq!(h.ok(&["check"]), "no problems\n");
}

#[test]
fn mount_references_outlive_each_command() {
    if !require_root() {
        return;
    }
    let h = Home::new("mount");
    h.ok(&["create", "img"]);
    std::fs::write(h.home().join("img/diff/hello"), "hi").unwrap();
    h.ok(&["create", "ctr", "--parent", "img", "--rw"]);
    let p = PathBuf::from(h.ok(&["mount", "ctr"]).trim());
    assert_eq!(p, h.home().join("ctr/merged"), "mount prints the path alone");
    assert_eq!(std::fs::read_to_string(p.join("hello")).unwrap(), "hi");
    assert_eq!(h.ok(&["mount", "ctr"]).trim(), p.to_str().unwrap());
    h.ok(&["umount", "ctr"]);
    assert!(is_mounted(&p), "one reference left after mount, mount, umount");
    let m: serde_json::Value = serde_json::from_str(&h.ok(&["mounts", "--json"])).unwrap();
    assert_eq!(m[0]["count"], 1);
    h.ok(&["umount", "ctr"]);
    assert!(!is_mounted(&p), "the second umount unmounts");
    assert!(!p.exists());
    h.fail(&["umount", "ctr"]);
    // Read-only mounts and strategies through the CLI.
    let ro = PathBuf::from(h.ok(&["--mount-strategy", "legacy", "mount", "ctr", "--ro"]).trim());
    assert!(std::fs::write(ro.join("x"), "x").is_err());
    assert!(h.ok(&["mounts"]).contains("legacy-absolute"));
    h.ok(&["umount", "ctr"]);
    // A usage error comes from the argument parser: exit 2, naming the bad value.
    let o = h.run(&["--mount-strategy", "sideways", "mount", "ctr"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown mount strategy \"sideways\""));
}

/// Issue 10, item 10: `--home` that is not UTF-8 works, and `inspect`, `mount` and `mounts`
/// print its exact bytes (they printed U+FFFD, a path that does not exist). `--json` cannot
/// carry such a path and refuses, naming it.
#[test]
fn a_non_utf8_home_is_printed_as_its_exact_bytes() {
    use std::os::unix::ffi::OsStrExt;
    if !require_root() {
        return;
    }
    let h = Home::new("nonutf8");
    let home = h.scratch().join(std::ffi::OsStr::from_bytes(b"x\xff\xfe"));
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ovl2"))
            .arg("--home")
            .arg(&home)
            .args(args)
            .env_remove("OVL2_HOME")
            .env_remove("OVL2_MOUNT_STRATEGY")
            .output()
            .unwrap();
        (o.status.success(), o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let ok = |args: &[&str]| {
        let (ok, out, err) = run(args);
        assert!(ok, "ovl2 {args:?} failed: {err}");
        out
    };
    let path = |rel: &str| [home.as_os_str().as_bytes(), b"/", rel.as_bytes()].concat();
    let line = |parts: &[&[u8]]| [parts.concat(), b"\n".to_vec()].concat();
    ok(&["create", "base"]);
    ok(&["create", "ctr", "--parent", "base", "--rw"]);
    let out = ok(&["inspect", "ctr"]);
    let want = [
        line(&[b"LowerDir   ", &path("base/diff")]),
        line(&[b"MergedDir  ", &path("ctr/merged")]),
        line(&[b"UpperDir   ", &path("ctr/diff")]),
        line(&[b"WorkDir    ", &path("ctr/work")]),
    ]
    .concat();
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
    assert_eq!(out, want);
    let (ok_json, _, err) = run(&["inspect", "ctr", "--json"]);
    assert!(!ok_json && err.contains("not valid UTF-8") && err.contains("/base/diff"), "{err}");
    assert_eq!(ok(&["mount", "ctr"]), line(&[&path("ctr/merged")]));
    let mounts = ok(&["mounts"]);
    assert!(mounts.windows(path("ctr/merged").len()).any(|w| w == path("ctr/merged")), "{mounts:?}");
    ok(&["umount", "ctr"]);
    assert_eq!(ok(&["check"]), b"no problems\n");
}
