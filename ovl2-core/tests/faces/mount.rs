//! Real overlay mounts: every strategy at every depth, read-only rules, refcounts, awkward
//! homes. These need root and overlayfs; under CI=true they fail rather than skip.
//! Shared bodies: every face runs them (see `faces/mod.rs`).

use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use crate::faces::Face;
use ovl2_core::{CreateOpts, ErrorKind, MountOpts, MountStrategy, Options};

fn co() -> CreateOpts {
    CreateOpts::default()
}

fn driver<D: Face>(home: &Path, strategy: MountStrategy, disabled: &[&str]) -> D {
    D::open(
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
fn build_chain<D: Face>(home: &Path, n: usize, leaves: &[usize]) {
    let d = D::open_fast(home);
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
fn exercise_rw<D: Face>(d: &D, home: &Path, id: &str, depth: usize) -> String {
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

fn check_readonly<D: Face>(d: &D, id: &str, opts: &MountOpts) {
    let merged = d.get_with(id, opts).unwrap();
    assert_eq!(std::fs::read_to_string(merged.join("bottom")).unwrap(), "from L1");
    let e = std::fs::write(merged.join("nope"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30), "EROFS on a read-only mount of {id}: {e}");
    d.put(id).unwrap();
    assert!(!merged.exists());
}

/// Mounts leaves with 1, 128, 129 and 500 lower layers (`rw<n>` has n-1: it sits on L<n-1>).
fn strategy_at_depths<D: Face>(strategy: MountStrategy, disabled: &[&str], expect: &[(usize, &str)]) {
    if !require_root() {
        return;
    }
    let s = Scratch::new("depths");
    let home = s.home();
    build_chain::<D>(&home, 500, &[2, 129, 130, 501]);
    let d = driver::<D>(&home, strategy, disabled);
    // Depth 0: a base layer is returned as its diff, unmounted, as Docker does.
    assert_eq!(d.get("L1", None).unwrap(), home.join("L1/diff"));
    assert!(d.mounts().unwrap().is_empty());
    d.put("L1").unwrap();
    for &(lowers, method) in expect {
        let id = format!("rw{}", lowers + 1);
        assert_eq!(std::fs::read_to_string(home.join(&id).join("lower")).unwrap().split(':').count(), lowers);
        assert_eq!(d.layers().unwrap().into_iter().find(|l| l.id == id).unwrap().depth, lowers);
        let got = exercise_rw(&d, &home, &id, lowers + 1);
        assert_eq!(got, method, "{strategy:?} with {lowers} lower layers");
    }
    // Committed layers mount read-only (their own diff becomes a lower): L500 has 499 lower
    // layers, so its explicit read-only mount uses all 500 lower slots the kernel has.
    check_readonly(&d, "L2", &MountOpts::default());
    check_readonly(&d, "L499", &MountOpts::default());
    check_readonly(&d, "L500", &MountOpts { readonly: true, ..MountOpts::default() });
    // rw501 has 500 lowers: read-write it mounts (above), read-only it would need 501.
    let e = d.get_with("rw501", &MountOpts { readonly: true, ..MountOpts::default() }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("501") && e.to_string().contains("500"), "{e}");
    assert!(d.mounts().unwrap().is_empty() && !home.join("rw501/merged").exists(), "the refusal left nothing");
    // Depth 501 cannot even be created.
    let e = d.create("past", Some("rw501"), &co()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MaxDepth);
    assert!(e.to_string().contains("501 lower layers, the limit is 500"), "{e}");
}

face_test!(new_strategy_with_fds_at_depths_0_1_128_129_500);
pub fn new_strategy_with_fds_at_depths_0_1_128_129_500<D: Face>() {
    strategy_at_depths::<D>(
        MountStrategy::New,
        &[],
        &[(1, "new-fd"), (128, "new-fd"), (129, "new-fd"), (500, "new-fd")],
    );
}

face_test!(new_strategy_with_paths_at_depths_0_1_128_129_500);
pub fn new_strategy_with_paths_at_depths_0_1_128_129_500<D: Face>() {
    // The lowerdir+ string fallback (kernels 6.8 to 6.12).
    strategy_at_depths::<D>(
        MountStrategy::New,
        &["lowerdir+fd"],
        &[(1, "new-path"), (128, "new-path"), (129, "new-path"), (500, "new-path")],
    );
}

face_test!(legacy_strategy_at_depths_0_1_128_129_500);
pub fn legacy_strategy_at_depths_0_1_128_129_500<D: Face>() {
    strategy_at_depths::<D>(
        MountStrategy::Legacy,
        &[],
        &[(1, "legacy-absolute"), (128, "legacy-relative"), (129, "legacy-relative"), (500, "legacy-fd")],
    );
}

face_test!(auto_without_new_api_falls_back_to_legacy);
pub fn auto_without_new_api_falls_back_to_legacy<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("auto");
    let home = s.home();
    build_chain::<D>(&home, 3, &[3]);
    let d = driver::<D>(&home, MountStrategy::Auto, &["fsopen"]);
    assert_eq!(exercise_rw(&d, &home, "rw3", 3), "legacy-absolute");
    let d = driver::<D>(&home, MountStrategy::Auto, &[]);
    assert_eq!(exercise_rw(&d, &home, "rw3", 3), "new-fd");
    let d = driver::<D>(&home, MountStrategy::New, &["fsopen"]);
    assert_eq!(d.get("rw3", None).unwrap_err().kind(), ErrorKind::Unsupported);
    assert!(d.mounts().unwrap().is_empty(), "a failed mount leaves no reference");
    assert!(!home.join("rw3/merged").exists(), "nor a merged dir");
}

face_test!(awkward_home_paths);
pub fn awkward_home_paths<D: Face>() {
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
        build_chain::<D>(&home, 129, &[3, 129]);
        for (strategy, disabled) in
            [(MountStrategy::New, vec![]), (MountStrategy::New, vec!["lowerdir+fd"]), (MountStrategy::Legacy, vec![])]
        {
            let d = driver::<D>(&home, strategy, &disabled);
            for (id, depth) in [("rw3", 3), ("rw129", 129)] {
                let m = exercise_rw(&d, &home, id, depth);
                eprintln!("{} {strategy:?} {disabled:?} {id}: {m}", home.display().to_string().len());
            }
        }
    }
}

face_test!(readonly_rules);
pub fn readonly_rules<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ro");
    let home = s.home();
    build_chain::<D>(&home, 3, &[3]);
    let d = D::open_default(&home);
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

face_test!(refcounts_in_one_process);
pub fn refcounts_in_one_process<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("refs");
    let home = s.home();
    build_chain::<D>(&home, 2, &[2]);
    let d = Arc::new(D::open_default(&home));
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

face_test!(remove_and_cleanup_respect_mounts);
pub fn remove_and_cleanup_respect_mounts<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("rmmount");
    let home = s.home();
    build_chain::<D>(&home, 3, &[3]);
    let d = D::open_default(&home);
    let merged = d.get("rw3", None).unwrap();
    let e = d.remove("rw3", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("mounted"));
    d.get_with("L2", &MountOpts { persistent: true, ..MountOpts::default() }).unwrap();
    assert_eq!(d.mounts().unwrap().len(), 2);
    d.cleanup().unwrap();
    assert!(!mounted_at(&merged) && !mounted_at(&home.join("L2/merged")));
    assert!(d.mounts().unwrap().is_empty());
    d.remove("rw3", false).unwrap();
    // force means: unmount first, whoever holds it.
    d.create_rw("rw3", Some("L3"), &co()).unwrap();
    let merged = d.get("rw3", None).unwrap();
    D::open_default(&home).get_with("rw3", &MountOpts { persistent: true, ..MountOpts::default() }).unwrap();
    d.remove("rw3", true).unwrap();
    assert!(!mounted_at(&merged) && !home.join("rw3").exists());
    assert!(d.mounts().unwrap().is_empty() && d.check().unwrap().is_empty());
    // ... but it never removes a layer others build on, mounted or not.
    let merged = d.get("L2", None).unwrap();
    assert_eq!(d.remove("L2", true).unwrap_err().kind(), ErrorKind::Busy);
    assert!(mounted_at(&merged), "a refused forced remove leaves the mount alone");
    d.put("L2").unwrap();
}

face_test!(remove_tree_refuses_mounted_layers_unless_forced);
pub fn remove_tree_refuses_mounted_layers_unless_forced<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("rmtree");
    let home = s.home();
    build_chain::<D>(&home, 3, &[3]);
    let d = D::open_default(&home);
    let merged = d.get("rw3", None).unwrap();
    let before = snapshot(&home);
    let e = d.remove_tree("L2", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("\"rw3\"") && e.to_string().contains("mounted"), "{e}");
    assert_eq!(snapshot(&home), before, "nothing removed");
    // rw3 and L3 both sit on L2 (deepest first, then by id).
    assert_eq!(d.remove_tree("L2", true).unwrap(), ["L3", "rw3", "L2"]);
    assert!(!mounted_at(&merged));
    assert_eq!(d.layers().unwrap().iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["L1"]);
    assert!(d.check().unwrap().is_empty() && d.mounts().unwrap().is_empty());
}

face_test!(volatile_mounts_can_be_remounted);
pub fn volatile_mounts_can_be_remounted<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("volatile");
    let home = s.home();
    build_chain::<D>(&home, 2, &[2]);
    let d = D::open_default(&home);
    let merged = d.get_with("rw2", &MountOpts { volatile: true, ..MountOpts::default() }).unwrap();
    let o = mount_options(&merged);
    assert!(o.iter().any(|x| x == "volatile" || x == "fsync=volatile"), "{o:?}");
    std::fs::write(merged.join("scratch"), "x").unwrap();
    // Simulate an unclean end: detach the mount behind ovl2's back, keeping the marker.
    rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH).unwrap();
    assert!(home.join("rw2/work/work/incompat/volatile").exists());
    let d = D::open_default(&home); // reconciles the vanished mount
    let merged = d.get("rw2", None).unwrap();
    let o = mount_options(&merged);
    assert!(!o.iter().any(|x| x == "volatile" || x == "fsync=volatile"), "{o:?}");
    assert!(merged.join("scratch").exists());
    d.put("rw2").unwrap();
}

face_test!(a_mount_found_in_place_counts_once);
pub fn a_mount_found_in_place_counts_once<D: Face>() {
    // Docker's rule for live-restore: an already mounted merged/ starts at one reference.
    if !require_root() {
        return;
    }
    let s = Scratch::new("external");
    let home = s.home();
    build_chain::<D>(&home, 2, &[2]);
    let a = D::open_default(&home);
    let merged = a.get_with("rw2", &MountOpts { persistent: true, ..MountOpts::default() }).unwrap();
    std::fs::remove_file(home.join(".ovl2/mounts/rw2")).unwrap(); // as if another tool mounted it
    let b = D::open_default(&home);
    b.get("rw2", None).unwrap();
    let m = b.mounts().unwrap();
    assert_eq!(m[0].count, 2, "{m:?}");
    b.put("rw2").unwrap();
    assert!(mounted_at(&merged));
    b.put("rw2").unwrap();
    assert!(!mounted_at(&merged));
}

face_test!(status_reports_mount_features);
pub fn status_reports_mount_features<D: Face>() {
    let s = Scratch::new("feat");
    let d = D::open_default(&s.home());
    let st = d.status().unwrap();
    let get = |k: &str| st.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("Mount strategy"), "auto");
    if require_root() {
        assert!(get("Mount features").contains("fsopen"), "{}", get("Mount features"));
    }
    let cached = std::fs::read_to_string(s.home().join(".ovl2/features")).unwrap();
    assert!(cached.lines().next().unwrap().contains("userns="));
    let e = D::open(s.home(), Options { disabled_features: vec!["bogus".into()], ..Options::default() }).unwrap_err();
    assert!(e.to_string().contains("bogus"));
}

face_test!(closing_a_driver_gives_back_its_references);
pub fn closing_a_driver_gives_back_its_references<D: Face>() {
    // Found in review: a dropped Driver's references stayed until the process exited.
    if !require_root() {
        return;
    }
    let s = Scratch::new("dropref");
    let home = s.home();
    build_chain::<D>(&home, 2, &[2]);
    let d = D::open_default(&home);
    let merged = d.get("rw2", None).unwrap();
    d.get("rw2", None).unwrap();
    let keep = D::open_default(&home);
    keep.get_with("L1", &MountOpts { readonly: true, persistent: true, ..MountOpts::default() }).unwrap();
    drop(d);
    assert!(!mounted_at(&merged), "the closed handle's references are gone");
    let d = D::open_default(&home);
    assert_eq!(d.put("rw2").unwrap_err().kind(), ErrorKind::InvalidArgument);
    d.remove("rw2", false).unwrap();
    assert!(mounted_at(&home.join("L1/merged")), "persistent references outlive the handle");
    drop(keep);
    assert!(mounted_at(&home.join("L1/merged")));
    d.put("L1").unwrap();
    assert!(!mounted_at(&home.join("L1/merged")));
}

face_test!(a_holder_file_lasts_as_long_as_its_driver);
/// Issue 13: the holder file was made at every first get and removed at every last put (four
/// journaled metadata operations per mount); it now lasts as long as the `Driver`. A get that
/// fails still leaves nothing behind, and another process still sees the holder alive.
pub fn a_holder_file_lasts_as_long_as_its_driver<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("holderlife");
    let home = s.home();
    build_chain::<D>(&home, 2, &[2]);
    let holders = || -> Vec<String> {
        match std::fs::read_dir(home.join(".ovl2/holders")) {
            Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    };
    // A get that fails before mounting (merged/ is a file) makes no holder file to keep.
    let d = D::open_default(&home);
    std::fs::write(home.join("rw2/merged"), "not a dir").unwrap();
    assert_eq!(d.get("rw2", None).unwrap_err().kind(), ErrorKind::Corrupt);
    assert_eq!(holders(), Vec::<String>::new(), "a failed get left its holder file");
    std::fs::remove_file(home.join("rw2/merged")).unwrap();
    let merged = d.get("rw2", None).unwrap();
    let first = holders();
    assert_eq!(first.len(), 1, "{first:?}");
    d.put("rw2").unwrap();
    assert!(!mounted_at(&merged));
    assert_eq!(holders(), first, "the holder file stays while the Driver is open");
    d.get("rw2", None).unwrap();
    assert_eq!(holders(), first, "a second first get makes no new file");
    // Another handle (as another process would) finds the holder alive and keeps its mount.
    let other = D::open_default(&home);
    assert_eq!(other.mounts().unwrap().len(), 1);
    assert!(mounted_at(&merged));
    d.put("rw2").unwrap();
    drop(d);
    assert_eq!(holders(), Vec::<String>::new(), "a closed Driver leaves no holder file");
    drop(other);
}

face_test!(a_base_layer_put_pairs_with_its_own_get);
pub fn a_base_layer_put_pairs_with_its_own_get<D: Face>() {
    // Found in review: get(base) takes no reference, so its put released someone else's
    // read-only mount of the same base layer.
    if !require_root() {
        return;
    }
    let s = Scratch::new("baseput");
    let home = s.home();
    build_chain::<D>(&home, 2, &[2]);
    let other = D::open_default(&home);
    let ro = other.get_with("L1", &MountOpts { readonly: true, persistent: true, ..MountOpts::default() }).unwrap();
    let d = D::open_default(&home);
    assert_eq!(d.get("L1", None).unwrap(), home.join("L1/diff"));
    d.put("L1").unwrap();
    assert!(mounted_at(&ro), "the other holder's read-only mount stays");
    other.put("L1").unwrap();
    assert!(!mounted_at(&ro));
}

face_test!(a_base_layer_that_becomes_a_child_is_mounted);
/// A base layer's get takes no lock. The same name re-created by another process as a child,
/// or a base layer that gets a `lower` written into it (as a repair writes it), must then be
/// mounted like any child: nothing about an earlier get may be remembered.
pub fn a_base_layer_that_becomes_a_child_is_mounted<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("baseagain");
    let home = s.home();
    let d = D::open_default(&home);
    let other = D::open_default(&home);
    d.create("p", None, &co()).unwrap();
    d.create("x", None, &co()).unwrap();
    for _ in 0..2 {
        assert_eq!(d.get("x", None).unwrap(), home.join("x/diff"));
        d.put("x").unwrap();
    }
    // Another process removes it and makes a child of `p` under the same name.
    other.remove("x", false).unwrap();
    other.create("x", Some("p"), &co()).unwrap();
    let m = d.get("x", None).unwrap();
    assert_eq!(m, home.join("x/merged"));
    assert!(mounted_at(&m), "the re-created child is mounted");
    d.put("x").unwrap();
    assert!(!mounted_at(&m));
    // A `lower` appearing in a base layer's directory (as a repair writes it).
    d.create("y", None, &co()).unwrap();
    assert_eq!(d.get("y", None).unwrap(), home.join("y/diff"));
    d.put("y").unwrap();
    std::fs::copy(home.join("x/lower"), home.join("y/lower")).unwrap();
    std::fs::create_dir_all(home.join("y/work")).unwrap();
    let m = d.get("y", None).unwrap();
    assert_eq!(m, home.join("y/merged"));
    assert!(mounted_at(&m));
    d.put("y").unwrap();
}

/// Every way a layer can be mounted: (strategy, disabled features, expected method).
const ALL_METHODS: &[(MountStrategy, &[&str], &str)] = &[
    (MountStrategy::New, &[], "new-fd"),
    (MountStrategy::New, &["lowerdir+fd"], "new-path"),
    (MountStrategy::Legacy, &[], "legacy-absolute"),
];

/// Runs `f` on another thread and fails (instead of hanging the suite) if it blocks.
fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what} hung"))
}

/// A directory outside the store standing for the host's, with one file: what a symlinked
/// layer dir would expose.
fn host_dir(s: &Scratch) -> std::path::PathBuf {
    let host = s.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("hostfile"), "host").unwrap();
    host
}

face_test!(symlinked_layer_dirs_are_refused_on_every_strategy);
/// Issue 10, item 2: a layer dir (`diff`, `work`, `merged`, or a parent's `diff` reached
/// through `l/`) replaced by a symlink to a host directory is refused on every strategy, and
/// the host directory is left untouched.
pub fn symlinked_layer_dirs_are_refused_on_every_strategy<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("symdirs");
    let home = s.home();
    let host = host_dir(&s);
    build_chain::<D>(&home, 2, &[3]);
    let d = D::open_fast(&home);
    d.create_rw("ctr", Some("L2"), &co()).unwrap();
    // (what, layer to get, path replaced by a symlink to the host dir)
    let cases: &[(&str, &str, &str)] = &[
        ("own diff", "ctr", "ctr/diff"),
        ("work", "ctr", "ctr/work"),
        ("merged", "ctr", "ctr/merged"),
        ("parent diff", "ctr", "L2/diff"),
        ("own diff, read-only", "L2", "L2/diff"),
    ];
    for &(strategy, disabled, method) in ALL_METHODS {
        let d = driver::<D>(&home, strategy, disabled);
        for &(what, id, victim) in cases {
            let victim = home.join(victim);
            let aside = victim.with_extension("aside");
            let existed = victim.exists();
            if existed {
                std::fs::rename(&victim, &aside).unwrap();
            }
            std::os::unix::fs::symlink(&host, &victim).unwrap();
            let before = snapshot(&host);
            let r = d.get(id, None);
            let host_mounted = mounted_at(&host);
            if let Ok(p) = &r {
                let _ = std::fs::write(p.join("written-by-container"), "x");
                let _ = d.put(id);
            }
            std::fs::remove_file(&victim).unwrap();
            if existed {
                std::fs::rename(&aside, &victim).unwrap();
            }
            assert!(!host_mounted, "{method}, {what}: mounted over the host dir");
            let e = r.expect_err(&format!("{method}, {what}: a symlinked layer dir must be refused"));
            assert!(e.to_string().contains("symlink"), "{method}, {what}: the error says why: {e}");
            assert_eq!(snapshot(&host), before, "{method}, {what}: host dir untouched");
            assert!(d.mounts().unwrap().is_empty(), "{method}, {what}: no reference left");
            assert!(!mounted_at(&home.join(id).join("merged")));
        }
        // check names a symlinked merged/, and repair removes it (merged/ exists only
        // while mounted), leaving the host dir alone.
        let merged = home.join("ctr/merged");
        std::os::unix::fs::symlink(&host, &merged).unwrap();
        let raw = D::open(&home, Options { repair_on_open: false, ..Options::default() }).unwrap();
        let p = raw.check().unwrap();
        assert!(p.iter().any(|p| p.kind == ovl2_core::ProblemKind::BadMerged && p.detail.contains("symlink")), "{p:?}");
        raw.repair().unwrap();
        assert!(std::fs::symlink_metadata(&merged).is_err(), "repair removed the symlink");
        assert!(host.join("hostfile").exists());
        // And with everything back in place, the same driver mounts.
        assert_eq!(exercise_rw(&d, &home, "rw3", 3), method);
    }
}

face_test!(a_links_dir_swapped_after_open_is_refused);
/// Issue 13: the path-string methods now check the store's `l/` once per mount instead of
/// every lower's path. A Driver whose `l/` was swapped (after it opened) for a symlink to a
/// look-alike directory whose links lead to a host directory must still never mount it.
pub fn a_links_dir_swapped_after_open_is_refused<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("swapl");
    let home = s.home();
    let host = host_dir(&s);
    build_chain::<D>(&home, 2, &[3]);
    // The look-alike: every short name of the real l/, pointing at the host dir.
    let fake = s.path().join("fake-l");
    std::fs::create_dir_all(&fake).unwrap();
    for e in std::fs::read_dir(home.join("l")).unwrap() {
        std::os::unix::fs::symlink(&host, fake.join(e.unwrap().file_name())).unwrap();
    }
    // Found in review: the real l/ moved into another directory and a symlink to it put in
    // its place. It is the same directory, but each link's `../<id>/diff` now resolves from
    // its new parent, where look-alike layers stand.
    let evil = home.join("evil");
    for id in ["L1", "L2"] {
        std::fs::create_dir_all(evil.join(id).join("diff")).unwrap();
        std::fs::write(evil.join(id).join("diff/hostfile"), "not a layer").unwrap();
    }
    type Step<'a> = &'a dyn Fn();
    let swaps: &[(&str, Step, Step)] = &[
        (
            "a look-alike l/",
            &|| {
                std::fs::rename(home.join("l"), home.join("l.real")).unwrap();
                std::os::unix::fs::symlink(&fake, home.join("l")).unwrap();
            },
            &|| {
                std::fs::remove_file(home.join("l")).unwrap();
                std::fs::rename(home.join("l.real"), home.join("l")).unwrap();
            },
        ),
        (
            "the real l/ moved elsewhere",
            &|| {
                std::fs::rename(home.join("l"), evil.join("l")).unwrap();
                std::os::unix::fs::symlink("evil/l", home.join("l")).unwrap();
            },
            &|| {
                std::fs::remove_file(home.join("l")).unwrap();
                std::fs::rename(evil.join("l"), home.join("l")).unwrap();
            },
        ),
    ];
    for &(strategy, disabled, method) in ALL_METHODS {
        for &(swap, make, undo) in swaps {
            let d = driver::<D>(&home, strategy, disabled);
            make();
            let r = d.get("rw3", None);
            let merged = home.join("rw3/merged");
            let shows_host = r.is_ok() && merged.join("hostfile").exists();
            let shows_layers = r.is_ok() && merged.join("bottom").exists();
            if r.is_ok() {
                d.put("rw3").unwrap();
            }
            undo();
            let base = method;
            let method = format!("{method}, {swap}");
            let method = method.as_str();
            assert!(!shows_host, "{method}: the host dir was mounted through a swapped l/");
            if method.starts_with("new-fd,") {
                // The fds were opened from the l/ the Driver opened: the real layers are mounted.
                assert!(shows_layers, "{method}: {r:?}");
            } else {
                let e = r.expect_err(&format!("{method}: a swapped l/ must be refused"));
                assert!(e.to_string().contains("l/ directory"), "{method}: the error says why: {e}");
            }
            assert!(d.mounts().unwrap().is_empty(), "{method}: no reference left");
            assert_eq!(exercise_rw(&d, &home, "rw3", 3), base, "{method}: mounts again once l/ is back");
        }
    }
}

face_test!(a_non_empty_empty_dir_is_refused_and_repaired);
/// Issue 10, item 10: files placed in `.ovl2/empty` showed up in every read-only mount of a
/// base layer, and `check` said nothing.
pub fn a_non_empty_empty_dir_is_refused_and_repaired<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("emptydir");
    let home = s.home();
    build_chain::<D>(&home, 1, &[]);
    std::fs::write(home.join(".ovl2/empty/planted"), "x").unwrap();
    let ro = MountOpts { readonly: true, ..MountOpts::default() };
    // Opening with repair would empty it; these stores only check.
    let unrepaired = |strategy, disabled: &[&str]| {
        D::open(
            &home,
            Options {
                repair_on_open: false,
                mount_strategy: Some(strategy),
                disabled_features: disabled.iter().map(|s| s.to_string()).collect(),
                ..Options::default()
            },
        )
        .unwrap()
    };
    for &(strategy, disabled, method) in ALL_METHODS {
        let d = unrepaired(strategy, disabled);
        let r = d.get_with("L1", &ro);
        if let Ok(p) = &r {
            let seen = p.join("planted").exists();
            d.put("L1").unwrap();
            panic!("{method}: mounted with a non-empty .ovl2/empty (planted file visible: {seen})");
        }
        let e = r.unwrap_err();
        assert!(e.to_string().contains(".ovl2/empty"), "{method}: {e}");
    }
    let raw = D::open(&home, Options { repair_on_open: false, ..Options::default() }).unwrap();
    let p = raw.check().unwrap();
    assert!(p.iter().any(|p| p.kind == ovl2_core::ProblemKind::NotEmptyEmptyDir), "{p:?}");
    raw.repair().unwrap();
    assert!(raw.check().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(home.join(".ovl2/empty")).unwrap().count(), 0);
    let p = raw.get_with("L1", &ro).unwrap();
    assert_eq!(read(&p.join("bottom")), "from L1");
    raw.put("L1").unwrap();
}

face_test!(an_empty_dir_that_is_not_a_directory_is_replaced);
/// Repair replaces a `.ovl2/empty` that became a file or a symlink after the open (open
/// itself refuses such a store) by an empty directory, never following the symlink (what it
/// points at is untouched), and leaves nothing in staging.
pub fn an_empty_dir_that_is_not_a_directory_is_replaced<D: Face>() {
    let s = Scratch::new("emptyfile");
    let home = s.home();
    drop(D::open_fast(&home));
    let target = s.path().join("elsewhere");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), "x").unwrap();
    let empty = home.join(".ovl2/empty");
    for plant in ["file", "symlink"] {
        let raw = D::open(&home, Options { repair_on_open: false, ..Options::default() }).unwrap();
        std::fs::remove_dir(&empty).unwrap();
        match plant {
            "file" => std::fs::write(&empty, "x").unwrap(),
            _ => std::os::unix::fs::symlink(&target, &empty).unwrap(),
        }
        let p = raw.check().unwrap();
        assert!(p.iter().any(|p| p.kind == ovl2_core::ProblemKind::NotEmptyEmptyDir), "{plant}: {p:?}");
        raw.repair().unwrap();
        assert!(raw.check().unwrap().is_empty(), "{plant}");
        assert!(std::fs::symlink_metadata(&empty).unwrap().is_dir(), "{plant}");
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{plant}");
        assert_eq!(std::fs::read_dir(home.join(".ovl2/staging")).unwrap().count(), 0, "{plant}");
    }
    assert_eq!(std::fs::read_to_string(target.join("keep")).unwrap(), "x", "the symlink's target is untouched");
}

face_test!(fifos_in_mount_state_never_block);
/// Issue 10, item 6: a FIFO at `.ovl2/mounts/<id>` hung every command but `check`, and one at
/// `.ovl2/features` hung `mount`. Now nothing blocks, `check` names the record, and the next
/// reference replaces it.
pub fn fifos_in_mount_state_never_block<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("fifos");
    let home = s.home();
    build_chain::<D>(&home, 2, &[3]);
    drop(D::open_fast(&home));
    let mkfifo = |p: &Path| {
        let _ = std::fs::remove_file(p);
        rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
            .unwrap();
    };
    mkfifo(&home.join(".ovl2/mounts/rw3"));
    mkfifo(&home.join(".ovl2/features"));
    let h = home.clone();
    let problems = within_10s("check", move || {
        D::open(&h, Options { repair_on_open: false, ..Options::default() }).unwrap().check().unwrap()
    });
    let bad: Vec<_> = problems.iter().filter(|p| p.kind == ovl2_core::ProblemKind::BadMountRecord).collect();
    assert_eq!(bad.len(), 1, "{problems:?}");
    assert!(bad[0].detail.contains(".ovl2/mounts/rw3") && bad[0].detail.contains("FIFO"), "{}", bad[0].detail);
    let h = home.clone();
    within_10s("open, get and put", move || {
        let d = D::open_default(&h);
        assert!(d.mounts().unwrap().is_empty());
        let p = d.get("rw3", None).unwrap();
        assert_eq!(read(&p.join("bottom")), "from L1");
        assert_eq!(d.mounts().unwrap().len(), 1);
        d.put("rw3").unwrap();
        assert!(d.check().unwrap().is_empty(), "{:?}", d.check().unwrap());
    });
    assert!(std::fs::symlink_metadata(home.join(".ovl2/mounts/rw3")).unwrap().is_file(), "record replaced");
    assert!(std::fs::symlink_metadata(home.join(".ovl2/features")).unwrap().is_file(), "features re-probed");
}

face_test!(an_overflowing_mount_record_never_unmounts);
/// Issue 10, item 10: `store 18446744073709551615` plus one more reference wrapped the count
/// around, so the mount looked unheld and was taken down. Now the record is reported as
/// damaged and the kernel's view keeps the mount up.
pub fn an_overflowing_mount_record_never_unmounts<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("overflow");
    let home = s.home();
    build_chain::<D>(&home, 2, &[3]);
    let d = D::open_fast(&home);
    let merged = d.get_with("rw3", &MountOpts { persistent: true, ..MountOpts::default() }).unwrap();
    std::fs::write(
        home.join(".ovl2/mounts/rw3"),
        format!("mode rw\nmethod new-fd\nstore {}\nexternal 1\nend\n", u64::MAX),
    )
    .unwrap();
    let raw = D::open(&home, Options { repair_on_open: false, ..Options::default() }).unwrap();
    let p = raw.check().unwrap();
    assert!(
        p.iter().any(|p| p.kind == ovl2_core::ProblemKind::BadMountRecord && p.detail.contains("more than")),
        "{p:?}"
    );
    let other = D::open_default(&home);
    assert!(mounted_at(&merged), "a damaged record must not unmount a live mount");
    assert_eq!(other.mounts().unwrap()[0].count, 1, "counted once, as a mount found in place");
    assert!(other.check().unwrap().is_empty(), "open rebuilt the record");
    other.put("rw3").unwrap();
    assert!(!mounted_at(&merged));
}

face_test!(old_process_records_are_still_read);
/// Records written before holder files (`proc <pid> <start> <token> <n>`) are still honoured:
/// a live process keeps its mount, a gone one is reaped.
pub fn old_process_records_are_still_read<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("oldrec");
    let home = s.home();
    build_chain::<D>(&home, 2, &[3]);
    let d = D::open_fast(&home);
    let merged = d.get_with("rw3", &MountOpts { persistent: true, ..MountOpts::default() }).unwrap();
    let stat = std::fs::read(format!("/proc/{}/stat", std::process::id())).unwrap();
    let close = stat.iter().rposition(|&b| b == b')').unwrap();
    let start: u64 =
        std::str::from_utf8(&stat[close + 2..]).unwrap().split(' ').nth(19).unwrap().trim().parse().unwrap();
    let me = std::process::id();
    std::fs::write(home.join(".ovl2/mounts/rw3"), format!("mode rw\nmethod new-fd\nproc {me} {start} abc 1\nend\n"))
        .unwrap();
    let m = D::open_default(&home).mounts().unwrap();
    assert!(mounted_at(&merged), "a live old-format holder keeps its mount");
    assert_eq!((m[0].count, m[0].processes), (1, 1), "{m:?}");
    let dead = start + 1;
    std::fs::write(home.join(".ovl2/mounts/rw3"), format!("mode rw\nmethod new-fd\nproc {me} {dead} abc 1\nend\n"))
        .unwrap();
    drop(D::open_default(&home));
    assert!(!mounted_at(&merged), "a gone old-format holder is reaped");
}

face_test!(label_errors_name_the_label);
/// Issue 10, item 10: a label on legacy said only `Invalid argument`, and new-API label errors
/// carried the kernel log's `e overlay:` prefix. Both now name the label (and say when
/// SELinux is not there to apply it).
pub fn label_errors_name_the_label<D: Face>() {
    if !require_root() {
        return;
    }
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        eprintln!("SELinux is enabled here; the label would be applied");
        return;
    }
    let s = Scratch::new("label");
    let home = s.home();
    build_chain::<D>(&home, 2, &[3]);
    for &(strategy, disabled, method) in ALL_METHODS {
        let d = driver::<D>(&home, strategy, disabled);
        let e = d.get("rw3", Some("system_u:object_r:container_file_t:s0")).unwrap_err().to_string();
        assert!(e.contains("\"system_u:object_r:container_file_t:s0\""), "{method}: names the label: {e}");
        assert!(e.contains("SELinux is not enabled"), "{method}: says why: {e}");
        assert!(!e.contains("(e ") && !e.contains("e overlay"), "{method}: no raw kernel log prefix: {e}");
        assert!(d.mounts().unwrap().is_empty());
    }
}

face_test!(a_non_utf8_home_mounts_on_every_strategy);
/// Issue 10, item 10: a home whose path is not UTF-8 failed legacy mounts with ENOENT (the
/// path went through a lossy conversion). Paths are bytes end to end.
pub fn a_non_utf8_home_mounts_on_every_strategy<D: Face>() {
    if !require_root() {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new("nonutf8");
    let home = s.path().join(std::ffi::OsStr::from_bytes(b"h\xff\xfeome"));
    build_chain::<D>(&home, 3, &[3]);
    for &(strategy, disabled, method) in ALL_METHODS {
        let d = driver::<D>(&home, strategy, disabled);
        let p = d.get("rw3", None).unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(p, home.join("rw3/merged"));
        assert_eq!(read(&p.join("bottom")), "from L1", "{method}");
        std::fs::write(p.join("up"), "x").unwrap();
        assert_eq!(read(&home.join("rw3/diff/up")), "x", "{method}: writes land in the upper");
        std::fs::remove_file(home.join("rw3/diff/up")).unwrap();
        assert_eq!(d.mounts().unwrap()[0].method, method);
        d.put("rw3").unwrap();
        assert!(!p.exists(), "{method}: unmounted and merged/ removed");
        let p = d.get_with("L1", &MountOpts { readonly: true, ..MountOpts::default() }).unwrap();
        assert_eq!(read(&p.join("bottom")), "from L1", "{method}");
        d.put("L1").unwrap();
    }
}

face_test!(a_non_utf8_home_is_returned_as_its_exact_bytes);
/// Issue 10, item 10: with a home that is not UTF-8, `metadata` (and so `inspect`) returned
/// its paths with U+FFFD, naming a directory that does not exist. Every path a caller gets
/// back is the home's exact bytes plus the layer's names.
pub fn a_non_utf8_home_is_returned_as_its_exact_bytes<D: Face>() {
    if !require_root() {
        return;
    }
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new("nonutf8meta");
    let home = s.path().join(OsStr::from_bytes(b"x\xff\xfe"));
    let d = D::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    assert_eq!(d.home().as_os_str().as_bytes(), home.as_os_str().as_bytes());
    d.create("base", None, &co()).unwrap();
    d.create_rw("ctr", Some("base"), &co()).unwrap();
    std::fs::write(home.join("base/diff/f"), "from base").unwrap();

    let m = d.metadata("ctr").unwrap();
    // `Path::new`/`OsStr::new` take the fields whatever their type, so this names the bytes.
    assert_eq!(Path::new(&m.upper_dir).as_os_str().as_bytes(), home.join("ctr/diff").as_os_str().as_bytes());
    assert_eq!(Path::new(&m.work_dir).as_os_str().as_bytes(), home.join("ctr/work").as_os_str().as_bytes());
    assert_eq!(Path::new(&m.merged_dir).as_os_str().as_bytes(), home.join("ctr/merged").as_os_str().as_bytes());
    let lower = m.lower_dir.as_ref().map(|l| OsStr::new(l).as_bytes().to_vec());
    assert_eq!(lower.as_deref(), Some(home.join("base/diff").as_os_str().as_bytes()));
    for (k, v) in m.to_map() {
        assert!(Path::new(&v).is_dir() || k == "MergedDir", "{k} names a real directory");
    }
    // JSON cannot carry the bytes: it refuses, naming the path, instead of writing a wrong one.
    let e = serde_json::to_string(&m).unwrap_err().to_string();
    assert!(e.contains("not valid UTF-8"), "{e}");

    let p = d.get("ctr", None).unwrap();
    assert_eq!(p.as_os_str().as_bytes(), home.join("ctr/merged").as_os_str().as_bytes());
    assert_eq!(read(&p.join("f")), "from base");
    let mounts = d.mounts().unwrap();
    assert_eq!(mounts[0].path, p);
    d.put("ctr").unwrap();
    let p = d.get("base", None).unwrap();
    assert_eq!(p.as_os_str().as_bytes(), home.join("base/diff").as_os_str().as_bytes());
    d.put("base").unwrap();
    assert_eq!(D::open(&home, Options::default()).unwrap().metadata("ctr").unwrap(), m);
}

face_test!(symlinked_layer_dirs_are_refused_by_long_legacy_mounts);
/// The long-chain legacy methods (`legacy-relative`, `legacy-fd`) refuse symlinked layer
/// dirs too, the parent's reached through `l/` included.
pub fn symlinked_layer_dirs_are_refused_by_long_legacy_mounts<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("symlong");
    let home = s.home();
    let host = host_dir(&s);
    build_chain::<D>(&home, 500, &[129]);
    let d = driver::<D>(&home, MountStrategy::Legacy, &[]);
    let ro = MountOpts { readonly: true, ..MountOpts::default() };
    // (layer, options, path swapped for a symlink, expected method)
    let cases: &[(&str, &MountOpts, &str, &str)] = &[
        ("rw129", &MountOpts::default(), "rw129/diff", "legacy-relative"),
        ("rw129", &MountOpts::default(), "L100/diff", "legacy-relative"),
        ("L500", &ro, "L500/diff", "legacy-fd"),
        ("L500", &ro, "L3/diff", "legacy-fd"),
    ];
    for &(id, opts, victim, method) in cases {
        let victim = home.join(victim);
        let aside = victim.with_extension("aside");
        std::fs::rename(&victim, &aside).unwrap();
        std::os::unix::fs::symlink(&host, &victim).unwrap();
        let r = d.get_with(id, opts);
        if r.is_ok() {
            d.put(id).unwrap();
        }
        std::fs::remove_file(&victim).unwrap();
        std::fs::rename(&aside, &victim).unwrap();
        let e = r.expect_err(&format!("{method}: {} symlinked must be refused", victim.display()));
        assert!(e.to_string().contains("symlink"), "{method}: {e}");
        assert!(d.mounts().unwrap().is_empty());
        // Back in place, the same mount works, by the method this case is about.
        d.get_with(id, opts).unwrap();
        assert_eq!(d.mounts().unwrap()[0].method, method);
        d.put(id).unwrap();
    }
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 1, "host dir untouched");
}
