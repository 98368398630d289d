//! Container layers (`<ctr>-init` + `<ctr>`) as Docker makes them.
//! Shared bodies: every face runs them (see `faces/mod.rs`).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;
use crate::faces::Face;
use ovl2_core::{ContainerOpts, CreateOpts, ErrorKind, InitEntry, Owner};

/// An image whose top already has /etc/hosts, an /etc/mtab symlink and /proc, like real ones.
pub fn image<D: Face>(home: &Path) -> D {
    let d = D::open_default(home);
    d.create("img", None, &CreateOpts::default()).unwrap();
    let diff = home.join("img/diff");
    std::fs::create_dir_all(diff.join("etc")).unwrap();
    std::fs::create_dir_all(diff.join("proc")).unwrap();
    std::fs::write(diff.join("etc/hosts"), "127.0.0.1 image\n").unwrap();
    std::fs::write(diff.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/proc/self/mounts", diff.join("etc/mtab")).unwrap();
    std::fs::set_permissions(diff.join("etc"), std::fs::Permissions::from_mode(0o751)).unwrap();
    d.create("top", Some("img"), &CreateOpts::default()).unwrap();
    std::fs::write(home.join("top/diff/app"), "app").unwrap();
    d
}

/// path -> "type mode uid:gid [target]" for everything under `dir`.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir).into_iter().filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k, v.replace(" \"\"", ""))).collect()
}

face_test!(init_layer_holds_exactly_dockers_entries);
pub fn init_layer_holds_exactly_dockers_entries<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ctr");
    let home = s.home();
    let d = image::<D>(&home);
    d.create_container("c1", "top", &ContainerOpts::default()).unwrap();
    let got = tree(&home.join("c1-init/diff"));
    let want: BTreeMap<String, String> = [
        (".dockerenv", "file 755 0:0"),
        ("dev", "dir 755 0:0"),
        ("dev/console", "file 755 0:0"),
        ("dev/pts", "dir 755 0:0"),
        ("dev/shm", "dir 755 0:0"),
        ("etc", "dir 751 0:0"), // copied up from the image, keeping its mode
        ("etc/hostname", "file 755 0:0"),
        ("etc/hosts", "file 755 0:0"), // the image's file replaced by an empty one
        ("etc/mtab", "link -> /proc/mounts"),
        ("etc/resolv.conf", "file 755 0:0"),
        ("sys", "dir 755 0:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want, "/proc exists in the image, so the init layer has no proc/");
    // Layout: init is committed, the container sits on init then the image.
    assert!(home.join("c1-init/committed").exists());
    assert!(!home.join("c1/committed").exists());
    assert_eq!(d.parent("c1").unwrap().as_deref(), Some("c1-init"));
    assert_eq!(d.parent("c1-init").unwrap().as_deref(), Some("top"));
    let lower = read(&home.join("c1/lower"));
    assert_eq!(lower.split(':').count(), 3);
    assert!(d.mounts().unwrap().is_empty(), "the init mount was released");
    assert!(d.check().unwrap().is_empty());
}

face_test!(container_mount_shows_image_plus_init_and_writes_land_in_the_container);
pub fn container_mount_shows_image_plus_init_and_writes_land_in_the_container<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ctrmount");
    let home = s.home();
    let d = image::<D>(&home);
    d.create_container("c1", "top", &ContainerOpts::default()).unwrap();
    let init_before = snapshot(&home.join("c1-init/diff"));
    let m = d.get("c1", None).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("app")).unwrap(), "app");
    assert_eq!(std::fs::read_to_string(m.join("etc/passwd")).unwrap(), "root:x:0:0::/root:/bin/sh\n");
    assert_eq!(std::fs::metadata(m.join("etc/hosts")).unwrap().len(), 0, "init's empty hosts shadows the image's");
    assert_eq!(std::fs::read_link(m.join("etc/mtab")).unwrap(), Path::new("/proc/mounts"));
    assert!(m.join(".dockerenv").is_file() && m.join("dev/pts").is_dir());
    std::fs::write(m.join("etc/hostname"), "box\n").unwrap();
    std::fs::write(m.join("new"), "x").unwrap();
    d.put("c1").unwrap();
    assert_eq!(read(&home.join("c1/diff/etc/hostname")), "box\n");
    assert!(home.join("c1/diff/new").exists());
    assert_eq!(snapshot(&home.join("c1-init/diff")), init_before, "the init layer is untouched");
}

face_test!(custom_entries_and_remapped_root);
pub fn custom_entries_and_remapped_root<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ctrcustom");
    let home = s.home();
    let d = image::<D>(&home);
    let mut opts = ContainerOpts::default();
    opts.init_entries.push(InitEntry::dir("/run/secrets"));
    opts.root = Some(Owner::from_raw(100000, 100000));
    d.create_container("c2", "top", &opts).unwrap();
    let md = |p: &str| std::fs::symlink_metadata(home.join("c2-init/diff").join(p)).unwrap();
    assert!(md("run/secrets").is_dir());
    assert_eq!((md("run").uid(), md("run/secrets").gid()), (100000, 100000), "new dirs belong to the container's root");
    assert_eq!(md(".dockerenv").uid(), 100000);
    assert_eq!(md("etc").uid(), 0, "copied-up dirs keep the image's owner");
    let opts = ContainerOpts { init_entries: vec![InitEntry::file("/only")], ..ContainerOpts::default() };
    d.create_container("c3", "top", &opts).unwrap();
    assert_eq!(tree(&home.join("c3-init/diff")).keys().collect::<Vec<_>>(), ["only"]);
}

face_test!(refusals_leave_nothing_behind);
pub fn refusals_leave_nothing_behind<D: Face>() {
    let s = Scratch::new("ctrrefuse");
    let home = s.home();
    let d = D::open_default(&home);
    d.create("img", None, &CreateOpts::default()).unwrap();
    let before = snapshot(&home);
    assert_eq!(d.create_container("c", "missing", &ContainerOpts::default()).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        d.create_container("../c", "img", &ContainerOpts::default()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let bad = ContainerOpts { init_entries: vec![InitEntry::file("/etc/../../escape")], ..ContainerOpts::default() };
    let e = d.create_container("c", "img", &bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("escape"), "{e}");
    let rel = ContainerOpts { init_entries: vec![InitEntry::file("relative")], ..ContainerOpts::default() };
    assert_eq!(d.create_container("c", "img", &rel).unwrap_err().kind(), ErrorKind::InvalidArgument);
    d.create("c-init", None, &CreateOpts::default()).unwrap();
    assert_eq!(d.create_container("c", "img", &ContainerOpts::default()).unwrap_err().kind(), ErrorKind::Exists);
    d.remove("c-init", false).unwrap();
    assert_eq!(snapshot(&home), before);
    assert_eq!(d.remove_container("c", false).unwrap_err().kind(), ErrorKind::NotFound);
}

face_test!(remove_container_refuses_while_mounted_unless_forced);
pub fn remove_container_refuses_while_mounted_unless_forced<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ctrrm");
    let home = s.home();
    let d = image::<D>(&home);
    d.create_container("c1", "top", &ContainerOpts::default()).unwrap();
    let m = d.get("c1", None).unwrap();
    assert_eq!(d.remove_container("c1", false).unwrap_err().kind(), ErrorKind::Busy);
    assert!(home.join("c1").exists() && home.join("c1-init").exists());
    d.remove_container("c1", true).unwrap();
    assert!(!home.join("c1").exists() && !home.join("c1-init").exists());
    assert!(mountinfo_options(&m).is_none());
    assert!(d.mounts().unwrap().is_empty());
    assert!(d.check().unwrap().is_empty());
    assert_eq!(d.layers().unwrap().len(), 2);
}

face_test!(remove_container_takes_its_lock_before_reading);
/// `remove_container` takes the container's pending lock before it looks at the layers: while
/// another process is creating the container, the answer is "busy", not a "does not exist"
/// read before the creator finished.
pub fn remove_container_takes_its_lock_before_reading<D: Face>() {
    let s = Scratch::new("ctr-rm-lock");
    let home = s.home();
    let d = image::<D>(&home);
    // What a creator holds while it works: the flocked record .ovl2/pending/<ctr>.
    let record = std::fs::File::create(home.join(".ovl2/pending/c1")).unwrap();
    rustix::fs::flock(&record, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let e = d.remove_container("c1", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("another process is creating this container"), "{e}");
    drop(record);
    // Its owner gone, the record is a leftover: removal of a container that does not exist
    // says so and leaves no record behind.
    std::fs::remove_file(home.join(".ovl2/pending/c1")).unwrap();
    assert_eq!(d.remove_container("c1", false).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(std::fs::read_dir(home.join(".ovl2/pending")).unwrap().count(), 0);
}
