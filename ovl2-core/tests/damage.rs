//! The corrupt-store matrix: one damaged layer or one planted special file must never stop
//! the store. For each case: nothing hangs, `check` reports the damage on its layer, every
//! other layer keeps working (list, create, open with repair), `repair` fixes what it can,
//! and `remove(force)` takes a damaged layer away.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ovl2_core::{CreateOpts, Driver, Options, ProblemKind};

fn co() -> CreateOpts {
    CreateOpts::default()
}

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap();
}

fn replace_with_symlink(p: &Path, target: &Path) {
    let _ = std::fs::remove_file(p);
    let _ = std::fs::remove_dir_all(p);
    std::os::unix::fs::symlink(target, p).unwrap();
}

/// Runs `f` on another thread and fails the test if it does not finish in time: a FIFO
/// opened without O_NONBLOCK blocks forever.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("{what}: hung (still blocked after 30 s)"))
}

struct Case {
    name: &'static str,
    /// The layer damaged, `None` for store-level files.
    layer: Option<&'static str>,
    kind: ProblemKind,
    repairable: bool,
    damage: fn(&Path, &Path),
}

/// a <- b <- c, and an unrelated base z.
fn build(home: &Path) {
    let d = Driver::open(home, Options { sync: false, ..Options::default() }).unwrap();
    d.create("a", None, &co()).unwrap();
    d.create("b", Some("a"), &co()).unwrap();
    d.create("c", Some("b"), &co()).unwrap();
    d.create("z", None, &co()).unwrap();
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "link is a directory",
            layer: Some("c"),
            kind: ProblemKind::MalformedLink,
            repairable: false,
            damage: |h, _| {
                std::fs::remove_file(h.join("c/link")).unwrap();
                std::fs::create_dir_all(h.join("c/link/inner")).unwrap();
            },
        },
        Case {
            name: "link is a FIFO",
            layer: Some("c"),
            kind: ProblemKind::MalformedLink,
            repairable: true,
            damage: |h, _| mkfifo(&h.join("c/link")),
        },
        Case {
            name: "link is a symlink to a good link file",
            layer: Some("c"),
            kind: ProblemKind::MalformedLink,
            repairable: true,
            damage: |h, out| {
                std::fs::copy(h.join("c/link"), out.join("link")).unwrap();
                replace_with_symlink(&h.join("c/link"), &out.join("link"));
            },
        },
        Case {
            name: "lower is a symlink",
            layer: Some("c"),
            kind: ProblemKind::MalformedLower,
            repairable: false,
            damage: |h, out| {
                std::fs::copy(h.join("c/lower"), out.join("lower")).unwrap();
                replace_with_symlink(&h.join("c/lower"), &out.join("lower"));
            },
        },
        Case {
            name: "lower is over 1 MiB",
            layer: Some("c"),
            kind: ProblemKind::MalformedLower,
            repairable: false,
            damage: |h, _| {
                let good = std::fs::read(h.join("c/lower")).unwrap();
                let mut big = good.clone();
                while big.len() <= 1 << 20 {
                    big.extend_from_slice(b":");
                    big.extend_from_slice(&good);
                }
                std::fs::write(h.join("c/lower"), big).unwrap();
            },
        },
        Case {
            name: "lower is a FIFO",
            layer: Some("c"),
            kind: ProblemKind::MalformedLower,
            repairable: false,
            damage: |h, _| mkfifo(&h.join("c/lower")),
        },
        Case {
            name: "work is a symlink to a host dir",
            layer: Some("c"),
            kind: ProblemKind::MissingWork,
            repairable: true,
            damage: |h, out| {
                std::fs::create_dir_all(out.join("hostdir")).unwrap();
                std::fs::write(out.join("hostdir/precious"), "keep").unwrap();
                replace_with_symlink(&h.join("c/work"), &out.join("hostdir"));
            },
        },
        Case {
            name: "work is a FIFO",
            layer: Some("c"),
            kind: ProblemKind::MissingWork,
            repairable: true,
            damage: |h, _| {
                std::fs::remove_dir_all(h.join("c/work")).unwrap();
                mkfifo(&h.join("c/work"));
            },
        },
        Case {
            name: "FIFO in .ovl2/staging",
            layer: None,
            kind: ProblemKind::StaleStaging,
            repairable: true,
            damage: |h, _| mkfifo(&h.join(".ovl2/staging/new-fifo")),
        },
        Case {
            name: "FIFO in .ovl2/pending",
            layer: None,
            kind: ProblemKind::StaleStaging,
            repairable: true,
            damage: |h, _| mkfifo(&h.join(".ovl2/pending/ctr")),
        },
    ]
}

fn run_case(case: &Case) {
    let s = Scratch::new("damage");
    let home = s.home();
    let outside = s.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    build(&home);
    (case.damage)(&home, &outside);
    let outside_before = snapshot(&outside);
    let name = case.name;

    // check reports the damage, on its layer, and changes nothing.
    let h = home.clone();
    let before = snapshot(&home);
    let problems = within(name, move || {
        let d = Driver::open(&h, Options { repair_on_open: false, sync: false, ..Options::default() }).unwrap();
        d.check().unwrap()
    });
    assert_eq!(snapshot(&home), before, "{name}: check changed the store");
    let found =
        problems.iter().find(|p| p.kind == case.kind && p.layer.as_deref() == case.layer.or(p.layer.as_deref()));
    let found = found.unwrap_or_else(|| panic!("{name}: expected {:?}, got {problems:?}", case.kind));
    assert_eq!(found.repairable, case.repairable, "{name}: {found:?}");
    assert!(!found.detail.contains("Some(") && !found.detail.contains("None"), "{name}: {}", found.detail);

    // Every other layer keeps working, through an open that repairs.
    let h = home.clone();
    let (layers, remaining) = within(name, move || {
        let d = Driver::open(&h, Options { sync: false, ..Options::default() }).unwrap();
        let layers: Vec<String> = d.layers().unwrap().into_iter().map(|l| l.id).collect();
        d.create("new", Some("b"), &co()).unwrap();
        d.create("new2", Some("z"), &co()).unwrap();
        assert_eq!(d.parent("new").unwrap().as_deref(), Some("b"));
        d.remove("new2", false).unwrap();
        (layers, d.check().unwrap())
    });
    assert_eq!(layers, ["a", "b", "c", "z"], "{name}: layers");
    if case.repairable {
        assert!(remaining.is_empty(), "{name}: repair left {remaining:?}");
    } else {
        assert!(remaining.iter().any(|p| p.kind == case.kind), "{name}: {remaining:?}");
    }
    assert_eq!(snapshot(&outside), outside_before, "{name}: repair reached outside the store");

    // The damaged layer can always be removed, and the store is clean afterwards.
    if let Some(id) = case.layer {
        let h = home.clone();
        let id = id.to_owned();
        let remaining = within(name, move || {
            let d = Driver::open(&h, Options { sync: false, ..Options::default() }).unwrap();
            d.remove(&id, true).unwrap();
            d.remove("new", false).unwrap();
            d.check().unwrap()
        });
        assert!(remaining.is_empty(), "{name}: after removing the damaged layer: {remaining:?}");
        assert!(!home.join(case.layer.unwrap()).exists());
    }
    assert_eq!(snapshot(&outside), outside_before, "{name}: removal reached outside the store");
}

#[test]
fn damaged_layer_link_is_a_directory() {
    run_named("link is a directory");
}
#[test]
fn damaged_layer_link_is_a_fifo() {
    run_named("link is a FIFO");
}
#[test]
fn damaged_layer_link_is_a_symlink() {
    run_named("link is a symlink to a good link file");
}
#[test]
fn damaged_layer_lower_is_a_symlink() {
    run_named("lower is a symlink");
}
#[test]
fn damaged_layer_lower_is_too_large() {
    run_named("lower is over 1 MiB");
}
#[test]
fn damaged_layer_lower_is_a_fifo() {
    run_named("lower is a FIFO");
}
#[test]
fn damaged_layer_work_is_a_symlink() {
    run_named("work is a symlink to a host dir");
}
#[test]
fn damaged_layer_work_is_a_fifo() {
    run_named("work is a FIFO");
}
#[test]
fn fifo_in_staging_is_swept() {
    run_named("FIFO in .ovl2/staging");
}
#[test]
fn fifo_in_pending_is_swept() {
    run_named("FIFO in .ovl2/pending");
}

fn run_named(name: &str) {
    let all = cases();
    let case = all.iter().find(|c| c.name == name).expect("case exists");
    run_case(case);
}

/// A repaired FIFO `link` gets back the short id its children's `lower` files name.
#[test]
fn fifo_link_is_recreated_from_l() {
    let s = Scratch::new("fifolink");
    let home = s.home();
    build(&home);
    let lid = read(&home.join("b/link"));
    mkfifo(&home.join("b/link"));
    let h = home.clone();
    within("repair", move || Driver::open(&h, Options { sync: false, ..Options::default() }).unwrap());
    assert_eq!(read(&home.join("b/link")), lid);
    assert_complete(&home, "b", true);
}

/// A symlink (dangling or not) under a layer's name in home is not a layer: as a parent it
/// does not exist, and creating a layer of that name says what is in the way (both said
/// "File exists" or "Not a directory" before).
#[test]
fn a_symlink_in_home_is_not_a_layer() {
    let s = Scratch::new("symlinkparent");
    let home = s.home();
    build(&home);
    std::os::unix::fs::symlink(s.path().join("nowhere"), home.join("p")).unwrap();
    std::os::unix::fs::symlink("a", home.join("q")).unwrap();
    let d = Driver::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    for parent in ["p", "q"] {
        let e = d.create("x", Some(parent), &co()).unwrap_err();
        assert_eq!(e.kind(), ovl2_core::ErrorKind::NotFound, "{e}");
        assert_eq!(e.to_string(), format!("layer {parent:?} does not exist"));
    }
    let e = d.create("p", None, &co()).unwrap_err();
    assert!(e.to_string().contains("is a symlink, not a layer directory"), "{e}");
    assert!(!e.to_string().contains("already exists"), "{e}");
    assert!(!home.join("x").exists());
    assert_eq!(std::fs::read_link(home.join("p")).unwrap(), s.path().join("nowhere"));
}
