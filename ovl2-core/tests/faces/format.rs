//! The on-disk format, byte for byte and mode for mode, as Docker's overlay2 writes it.
//! Shared bodies: every face runs them (see `faces/mod.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::faces::Face;
use ovl2_core::{CreateOpts, ErrorKind, Options, Owner, ProblemKind, RemoveOpts};

fn co() -> CreateOpts {
    CreateOpts::default()
}

face_test!(layout_bytes_and_modes);
pub fn layout_bytes_and_modes<D: Face>() {
    // Modes must not depend on the umask: Docker chmods after creating.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let s = Scratch::new("format");
    let home = s.home();
    let d = D::open_default(&home);
    d.create("base", None, &co()).unwrap();
    d.create("mid", Some("base"), &co()).unwrap();
    d.create_rw("top", Some("mid"), &co()).unwrap();

    assert_eq!(mode(&home), 0o710);
    assert_eq!(mode(&home.join("l")), 0o700);
    let euid = rustix::process::geteuid().as_raw();
    let egid = rustix::process::getegid().as_raw();
    for id in ["base", "mid", "top"] {
        let dir = home.join(id);
        assert_eq!(mode(&dir), 0o710, "{id}");
        assert_eq!(mode(&dir.join("diff")), 0o755, "{id}/diff");
        assert_eq!(mode(&dir.join("link")), 0o644, "{id}/link");
        let md = std::fs::metadata(dir.join("diff")).unwrap();
        assert_eq!((md.uid(), md.gid()), (euid, egid));
        // Nothing but Docker's entries in a layer dir.
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let want: &[&str] = match id {
            "base" => &["committed", "diff", "link"],
            "mid" => &["committed", "diff", "link", "lower", "work"],
            _ => &["diff", "link", "lower", "work"],
        };
        assert_eq!(names, want, "{id} entries");
    }
    let lid = |id: &str| read(&home.join(id).join("link"));
    for id in ["base", "mid", "top"] {
        let l = lid(id);
        assert_eq!(l.len(), 26, "no newline, 26 characters: {l:?}");
        assert!(l.bytes().all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c)));
        let target = std::fs::read_link(home.join("l").join(&l)).unwrap();
        assert_eq!(target, PathBuf::from(format!("../{id}/diff")), "relative symlink");
    }
    assert_eq!(read(&home.join("mid/lower")), format!("l/{}", lid("base")));
    assert_eq!(read(&home.join("top/lower")), format!("l/{}:l/{}", lid("mid"), lid("base")));
    assert_eq!(mode(&home.join("mid/lower")), 0o644);
    assert_eq!(mode(&home.join("mid/work")), 0o700);
    assert_eq!(mode(&home.join("base/committed")), 0o600);
    assert_eq!(std::fs::metadata(home.join("base/committed")).unwrap().len(), 0);
    assert!(d.check().unwrap().is_empty());
}

face_test!(remapped_root_owns_diff_and_work);
pub fn remapped_root_owns_diff_and_work<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("remap");
    let home = s.home();
    let root = Owner::from_raw(100000, 100001);
    let d = D::open(&home, Options { root: Some(root), ..Options::default() }).unwrap();
    d.create("a", None, &co()).unwrap();
    d.create("b", Some("a"), &co()).unwrap();
    let ids = |p: PathBuf| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(ids(home.clone()), (0, 100001), "home: process uid, remapped root gid");
    assert_eq!(ids(home.join("a")), (0, 100001));
    assert_eq!(ids(home.join("a/diff")), (100000, 100001));
    assert_eq!(ids(home.join("b/work")), (100000, 100001));
    assert_eq!(ids(home.join("b/link")), (0, 0), "metadata files belong to the process");
    assert_eq!(ids(home.join("l")), (0, 0));
}

face_test!(metadata_matches_docker);
pub fn metadata_matches_docker<D: Face>() {
    let s = Scratch::new("meta");
    let home = s.home();
    let d = D::open_default(&home);
    d.create("a", None, &co()).unwrap();
    d.create("b", Some("a"), &co()).unwrap();
    d.create("c", Some("b"), &co()).unwrap();
    let h = home.display();
    let m = d.metadata("a").unwrap();
    assert_eq!(m.lower_dir, None);
    assert_eq!(m.upper_dir, Path::new(&format!("{h}/a/diff")));
    assert_eq!(m.work_dir, Path::new(&format!("{h}/a/work")), "Docker reports WorkDir even for base layers");
    assert_eq!(m.merged_dir, Path::new(&format!("{h}/a/merged")));
    let m = d.metadata("c").unwrap();
    assert_eq!(m.lower_dir.as_deref(), Some(std::ffi::OsStr::new(&format!("{h}/b/diff:{h}/a/diff"))));
    assert_eq!(m.to_map().len(), 4);
    // A home given with dots and slashes is cleaned as Go's filepath.Clean does.
    let messy = PathBuf::from(format!("{h}/./../{}//", home.file_name().unwrap().to_string_lossy()));
    let d2 = D::open_default(&messy);
    assert_eq!(d2.home(), home.as_path());
    assert_eq!(d2.metadata("c").unwrap(), d.metadata("c").unwrap());
}

face_test!(queries);
pub fn queries<D: Face>() {
    let s = Scratch::new("queries");
    let d = D::open_default(&s.home());
    d.create("a", None, &co()).unwrap();
    d.create("b", Some("a"), &co()).unwrap();
    d.create("c", Some("a"), &co()).unwrap();
    d.create("d", Some("c"), &co()).unwrap();
    assert!(d.exists("a").unwrap());
    assert!(!d.exists("zz").unwrap());
    assert_eq!(d.exists("../etc").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(d.parent("a").unwrap(), None);
    assert_eq!(d.parent("d").unwrap().as_deref(), Some("c"));
    assert_eq!(d.parent("zz").unwrap_err().kind(), ErrorKind::NotFound);
    let layers = d.layers().unwrap();
    let got: Vec<(String, Option<String>, usize)> =
        layers.iter().map(|l| (l.id.clone(), l.parent.clone(), l.depth)).collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), None, 0),
            ("b".into(), Some("a".into()), 1),
            ("c".into(), Some("a".into()), 1),
            ("d".into(), Some("c".into()), 2),
        ]
    );
    let status = d.status().unwrap();
    let keys: Vec<&str> = status.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &keys[..5],
        ["Backing Filesystem", "Supports d_type", "Using metacopy", "Native Overlay Diff", "userxattr"]
    );
    assert!(status.iter().any(|(k, v)| k == "Layers" && v == "4"));
    assert!(status.iter().any(|(k, v)| k == "Supports d_type" && v == "true"));
}

face_test!(remove_semantics);
pub fn remove_semantics<D: Face>() {
    let s = Scratch::new("remove");
    let home = s.home();
    let d = D::open_default(&home);
    d.create("a", None, &co()).unwrap();
    d.create("b", Some("a"), &co()).unwrap();
    d.create("c", Some("b"), &co()).unwrap();
    std::fs::write(home.join("c/diff/file"), b"data").unwrap();
    let before = snapshot(&home);
    let e = d.remove("a", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(e.to_string().contains("\"a\"") && e.to_string().contains("b, c"), "{e}");
    assert_eq!(snapshot(&home), before, "a refused remove changes nothing");
    assert_eq!(d.remove("nope", false).unwrap_err().kind(), ErrorKind::NotFound);
    let lid_c = read(&home.join("c/link"));
    d.remove("c", false).unwrap();
    assert!(!home.join("c").exists());
    assert!(!home.join("l").join(&lid_c).exists(), "l/ link removed with the layer");
    assert!(std::fs::read_dir(home.join(".ovl2/staging")).unwrap().next().is_none(), "nothing left staged");
    // force (unmount first) never orphans children either.
    let before = snapshot(&home);
    let e = d.remove("a", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(e.to_string().contains("`ovl2 rm --recursive a`"), "{e}");
    assert_eq!(snapshot(&home), before);
    assert!(d.check().unwrap().is_empty());
}

face_test!(remove_tree_takes_the_layer_and_its_descendants_deepest_first);
pub fn remove_tree_takes_the_layer_and_its_descendants_deepest_first<D: Face>() {
    let s = Scratch::new("rmtree");
    let home = s.home();
    let d = D::open_default(&home);
    d.create("a", None, &co()).unwrap();
    d.create("b", Some("a"), &co()).unwrap();
    d.create("c", Some("b"), &co()).unwrap();
    d.create("d", Some("a"), &co()).unwrap();
    d.create("other", None, &co()).unwrap();
    d.create("kept", Some("other"), &co()).unwrap();
    assert_eq!(d.remove_tree("b", false).unwrap(), ["c", "b"]);
    assert_eq!(d.remove_tree("a", false).unwrap(), ["d", "a"]);
    assert_eq!(d.remove_tree("kept", false).unwrap(), ["kept"]);
    assert_eq!(d.remove_tree("a", false).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(d.remove_tree("../x", false).unwrap_err().kind(), ErrorKind::InvalidArgument);
    let left: Vec<_> = d.layers().unwrap().into_iter().map(|l| l.id).collect();
    assert_eq!(left, ["other"]);
    assert!(d.check().unwrap().is_empty());
    assert!(std::fs::read_dir(home.join(".ovl2/staging")).unwrap().next().is_none());
    let links: Vec<_> = std::fs::read_dir(home.join("l")).unwrap().collect();
    assert_eq!(links.len(), 1, "only other's l/ name is left");
}

face_test!(docker_style_remove_leaves_orphans_that_check_explains);
/// Docker's graphdriver `Remove` ignores children; the store it leaves is reported clearly,
/// with the command that resolves it, and listed without pretending the orphan is a base.
pub fn docker_style_remove_leaves_orphans_that_check_explains<D: Face>() {
    let s = Scratch::new("orphan");
    let home = s.home();
    let d = D::open_default(&home);
    d.create("p", None, &co()).unwrap();
    d.create("ch", Some("p"), &co()).unwrap();
    d.create("gc", Some("ch"), &co()).unwrap();
    let lid_p = read(&home.join("p/link"));
    d.remove_with("p", RemoveOpts { ignore_children: true, ..RemoveOpts::default() }).unwrap();
    let problems = d.check().unwrap();
    let got: Vec<_> = problems.iter().map(|p| (p.layer.as_deref().unwrap(), p.kind, p.repairable)).collect();
    assert_eq!(got, [("ch", ProblemKind::Orphan, false), ("gc", ProblemKind::UnknownLower, false)]);
    assert_eq!(
        problems[0].detail,
        format!("parent short id {lid_p} is gone; `ovl2 rm --recursive ch` removes it and the layers built on it")
    );
    assert!(problems[1].detail.contains("orphan \"ch\"") && problems[1].detail.contains("ovl2 rm --recursive ch"));
    // Repair cannot bring p back, and says so the same way.
    assert_eq!(d.repair().unwrap().remaining, problems);
    let layers = d.layers().unwrap();
    let ch = layers.iter().find(|l| l.id == "ch").unwrap();
    assert_eq!((ch.parent.as_deref(), ch.depth, ch.orphan), (None, 1, true));
    assert!(!layers.iter().find(|l| l.id == "gc").unwrap().orphan, "gc's parent ch is there");
    for e in [d.parent("ch").unwrap_err(), d.metadata("ch").unwrap_err()] {
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let msg = e.to_string();
        assert!(msg.contains(&lid_p) && msg.contains("`ovl2 check`"), "{msg}");
        assert_eq!(msg.matches("check").count(), 1, "one instruction, not two: {msg}");
    }
    // The command check names resolves it.
    assert_eq!(d.remove_tree("ch", false).unwrap(), ["gc", "ch"]);
    assert!(d.check().unwrap().is_empty());
}

face_test!(create_refusals_change_nothing);
pub fn create_refusals_change_nothing<D: Face>() {
    let s = Scratch::new("refuse");
    let home = s.home();
    let d = D::open_default(&home);
    d.create("a", None, &co()).unwrap();
    let before = snapshot(&home);
    let long = "x".repeat(256);
    let bad_ids =
        ["", "a/b", "a\0b", ".", "..", ".ovl2", ".hidden", "l", "backingFsBlockDev", long.as_str(), "../a", "/abs"];
    // A C string cannot hold the NUL of "a\0b", so only a face that can pass it checks it.
    for id in bad_ids.into_iter().filter(|id| D::STRINGS_CAN_HOLD_NUL || !id.contains('\0')) {
        let e = d.create(id, None, &co()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{id:?}: {e}");
        assert!(e.to_string().contains("invalid layer id"), "{e}");
        let e = d.create("ok", Some(id), &co()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "parent {id:?}: {e}");
        assert_eq!(d.remove(id, true).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(d.metadata(id).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    assert_eq!(d.create("a", None, &co()).unwrap_err().kind(), ErrorKind::Exists);
    assert_eq!(d.create("x", Some("missing"), &co()).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(d.create("a2", Some("a2"), &co()).unwrap_err().kind(), ErrorKind::InvalidArgument);
    let mut so = co();
    so.storage_opt.insert("size".into(), "10G".into());
    assert_eq!(d.create("x", None, &so).unwrap_err().kind(), ErrorKind::Unsupported);
    let mut so = co();
    so.storage_opt.insert("bogus".into(), "1".into());
    let e = d.create("x", None, &so).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    assert_eq!(snapshot(&home), before, "refused creates wrote nothing");
    assert!(!s.path().join("b").exists() && !std::path::Path::new("/abs").exists());
}

face_test!(depth_counts_lowers_500_accepted_501_refused);
pub fn depth_counts_lowers_500_accepted_501_refused<D: Face>() {
    let s = Scratch::new("depth");
    let home = s.home();
    let d = D::open_fast(&home);
    // L0 is the base (depth 0); L<i> has i lower layers.
    d.create("L0", None, &co()).unwrap();
    for i in 1..=500 {
        d.create(&format!("L{i}"), Some(&format!("L{}", i - 1)), &co()).unwrap();
    }
    let lower = read(&home.join("L500/lower"));
    assert_eq!(lower.split(':').count(), 500, "the kernel's limit: 500 lower layers");
    let layers = d.layers().unwrap();
    let depth = |id: &str| layers.iter().find(|l| l.id == id).unwrap().depth;
    assert_eq!((depth("L0"), depth("L1"), depth("L500")), (0, 1, 500));
    let before = snapshot(&home);
    let e = d.create("L501", Some("L500"), &co()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MaxDepth);
    assert_eq!(e.to_string(), "max depth exceeded: layer \"L501\" would have 501 lower layers, the limit is 500");
    assert_eq!(d.create_rw("L501", Some("L500"), &co()).unwrap_err().kind(), ErrorKind::MaxDepth);
    assert_eq!(snapshot(&home), before);
    assert!(d.check().unwrap().is_empty());
}

face_test!(docker_compatible_depth_limit);
pub fn docker_compatible_depth_limit<D: Face>() {
    // Docker refuses a layer only when len(lowers) > 128: 128 lower layers are allowed.
    let s = Scratch::new("depth128");
    let d = D::open(s.home(), Options { max_depth: 128, sync: false, ..Options::default() }).unwrap();
    d.create("L0", None, &co()).unwrap();
    for i in 1..=128 {
        d.create(&format!("L{i}"), Some(&format!("L{}", i - 1)), &co()).unwrap();
    }
    assert_eq!(d.layers().unwrap().iter().find(|l| l.id == "L128").unwrap().depth, 128);
    let e = d.create("L129", Some("L128"), &co()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MaxDepth);
    assert!(e.to_string().contains("129 lower layers, the limit is 128"), "{e}");
    assert!(d.check().unwrap().is_empty());
    for bad in [0, 501] {
        let e = D::open(s.home(), Options { max_depth: bad, ..Options::default() }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    // A store opened with a smaller limit than its layers reports them, naming both counts.
    let small = D::open(s.home(), Options { max_depth: 127, repair_on_open: false, ..Options::default() }).unwrap();
    let problems = small.check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].layer.as_deref(), Some("L128"));
    assert_eq!(problems[0].detail, "layer has 128 lower layers, more than the store's max depth of 127");
}

face_test!(threads_share_a_driver);
pub fn threads_share_a_driver<D: Face>() {
    let s = Scratch::new("threads");
    let d = std::sync::Arc::new(D::open_fast(&s.home()));
    d.create("base", None, &co()).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let id = format!("t{t}-{i}");
                    let parent = if i % 2 == 0 { "base".to_string() } else { format!("t{t}-{}", i - 1) };
                    d.create(&id, Some(&parent), &co()).unwrap();
                    if i % 2 == 1 {
                        d.remove(&id, false).unwrap();
                    }
                    if i % 10 == 0 {
                        let problems = d.check().unwrap();
                        assert!(problems.is_empty(), "{problems:?}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(d.layers().unwrap().len(), 1 + 8 * 20);
    assert!(d.check().unwrap().is_empty());
}
