//! `ovl2 rm` and `ovl2 check` on a store that ovl2-snapshotter serves to containerd: its index
//! (`.ovl2/snapshotter/`) is written here with the service's own index code.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::*;
use ovl2_core::snapshots::{self, Entry, Index, Kind, State};

fn add_snapshot(home: &Path, key: &str, id: &str, short: &str, parent: Option<&str>) {
    let mut index = Index::load(&snapshots::dir(home), false).unwrap();
    let now = SystemTime::now();
    let entry = Entry {
        id: id.to_owned(),
        short: short.to_owned(),
        kind: if parent.is_some() { Kind::Active } else { Kind::Committed },
        parent: parent.map(str::to_owned),
        labels: Default::default(),
        created: now,
        updated: now,
        usage: None,
        state: State::Ready,
    };
    index.snapshots.insert(key.to_owned(), entry);
    index.save(key).unwrap();
    std::os::unix::fs::symlink(snapshots::link_target(id), index.link_path(short)).unwrap();
}

/// Before, `ovl2 rm` took a containerd snapshot's layer silently and `ovl2 check` stayed
/// clean while the index kept a snapshot containerd could no longer mount.
#[test]
fn rm_refuses_a_containerd_snapshot_and_check_reports_one_removed_by_force() {
    let h = Home::new("snapshots");
    h.ok(&["create", "base"]);
    h.ok(&["create", "top", "--parent", "base", "--rw"]);
    add_snapshot(&h.home(), "default/1/sha256:base", "base", "0", None);
    add_snapshot(&h.home(), "default/2/top", "top", "1", Some("default/1/sha256:base"));
    assert_eq!(h.ok(&["check"]), "no problems\n", "the index is not damage");

    let err = h.fail(&["rm", "top"]);
    assert!(err.contains("containerd snapshot \"default/2/top\"") && err.contains("--force"), "{err}");
    let err = h.fail(&["--json", "rm", "top"]);
    let v: serde_json::Value = serde_json::from_str(&err).unwrap();
    assert_eq!(v["error"]["kind"], "busy", "{err}");
    assert!(h.home().join("top").is_dir(), "nothing removed");

    h.ok(&["rm", "--force", "top"]);
    let o = h.run(&["check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "problems remain: exit 1");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = v["problems"].as_array().unwrap();
    assert_eq!(p.len(), 1, "{v}");
    assert_eq!(p[0]["kind"], "snapshot_without_layer");
    assert_eq!(p[0]["layer"], "top");
    assert_eq!(p[0]["repairable"], true);

    // While a service holds the index, repair says so and leaves it.
    let service = snapshots::lock(&snapshots::dir(&h.home())).unwrap().unwrap();
    let o = h.run(&["check", "--repair"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ovl2-snapshotter serves this store"), "{out}");
    drop(service);

    let out = h.ok(&["check", "--repair"]);
    assert!(out.contains("repaired") && out.contains("no problems"), "{out}");
    let index = Index::load(&snapshots::dir(&h.home()), false).unwrap();
    assert_eq!(index.snapshots.keys().collect::<Vec<_>>(), ["default/1/sha256:base"]);
    assert_eq!(h.ok(&["check"]), "no problems\n");
}
