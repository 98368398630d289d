//! `import_chain`: an image's tarballs as a chain of layers in one call, all or nothing.

mod common;
#[path = "common/tarb.rs"]
mod tarb;

use std::path::Path;

use common::{require_root, snapshot, Scratch};
use ovl2_core::{import_chain_ids, ApplyOpts, CreateOpts, Driver, ErrorKind, Options};
use tarb::{tar, E};

fn open(home: &Path) -> Driver {
    Driver::open(home, Options { sync: false, ..Options::default() }).unwrap()
}

#[test]
fn import_chain_names_stacks_and_applies_each_layer() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("import-chain");
    let d = open(&s.home());
    let base = tar(&[E::file("etc/os-release", b"base")]);
    let mid = tar(&[E::file("app/bin", b"mid")]);
    let top = tar(&[E::file("app/conf", b"top")]);
    let opts = ApplyOpts { sync: false, ..ApplyOpts::default() };
    let out = d.import_chain("img", None, vec![&base[..], &mid[..], &top[..]], &opts).unwrap();
    let ids: Vec<&str> = out.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["img-1", "img-2", "img"]);
    assert_eq!(import_chain_ids("img", 3), ids);
    assert_eq!(d.parent("img-1").unwrap(), None);
    assert_eq!(d.parent("img-2").unwrap().as_deref(), Some("img-1"));
    assert_eq!(d.parent("img").unwrap().as_deref(), Some("img-2"));
    assert_eq!(std::fs::read(s.home().join("img-2/diff/app/bin")).unwrap(), b"mid");
    assert_eq!(out[2].1.files, 1);
    assert!(d.check().unwrap().is_empty());
}

#[test]
fn a_failed_import_chain_leaves_the_store_as_it_was() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("import-chain-fail");
    let d = open(&s.home());
    d.create("p", None, &CreateOpts::default()).unwrap();
    let before = snapshot(&s.home());
    let good = tar(&[E::file("a", b"a")]);
    let broken = b"this is not a tar".to_vec();
    let opts = ApplyOpts { sync: false, ..ApplyOpts::default() };
    let err = d.import_chain("bad", Some("p"), vec![&good[..], &broken[..]], &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptArchive, "{err}");
    assert!(!d.exists("bad-1").unwrap() && !d.exists("bad").unwrap());
    assert!(!d.is_committed("p").unwrap(), "the marker the chain gave p is taken back");
    assert_eq!(snapshot(&s.home()), before);
    let none: Vec<&[u8]> = Vec::new();
    assert_eq!(d.import_chain("x", None, none, &opts).unwrap_err().kind(), ErrorKind::InvalidArgument);
}
