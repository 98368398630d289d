//! Repair of what crashes, older Docker releases and other tools leave behind.

mod common;

use std::os::unix::fs::symlink;

use common::*;
use ovl2_core::{CreateOpts, Driver, Options, ProblemKind};

fn co() -> CreateOpts {
    CreateOpts::default()
}

fn chain(home: &std::path::Path) -> Driver {
    let d = open(home);
    d.create("a", None, &co()).unwrap();
    d.create("b", Some("a"), &co()).unwrap();
    d.create("c", Some("b"), &co()).unwrap();
    d.create_rw("ctr", Some("c"), &co()).unwrap();
    d
}

fn no_repair(home: &std::path::Path) -> Driver {
    Driver::open(home, Options { repair_on_open: false, ..Options::default() }).unwrap()
}

fn kinds(d: &Driver) -> Vec<ProblemKind> {
    let mut k: Vec<_> = d.check().unwrap().into_iter().map(|p| p.kind).collect();
    k.sort();
    k
}

#[test]
fn check_changes_nothing() {
    let s = Scratch::new("checkro");
    let home = s.home();
    chain(&home);
    for lid in std::fs::read_dir(home.join("l")).unwrap() {
        std::fs::remove_file(lid.unwrap().path()).unwrap();
    }
    std::fs::remove_file(home.join("b/link")).unwrap();
    std::fs::create_dir_all(home.join(".ovl2/staging/new-stale/diff")).unwrap();
    let d = no_repair(&home);
    let before = snapshot(&home);
    assert!(!d.check().unwrap().is_empty());
    assert_eq!(snapshot(&home), before);
}

#[test]
fn stale_staging_is_removed_on_open() {
    let s = Scratch::new("staging");
    let home = s.home();
    chain(&home);
    std::fs::create_dir_all(home.join(".ovl2/staging/new-dead/diff/deep/er")).unwrap();
    std::fs::write(home.join(".ovl2/staging/new-dead/link"), "X").unwrap();
    std::fs::create_dir_all(home.join(".ovl2/staging/rm-dead/diff")).unwrap();
    assert_eq!(kinds(&no_repair(&home)), [ProblemKind::StaleStaging, ProblemKind::StaleStaging]);
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    assert!(std::fs::read_dir(home.join(".ovl2/staging")).unwrap().next().is_none());
}

#[test]
fn staging_held_by_a_live_owner_is_left_alone() {
    let s = Scratch::new("staginglive");
    let home = s.home();
    chain(&home);
    let p = home.join(".ovl2/staging/new-live");
    std::fs::create_dir_all(p.join("diff")).unwrap();
    let fd = ovl2_core::fsutil::open_dir_path(&p).unwrap();
    assert!(ovl2_core::fsutil::flock(&fd, true, true).unwrap());
    let d = open(&home);
    assert!(d.check().unwrap().is_empty(), "in-use staging is not a problem");
    assert!(p.join("diff").is_dir(), "and is not deleted");
    drop(fd);
    assert_eq!(kinds(&d), [ProblemKind::StaleStaging]);
}

#[test]
fn lost_short_links_are_recreated_with_the_same_names() {
    let s = Scratch::new("links");
    let home = s.home();
    let d = chain(&home);
    let meta_before = d.metadata("ctr").unwrap();
    let links_before = snapshot(&home.join("l"));
    for lid in std::fs::read_dir(home.join("l")).unwrap() {
        std::fs::remove_file(lid.unwrap().path()).unwrap();
    }
    assert_eq!(kinds(&no_repair(&home)), vec![ProblemKind::MissingShortLink; 4]);
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    assert_eq!(snapshot(&home.join("l")), links_before);
    assert_eq!(d.metadata("ctr").unwrap(), meta_before);
}

#[test]
fn lost_link_files_are_recovered_from_l() {
    let s = Scratch::new("linkfiles");
    let home = s.home();
    chain(&home);
    let before = snapshot(&home);
    std::fs::remove_file(home.join("a/link")).unwrap();
    std::fs::write(home.join("b/link"), "").unwrap(); // pre-v25 Docker crash
    let lid_c = read(&home.join("c/link"));
    std::fs::write(home.join("c/link"), format!("{lid_c}\n")).unwrap();
    assert_eq!(
        kinds(&no_repair(&home)),
        [ProblemKind::MissingLink, ProblemKind::MissingLink, ProblemKind::MalformedLink]
    );
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    assert_eq!(snapshot(&home), before, "same short ids as before, so the children's lower files stay valid");
}

#[test]
fn a_leaf_that_lost_both_names_gets_a_new_short_id() {
    let s = Scratch::new("newlid");
    let home = s.home();
    chain(&home);
    let lid = read(&home.join("ctr/link"));
    std::fs::remove_file(home.join("ctr/link")).unwrap();
    std::fs::remove_file(home.join("l").join(&lid)).unwrap();
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    assert_complete(&home, "ctr", true);
    assert_ne!(read(&home.join("ctr/link")), lid);
}

#[test]
fn dangling_wrong_and_unused_links() {
    let s = Scratch::new("dangling");
    let home = s.home();
    chain(&home);
    symlink("../gone/diff", home.join("l/AAAAAAAAAAAAAAAAAAAAAAAAAA")).unwrap();
    symlink("../a/diff", home.join("l/BBBBBBBBBBBBBBBBBBBBBBBBBB")).unwrap(); // Docker leaks these on re-create
    let lid_b = read(&home.join("b/link"));
    std::fs::remove_file(home.join("l").join(&lid_b)).unwrap();
    symlink("../a/diff", home.join("l").join(&lid_b)).unwrap();
    assert_eq!(
        kinds(&no_repair(&home)),
        [ProblemKind::WrongShortLink, ProblemKind::DanglingShortLink, ProblemKind::UnusedShortLink]
    );
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    assert!(!home.join("l/AAAAAAAAAAAAAAAAAAAAAAAAAA").exists());
    assert!(std::fs::symlink_metadata(home.join("l/BBBBBBBBBBBBBBBBBBBBBBBBBB")).is_err());
    assert_complete(&home, "b", true);
}

#[test]
fn missing_work_and_committed_are_restored() {
    let s = Scratch::new("work");
    let home = s.home();
    chain(&home);
    let before = snapshot(&home);
    std::fs::remove_dir(home.join("b/work")).unwrap();
    std::fs::remove_file(home.join("c/committed")).unwrap();
    assert_eq!(kinds(&no_repair(&home)), [ProblemKind::MissingWork, ProblemKind::MissingCommitted]);
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    assert_eq!(snapshot(&home), before);
}

#[test]
fn unrepairable_damage_is_reported_and_layers_are_kept() {
    let s = Scratch::new("unrepairable");
    let home = s.home();
    chain(&home);
    std::fs::write(home.join("c/lower"), "").unwrap();
    std::fs::remove_dir(home.join("a/diff")).unwrap();
    let lid_ws = read(&home.join("b/lower"));
    std::fs::write(home.join("b/lower"), format!("{lid_ws}\n")).unwrap();
    let d = open(&home);
    let left = kinds(&d);
    assert_eq!(left, [ProblemKind::MissingDiff, ProblemKind::MalformedLower], "{left:?}");
    assert!(d.check().unwrap().iter().all(|p| !p.repairable));
    assert_eq!(read(&home.join("b/lower")), lid_ws, "whitespace trimmed");
    for id in ["a", "b", "c", "ctr"] {
        assert!(home.join(id).is_dir(), "repair never deletes layer {id}");
    }
    let r = d.repair().unwrap();
    assert!(r.repaired.is_empty());
    assert_eq!(r.remaining.len(), 2);
}

#[test]
fn docker_half_created_layer_is_completed() {
    // Docker creates <id>/ and diff/ before link: a crash there leaves a layer without link.
    let s = Scratch::new("half");
    let home = s.home();
    chain(&home);
    std::fs::create_dir_all(home.join("half/diff")).unwrap();
    assert_eq!(kinds(&no_repair(&home)), [ProblemKind::MissingLink]);
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    assert_complete(&home, "half", false);
}

#[test]
fn create_on_a_full_disk_fails_cleanly_at_every_step() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("fullcreate");
    let fs = s.path().join("fs");
    // A tiny filesystem whose inodes run out, so ENOSPC can hit every step in turn.
    tiny_fs(&fs, c"size=4m,nr_inodes=200,mode=755");
    let home = fs.join("home");
    let d = Driver::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    d.create("base", None, &co()).unwrap();
    let filler = fs.join("filler");
    let n = fill_inodes(&filler);
    let mut failures = 0;
    for k in 0..n {
        std::fs::remove_file(filler.join(k.to_string())).unwrap();
        let before = snapshot(&home);
        match d.create("child", Some("base"), &co()) {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                assert_eq!(snapshot(&home), before, "failure {failures} ({e}) changed the store");
            }
        }
    }
    assert!(failures >= 3, "ENOSPC hit several steps ({failures})");
    assert_complete(&home, "child", true);
    assert!(d.check().unwrap().is_empty());
}

#[test]
fn repair_in_other_handles_never_deletes_a_live_apply() {
    // Found in review: an apply's staging dir could be deleted by another process's open
    // (repair) between its mkdir and its flock.
    let s = Scratch::new("applyrace");
    let home = s.home();
    let d = std::sync::Arc::new(open_fast(&home));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "f", &b"hello"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let (home, stop) = (home.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(open_fast(&home));
                }
            })
        })
        .collect();
    for i in 0..400 {
        let id = format!("l{i}");
        d.create(&id, None, &co()).unwrap();
        d.apply_diff(&id, None, &layer[..]).unwrap_or_else(|e| panic!("apply {i} raced with repair: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for o in openers {
        o.join().unwrap();
    }
    assert!(d.check().unwrap().is_empty());
}
