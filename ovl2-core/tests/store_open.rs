//! What opening a store may do to its home: create only where asked and only in a missing or
//! empty directory, refuse anything that is not a store, and never write when read-only.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use ovl2_core::{CreateOpts, Driver, ErrorKind, OpenMode, Options};

fn with_mode(mode: OpenMode) -> Options {
    Options { open_mode: mode, sync: false, ..Options::default() }
}

/// A directory that is not a store (say /tmp) must come out of every open exactly as it was.
#[test]
fn a_non_empty_directory_that_is_not_a_store_is_refused_untouched() {
    let s = Scratch::new("notastore");
    let dir = s.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("someone-else"), "x").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).ok();
    let before = snapshot(s.path());
    for mode in [OpenMode::Create, OpenMode::Existing, OpenMode::ReadOnly] {
        let e = Driver::open(&dir, with_mode(mode)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{mode:?}: {e}");
        assert!(e.to_string().contains("is not an ovl2/overlay2 store"), "{e}");
        assert!(e.to_string().contains(dir.to_str().unwrap()), "{e}");
        assert_eq!(snapshot(s.path()), before, "{mode:?} changed the directory");
    }
}

#[test]
fn only_create_makes_a_store_and_only_in_a_missing_or_empty_dir() {
    let s = Scratch::new("createonly");
    let missing = s.path().join("missing");
    let empty = s.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for mode in [OpenMode::Existing, OpenMode::ReadOnly] {
        let e = Driver::open(&missing, with_mode(mode)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(e.errno(), Some(libc_enoent()));
        assert!(!missing.exists(), "{mode:?} created the home");
        let e = Driver::open(&empty, with_mode(mode)).unwrap_err();
        assert!(e.to_string().contains("is not an ovl2/overlay2 store: it is empty"), "{e}");
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{mode:?} wrote into the empty dir");
    }
    Driver::open(&missing, with_mode(OpenMode::Create)).unwrap();
    Driver::open(&empty, with_mode(OpenMode::Create)).unwrap();
    assert!(missing.join("l").is_dir() && empty.join("l").is_dir());
    // Once a store, every mode opens it.
    Driver::open(&empty, with_mode(OpenMode::Existing)).unwrap();
    Driver::open(&empty, with_mode(OpenMode::ReadOnly)).unwrap();
}

fn libc_enoent() -> i32 {
    rustix::io::Errno::NOENT.raw_os_error()
}

#[test]
fn a_home_that_is_not_a_directory_says_so() {
    let e = Driver::open("/dev/null", Options::default()).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Exists, "{e}");
    assert_eq!(e.errno(), Some(rustix::io::Errno::NOTDIR.raw_os_error()), "{e}");
    assert!(e.to_string().contains("/dev/null is not a directory"), "{e}");
}

#[test]
fn proc_self_is_refused_without_a_chmod() {
    let before = std::fs::metadata("/proc/self").unwrap();
    let e = Driver::open("/proc/self", Options::default()).unwrap_err();
    assert!(e.to_string().contains("is not an ovl2/overlay2 store"), "{e}");
    let after = std::fs::metadata("/proc/self").unwrap();
    assert_eq!((before.mode(), before.uid(), before.gid()), (after.mode(), after.uid(), after.gid()));
}

/// Read-only: nothing in the store changes, not even modes, and every write is refused.
#[test]
fn read_only_open_writes_nothing_and_refuses_writes() {
    let s = Scratch::new("readonly");
    let home = s.home();
    let d = open_fast(&home);
    d.create("a", None, &CreateOpts::default()).unwrap();
    d.create("b", Some("a"), &CreateOpts::default()).unwrap();
    drop(d);
    // Modes another tool set must survive a read-only open (a writing open resets them).
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(home.join(".ovl2/lock")).ok();
    let before = snapshot(&home);
    let d = Driver::open(&home, with_mode(OpenMode::ReadOnly)).unwrap();
    assert!(d.is_read_only());
    assert_eq!(d.layers().unwrap().len(), 2);
    assert_eq!(d.parent("b").unwrap().as_deref(), Some("a"));
    d.metadata("b").unwrap();
    assert!(d.check().unwrap().is_empty());
    d.status().unwrap();
    assert!(d.mounts().unwrap().is_empty());
    d.changes("b", None).unwrap();
    d.diff_size("b", None).unwrap();
    d.diff("b", None, std::io::sink()).unwrap();
    let refused: Vec<(&str, ovl2_core::Error)> = vec![
        ("create", d.create("c", Some("b"), &CreateOpts::default()).unwrap_err()),
        ("remove", d.remove("b", true).unwrap_err()),
        ("repair", d.repair().unwrap_err()),
        ("get", d.get("b", None).unwrap_err()),
        ("put", d.put("b").unwrap_err()),
        ("cleanup", d.cleanup().unwrap_err()),
        ("apply", d.apply_diff("b", Some("a"), &[0u8; 1024][..]).unwrap_err()),
        ("container", d.create_container("ctr", "b", &Default::default()).unwrap_err()),
    ];
    for (what, e) in refused {
        assert_eq!(e.kind(), ErrorKind::Permission, "{what}: {e}");
        assert_eq!(e.errno(), Some(rustix::io::Errno::ROFS.raw_os_error()), "{what}: {e}");
        assert!(e.to_string().contains("opened read-only"), "{what}: {e}");
    }
    drop(d);
    assert_eq!(snapshot(&home), before, "a read-only open changed the store");
}

/// A store Docker wrote has no .ovl2/: read-only opens work without making one; a writing
/// open adds it.
#[test]
fn docker_store_without_ovl2_opens_read_only_as_it_is() {
    let s = Scratch::new("dockerstore");
    let home = s.home();
    let d = open_fast(&home);
    d.create("a", None, &CreateOpts::default()).unwrap();
    d.create("b", Some("a"), &CreateOpts::default()).unwrap();
    drop(d);
    std::fs::remove_dir_all(home.join(".ovl2")).unwrap();
    let before = snapshot(&home);
    let d = Driver::open(&home, with_mode(OpenMode::ReadOnly)).unwrap();
    assert_eq!(d.layers().unwrap().len(), 2);
    assert!(d.check().unwrap().is_empty(), "{:?}", d.check().unwrap());
    d.status().unwrap();
    assert!(d.mounts().unwrap().is_empty());
    d.changes("b", None).unwrap();
    drop(d);
    assert_eq!(snapshot(&home), before);
    assert!(!home.join(".ovl2").exists());
    let d = Driver::open(&home, with_mode(OpenMode::Existing)).unwrap();
    d.create("c", Some("b"), &CreateOpts::default()).unwrap();
    assert!(home.join(".ovl2/staging").is_dir());
}

/// A home on a read-only file system: the reading calls work (they failed with `creating
/// …/l: Read-only file system`).
#[test]
fn read_only_filesystem_home_serves_reads() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("rofs");
    let home = s.home();
    let d = open_fast(&home);
    d.create("a", None, &CreateOpts::default()).unwrap();
    d.create("b", Some("a"), &CreateOpts::default()).unwrap();
    std::fs::write(home.join("b/diff/file"), "data").unwrap();
    drop(d);
    use rustix::mount::{mount_bind, mount_remount, MountFlags};
    mount_bind(&home, &home).unwrap();
    mount_remount(&home, MountFlags::BIND | MountFlags::RDONLY, c"").unwrap();
    let res = std::panic::catch_unwind(|| {
        let d = Driver::open(&home, with_mode(OpenMode::ReadOnly)).unwrap();
        assert_eq!(d.layers().unwrap().len(), 2);
        assert!(d.check().unwrap().is_empty());
        assert_eq!(d.changes("b", None).unwrap().len(), 1);
        let mut tar = Vec::new();
        d.diff("b", None, &mut tar).unwrap();
        assert!(!tar.is_empty());
    });
    rustix::mount::unmount(&home, rustix::mount::UnmountFlags::DETACH).unwrap();
    res.unwrap();
}
