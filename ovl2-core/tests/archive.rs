//! Layer archives end to end: the shared bodies in `faces/archive.rs` on the Rust face
//! (`ovl2-ffi/tests/archive.rs` runs them on the C face).

mod common;
#[path = "common/docker_tool.rs"]
mod docker_tool;
#[macro_use]
mod faces;
#[path = "common/tarb.rs"]
mod tarb;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(rust = ovl2_core::Driver, $name);
    };
}

#[path = "faces/archive.rs"]
mod shared;

/// `diff_to_fd` writes the bytes (and digest) `diff_with` does, into a pipe (where the data
/// of large files is spliced when the digest is off) and into a file, for a base layer and
/// for a layer with a parent (whose first MiB is held back before it goes out): files on
/// both sides of the splice threshold and of a pipe's capacity, a hardlink to a spliced
/// file, and entries after it.
#[test]
fn diff_to_fd_writes_the_streamed_diff_into_a_pipe_or_a_file() {
    use ovl2_core::{CreateOpts, DiffOpts};
    use std::os::fd::AsFd;
    use tarb::{tar, E};
    if !common::require_root() {
        return;
    }
    let s = common::Scratch::new("diff-to-fd");
    let d = common::open_fast(&s.home());
    let data = |n: usize, seed: usize| (0..n).map(|i| ((i * 31 + seed) % 251) as u8).collect::<Vec<u8>>();
    let mut base = vec![E::dir("d/"), E::file("d/empty", b"")];
    for (i, n) in [1, 65_535, 65_536, 65_537, 200_003, (3 << 20) + 5].into_iter().enumerate() {
        base.push(E::file(&format!("d/f{i}"), &data(n, i)));
    }
    base.push(E::hardlink("d/link", "d/f5"));
    base.push(E::file("z", b"after"));
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &tar(&base)[..]).unwrap();
    d.create("top", Some("base"), &CreateOpts::default()).unwrap();
    let top = [E::file("a", &data(100_000, 9)), E::file("b-big", &data((2 << 20) + 1, 3)), E::file("d/.wh.f1", b"")];
    d.apply_diff("top", Some("base"), &tar(&top)[..]).unwrap();
    for (id, parent) in [("base", None), ("top", Some("base"))] {
        for digest in [false, true] {
            let opts = DiffOpts { digest };
            let mut want = Vec::new();
            let want_st = d.diff_with(id, parent, &mut want, &opts).unwrap();
            assert!(want.len() > 2 << 20, "{id}: the stream crosses the held MiB");

            let (r, w) = rustix::pipe::pipe().unwrap();
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut got).unwrap();
                got
            });
            let st = d.diff_to_fd(id, parent, w.as_fd(), &opts).unwrap();
            drop(w);
            let got = reader.join().unwrap();
            assert_eq!(st, want_st, "{id} digest {digest}: into a pipe");
            assert!(got == want, "{id} digest {digest}: the pipe got other bytes");

            let path = s.path().join("out.tar");
            let f = std::fs::File::create(&path).unwrap();
            let st = d.diff_to_fd(id, parent, f.as_fd(), &opts).unwrap();
            assert_eq!(st, want_st, "{id} digest {digest}: into a file");
            assert!(std::fs::read(&path).unwrap() == want, "{id} digest {digest}: the file got other bytes");
        }
    }
}
