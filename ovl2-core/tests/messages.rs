//! Error messages are for people: every error the library's public calls produce names what
//! was wrong in plain words, never with Rust debug text (`Some(..)`, `None`, `Ok(..)`, or the
//! escaped quotes of a `{:?}` applied to an already quoted string).

mod common;
#[path = "common/tarb.rs"]
mod tarb;

use std::collections::BTreeMap;
use std::error::Error as _;

use common::Scratch;
use ovl2_core::{
    ApplyOpts, ContainerOpts, CreateOpts, Driver, Error, InitEntry, MountOpts, Options, Result, DOCKER_MAX_DEPTH,
};
use tarb::{tar, E};

/// The Rust debug artefacts in `msg`.
fn debug_text(msg: &str) -> Vec<&'static str> {
    let words = msg.split(|c: char| !c.is_alphanumeric()).collect::<Vec<_>>();
    let mut bad = Vec::new();
    for (needle, what) in [("Some(", "Some("), ("Ok(", "Ok("), ("Err(", "Err("), ("\\\"", "\\\"")] {
        if msg.contains(needle) {
            bad.push(what);
        }
    }
    if words.contains(&"None") {
        bad.push("None");
    }
    bad
}

/// The whole chain: the message and every source below it.
fn full(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(" / ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn debug_text_is_detected() {
    assert_eq!(debug_text("apply_diff: None is not the parent (its parent is Some(\"b\"))"), ["Some(", "None"]);
    assert_eq!(debug_text("entry \"a\\\"b\""), ["\\\""]);
    assert!(debug_text("layer \"u\" does not exist; Nonesuch is fine").is_empty());
}

#[test]
fn no_error_message_carries_rust_debug_text() {
    let s = Scratch::new("messages");
    let d = Driver::open(s.home(), Options { sync: false, ..Options::default() }).unwrap();
    d.create("b", None, &CreateOpts::default()).unwrap();
    d.create("u", Some("b"), &CreateOpts::default()).unwrap();
    let good = tar(&[E::file("x", b"y")]);
    let opt = |k: &str, v: &str| CreateOpts {
        storage_opt: BTreeMap::from([(k.to_owned(), v.to_owned())]),
        ..CreateOpts::default()
    };
    let wrong = format!("sha256:{}", "0".repeat(64));
    let results: Vec<(&str, Result<()>)> = vec![
        ("apply onto a missing parent", d.apply_diff("u", Some("ghost"), &good[..]).map(drop)),
        ("apply to a missing layer", d.apply_diff("missing", None, &good[..]).map(drop)),
        ("apply a climbing name", d.apply_diff("u", Some("b"), &tar(&[E::file("../x", b"y")])[..]).map(drop)),
        ("apply a truncated tar", d.apply_diff("u", Some("b"), &good[..700]).map(drop)),
        (
            "apply a symlink with data",
            d.apply_diff("u", Some("b"), &tar(&[E { data: b"x".to_vec(), ..E::symlink("s", "t") }])[..]).map(drop),
        ),
        ("apply an unknown type", d.apply_diff("u", Some("b"), &tar(&[E::new("w", b'Z')])[..]).map(drop)),
        (
            "apply with the wrong digest",
            d.apply_diff_with(
                "u",
                Some("b"),
                &good[..],
                &ApplyOpts { expect_digest: Some(&wrong), ..ApplyOpts::default() },
            )
            .map(drop),
        ),
        ("create an existing layer", d.create("u", None, &CreateOpts::default())),
        ("create on a missing parent", d.create("x", Some("missing"), &CreateOpts::default())),
        ("create with an invalid id", d.create("a/b", None, &CreateOpts::default())),
        ("unknown storage option", d.create("x", None, &opt("colour", "blue"))),
        ("size storage option", d.create("x", None, &opt("size", "1G"))),
        ("remove a parent", d.remove("b", false)),
        ("parent of a missing layer", d.parent("missing").map(drop)),
        ("metadata of a missing layer", d.metadata("missing").map(drop)),
        ("diff of a missing layer", d.diff("missing", None, std::io::sink()).map(drop)),
        ("changes against a missing layer", d.changes("u", Some("missing")).map(drop)),
        ("diff_size of a missing layer", d.diff_size("missing", None).map(drop)),
        ("put of a layer not mounted", d.put("u")),
        (
            "a bad mount label",
            d.get_with("u", &MountOpts { mount_label: Some("a\"b".into()), ..MountOpts::default() }).map(drop),
        ),
        ("container on a missing image", d.create_container("c", "missing", &ContainerOpts::default())),
        (
            "container with a climbing init entry",
            d.create_container(
                "c",
                "b",
                &ContainerOpts { init_entries: vec![InitEntry::file("../etc/x")], ..ContainerOpts::default() },
            ),
        ),
        ("open with max_depth 0", Driver::open(s.home(), Options { max_depth: 0, ..Options::default() }).map(drop)),
        (
            "open with max_depth too large",
            Driver::open(s.home(), Options { max_depth: 100 * DOCKER_MAX_DEPTH, ..Options::default() }).map(drop),
        ),
    ];
    let mut bad = Vec::new();
    for (what, r) in &results {
        let e = r.as_ref().expect_err(what);
        let msg = full(e);
        if !debug_text(&msg).is_empty() {
            bad.push(format!("{what}: {msg}"));
        }
    }
    assert!(bad.is_empty(), "messages with Rust debug text:\n{}", bad.join("\n"));
}
