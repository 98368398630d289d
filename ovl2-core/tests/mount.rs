//! Real overlay mounts: every strategy at every depth, read-only rules, refcounts, awkward
//! homes. These need root and overlayfs; under CI=true they fail rather than skip.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use ovl2_core::{CreateOpts, Driver, ErrorKind, MountOpts, MountStrategy, Options};

fn co() -> CreateOpts {
    CreateOpts::default()
}

fn driver(home: &Path, strategy: MountStrategy, disabled: &[&str]) -> Driver {
    Driver::open(
        home,
        Options {
            sync: false,
            mount_strategy: Some(strategy),
            disabled_features: disabled.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        },
    )
    .unwrap()
}

fn mounted_at(p: &Path) -> bool {
    mountinfo_options(p).is_some()
}

fn mount_options(p: &Path) -> Vec<String> {
    mountinfo_options(p).expect("mounted").split(',').map(str::to_owned).collect()
}
/// A chain L1..=Ln with a file in each layer's diff, plus uncommitted leaves `rw<d>` at the
/// depths given (a leaf at depth d sits on L<d-1>).
fn build_chain(home: &Path, n: usize, leaves: &[usize]) {
    let d = open_fast(home);
    d.create("L1", None, &co()).unwrap();
    std::fs::write(home.join("L1/diff/bottom"), "from L1").unwrap();
    for i in 2..=n {
        d.create(&format!("L{i}"), Some(&format!("L{}", i - 1)), &co()).unwrap();
        std::fs::write(home.join(format!("L{i}/diff/f{i}")), format!("from L{i}")).unwrap();
    }
    for &depth in leaves {
        d.create_rw(&format!("rw{depth}"), Some(&format!("L{}", depth - 1)), &co()).unwrap();
    }
}

/// Mounts a read-write leaf and checks reads, writes, whiteouts and the final unmount.
fn exercise_rw(d: &Driver, home: &Path, id: &str, depth: usize) -> String {
    let merged = d.get(id, None).unwrap();
    assert_eq!(merged, home.join(id).join("merged"));
    assert!(mounted_at(&merged), "{id} mounted");
    assert_eq!(
        std::fs::read_to_string(merged.join("bottom")).unwrap(),
        "from L1",
        "{id}: bottom visible through {depth} layers"
    );
    if depth > 2 {
        let f = format!("f{}", depth - 1);
        assert_eq!(std::fs::read_to_string(merged.join(&f)).unwrap(), format!("from L{}", depth - 1));
    }
    std::fs::write(merged.join("written"), "up").unwrap();
    assert_eq!(
        std::fs::read_to_string(home.join(id).join("diff/written")).unwrap(),
        "up",
        "writes land in the top diff"
    );
    std::fs::remove_file(merged.join("bottom")).unwrap();
    let wh = std::fs::symlink_metadata(home.join(id).join("diff/bottom")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "deleting a lower file leaves a 0:0 whiteout");
    assert!(!merged.join("bottom").exists());
    let method = d.mounts().unwrap().into_iter().find(|m| m.id == id).unwrap().method;
    d.put(id).unwrap();
    assert!(!mounted_at(&merged), "{id}: last put unmounts");
    assert!(!merged.exists(), "{id}: merged/ removed");
    assert!(d.mounts().unwrap().is_empty());
    // Undo the changes so the next strategy sees the same chain.
    std::fs::remove_file(home.join(id).join("diff/bottom")).unwrap();
    std::fs::remove_file(home.join(id).join("diff/written")).unwrap();
    method
}

fn check_readonly(d: &Driver, id: &str, opts: &MountOpts) {
    let merged = d.get_with(id, opts).unwrap();
    assert_eq!(std::fs::read_to_string(merged.join("bottom")).unwrap(), "from L1");
    let e = std::fs::write(merged.join("nope"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30), "EROFS on a read-only mount of {id}: {e}");
    d.put(id).unwrap();
    assert!(!merged.exists());
}

fn strategy_at_depths(strategy: MountStrategy, disabled: &[&str], expect: &[(usize, &str)]) {
    if !require_root() {
        return;
    }
    let s = Scratch::new("depths");
    let home = s.home();
    build_chain(&home, 500, &[2, 128, 129]);
    let d = driver(&home, strategy, disabled);
    // Depth 1: a base layer is returned as its diff, unmounted, as Docker does.
    assert_eq!(d.get("L1", None).unwrap(), home.join("L1/diff"));
    assert!(d.mounts().unwrap().is_empty());
    d.put("L1").unwrap();
    for &(depth, method) in expect {
        let id = if depth == 500 { "L500".to_string() } else { format!("rw{depth}") };
        let got = exercise_rw(&d, &home, &id, depth);
        assert_eq!(got, method, "{strategy:?} at depth {depth}");
    }
    // Committed layers mount read-only; an explicit read-only mount of L500 has 500 lowers.
    check_readonly(&d, "L2", &MountOpts::default());
    check_readonly(&d, "L499", &MountOpts::default());
    check_readonly(&d, "L500", &MountOpts { readonly: true, ..MountOpts::default() });
    // Depth 501 cannot even be created.
    assert_eq!(d.create("L501", Some("L500"), &co()).unwrap_err().kind(), ErrorKind::MaxDepth);
}

#[test]
fn new_strategy_with_fds_at_depths_1_2_128_129_500() {
    strategy_at_depths(MountStrategy::New, &[], &[(2, "new-fd"), (128, "new-fd"), (129, "new-fd"), (500, "new-fd")]);
}

#[test]
fn new_strategy_with_paths_at_depths_1_2_128_129_500() {
    // The lowerdir+ string fallback (kernels 6.8 to 6.12).
    strategy_at_depths(
        MountStrategy::New,
        &["lowerdir+fd"],
        &[(2, "new-path"), (128, "new-path"), (129, "new-path"), (500, "new-path")],
    );
}

#[test]
fn legacy_strategy_at_depths_1_2_128_129_500() {
    strategy_at_depths(
        MountStrategy::Legacy,
        &[],
        &[(2, "legacy-absolute"), (128, "legacy-relative"), (129, "legacy-relative"), (500, "legacy-fd")],
    );
}

#[test]
fn auto_without_new_api_falls_back_to_legacy() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("auto");
    let home = s.home();
    build_chain(&home, 3, &[3]);
    let d = driver(&home, MountStrategy::Auto, &["fsopen"]);
    assert_eq!(exercise_rw(&d, &home, "rw3", 3), "legacy-absolute");
    let d = driver(&home, MountStrategy::Auto, &[]);
    assert_eq!(exercise_rw(&d, &home, "rw3", 3), "new-fd");
    let d = driver(&home, MountStrategy::New, &["fsopen"]);
    assert_eq!(d.get("rw3", None).unwrap_err().kind(), ErrorKind::Unsupported);
    assert!(d.mounts().unwrap().is_empty(), "a failed mount leaves no reference");
    assert!(!home.join("rw3/merged").exists(), "nor a merged dir");
}

#[test]
fn awkward_home_paths() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("awkward");
    let colon = s.path().join("home with:colon,comma\\slash");
    // Over 255 bytes in total, so no whole path fits in one fsconfig string.
    let mut long = s.path().to_path_buf();
    for i in 0..5 {
        long.push(format!("{i}-{}", "d".repeat(60)));
    }
    assert!(long.as_os_str().len() > 255);
    for home in [colon, long] {
        build_chain(&home, 129, &[3, 129]);
        for (strategy, disabled) in
            [(MountStrategy::New, vec![]), (MountStrategy::New, vec!["lowerdir+fd"]), (MountStrategy::Legacy, vec![])]
        {
            let d = driver(&home, strategy, &disabled);
            for (id, depth) in [("rw3", 3), ("rw129", 129)] {
                let m = exercise_rw(&d, &home, id, depth);
                eprintln!("{} {strategy:?} {disabled:?} {id}: {m}", home.display().to_string().len());
            }
        }
    }
}

#[test]
fn readonly_rules() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ro");
    let home = s.home();
    build_chain(&home, 3, &[3]);
    let d = open(&home);
    check_readonly(&d, "L2", &MountOpts::default());
    check_readonly(&d, "rw3", &MountOpts { readonly: true, ..MountOpts::default() });
    // An explicit read-only mount of a base layer: its diff as the only lower.
    check_readonly(&d, "L1", &MountOpts { readonly: true, ..MountOpts::default() });
    // One mount per layer: a read-write user cannot share a read-only mount.
    d.get_with("rw3", &MountOpts { readonly: true, ..MountOpts::default() }).unwrap();
    assert_eq!(d.get("rw3", None).unwrap_err().kind(), ErrorKind::Busy);
    d.put("rw3").unwrap();
    assert!(d.mounts().unwrap().is_empty());
}

#[test]
fn refcounts_in_one_process() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("refs");
    let home = s.home();
    build_chain(&home, 2, &[2]);
    let d = Arc::new(open(&home));
    let merged = d.get("rw2", None).unwrap();
    d.get("rw2", None).unwrap();
    d.put("rw2").unwrap();
    assert!(mounted_at(&merged), "one reference left");
    d.put("rw2").unwrap();
    assert!(!mounted_at(&merged));
    assert_eq!(d.put("rw2").unwrap_err().kind(), ErrorKind::InvalidArgument, "put without get");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let p = d.get("rw2", None).unwrap();
                    assert!(p.join("bottom").exists());
                    d.put("rw2").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(!mounted_at(&merged));
    assert!(d.mounts().unwrap().is_empty());
    let rec = std::fs::read_to_string(home.join(".ovl2/mounts/rw2")).unwrap_or_default();
    assert!(rec.is_empty() || rec.starts_with("end\n"), "zero count: the record holds no reference: {rec:?}");
}

#[test]
fn remove_and_cleanup_respect_mounts() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("rmmount");
    let home = s.home();
    build_chain(&home, 3, &[3]);
    let d = open(&home);
    let merged = d.get("rw3", None).unwrap();
    let e = d.remove("rw3", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("mounted"));
    d.get_with("L2", &MountOpts { persistent: true, ..MountOpts::default() }).unwrap();
    assert_eq!(d.mounts().unwrap().len(), 2);
    d.cleanup().unwrap();
    assert!(!mounted_at(&merged) && !mounted_at(&home.join("L2/merged")));
    assert!(d.mounts().unwrap().is_empty());
    d.remove("rw3", false).unwrap();
}

#[test]
fn volatile_mounts_can_be_remounted() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("volatile");
    let home = s.home();
    build_chain(&home, 2, &[2]);
    let d = open(&home);
    let merged = d.get_with("rw2", &MountOpts { volatile: true, ..MountOpts::default() }).unwrap();
    let o = mount_options(&merged);
    assert!(o.iter().any(|x| x == "volatile" || x == "fsync=volatile"), "{o:?}");
    std::fs::write(merged.join("scratch"), "x").unwrap();
    // Simulate an unclean end: detach the mount behind ovl2's back, keeping the marker.
    rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH).unwrap();
    assert!(home.join("rw2/work/work/incompat/volatile").exists());
    let d = open(&home); // reconciles the vanished mount
    let merged = d.get("rw2", None).unwrap();
    let o = mount_options(&merged);
    assert!(!o.iter().any(|x| x == "volatile" || x == "fsync=volatile"), "{o:?}");
    assert!(merged.join("scratch").exists());
    d.put("rw2").unwrap();
}

#[test]
fn a_mount_found_in_place_counts_once() {
    // Docker's rule for live-restore: an already mounted merged/ starts at one reference.
    if !require_root() {
        return;
    }
    let s = Scratch::new("external");
    let home = s.home();
    build_chain(&home, 2, &[2]);
    let a = open(&home);
    let merged = a.get_with("rw2", &MountOpts { persistent: true, ..MountOpts::default() }).unwrap();
    std::fs::remove_file(home.join(".ovl2/mounts/rw2")).unwrap(); // as if another tool mounted it
    let b = open(&home);
    b.get("rw2", None).unwrap();
    let m = b.mounts().unwrap();
    assert_eq!(m[0].count, 2, "{m:?}");
    b.put("rw2").unwrap();
    assert!(mounted_at(&merged));
    b.put("rw2").unwrap();
    assert!(!mounted_at(&merged));
}

#[test]
fn status_reports_mount_features() {
    let s = Scratch::new("feat");
    let d = open(&s.home());
    let st = d.status().unwrap();
    let get = |k: &str| st.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("Mount strategy"), "auto");
    if require_root() {
        assert!(get("Mount features").contains("fsopen"), "{}", get("Mount features"));
    }
    let cached = std::fs::read_to_string(s.home().join(".ovl2/features")).unwrap();
    assert!(cached.lines().next().unwrap().contains("userns="));
    let e =
        Driver::open(s.home(), Options { disabled_features: vec!["bogus".into()], ..Options::default() }).unwrap_err();
    assert!(e.to_string().contains("bogus"));
}

#[allow(dead_code)]
fn unused(_: PathBuf) {}

#[test]
fn closing_a_driver_gives_back_its_references() {
    // Found in review: a dropped Driver's references stayed until the process exited.
    if !require_root() {
        return;
    }
    let s = Scratch::new("dropref");
    let home = s.home();
    build_chain(&home, 2, &[2]);
    let d = open(&home);
    let merged = d.get("rw2", None).unwrap();
    d.get("rw2", None).unwrap();
    let keep = open(&home);
    keep.get_with("L1", &MountOpts { readonly: true, persistent: true, ..MountOpts::default() }).unwrap();
    drop(d);
    assert!(!mounted_at(&merged), "the closed handle's references are gone");
    let d = open(&home);
    assert_eq!(d.put("rw2").unwrap_err().kind(), ErrorKind::InvalidArgument);
    d.remove("rw2", false).unwrap();
    assert!(mounted_at(&home.join("L1/merged")), "persistent references outlive the handle");
    drop(keep);
    assert!(mounted_at(&home.join("L1/merged")));
    d.put("L1").unwrap();
    assert!(!mounted_at(&home.join("L1/merged")));
}

#[test]
fn a_base_layer_put_pairs_with_its_own_get() {
    // Found in review: get(base) takes no reference, so its put released someone else's
    // read-only mount of the same base layer.
    if !require_root() {
        return;
    }
    let s = Scratch::new("baseput");
    let home = s.home();
    build_chain(&home, 2, &[2]);
    let other = open(&home);
    let ro = other.get_with("L1", &MountOpts { readonly: true, persistent: true, ..MountOpts::default() }).unwrap();
    let d = open(&home);
    assert_eq!(d.get("L1", None).unwrap(), home.join("L1/diff"));
    d.put("L1").unwrap();
    assert!(mounted_at(&ro), "the other holder's read-only mount stays");
    other.put("L1").unwrap();
    assert!(!mounted_at(&ro));
}
