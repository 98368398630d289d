//! `check`, `repair` and `remove` against the containerd snapshotter's index
//! (`.ovl2/snapshotter/`), built here with the same `Index` code the service writes it with,
//! and once by hand in the documented format.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::*;
use ovl2_core::snapshots::{self, Entry, Index, Kind, State};
use ovl2_core::{CreateOpts, Driver, ErrorKind, Options, ProblemKind};

fn co() -> CreateOpts {
    CreateOpts::default()
}

/// Records layer `id` as snapshot `key` the way the service does: the entry, then its link.
fn add_snapshot(home: &Path, key: &str, id: &str, short: &str, parent: Option<&str>, state: State) {
    let dir = snapshots::dir(home);
    let mut index = Index::load(&dir, false).unwrap();
    let now = SystemTime::now();
    let kind = if parent.is_some() { Kind::Active } else { Kind::Committed };
    let entry = Entry {
        id: id.to_owned(),
        short: short.to_owned(),
        kind,
        parent: parent.map(str::to_owned),
        labels: Default::default(),
        created: now,
        updated: now,
        usage: None,
        state,
    };
    index.snapshots.insert(key.to_owned(), entry);
    index.save(key).unwrap();
    std::os::unix::fs::symlink(snapshots::link_target(id), index.link_path(short)).unwrap();
}

fn kinds(d: &Driver) -> Vec<ProblemKind> {
    d.check().unwrap().into_iter().map(|p| p.kind).collect()
}

fn entry_path(home: &Path, id: &str) -> std::path::PathBuf {
    snapshots::dir(home).join(snapshots::ENTRIES_DIR).join(id)
}

/// Two layers containerd holds: "base" committed, "top" active on it.
fn store_with_snapshots(s: &Scratch) -> Driver {
    let d = Driver::open(s.home(), Options::default()).unwrap();
    d.create("base", None, &co()).unwrap();
    d.create_rw("top", Some("base"), &co()).unwrap();
    add_snapshot(&s.home(), "default/1/sha256:base", "base", "0", None, State::Ready);
    add_snapshot(&s.home(), "default/2/top", "top", "1", Some("default/1/sha256:base"), State::Ready);
    d
}

#[test]
fn a_consistent_index_is_not_damage() {
    let s = Scratch::new("snap-clean");
    let d = store_with_snapshots(&s);
    // The service's unfinished steps and writes in flight are its own business.
    add_snapshot(&s.home(), "default/3/half", "never-made", "2", Some("default/1/sha256:base"), State::Creating);
    let dir = snapshots::dir(&s.home());
    std::fs::write(dir.join(snapshots::ENTRIES_DIR).join("base.tmp"), b"{").unwrap();
    std::os::unix::fs::symlink("../../../x/diff", dir.join(snapshots::LINKS_DIR).join("3.tmp")).unwrap();
    assert_eq!(d.check().unwrap(), vec![]);
    // And the index written in the documented format by hand reads the same.
    let raw = format!(
        r#"{{"version":1,"key":"k/raw","id":"raw","short":"4","kind":"view","parent":"default/1/sha256:base",
           "labels":{{"containerd.io/gc.root":"x"}},"created":{0},"updated":{0}}}"#,
        r#"{"secs_since_epoch":1700000000,"nanos_since_epoch":0}"#
    );
    d.create("raw", Some("base"), &co()).unwrap();
    std::fs::write(entry_path(&s.home(), "raw"), raw).unwrap();
    std::os::unix::fs::symlink("../../../raw/diff", dir.join(snapshots::LINKS_DIR).join("4")).unwrap();
    assert_eq!(d.check().unwrap(), vec![]);
    let index = Index::load(&dir, false).unwrap();
    assert_eq!(index.snapshots["k/raw"].kind, Kind::View);
}

/// The old code ignored `.ovl2/snapshotter/`: a layer removed behind containerd's back stayed
/// in the index, unreported, and containerd kept a snapshot it could not mount.
#[test]
fn a_snapshot_whose_layer_was_removed_is_reported_and_repair_drops_it() {
    let s = Scratch::new("snap-gone");
    let d = store_with_snapshots(&s);
    d.remove("top", true).unwrap();
    let p = d.check().unwrap();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].kind, ProblemKind::SnapshotWithoutLayer);
    assert_eq!(p[0].layer.as_deref(), Some("top"));
    assert!(p[0].repairable && p[0].detail.contains("\"default/2/top\""), "{}", p[0].detail);
    let r = d.repair().unwrap();
    assert_eq!(r.repaired.len(), 1);
    assert_eq!(r.remaining, vec![]);
    assert!(!entry_path(&s.home(), "top").exists());
    assert!(!snapshots::dir(&s.home()).join("l/1").exists(), "its short link goes with it");
    assert!(entry_path(&s.home(), "base").exists() && snapshots::dir(&s.home()).join("l/0").exists());
    let index = Index::load(&snapshots::dir(&s.home()), false).unwrap();
    assert_eq!(index.snapshots.keys().collect::<Vec<_>>(), ["default/1/sha256:base"]);
    assert_eq!(d.check().unwrap(), vec![]);
}

#[test]
fn remove_refuses_a_layer_containerd_holds_unless_forced() {
    let s = Scratch::new("snap-rm");
    let d = store_with_snapshots(&s);
    let e = d.remove("top", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    let m = e.to_string();
    assert!(m.contains("containerd snapshot \"default/2/top\"") && m.contains("--force"), "{m}");
    let e = d.remove_tree("base", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(d.exists("top").unwrap() && d.exists("base").unwrap(), "nothing was removed");
    // The service's own removal marks the entry first and passes.
    add_snapshot(&s.home(), "default/3/going", "going", "2", Some("default/1/sha256:base"), State::Removing);
    d.create("going", Some("base"), &co()).unwrap();
    d.remove("going", false).unwrap();
    // Forced: removed, and the entry stays for repair to drop.
    d.remove_tree("base", true).unwrap();
    assert!(!d.exists("base").unwrap());
    let k = kinds(&d);
    assert_eq!(k, [ProblemKind::SnapshotWithoutLayer, ProblemKind::SnapshotWithoutLayer], "{:?}", d.check());
}

#[test]
fn missing_wrong_and_unowned_snapshot_links_are_repaired() {
    let s = Scratch::new("snap-links");
    let d = store_with_snapshots(&s);
    let l = snapshots::dir(&s.home()).join(snapshots::LINKS_DIR);
    std::fs::remove_file(l.join("0")).unwrap();
    std::fs::remove_file(l.join("1")).unwrap();
    std::os::unix::fs::symlink("../../../base/diff", l.join("1")).unwrap();
    std::os::unix::fs::symlink("../../../gone/diff", l.join("7")).unwrap();
    std::fs::write(l.join("8"), b"").unwrap();
    let mut k = kinds(&d);
    k.sort();
    use ProblemKind as K;
    assert_eq!(
        k,
        [K::MissingSnapshotLink, K::MissingSnapshotLink, K::DanglingSnapshotLink, K::DanglingSnapshotLink],
        "{:?}",
        d.check()
    );
    let r = d.repair().unwrap();
    assert_eq!((r.repaired.len(), r.remaining.len()), (4, 0), "{r:?}");
    assert_eq!(std::fs::read_link(l.join("0")).unwrap(), Path::new("../../../base/diff"));
    assert_eq!(std::fs::read_link(l.join("1")).unwrap(), Path::new("../../../top/diff"));
    assert!(!l.join("7").exists() && !l.join("8").exists());
    assert_eq!(d.check().unwrap(), vec![]);
}

#[test]
fn an_entry_that_does_not_parse_is_reported_and_never_touched() {
    let s = Scratch::new("snap-bad");
    let d = store_with_snapshots(&s);
    let dir = snapshots::dir(&s.home()).join(snapshots::ENTRIES_DIR);
    std::fs::write(dir.join("garbage"), b"not json").unwrap();
    let other = std::fs::read(dir.join("base")).unwrap();
    std::fs::write(dir.join("misnamed"), &other).unwrap();
    let escaping = String::from_utf8(other.clone()).unwrap().replace("\"short\":\"0\"", "\"short\":\"../../lock\"");
    std::fs::write(dir.join("evil"), escaping.replace("\"id\":\"base\"", "\"id\":\"evil\"")).unwrap();
    let v2 = String::from_utf8(other).unwrap().replace("\"version\":1", "\"version\":2");
    std::fs::write(dir.join("base"), &v2).unwrap();
    let p = d.check().unwrap();
    assert_eq!(p.iter().filter(|p| p.kind == ProblemKind::MalformedSnapshot).count(), 4, "{p:?}");
    assert!(p.iter().any(|p| p.detail.contains("\"../../lock\" is not a base-36 number")), "{p:?}");
    assert!(p.iter().all(|p| !p.repairable), "{p:?}");
    assert!(p.iter().any(|p| p.detail.contains("snapshots/garbage") && p.detail.contains("not start")), "{p:?}");
    assert!(p.iter().any(|p| p.detail.contains("version 2")), "{p:?}");
    assert!(p.iter().any(|p| p.detail.contains("names layer base")), "{p:?}");
    // top's parent was in the entry that no longer reads.
    assert!(p.iter().any(|p| p.kind == ProblemKind::SnapshotWithoutParent && p.layer.as_deref() == Some("top")));
    assert!(!p.iter().any(|p| p.kind == ProblemKind::DanglingSnapshotLink), "base's link may be owned: {p:?}");
    d.repair().unwrap();
    assert!(snapshots::dir(&s.home()).join("l/0").exists());
    assert_eq!(std::fs::read(dir.join("garbage")).unwrap(), b"not json");
    assert_eq!(std::fs::read_to_string(dir.join("base")).unwrap(), v2);
    // An unreadable entry for a layer holds it too.
    assert_eq!(d.remove("base", false).unwrap_err().kind(), ErrorKind::Busy);
}

#[test]
fn repair_leaves_the_index_alone_while_a_service_holds_it() {
    let s = Scratch::new("snap-live");
    let d = store_with_snapshots(&s);
    d.remove("top", true).unwrap();
    let service = snapshots::lock(&snapshots::dir(&s.home())).unwrap().expect("the lock is free");
    let p = d.check().unwrap();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(!p[0].repairable && p[0].detail.contains("ovl2-snapshotter serves this store"), "{}", p[0].detail);
    let r = d.repair().unwrap();
    assert_eq!((r.repaired.len(), r.remaining.len()), (0, 1));
    assert!(entry_path(&s.home(), "top").exists(), "the running service's index is not touched");
    // A repair holds the lock while it looks, so no service starts meanwhile; once the
    // service is gone, repair mends.
    drop(service);
    let r = d.repair().unwrap();
    assert_eq!((r.repaired.len(), r.remaining.len()), (1, 0), "{r:?}");
    assert!(!entry_path(&s.home(), "top").exists());
    assert!(snapshots::lock(&snapshots::dir(&s.home())).unwrap().is_some(), "repair let go of the lock");
}
