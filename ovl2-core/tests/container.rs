//! Container layers (`<ctr>-init` + `<ctr>`) as Docker makes them: the shared bodies in
//! `faces/container.rs` on the Rust face (`ovl2-ffi/tests/container.rs` runs them on the C
//! face), and the check that needs `Driver::features`, which only Rust has.

mod common;
#[macro_use]
mod faces;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(rust = ovl2_core::Driver, $name);
    };
}

#[path = "faces/container.rs"]
mod shared;

use common::*;
use ovl2_core::{ContainerOpts, CreateOpts, Driver, Options};

#[test]
fn a_full_disk_at_any_point_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ctrfull");
    let fs = s.path().join("fs");
    // A tiny filesystem whose inodes run out, so ENOSPC can hit every step in turn.
    tiny_fs(&fs, c"size=16m,nr_inodes=400,mode=755");
    let home = fs.join("home");
    let d = Driver::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    d.create("img", None, &CreateOpts::default()).unwrap();
    std::fs::create_dir_all(home.join("img/diff/etc")).unwrap();
    std::fs::write(home.join("img/diff/etc/hosts"), "x").unwrap();
    d.features(); // probe once now, so its cache file is not part of what we compare
    let filler = fs.join("filler");
    let n = fill_inodes(&filler);
    let (mut failures, mut created) = (0, false);
    for k in 0..n {
        std::fs::remove_file(filler.join(k.to_string())).unwrap();
        let before = snapshot(&home);
        match d.create_container("c", "img", &ContainerOpts::default()) {
            Ok(()) => {
                created = true;
                break;
            }
            Err(e) => {
                failures += 1;
                assert_eq!(snapshot(&home), before, "failure {failures} ({e}) left something behind");
                assert!(d.mounts().unwrap().is_empty(), "{e}: a mount was left");
            }
        }
    }
    assert!(failures >= 5, "ENOSPC hit several different steps ({failures})");
    assert!(created, "creation succeeds once there is room");
    assert!(d.check().unwrap().is_empty());
    eprintln!("  {failures} failed attempts, each rolled back completely");
}
