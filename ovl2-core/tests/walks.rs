//! Tree walks and removal (issue 10 items 1 and 6): removal and repair never cross a mount
//! point, not even a bind mount of the same filesystem, and export never blocks on a FIFO
//! swapped in for a file. The mount tests need root; under CI=true they fail rather than skip.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ovl2_core::{CreateOpts, ErrorKind, ProblemKind};
use rustix::mount::{mount_bind, unmount, UnmountFlags};

/// A host directory holding one file that must survive.
fn host_dir(s: &Scratch) -> std::path::PathBuf {
    let host = s.path().join("host");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("keep"), "precious").unwrap();
    std::fs::write(host.join("sub/keep2"), "precious too").unwrap();
    host
}

fn assert_host_intact(host: &Path) {
    assert_eq!(read(&host.join("keep")), "precious", "the bind-mounted host dir was emptied");
    assert_eq!(read(&host.join("sub/keep2")), "precious too");
}

/// The reproduction: `create img; R=$(mount img); mkdir $R/data; mount --bind
/// /hostdir $R/data; rm img` emptied /hostdir and left every later command failing with EBUSY.
#[test]
fn rm_refuses_a_bind_mount_inside_the_layer() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("walk-rm-bind");
    let home = s.home();
    let host = host_dir(&s);
    let d = open_fast(&home);
    d.create("img", None, &CreateOpts::default()).unwrap();
    let r = d.get("img", None).unwrap();
    std::fs::create_dir(r.join("data")).unwrap();
    std::fs::write(r.join("mine"), "layer file").unwrap();
    mount_bind(&host, r.join("data")).unwrap();
    let res = d.remove("img", false);
    let msg = res.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
    let kind = res.as_ref().err().map(|e| e.kind());
    let still = d.exists("img").unwrap();
    unmount(r.join("data"), UnmountFlags::DETACH).unwrap();
    assert_eq!(kind, Some(ErrorKind::Busy), "rm must refuse: {msg}");
    assert!(msg.contains("img/diff/data"), "the error names the mount: {msg}");
    assert_host_intact(&host);
    assert!(still, "the layer stays when rm is refused");
    assert_eq!(read(&r.join("mine")), "layer file", "nothing of the layer was deleted");
    // The store is usable for every other command, and rm works once the mount is gone.
    assert_eq!(open_fast(&home).layers().unwrap().len(), 1);
    d.put("img").unwrap();
    d.remove("img", false).unwrap();
    assert!(!d.exists("img").unwrap());
    assert!(d.check().unwrap().is_empty());
}

// remove_tree_never_crosses_a_bind_mount tests a crate-private walk; it lives with it, in
// ovl2-core/src/fsutil.rs.

/// A leftover `.ovl2/staging/rm-x` with a bind mount inside: open (which sweeps leftovers)
/// and every command keep working, check reports it, and the mounted dir is untouched.
#[test]
fn a_leftover_with_a_mount_is_reported_not_swept_through() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("walk-staging-bind");
    let home = s.home();
    let host = host_dir(&s);
    drop(open_fast(&home));
    let left = home.join(".ovl2/staging/rm-x");
    std::fs::create_dir_all(left.join("mnt")).unwrap();
    std::fs::write(left.join("a"), "x").unwrap();
    mount_bind(&host, left.join("mnt")).unwrap();
    let outcome = (|| {
        let d = ovl2_core::Driver::open(&home, ovl2_core::Options::default())?;
        d.create("after", None, &CreateOpts::default())?;
        let report = d.repair()?;
        Ok::<_, ovl2_core::Error>((d.layers()?.len(), report, d.check()?))
    })();
    unmount(left.join("mnt"), UnmountFlags::DETACH).unwrap();
    assert_host_intact(&host);
    let (n, report, problems) = outcome.expect("the store stays usable");
    assert_eq!(n, 1);
    assert!(
        report.repaired.iter().all(|p| p.kind != ProblemKind::StaleStaging),
        "nothing was repaired: {:?}",
        report.repaired
    );
    let p = report.remaining.iter().find(|p| p.kind == ProblemKind::StaleStaging).expect("reported");
    assert!(p.detail.contains("rm-x"), "{}", p.detail);
    assert!(problems.iter().any(|p| p.kind == ProblemKind::StaleStaging), "check reports it: {problems:?}");
    // With the mount gone, repair sweeps it.
    let d = open_fast(&home);
    d.repair().unwrap();
    assert!(!left.exists());
}

/// A running container can swap a FIFO in for a file between the walk's lstat and the
/// open; opening a FIFO for reading blocks until a writer comes, so `diff` hung. Race a
/// swapping thread against exports: each must finish (maybe with an error), none may hang.
#[test]
fn diff_never_blocks_on_a_fifo_swapped_in() {
    let s = Scratch::new("walk-fifo");
    let home = s.home();
    let d = open_fast(&home);
    d.create("lay", None, &CreateOpts::default()).unwrap();
    let diff = home.join("lay/diff");
    for i in 0..50 {
        std::fs::write(diff.join(format!("f{i:02}")), "data").unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Four swappers, each flipping its own files between a FIFO and a regular file.
    let swappers: Vec<_> = (0..4)
        .map(|t| {
            let (diff, stop) = (diff.clone(), stop.clone());
            let (fifo, reg) = (s.path().join(format!("fifo{t}")), s.path().join(format!("reg{t}")));
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let target = diff.join(format!("f{:02}", t + 4 * (i % 12)));
                    let _ = rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &fifo,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o644),
                        0,
                    );
                    let _ = std::fs::write(&reg, "data");
                    let _ = std::fs::rename(&fifo, &target);
                    let _ = std::fs::rename(&reg, &target);
                    i += 1;
                }
            })
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let exporter = {
        let home = home.clone();
        std::thread::spawn(move || {
            let d = open_fast(&home);
            for _ in 0..300 {
                let r = d.diff("lay", None, std::io::sink());
                tx.send(r.err().map(|e| e.to_string())).unwrap();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = 0;
    while done < 300 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(e)) => assert!(e.contains("replaced") || e.contains("No such file"), "unexpected error: {e}"),
            Ok(None) => {}
            Err(_) => panic!("an export hung after {done} exports (a FIFO was opened blocking)"),
        }
        done += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in swappers {
        t.join().unwrap();
    }
    exporter.join().unwrap();
    // A FIFO that is there from the start is exported as a FIFO entry, never opened.
    let _ = std::fs::remove_file(diff.join("f00"));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        diff.join("f00"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(diff.join("f00")).unwrap().file_type().is_fifo());
    d.diff("lay", None, std::io::sink()).unwrap();
}
