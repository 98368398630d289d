//! What each command may do to --home: only commands that write create a store (and only in a
//! missing or empty directory), a directory that is not a store is refused untouched, and
//! reading commands never change anything, so they work on a read-only home.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

mod common;
use common::*;

/// path -> type, mode, owner (and content) of everything under `root`, root included.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let content = if md.is_file() { std::fs::read(&p).unwrap() } else { Vec::new() };
        out.insert(rel, format!("{:o} {}:{} {:?}", md.mode(), md.uid(), md.gid(), content));
        if md.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

const READS: &[&[&str]] = &[
    &["ls"],
    &["ls", "--json"],
    &["inspect", "a"],
    &["status"],
    &["check"],
    &["mounts"],
    &["diff", "a"],
    &["changes", "a"],
    &["diff-size", "a"],
    &["du"],
    &["du", "a"],
    &["ls", "-q"],
];

/// `ovl2 --home /tmp ls` by mistake must not turn /tmp into a 0710 root-owned store.
#[test]
fn commands_refuse_a_directory_that_is_not_a_store() {
    let h = Home::new("guard-notstore");
    let dir = h.home();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("someone-elses-file"), "x").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let before = snapshot(h.scratch());
    for args in READS.iter().copied().chain([&["check", "--repair"][..], &["create", "x"], &["init"], &["rm", "a"]]) {
        let err = h.fail(args);
        assert!(err.contains("is not an ovl2/overlay2 store"), "{args:?}: {err}");
        assert_eq!(snapshot(h.scratch()), before, "{args:?} changed the directory");
    }
}

#[test]
fn only_writing_commands_create_a_store() {
    let h = Home::new("guard-missing");
    for args in READS.iter().copied().chain([&["check", "--repair"][..], &["rm", "a"], &["cleanup"]]) {
        let err = h.fail(args);
        assert!(err.contains("does not exist"), "{args:?}: {err}");
        assert!(!h.home().exists(), "{args:?} created the store");
    }
    // check on a missing path said "no problems" after creating a store there.
    let o = h.run(&["check"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("no problems"));
    h.ok(&["init"]);
    assert!(h.home().join("l").is_dir());
    h.ok(&["init"]);
    assert_eq!(h.ok(&["check"]), "no problems\n");
    std::fs::remove_dir_all(h.home()).unwrap();
    h.ok(&["create", "a"]);
    assert_eq!(h.ok(&["ls"]), "a\n");
}

#[test]
fn reading_commands_change_nothing() {
    let h = Home::new("guard-reads");
    h.ok(&["create", "base"]);
    h.ok(&["create", "a", "--parent", "base"]);
    std::fs::write(h.home().join("a/diff/f"), "data").unwrap();
    // Modes another tool set, and no lock file yet: a read must not "fix" either.
    std::fs::set_permissions(h.home(), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::remove_file(h.home().join(".ovl2/lock")).unwrap();
    let before = snapshot(&h.home());
    for args in READS {
        h.ok(args);
        assert_eq!(snapshot(&h.home()), before, "{args:?} changed the store");
    }
}

/// A Docker-written store (no .ovl2/) is read as it is; the first write adds .ovl2/.
#[test]
fn docker_store_is_read_without_adding_ovl2() {
    let h = Home::new("guard-docker");
    h.ok(&["create", "base"]);
    h.ok(&["create", "a", "--parent", "base"]);
    std::fs::remove_dir_all(h.home().join(".ovl2")).unwrap();
    let before = snapshot(&h.home());
    for args in READS {
        h.ok(args);
    }
    assert_eq!(snapshot(&h.home()), before);
    h.ok(&["create", "b", "--parent", "a"]);
    assert!(h.home().join(".ovl2/staging").is_dir());
}

/// Every command used to fail on a read-only home with `creating …/l: Read-only file system`.
#[test]
fn read_only_home_serves_reads() {
    if !require_root() {
        return;
    }
    let h = Home::new("guard-rofs");
    h.ok(&["create", "base"]);
    h.ok(&["create", "a", "--parent", "base"]);
    std::fs::write(h.home().join("a/diff/f"), "data").unwrap();
    let home = h.home();
    let mount = |args: &[&str]| assert!(std::process::Command::new("mount").args(args).status().unwrap().success());
    mount(&["--bind", home.to_str().unwrap(), home.to_str().unwrap()]);
    mount(&["-o", "remount,ro,bind", home.to_str().unwrap()]);
    let res = std::panic::catch_unwind(|| {
        assert_eq!(h.ok(&["ls"]), "base\n└── a\n");
        assert_eq!(h.ok(&["check"]), "no problems\n");
        assert_eq!(h.ok(&["changes", "a"]), "A /f\n");
        assert!(!h.ok(&["diff", "a"]).is_empty());
        let err = h.fail(&["create", "b"]);
        assert!(err.contains("Read-only file system"), "{err}");
    });
    assert!(std::process::Command::new("umount").arg(&home).status().unwrap().success());
    res.unwrap();
}

/// One damaged layer (here a FIFO as its `link`, which hung every command) stops nothing:
/// `ls` and `create` work, `check` names it, `check --repair` fixes it, and a layer whose
/// `lower` cannot be read is reported and removed with `rm --force`.
#[test]
fn a_damaged_layer_stops_no_command() {
    let h = Home::new("guard-damage");
    h.ok(&["create", "base"]);
    h.ok(&["create", "a", "--parent", "base"]);
    h.ok(&["create", "b", "--parent", "a"]);
    let fifo = |p: &Path| {
        std::fs::remove_file(p).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success());
    };
    fifo(&h.home().join("a/link"));
    fifo(&h.home().join("b/lower"));
    let run = |args: &[&str]| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut child = h.cmd().args(args).stdout(std::process::Stdio::piped()).spawn().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break child.wait_with_output().unwrap();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                // Take the FIFOs away so the harness's cleanup cannot hang on them too.
                let _ = std::fs::remove_file(h.home().join("a/link"));
                let _ = std::fs::remove_file(h.home().join("b/lower"));
                panic!("ovl2 {args:?} hung");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let check = run(&["check"]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(!check.status.success());
    assert!(out.contains("a: malformed_link: link file cannot be read: it is a FIFO, not a regular file"), "{out}");
    assert!(out.contains("b: malformed_lower: lower file cannot be read: it is a FIFO"), "{out}");
    let ls = run(&["ls"]);
    assert!(ls.status.success());
    assert!(String::from_utf8_lossy(&ls.stdout).contains("base\n└── a\n"));
    let repair = run(&["check", "--repair"]);
    let out = String::from_utf8_lossy(&repair.stdout).into_owned();
    assert!(out.contains("repaired  a: malformed_link"), "{out}");
    assert!(out.contains("problem   b: malformed_lower"), "{out}");
    assert!(run(&["create", "c", "--parent", "a"]).status.success());
    assert!(run(&["rm", "--force", "b"]).status.success());
    assert!(run(&["rm", "c"]).status.success());
    assert_eq!(h.ok(&["check"]), "no problems\n");
    assert_eq!(h.ok(&["ls"]), "base\n└── a\n");
}
