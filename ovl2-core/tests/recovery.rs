//! Repair of what crashes, older Docker releases and other tools leave behind.

mod common;

use std::os::unix::fs::symlink;

use rustix::fs::{FlockOperation, Mode, OFlags};

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
    let fd = rustix::fs::open(&p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    assert!(rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok());
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
    // An empty lower in the leaf: no descendant records its chain (a middle layer's would
    // be recovered from its child's; see a_leaf_that_lost_its_lower_is_reported_not_made_a_base).
    std::fs::write(home.join("ctr/lower"), "").unwrap();
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

/// The reproduction: every `l/` link and `mid/link` lost. The short id of `mid` lives
/// on in `top/lower`; repair must give it back, not mint a new one that orphans `top`.
#[test]
fn a_parent_that_lost_both_names_gets_its_short_id_back_from_its_child() {
    let s = Scratch::new("parentlid");
    let home = s.home();
    let d = open(&home);
    d.create("base", None, &co()).unwrap();
    d.create("mid", Some("base"), &co()).unwrap();
    d.create("top", Some("mid"), &co()).unwrap();
    drop(d);
    let before = snapshot(&home);
    for l in std::fs::read_dir(home.join("l")).unwrap() {
        std::fs::remove_file(l.unwrap().path()).unwrap();
    }
    std::fs::remove_file(home.join("mid/link")).unwrap();
    let d = no_repair(&home);
    let found = d.check().unwrap();
    assert!(found.iter().all(|p| p.repairable), "{found:?}");
    assert!(found.iter().any(|p| p.kind == ProblemKind::MissingLink && p.detail.contains("recovered")), "{found:?}");
    let r = d.repair().unwrap();
    assert!(r.remaining.is_empty(), "{:?}", r.remaining);
    assert!(d.check().unwrap().is_empty());
    assert_eq!(snapshot(&home), before, "the same short ids as before, everywhere");
    assert_eq!(d.parent("top").unwrap().as_deref(), Some("mid"));
    let h = home.display();
    assert_eq!(
        d.metadata("top").unwrap().lower_dir.unwrap(),
        std::ffi::OsString::from(format!("{h}/mid/diff:{h}/base/diff"))
    );
}

/// A leaf that lost its `lower` has no descendant to recover it from: it is reported (its
/// `work/` shows it had a parent), never silently made a base layer.
#[test]
fn a_leaf_that_lost_its_lower_is_reported_not_made_a_base() {
    let s = Scratch::new("leaflower");
    let home = s.home();
    chain(&home);
    std::fs::remove_file(home.join("ctr/lower")).unwrap();
    let d = open(&home);
    let left = d.check().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (left[0].layer.as_deref(), left[0].kind, left[0].repairable),
        (Some("ctr"), ProblemKind::MissingLower, false)
    );
    assert!(
        left[0].detail.contains("parent cannot be known") && left[0].detail.contains("ovl2 rm ctr"),
        "{}",
        left[0].detail
    );
    assert!(!home.join("ctr/lower").exists(), "nothing invented");
    // A middle layer's lost lower comes back from its child's.
    let lower_b = read(&home.join("b/lower"));
    std::fs::remove_file(home.join("b/lower")).unwrap();
    let found = no_repair(&home).check().unwrap();
    assert!(found
        .iter()
        .any(|p| p.layer.as_deref() == Some("b") && p.kind == ProblemKind::MissingLower && p.repairable));
    drop(open(&home));
    assert_eq!(read(&home.join("b/lower")), lower_b);
}

/// Every combination of lost `link`, lost `l/` name and lost `lower`, over every layer of a
/// four-layer chain at once (so every single, pair, triple and quadruple of damaged layers):
/// one repair must mend everything the store still records, invent nothing wrong, and leave
/// the top mountable. The only losses that cannot be undone are a lower file that no
/// descendant records (the top's) and two layers that lost all three names (which of them
/// owns which short id is then unknowable); those stay reported.
#[test]
fn repair_matrix_of_lost_names_and_lowers() {
    if !require_root() {
        return;
    }
    const IDS: [&str; 4] = ["a", "b", "c", "d"];
    const LINK: u8 = 1;
    const SHORT: u8 = 2;
    const LOWER: u8 = 4;
    let s = Scratch::new("matrix");
    // On a tmpfs: 2048 stores made and deleted on a disk mounted with `discard` take minutes.
    let fs = s.path().join("fs");
    tiny_fs(&fs, c"size=64m,mode=0755");
    // One store, copied for each case (with its cached kernel probe, so no case re-probes).
    let tmpl = fs.join("template");
    let d = open_fast(&tmpl);
    for (i, id) in IDS.iter().enumerate() {
        d.create(id, if i == 0 { None } else { Some(IDS[i - 1]) }, &co()).unwrap();
        std::fs::write(tmpl.join(id).join("diff").join(format!("f-{id}")), id).unwrap();
    }
    d.get("d", None).unwrap();
    d.put("d").unwrap();
    drop(d);
    let lids: Vec<String> = IDS.iter().map(|id| read(&tmpl.join(id).join("link"))).collect();
    let (mut cases, mut clean) = (0, 0);
    for combo in 0..8u32.pow(4) {
        let loss: Vec<u8> = (0..4).map(|i| ((combo >> (3 * i)) & 7) as u8).collect();
        if loss[0] & LOWER != 0 {
            continue; // a base layer has no lower to lose
        }
        cases += 1;
        let home = fs.join(format!("c{combo}"));
        copy_tree(&tmpl, &home);
        let h = home.display();
        let truth: Vec<Option<String>> = (0..4)
            .map(|i| {
                (i > 0).then(|| (0..i).rev().map(|j| format!("{h}/{}/diff", IDS[j])).collect::<Vec<_>>().join(":"))
            })
            .collect();
        for (i, id) in IDS.iter().enumerate() {
            if loss[i] & LINK != 0 {
                std::fs::remove_file(home.join(id).join("link")).unwrap();
            }
            if loss[i] & SHORT != 0 {
                std::fs::remove_file(home.join("l").join(&lids[i])).unwrap();
            }
            if loss[i] & LOWER != 0 {
                std::fs::remove_file(home.join(id).join("lower")).unwrap();
            }
        }
        let ctx = format!("case {loss:?} (link={LINK}, l/={SHORT}, lower={LOWER} per layer a..d)");
        let d = Driver::open(&home, Options { repair_on_open: false, sync: false, ..Options::default() }).unwrap();
        let r = d.repair().unwrap();
        assert!(r.remaining.iter().all(|p| !p.repairable), "{ctx}: repair left repairable problems {:?}", r.remaining);
        assert_eq!(d.check().unwrap(), r.remaining, "{ctx}");
        // Nothing wrong was invented: every chain that resolves is the true one.
        for (i, id) in IDS.iter().enumerate() {
            if let Ok(m) = d.metadata(id) {
                if home.join(id).join("lower").exists() || i == 0 {
                    assert_eq!(
                        m.lower_dir,
                        truth[i].clone().map(std::ffi::OsString::from),
                        "{ctx}: layer {id} got a wrong chain"
                    );
                }
            }
        }
        let lost_all = |i: usize| loss[i] == LINK | SHORT | LOWER;
        let recoverable = loss[3] & LOWER == 0 && !(lost_all(1) && lost_all(2));
        if loss[3] & LOWER != 0 {
            assert!(
                r.remaining.iter().any(|p| p.layer.as_deref() == Some("d") && p.kind == ProblemKind::MissingLower),
                "{ctx}: the top's lost lower must be reported: {:?}",
                r.remaining
            );
        }
        if recoverable {
            clean += 1;
            assert!(r.remaining.is_empty(), "{ctx}: {:?}", r.remaining);
            for i in 0..3 {
                assert_eq!(read(&home.join(IDS[i]).join("link")), lids[i], "{ctx}: {} keeps its short id", IDS[i]);
            }
            let parents: Vec<_> = d.layers().unwrap().into_iter().map(|l| (l.id, l.parent, l.depth)).collect();
            let want: Vec<_> =
                (0..4).map(|i| (IDS[i].to_string(), (i > 0).then(|| IDS[i - 1].to_string()), i)).collect();
            assert_eq!(parents, want, "{ctx}");
            let merged = d.get("d", None).unwrap();
            for id in IDS {
                assert_eq!(std::fs::read_to_string(merged.join(format!("f-{id}"))).unwrap(), id, "{ctx}");
            }
            d.put("d").unwrap();
        }
        drop(d);
        std::fs::remove_dir_all(&home).unwrap();
    }
    eprintln!("{cases} damage combinations, {clean} fully repaired and mounted");
    assert_eq!(cases, 4 * 8 * 8 * 8);
}

/// `cp -a` for a small store (dirs, files, symlinks), without a process per copy.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type().unwrap();
        if ty.is_symlink() {
            symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
            continue;
        }
        if ty.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
        let mode = std::fs::metadata(&src).unwrap().permissions().mode();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
