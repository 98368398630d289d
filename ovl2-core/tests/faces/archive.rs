//! Layer archives end to end: apply (safe, atomic, all entry types), diff (Docker's format,
//! deterministic), changes and diff_size, plus a hostile-tar corpus and damaged streams.
//! Shared bodies: every face runs them (see `faces/mod.rs`).

use crate::docker_tool::docker_tar_bin;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::common::{self, require_root, Scratch};
use crate::faces::Face;
use crate::tarb::{self, gzip, tar, zstd, E};
use ovl2_core::{ApplyOpts, ChangeKind, CreateOpts, DiffOpts, ErrorKind, Options};
use sha2::{Digest, Sha256};

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let mut v = vec![0u8; 4096];
        let k = std::str::from_utf8(name).unwrap().to_owned();
        if let Ok(m) = rustix::fs::lgetxattr(p, name, &mut v[..]) {
            out.push((k, v[..m].to_vec()));
        }
    }
    out.sort();
    out
}

/// Everything about a tree that a layer round trip must keep.
fn snap(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes = HashMap::new();
    snap_walk(root, root, &mut out, &mut inodes);
    out
}

fn snap_walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>, inodes: &mut HashMap<u64, String>) {
    let mut names: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    for n in names {
        let md = std::fs::symlink_metadata(&n).unwrap();
        let rel = n.strip_prefix(root).unwrap().display().to_string();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink->{}", std::fs::read_link(&n).unwrap().display())
        } else if ft.is_file() {
            format!("file sha={:x}", Sha256::digest(std::fs::read(&n).unwrap()))
        } else if ft.is_char_device() {
            format!("char {}", md.rdev())
        } else if ft.is_block_device() {
            format!("block {}", md.rdev())
        } else if ft.is_fifo() {
            "fifo".into()
        } else {
            "other".into()
        };
        let link = if !ft.is_dir() && md.nlink() > 1 {
            match inodes.get(&md.ino()) {
                Some(first) => format!(" hardlink-of={first}"),
                None => {
                    inodes.insert(md.ino(), rel.clone());
                    String::new()
                }
            }
        } else {
            String::new()
        };
        let mt = if ft.is_dir() { String::new() } else { format!(" mtime={}.{:09}", md.mtime(), md.mtime_nsec()) };
        out.insert(
            rel.clone(),
            format!(
                "{what} mode={:o} {}:{} size={}{mt}{link} xattrs={:?}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                if ft.is_dir() { 0 } else { md.size() },
                xattrs(&n)
            ),
        );
        if ft.is_dir() {
            snap_walk(root, &n, out, inodes);
        }
    }
}

fn diff_dir(home: &Path, id: &str) -> std::path::PathBuf {
    home.join(id).join("diff")
}

fn staging_empty(home: &Path) -> bool {
    std::fs::read_dir(home.join(".ovl2/staging")).unwrap().next().is_none()
}

/// A v2 file capability (cap_net_bind_service), as setcap writes it.
fn cap_v2() -> Vec<u8> {
    let mut c = vec![0u8; 20];
    c[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    c[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    c
}

fn rich_tree() -> Vec<E> {
    vec![
        E::dir("etc/"),
        E::file("etc/hosts", b"127.0.0.1 localhost\n").owner(0, 0),
        E::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n").mode(0o644),
        E::dir("usr/").mode(0o755),
        E::dir("usr/bin/"),
        E::file("usr/bin/sudo", b"\x7fELF suid").mode(0o4755).owner(0, 0),
        E::file("usr/bin/wall", b"\x7fELF sgid").mode(0o2755).owner(0, 5),
        E::file("usr/bin/ping", b"\x7fELF caps").mode(0o755).pax("SCHILY.xattr.security.capability", &cap_v2()),
        E::hardlink("usr/bin/sudoedit", "usr/bin/sudo").mode(0o4755),
        E::dir("tmp/").mode(0o1777),
        E::symlink("usr/bin/sh", "/bin/busybox"),
        E::symlink("lib", "usr/lib"),
        E::file("home/user/notes.txt", b"implied parents").owner(1000, 1000),
        E::file("nanos", b"n").pax("mtime", b"1600000000.123456789"),
        E::file("big", &vec![7u8; 300_000]),
        E::file("empty", b""),
        E::file("user-xattr", b"x").pax("SCHILY.xattr.user.comment", b"hello"),
        E { dev: (1, 3), ..E::new("dev/null", b'3').mode(0o666) },
        E { dev: (7, 0), ..E::new("dev/loop0", b'4').mode(0o660) },
        E::new("run/fifo", b'6').mode(0o600),
        E::file(&format!("deep/{}/{}", "d".repeat(200), "f".repeat(200)), b"long names via PAX"),
        E::file("utf8-\u{e9}t\u{e9}", b"non-ascii name"),
    ]
}

face_test!(apply_writes_every_entry_type);
pub fn apply_writes_every_entry_type<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("apply-types");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let data = tar(&rich_tree());
    let st = d.apply_diff("base", None, &data[..]).unwrap();
    assert_eq!(st.digest, format!("sha256:{:x}", Sha256::digest(&data)));
    assert_eq!(st.tar_bytes, data.len() as u64);
    assert_eq!(st.hardlinks, 1);
    assert_eq!(st.special, 3);
    let diff = diff_dir(&s.home(), "base");
    let md = |p: &str| std::fs::symlink_metadata(diff.join(p)).unwrap();
    assert_eq!(md("usr/bin/sudo").mode() & 0o7777, 0o4755);
    assert_eq!(md("usr/bin/wall").mode() & 0o7777, 0o2755);
    assert_eq!(md("usr/bin/wall").gid(), 5);
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(md("usr/bin/sudoedit").ino(), md("usr/bin/sudo").ino());
    assert_eq!(std::fs::read_link(diff.join("usr/bin/sh")).unwrap(), Path::new("/bin/busybox"));
    assert_eq!(md("home/user/notes.txt").uid(), 1000);
    // Implied parents: 0755, the store's root.
    assert_eq!(md("home").mode() & 0o7777, 0o755);
    assert_eq!(md("home/user").uid(), 0);
    assert_eq!((md("nanos").mtime(), md("nanos").mtime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!(md("etc").mtime(), 1_600_000_000, "directory mtimes are fixed after their contents");
    assert!(md("dev/null").file_type().is_char_device());
    assert_eq!(md("dev/null").rdev(), rustix::fs::makedev(1, 3));
    assert!(md("dev/loop0").file_type().is_block_device());
    assert!(md("run/fifo").file_type().is_fifo());
    assert_eq!(xattrs(&diff.join("usr/bin/ping")), vec![("security.capability".into(), cap_v2())]);
    assert_eq!(xattrs(&diff.join("user-xattr")), vec![("user.comment".into(), b"hello".to_vec())]);
    // The root keeps the store's mode and owner.
    assert_eq!(md("").mode() & 0o7777, 0o755);
    // Docker's size: non-directories, the hardlinked inode once.
    let expect: u64 = rich_tree()
        .iter()
        .filter(|e| matches!(e.ty, b'0' | b'2'))
        .map(|e| if e.ty == b'2' { e.link.len() as u64 } else { e.data.len() as u64 })
        .sum();
    assert_eq!(st.size, expect);
    assert_eq!(d.diff_size("base", None).unwrap(), st.size);
    assert!(staging_empty(&s.home()));
}

face_test!(whiteouts_and_opaque_dirs_become_overlay_form);
pub fn whiteouts_and_opaque_dirs_become_overlay_form<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("apply-wh");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("top", Some("base"), &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &tar(&[E::dir("a/"), E::file("a/x", b"1"), E::file("gone", b"2")])[..]).unwrap();
    let st = d
        .apply_diff(
            "top",
            Some("base"),
            &tar(&[
                E::file(".wh.gone", b"").owner(0, 0),
                E::dir("a/"),
                E::file("a/.wh..wh..opq", b""),
                E::file("a/new", b"3"),
                E::file("planted", b"p")
                    .pax("SCHILY.xattr.trusted.overlay.redirect", b"/etc")
                    .pax("SCHILY.xattr.user.overlay.origin", b"x"),
            ])[..],
        )
        .unwrap();
    assert_eq!((st.whiteouts, st.opaque_dirs, st.dropped_xattrs), (1, 1, 2));
    let diff = diff_dir(&s.home(), "top");
    let wh = std::fs::symlink_metadata(diff.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0 && wh.mode() & 0o7777 == 0);
    assert!(!diff.join(".wh.gone").exists() && !diff.join("a/.wh..wh..opq").exists());
    assert_eq!(xattrs(&diff.join("a")), vec![("trusted.overlay.opaque".into(), b"y".to_vec())]);
    assert_eq!(xattrs(&diff.join("planted")), vec![]);
    // Changes and the export see them again.
    let ch: Vec<String> = d.changes("top", Some("base")).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(ch, ["C /a", "D /a/x", "A /a/new", "D /gone", "A /planted"].map(String::from).to_vec().sorted());
    let mut out = Vec::new();
    d.diff("top", Some("base"), &mut out).unwrap();
    let names = tar_names(&out);
    assert_eq!(names, ["a/", "a/.wh..wh..opq", "a/new", ".wh.gone", "planted"]);
}

trait Sorted {
    fn sorted(self) -> Self;
}
impl Sorted for Vec<String> {
    fn sorted(mut self) -> Self {
        self.sort_by(|a, b| a[2..].cmp(&b[2..]));
        self
    }
}

fn tar_names(data: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(data);
    a.entries().unwrap().map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned()).collect()
}

face_test!(round_trip_keeps_everything_and_digest_is_stable);
pub fn round_trip_keeps_everything_and_digest_is_stable<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("roundtrip");
    let d = D::open_fast(&s.home());
    for id in ["one", "two", "three"] {
        d.create(id, None, &CreateOpts::default()).unwrap();
    }
    d.apply_diff("one", None, &tar(&rich_tree())[..]).unwrap();
    let mut t1 = Vec::new();
    let s1 = d.diff("one", None, &mut t1).unwrap();
    assert_eq!(s1.digest.clone().unwrap(), format!("sha256:{:x}", Sha256::digest(&t1)));
    let a2 = d.apply_diff("two", None, &t1[..]).unwrap();
    assert_eq!(Some(a2.digest), s1.digest);
    let mut t2 = Vec::new();
    let s2 = d.diff("two", None, &mut t2).unwrap();
    assert_eq!(s1.digest, s2.digest, "same tree, same bytes");
    assert_eq!(t1, t2);
    // mtimes are whole seconds in Docker's format, so compare after one round: two == three.
    d.apply_diff("three", None, &zstd(&t2)[..]).unwrap();
    let (a, b) = (snap(&diff_dir(&s.home(), "two")), snap(&diff_dir(&s.home(), "three")));
    assert_eq!(a, b);
    // And against the original tree, everything but sub-second mtimes survives.
    // Against the original: only sub-second mtimes and xattrs other than
    // security.capability are lost, exactly what Docker's export drops.
    let strip = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter()
            .filter(|(k, _)| k != "user-xattr")
            .map(|(k, v)| (k, v.split(' ').filter(|t| !t.starts_with("mtime=")).collect::<Vec<_>>().join(" ")))
            .collect()
    };
    assert_eq!(xattrs(&diff_dir(&s.home(), "three").join("user-xattr")), vec![]);
    assert_eq!(strip(snap(&diff_dir(&s.home(), "one"))), strip(a));
    assert_eq!(d.diff_size("one", None).unwrap(), d.diff_size("three", None).unwrap());
}

face_test!(every_compression_applies_and_gives_the_tar_digest);
pub fn every_compression_applies_and_gives_the_tar_digest<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("compress");
    let d = D::open_fast(&s.home());
    let data = tar(&[E::file("a", b"hello"), E::dir("b/")]);
    // Two gzip members (pigz style) must read as one stream.
    let mut multi = gzip(&data[..512 * 2]);
    multi.extend(gzip(&data[512 * 2..]));
    for (i, input) in [data.clone(), gzip(&data), zstd(&data), multi].iter().enumerate() {
        let id = format!("l{i}");
        d.create(&id, None, &CreateOpts::default()).unwrap();
        let st = d.apply_diff(&id, None, &input[..]).unwrap();
        assert_eq!(st.digest, format!("sha256:{:x}", Sha256::digest(&data)), "input {i}");
        assert_eq!(std::fs::read(diff_dir(&s.home(), &id).join("a")).unwrap(), b"hello");
    }
    d.create("bz", None, &CreateOpts::default()).unwrap();
    let e = d.apply_diff("bz", None, &b"BZh91AY&SY"[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

/// Builds the files that must never change, outside the store.
fn sentinel(s: &Scratch) -> std::path::PathBuf {
    let out = s.path().join("outside");
    std::fs::create_dir_all(out.join("etc")).unwrap();
    std::fs::write(out.join("etc/passwd"), "host\n").unwrap();
    std::fs::write(out.join("victim"), "untouched\n").unwrap();
    out
}

fn hostile_corpus(outside: &Path) -> Vec<(&'static str, Vec<u8>, bool)> {
    let o = outside.display().to_string();
    // (name, tar, must be refused). Contained cases may apply but must stay inside.
    vec![
        ("dotdot", tar(&[E::file("../victim", b"pwn")]), true),
        ("dotdot-deep", tar(&[E::file("a/../../victim", b"pwn")]), true),
        ("dotdot-many", tar(&[E::file(&"../".repeat(40).to_string(), b"pwn")]), true),
        ("absolute", tar(&[E::file(&format!("{o}/victim"), b"pwn")]), false),
        ("absolute-dotdot", tar(&[E::file("/../../victim", b"pwn")]), false),
        ("symlink-then-write", tar(&[E::symlink("esc", &o), E::file("esc/victim", b"pwn")]), false),
        (
            "symlink-rel-then-write",
            tar(&[E::symlink("esc", "../../../../../../../../"), E::file(&format!("esc{o}/victim"), b"pwn")]),
            false,
        ),
        (
            "symlink-dir-then-write",
            tar(&[E::dir("d/"), E::symlink("d", &format!("{o}/etc")), E::file("d/passwd", b"pwn")]),
            false,
        ),
        (
            "symlink-replaces-dir-chain",
            tar(&[E::dir("a/"), E::dir("a/b/"), E::symlink("a", &o), E::file("a/victim", b"pwn")]),
            false,
        ),
        ("hardlink-outside-abs", tar(&[E::hardlink("h", &format!("{o}/victim"))]), true),
        ("hardlink-outside-dotdot", tar(&[E::hardlink("h", "../victim")]), true),
        ("hardlink-through-symlink", tar(&[E::symlink("s", &o), E::hardlink("h", "s/victim")]), true),
        (
            "hardlink-to-symlink-then-write",
            tar(&[E::symlink("s", &format!("{o}/victim")), E::hardlink("h", "s"), E::file("h", b"pwn")]),
            false,
        ),
        ("symlink-final-then-file", tar(&[E::symlink("f", &format!("{o}/victim")), E::file("f", b"pwn")]), false),
        ("whiteout-dotdot", tar(&[E::file(".wh...", b"")]), true),
        ("whiteout-dot", tar(&[E::file("a/.wh..", b"")]), true),
        ("whiteout-empty", tar(&[E::file(".wh.", b"")]), true),
        ("whiteout-through-symlink", tar(&[E::symlink("s", &o), E::file("s/.wh.victim", b"")]), false),
        ("opaque-through-symlink", tar(&[E::symlink("s", &o), E::file("s/.wh..wh..opq", b"")]), false),
        ("long-component", tar(&[E::file(&"x".repeat(300), b"pwn")]), true),
        ("long-path", tar(&[E::file(&"d/".repeat(2100), b"pwn")]), true),
        (
            "duplicate",
            tar(&[E::file("dup", b"one"), E::file("dup", b"two"), E::dir("dup/"), E::file("dup", b"three")]),
            false,
        ),
        ("dir-over-file-over-link", tar(&[E::symlink("x", &o), E::dir("x/"), E::file("x/victim", b"pwn")]), false),
        ("root-as-file", tar(&[E::file("/", b"pwn")]), true),
        ("symlink-with-data", tar(&[E { data: b"hidden header".to_vec(), ..E::symlink("s", "t") }]), true),
        ("pax-sparse", tar(&[E::file("sp", b"x").pax("GNU.sparse.map", b"0,1")]), true),
        ("overlay-xattr-redirect", tar(&[E::dir("d/").pax("SCHILY.xattr.trusted.overlay.redirect", b"/")]), false),
        ("unknown-type", tar(&[E::new("weird", b'Z')]), true),
        ("magic-link", tar(&[E::symlink("p", "/proc/self/root"), E::file("p/victim", b"pwn")]), false),
        // Issue 10 item 8a: a later entry changes what a path ovl2 already resolved means.
        // ovl2 wrote etc/ld.so.preload (GNU tar lists etc/x/ld.so.preload); Docker refuses.
        (
            "symlink-dot-then-dir-over-it",
            tar(&[
                E::dir("etc/"),
                E::symlink("etc/x", "."),
                E::dir("etc/x/x/"),
                E::file("etc/x/ld.so.preload", b"/evil.so"),
            ]),
            true,
        ),
        (
            "replace-removes-own-parent",
            tar(&[E::dir("a/"), E::dir("a/y/"), E::symlink("a/y/up", ".."), E::file("a/y/up/y", b"pwn")]),
            true,
        ),
        (
            "replace-removes-link-target-path",
            tar(&[E::dir("x/"), E::file("x/f", b"f"), E::symlink("l", "x"), E::hardlink("l", "l/f")]),
            true,
        ),
        // Item 8b: one zero block is not the end when more follows (Go: invalid tar header).
        ("zero-block-then-entries", zero_block_then(&[E::file("b", b"hidden")]), true),
        // Item 3: extension headers over Go's 1 MiB limit.
        ("gnu-longname-over-1mib", special_then(b'L', (1 << 20) + 1, b"n"), true),
        ("gnu-longlink-over-1mib", special_then(b'K', 2 << 20, b"l"), true),
        ("pax-records-over-1mib", special_then(b'x', 50_000, &tarb::pax_record("SCHILY.xattr.user.a", b"bc")), true),
        ("pax-global-over-1mib", special_then(b'g', 100_000, &tarb::pax_record("comment", b"bc")), true),
        // Parser differentials: every reader must agree with Go's on what these name.
        (
            "two-pax-headers",
            ext_then(&[(b'x', tarb::pax_record("path", b"first")), (b'x', tarb::pax_record("path", b"second"))]),
            false,
        ),
        ("gnu-longname-with-nul", ext_then(&[(b'L', b"real\0hidden".to_vec())]), false),
        (
            "gnu-longname-over-pax-path",
            ext_then(&[(b'L', b"from-gnu".to_vec()), (b'x', tarb::pax_record("path", b"from-pax"))]),
            false,
        ),
        ("pax-empty-path-keeps-header", ext_then(&[(b'x', tarb::pax_record("path", b""))]), false),
        (
            "extension-header-then-end",
            ext_then(&[(b'x', tarb::pax_record("path", b"p"))])[..1024].iter().copied().chain([0u8; 1024]).collect(),
            false,
        ),
    ]
}

/// Extension headers (type, data) and then a file named `header-name`.
fn ext_then(exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut t = Vec::new();
    for (ty, body) in exts {
        t.extend_from_slice(&tarb::raw_header(b"././@LongLink", *ty, body.len() as u64));
        t.extend_from_slice(body);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.extend_from_slice(&tar(&[E::file("header-name", b"data")]));
    t
}

/// `a`, then a single zero block, then `rest`: Go's reader refuses it.
fn zero_block_then(rest: &[E]) -> Vec<u8> {
    let mut t = tar(&[E::file("a", b"a")]);
    t.truncate(t.len() - 1024);
    t.extend_from_slice(&[0u8; 512]);
    t.extend_from_slice(&tar(rest));
    t
}

/// An extension header holding `count` copies of `unit`, then an ordinary file.
fn special_then(ty: u8, count: u64, unit: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    tarb::write_special(&mut t, b"././@LongLink", ty, count * unit.len() as u64, unit);
    t.extend_from_slice(&tar(&[E::file("f", b"f")]));
    t
}

face_test!(hostile_tars_are_refused_or_contained);
pub fn hostile_tars_are_refused_or_contained<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("hostile");
    let outside = sentinel(&s);
    let before = snap(&outside);
    let d = D::open_fast(&s.home());
    let mut n = 0;
    for (name, data, refused) in hostile_corpus(&outside) {
        n += 1;
        let id = format!("h{n}");
        d.create(&id, None, &CreateOpts::default()).unwrap();
        let r = d.apply_diff(&id, None, &data[..]);
        eprintln!("{name}: {:?}", r.as_ref().map(|s| s.entries).map_err(|e| e.to_string()));
        if refused {
            let e = r.expect_err(name);
            assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{name}: {e}");
            assert!(std::fs::read_dir(diff_dir(&s.home(), &id)).unwrap().next().is_none(), "{name}: layer changed");
        } else if let Err(e) = r {
            // A contained case may also be refused (e.g. a dangling parent), never as an I/O error.
            assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{name}: {e}");
        }
        assert_eq!(snap(&outside), before, "{name}: something outside the layer changed");
        assert!(staging_empty(&s.home()), "{name}: staging left behind");
    }
    // The contained writes landed inside the layer.
    let h = |n: usize, p: &str| diff_dir(&s.home(), &format!("h{n}")).join(p);
    assert_eq!(std::fs::read(h(4, format!("{}/victim", outside.display()).trim_start_matches('/'))).unwrap(), b"pwn");
    assert_eq!(std::fs::read(h(5, "victim")).unwrap(), b"pwn");
    assert_eq!(std::fs::read(h(22, "dup")).unwrap(), b"three");
}

face_test!(hostile_tars_through_a_mounted_view_are_refused_or_contained);
/// The same corpus through Docker's naive path (unpacked into a private mount of the chain):
/// the mount root is as tight a boundary as the layer's own diff.
pub fn hostile_tars_through_a_mounted_view_are_refused_or_contained<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("hostile-naive");
    let outside = sentinel(&s);
    let before = snap(&outside);
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &tar(&[E::file("victim", b"lower"), E::file("etc/passwd", b"lower")])[..]).unwrap();
    let base_before = snap(&diff_dir(&s.home(), "base"));
    for (n, (name, data, refused)) in hostile_corpus(&outside).into_iter().enumerate() {
        let id = format!("n{n}");
        d.create(&id, Some("base"), &CreateOpts::default()).unwrap();
        let r = d.apply_diff(&id, None, &data[..]);
        if refused {
            let e = r.expect_err(name);
            assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{name}: {e}");
            assert!(std::fs::read_dir(diff_dir(&s.home(), &id)).unwrap().next().is_none(), "{name}: layer changed");
        } else if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{name}: {e}");
        }
        assert_eq!(snap(&outside), before, "{name}: something outside the layer changed");
        assert_eq!(snap(&diff_dir(&s.home(), "base")), base_before, "{name}: the lower layer changed");
        assert!(staging_empty(&s.home()), "{name}: staging left behind");
        assert_eq!(common::mount_points_under(s.path()), Vec::<std::path::PathBuf>::new(), "{name}");
    }
}

/// Runs `data` through Docker's own code (go-archive `Unpack` with the overlay whiteout
/// format, chrooted into `dir` as chrootarchive does): `Err(message)` when it refuses.
fn docker_unpack(bin: &Path, dir: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut child = std::process::Command::new(bin)
        .arg("apply-chroot")
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Docker may stop reading early (a refusal); the rest of the input does not matter then.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), data);
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        _ => panic!("dockertar crashed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Snapshot for comparing with Docker: whiteouts carry the time they were made in both.
fn comparable(root: &Path) -> BTreeMap<String, String> {
    snap(root)
        .into_iter()
        .map(|(k, v)| {
            let v = if v.starts_with("char 0 ") {
                v.split(' ').filter(|t| !t.starts_with("mtime=")).collect::<Vec<_>>().join(" ")
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

face_test!(hostile_corpus_matches_dockers_unpack);
/// Issue 10 item 8: the whole hostile corpus goes through Docker's own Unpack as well; ovl2
/// refuses exactly what Docker refuses, and where both accept they build the same tree.
/// The exceptions are deliberate and listed: ovl2 refuses a name that climbs out with `..`
/// where Docker (chrooted) clamps it at the root, and drops overlay-private xattrs that
/// Docker writes verbatim.
pub fn hostile_corpus_matches_dockers_unpack<D: Face>() {
    if !require_root() {
        return;
    }
    let Some(bin) = docker_tar_bin() else { return };
    let s = Scratch::new("hostile-docker");
    let outside = sentinel(&s);
    let before = snap(&outside);
    let d = D::open_fast(&s.home());
    let stricter = ["dotdot", "dotdot-deep"];
    let docker_keeps_overlay_xattrs = ["overlay-xattr-redirect"];
    let mut wrong = Vec::new();
    for (n, (name, data, _)) in hostile_corpus(&outside).into_iter().enumerate() {
        let id = format!("c{n}");
        d.create(&id, None, &CreateOpts::default()).unwrap();
        let ours = d.apply_diff(&id, None, &data[..]).map(|_| ()).map_err(|e| e.to_string());
        let theirs = docker_unpack(&bin, &s.path().join(format!("docker-{n}")), &data);
        eprintln!("{name}: ovl2 {ours:?}, docker {theirs:?}");
        assert_eq!(snap(&outside), before, "{name}: something outside changed");
        if stricter.contains(&name) {
            if !(ours.is_err() && theirs.is_ok()) {
                wrong.push(format!("{name}: the listed exception no longer holds"));
            }
        } else if ours.is_err() != theirs.is_err() {
            wrong.push(format!("{name}: ovl2 {ours:?} vs docker {theirs:?}"));
        } else if ours.is_ok()
            && !docker_keeps_overlay_xattrs.contains(&name)
            && comparable(&diff_dir(&s.home(), &id)) != comparable(&s.path().join(format!("docker-{n}")))
        {
            wrong.push(format!(
                "{name}: different trees:\n{:#?}\n{:#?}",
                comparable(&diff_dir(&s.home(), &id)),
                comparable(&s.path().join(format!("docker-{n}")))
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

face_test!(a_replaced_path_component_is_not_followed_from_the_cache);
/// Issue 10 item 8a: an entry that replaces a symlink or directory on the path ovl2 already
/// resolved (and cached) for this entry's parent must not land in the old directory.
pub fn a_replaced_path_component_is_not_followed_from_the_cache<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("parent-cache");
    let d = D::open_fast(&s.home());
    d.create("evade", None, &CreateOpts::default()).unwrap();
    let data = tar(&[
        E::dir("etc/"),
        E::symlink("etc/x", "."),
        E::dir("etc/x/x/"),
        E::file("etc/x/ld.so.preload", b"/evil.so"),
    ]);
    let e = d.apply_diff("evade", None, &data[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("etc/x/x") && msg.contains("no such file or directory"), "{msg}");
    assert!(std::fs::read_dir(diff_dir(&s.home(), "evade")).unwrap().next().is_none());
    // Going through the symlink without replacing it is fine for both: etc/y is written.
    d.create("through", None, &CreateOpts::default()).unwrap();
    let data = tar(&[E::dir("etc/"), E::symlink("etc/x", "."), E::file("etc/x/y", b"y"), E::file("etc/x/z", b"z")]);
    d.apply_diff("through", None, &data[..]).unwrap();
    assert_eq!(std::fs::read(diff_dir(&s.home(), "through").join("etc/y")).unwrap(), b"y");
    assert_eq!(std::fs::read(diff_dir(&s.home(), "through").join("etc/z")).unwrap(), b"z");
    // Replacing a plain file in the cached directory keeps using it.
    d.create("plain", None, &CreateOpts::default()).unwrap();
    let data = tar(&[E::dir("a/"), E::file("a/f", b"1"), E::file("a/f", b"2"), E::file("a/g", b"3")]);
    d.apply_diff("plain", None, &data[..]).unwrap();
    assert_eq!(std::fs::read(diff_dir(&s.home(), "plain").join("a/f")).unwrap(), b"2");
}

face_test!(zero_blocks_end_the_archive_as_in_go);
/// Issue 10 item 8b: the end of an archive is what Go's reader says it is. One zero block
/// followed by another header is invalid, not an end that silently drops the rest.
pub fn zero_blocks_end_the_archive_as_in_go<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("zero-block");
    let d = D::open_fast(&s.home());
    let mut n = 0;
    let mut apply = |data: &[u8]| {
        n += 1;
        let id = format!("z{n}");
        d.create(&id, None, &CreateOpts::default()).unwrap();
        (d.apply_diff(&id, None, data), diff_dir(&s.home(), &id))
    };
    let (r, dir) = apply(&zero_block_then(&[E::file("b", b"hidden")]));
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{e}");
    assert!(e.to_string().contains("invalid tar header"), "{e}");
    assert!(std::fs::read_dir(dir).unwrap().next().is_none());
    // One zero block and then the end of the stream: Go's io.EOF, a complete archive.
    let mut one = tar(&[E::file("a", b"a")]);
    one.truncate(one.len() - 512);
    let (r, dir) = apply(&one);
    r.unwrap();
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"a");
    // One zero block and then part of a block: truncated.
    let mut part = one.clone();
    part.extend_from_slice(&[7u8; 100]);
    assert_eq!(apply(&part).0.unwrap_err().kind(), ErrorKind::CorruptArchive);
    // Two zero blocks end it; what follows is hashed but not read as entries.
    let mut two = tar(&[E::file("a", b"a")]);
    two.extend_from_slice(&tar(&[E::file("b", b"b")]));
    let (r, dir) = apply(&two);
    let st = r.unwrap();
    assert_eq!(st.entries, 1);
    assert_eq!(st.tar_bytes, two.len() as u64);
    assert!(!dir.join("b").exists());
}

face_test!(header_fields_over_the_go_limit_are_refused_unread);
/// Issue 10 item 3: PAX headers and GNU long names/links over Go's 1 MiB limit are refused
/// before they are read, naming the header and the limit; the layer stays empty. A 1 GiB
/// long name and 3.5 million PAX records fit in small compressed inputs.
pub fn header_fields_over_the_go_limit_are_refused_unread<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("field-limit");
    let d = D::open_fast(&s.home());
    let f = tar(&[E::file("f", b"f")]);
    let long_name = tarb::special_compressed(zstd, b"././@LongLink", b'L', 1 << 30, b"a", &f);
    let rec = tarb::pax_record("SCHILY.xattr.user.a", b"bc");
    let many_pax = tarb::special_compressed(gzip, b"PaxHeaders/f", b'x', 3_500_000 * rec.len() as u64, &rec, &f);
    assert!(long_name.len() < 200_000 && many_pax.len() < 2_000_000, "{} {}", long_name.len(), many_pax.len());
    let big = [&b"x"[..], &vec![b'c'; (1 << 20) - 16]].concat();
    let at_limit = tar(&[E::file("f", b"f").pax("comment", &big[..(1 << 20) - 17])]);
    let over = tar(&[E::file("f", b"f").pax("comment", &big)]);
    let mut n = 0;
    for (what, data, refused) in [
        ("a GNU long name", long_name, true),
        ("a PAX extended header", many_pax, true),
        ("a PAX extended header", over, true),
        ("exactly 1 MiB of PAX", at_limit, false),
    ] {
        n += 1;
        let id = format!("f{n}");
        d.create(&id, None, &CreateOpts::default()).unwrap();
        let t = std::time::Instant::now();
        let r = d.apply_diff(&id, None, &data[..]);
        if !refused {
            r.unwrap_or_else(|e| panic!("{what}: {e}"));
            continue;
        }
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{what}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("header field too long") && msg.contains(what) && msg.contains("1048576"), "{msg}");
        assert!(t.elapsed().as_secs() < 10, "{what}: refused only after {:?}", t.elapsed());
        assert!(std::fs::read_dir(diff_dir(&s.home(), &id)).unwrap().next().is_none(), "{what}");
        assert!(staging_empty(&s.home()), "{what}");
    }
}

face_test!(damaged_streams_fail_cleanly_and_leave_the_layer);
pub fn damaged_streams_fail_cleanly_and_leave_the_layer<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("damaged");
    let d = D::open_fast(&s.home());
    let data = tar(&[E::file("a", &vec![1u8; 5000]), E::dir("b/"), E::file("b/c", &vec![2u8; 3000])]);
    let mut n = 0;
    let mut check = |what: String, input: Vec<u8>| {
        n += 1;
        let id = format!("d{n}");
        d.create(&id, None, &CreateOpts::default()).unwrap();
        let e = d.apply_diff(&id, None, &input[..]).expect_err(&what);
        assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{what}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("entry") || msg.contains("byte") || msg.contains("header") || msg.contains("stream"),
            "{what}: {msg}"
        );
        assert!(std::fs::read_dir(diff_dir(&s.home(), &id)).unwrap().next().is_none(), "{what}");
        assert!(staging_empty(&s.home()), "{what}");
    };
    let gz = gzip(&data);
    let zs = zstd(&data);
    for cut in [600usize, 3000, 5632, 6200] {
        check(format!("tar cut at {cut}"), data[..cut].to_vec());
    }
    for cut in [20usize, gz.len() / 2, gz.len() - 4] {
        check(format!("gzip cut at {cut}"), gz[..cut].to_vec());
    }
    for cut in [12usize, zs.len() / 2, zs.len() - 2] {
        check(format!("zstd cut at {cut}"), zs[..cut].to_vec());
    }
    let mut bad = data.clone();
    bad[100] ^= 0x55; // checksum mismatch in the first header
    check("bad checksum".into(), bad);
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    check("gzip bit flip".into(), bad);
    let mut bad = zs.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    check("zstd bit flip".into(), bad);
    let mut lying = tarb::Tar::new();
    lying.add(&E { size_override: Some(1 << 30), ..E::file("liar", b"short") });
    check("size beyond the stream".into(), lying.finish());
}

face_test!(apply_refuses_mounted_nonempty_and_unknown_parent);
pub fn apply_refuses_mounted_nonempty_and_unknown_parent<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("refuse");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("kid", Some("base"), &CreateOpts::default()).unwrap();
    let data = tar(&[E::file("a", b"1")]);
    // Any parent is accepted (Docker's naive path), but one that is no layer is a mistake.
    let e = d.apply_diff("kid", Some("ghost"), &data[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("\"ghost\""), "{e}");
    assert_eq!(d.apply_diff("nope", None, &data[..]).unwrap_err().kind(), ErrorKind::NotFound);
    d.apply_diff("base", None, &data[..]).unwrap();
    assert_eq!(d.apply_diff("base", None, &data[..]).unwrap_err().kind(), ErrorKind::InvalidArgument);
    // A mount on merged/ makes the layer busy.
    let merged = s.home().join("kid/merged");
    std::fs::create_dir_all(&merged).unwrap();
    rustix::mount::mount("tmpfs", &merged, "tmpfs", rustix::mount::MountFlags::empty(), None).unwrap();
    let r = d.apply_diff_with("kid", Some("base"), &data[..], &ApplyOpts::default());
    rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH).unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Busy);
    assert!(staging_empty(&s.home()));
    // A DiffID that does not match is refused after the whole stream was read, before the
    // layer changes.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let e = d
        .apply_diff_with(
            "kid",
            Some("base"),
            &data[..],
            &ApplyOpts { expect_digest: Some(&wrong), ..ApplyOpts::default() },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{e}");
    assert!(std::fs::read_dir(diff_dir(&s.home(), "kid")).unwrap().next().is_none());
    // With sync on (the default) and the right digest, the apply completes.
    let right = format!("sha256:{:x}", Sha256::digest(&data));
    let st = d
        .apply_diff_with(
            "kid",
            Some("base"),
            &data[..],
            &ApplyOpts { expect_digest: Some(&right), ..ApplyOpts::default() },
        )
        .unwrap();
    assert_eq!(st.files, 1);
}

face_test!(changes_follow_dockers_rules);
pub fn changes_follow_dockers_rules<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("changes");
    let d = D::open_fast(&s.home());
    d.create("l1", None, &CreateOpts::default()).unwrap();
    d.create("l2", Some("l1"), &CreateOpts::default()).unwrap();
    d.create("l3", Some("l2"), &CreateOpts::default()).unwrap();
    d.apply_diff(
        "l1",
        None,
        &tar(&[
            E::dir("etc/"),
            E::file("etc/a", b"a"),
            E::file("etc/b", b"b"),
            E::dir("var/"),
            E::dir("var/lib/"),
            E::file("var/lib/x", b"x"),
            E::file("var/lib/y", b"y"),
            E::dir("opt/"),
            E::file("opt/o", b"o"),
            E::file("same", b"s"),
        ])[..],
    )
    .unwrap();
    d.apply_diff("l2", Some("l1"), &tar(&[E::dir("etc/"), E::file("etc/.wh.b", b""), E::file("etc/c", b"c")])[..])
        .unwrap();
    d.apply_diff(
        "l3",
        Some("l2"),
        &tar(&[
            E::dir("etc/"),
            E::file("etc/a", b"changed!").mode(0o600),
            E::file("etc/.wh.c", b""),
            E::file(".wh.opt", b""),
            E::file(".wh.never-existed", b""),
            E::dir("var/"),
            E::dir("var/lib/"),
            E::file("var/lib/.wh..wh..opq", b""),
            E::file("var/lib/y", b"y"),
            E::dir("new/"),
            E::dir("new/sub/"),
            E::file("new/sub/f", b"f"),
            E::file("same", b"s"),
        ])[..],
    )
    .unwrap();
    let got: Vec<String> = d.changes("l3", Some("l2")).unwrap().iter().map(|c| c.to_string()).collect();
    let want = [
        "C /etc",
        "C /etc/a",
        "D /etc/c",
        "A /new",
        "A /new/sub",
        "A /new/sub/f",
        "D /opt",
        "C /var",
        "C /var/lib",
        "D /var/lib/x",
    ];
    assert_eq!(got, want);
    // Kinds carry Docker's numbers.
    assert_eq!(ChangeKind::Modify as u8, 0);
    assert_eq!(ChangeKind::Add as u8, 1);
    assert_eq!(ChangeKind::Delete as u8, 2);
    // Against another layer the naive comparison runs and agrees with the rules.
    let vs_l1: Vec<String> = d.changes("l3", Some("l1")).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(
        vs_l1,
        [
            "C /etc",
            "C /etc/a",
            "D /etc/b",
            "A /new",
            "A /new/sub",
            "A /new/sub/f",
            "D /opt",
            "C /var",
            "C /var/lib",
            "D /var/lib/x"
        ]
    );
    // A base layer: everything is added.
    let base: Vec<String> = d.changes("l1", None).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(base.len(), 10);
    assert!(base.iter().all(|c| c.starts_with("A /")));
    // diff_size against the real parent is the apply size; against l1, added+modified files.
    assert_eq!(d.diff_size("l3", Some("l2")).unwrap(), 8 + 1 + 1 + 1);
    assert_eq!(d.diff_size("l3", Some("l1")).unwrap(), 8 + 1);
}

/// Edge cases a kernel-written upper can hold but a tar built by the test helper cannot.
fn add_edge_cases(diff: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let p = |s: &str| diff.join(s);
    std::fs::create_dir_all(p("edge")).unwrap();
    // A name that needs USTAR's prefix field, and one that needs PAX.
    let mid = format!("edge/{}/{}", "p".repeat(110), "n".repeat(40));
    std::fs::create_dir_all(Path::new(&p(&mid)).parent().unwrap()).unwrap();
    std::fs::write(p(&mid), b"prefix split").unwrap();
    symlink("t".repeat(150), p("edge/long-target")).unwrap();
    // Large ids need PAX records; times outside USTAR's octal range too.
    std::fs::write(p("edge/bigid"), b"id").unwrap();
    rustix::fs::chown(
        p("edge/bigid"),
        Some(rustix::fs::Uid::from_raw(3_000_000)),
        Some(rustix::fs::Gid::from_raw(70_000)),
    )
    .unwrap();
    for (name, secs) in [("edge/old", -86_400i64), ("edge/future", 9_000_000_000)] {
        std::fs::write(p(name), b"t").unwrap();
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 5 },
            last_modification: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 5 },
        };
        rustix::fs::utimensat(rustix::fs::CWD, p(name), &ts, rustix::fs::AtFlags::empty()).unwrap();
    }
    // Kernel whiteouts share one inode (overlay's shared whiteout): Docker's quirk keeps the
    // link name on the converted entry.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("edge/wh1"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    std::fs::hard_link(p("edge/wh1"), p("edge/wh2")).unwrap();
    // A v3 (namespaced) capability is written back as v2.
    std::fs::write(p("edge/capv3"), b"c").unwrap();
    let mut v3 = vec![0u8; 24];
    v3[0..4].copy_from_slice(&0x0300_0001u32.to_le_bytes());
    v3[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    rustix::fs::setxattr(p("edge/capv3"), "security.capability", &v3, rustix::fs::XattrFlags::empty()).unwrap();
    // A user-opaque dir and a dir with sticky/setgid bits (the opq marker keeps only 0777).
    std::fs::create_dir(p("edge/sticky")).unwrap();
    std::fs::set_permissions(p("edge/sticky"), std::fs::Permissions::from_mode(0o3775)).unwrap();
    rustix::fs::setxattr(p("edge/sticky"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
    // Sockets cannot go into a tar; both exporters skip them.
    let _ = std::os::unix::net::UnixListener::bind(p("edge/sock")).unwrap();
    std::fs::write(p("edge/\u{444}\u{430}\u{439}\u{43b}"), b"utf8 name").unwrap();
    std::fs::write(p(&format!("edge/{}", "\u{e9}".repeat(60))), b"non-ascii, long").unwrap();
}

face_test!(diff_small_is_the_streamed_diff_or_nothing);
/// `diff_small` hands back exactly the streamed bytes and stats when the stream fits, and
/// nothing (no error) when it does not fit or needs mounted views, so a caller can always
/// fall back to streaming.
pub fn diff_small_is_the_streamed_diff_or_nothing<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("diff-small");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("top", Some("base"), &CreateOpts::default()).unwrap();
    // Every kind of entry, in the 16 entries a small layer may have.
    let small_rich = vec![
        E::dir("etc/"),
        E::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n").mode(0o644),
        E::dir("usr/"),
        E::file("usr/sudo", b"\x7fELF suid").mode(0o4755).owner(0, 0),
        E::file("usr/ping", b"\x7fELF caps").mode(0o755).pax("SCHILY.xattr.security.capability", &cap_v2()),
        E::hardlink("usr/sudoedit", "usr/sudo").mode(0o4755),
        E::symlink("usr/sh", "/bin/busybox"),
        E::file("nanos", b"n").pax("mtime", b"1600000000.123456789"),
        E::file("big", &vec![7u8; 30_000]),
        E { dev: (1, 3), ..E::new("null", b'3').mode(0o666) },
        E::new("fifo", b'6').mode(0o600),
        E::file(&format!("{}/{}", "d".repeat(200), "f".repeat(200)), b"long names via PAX"),
        E::file("utf8-\u{e9}t\u{e9}", b"non-ascii name"),
    ];
    d.apply_diff("base", None, &tar(&small_rich)[..]).unwrap();
    d.apply_diff(
        "top",
        Some("base"),
        &tar(&[
            E::dir("etc/"),
            E::file("etc/.wh.passwd", b"").owner(7, 8),
            E::dir("usr/").mode(0o700),
            E::file("usr/.wh..wh..opq", b""),
            E::file("usr/new", b"n"),
        ])[..],
    )
    .unwrap();
    let on = DiffOpts { digest: true };
    for (id, parent) in [("base", None), ("top", Some("base"))] {
        let mut streamed = Vec::new();
        let st = d.diff(id, parent, &mut streamed).unwrap();
        let (small, sst) = d.diff_small(id, parent, &on, 1 << 20).unwrap().expect("a small layer fits");
        assert!(small == streamed, "{id}: the in-memory stream differs from the streamed one");
        assert_eq!(sst, st, "{id}");
        let (plain, pst) = d.diff_small(id, parent, &DiffOpts { digest: false }, 1 << 20).unwrap().unwrap();
        assert!(plain == streamed, "{id}: digest off changed the bytes");
        assert_eq!((pst.digest, pst.tar_bytes, pst.entries), (None, st.tar_bytes, st.entries), "{id}");
        // One byte short of the stream (its end blocks included) does not fit.
        assert!(d.diff_small(id, parent, &on, st.tar_bytes - 1).unwrap().is_none(), "{id}: one byte short fits");
        assert!(d.diff_small(id, parent, &on, st.tar_bytes).unwrap().is_some(), "{id}: the exact length does not fit");
    }
    // More than 16 entries is not small, however few bytes they take.
    d.create("many", None, &CreateOpts::default()).unwrap();
    let files: Vec<String> = (0..17).map(|i| format!("f{i:02}")).collect();
    d.apply_diff("many", None, &tar(&files.iter().map(|f| E::file(f, b"x")).collect::<Vec<_>>())[..]).unwrap();
    assert!(d.diff_small("many", None, &on, 1 << 20).unwrap().is_none(), "17 entries were made in memory");
    std::fs::remove_file(diff_dir(&s.home(), "many").join("f16")).unwrap();
    let (sixteen, _) = d.diff_small("many", None, &on, 1 << 20).unwrap().expect("16 entries fit");
    let mut streamed = Vec::new();
    d.diff("many", None, &mut streamed).unwrap();
    assert!(sixteen == streamed);
    // A later link carries no data: a 40 KiB file and a link to it fit in their stream's
    // exact length.
    d.create("linked", None, &CreateOpts::default()).unwrap();
    d.apply_diff("linked", None, &tar(&[E::file("a", &vec![1u8; 40 << 10]), E::hardlink("b", "a")])[..]).unwrap();
    let mut streamed = Vec::new();
    let st = d.diff("linked", None, &mut streamed).unwrap();
    let (fits, _) = d.diff_small("linked", None, &on, st.tar_bytes).unwrap().expect("a link is charged its data");
    assert!(fits == streamed);
    // The count is of the whole tree: three directories of six files are 21 entries.
    d.create("nested", None, &CreateOpts::default()).unwrap();
    let files: Vec<String> = (0..18).map(|i| format!("d{}/f{i:02}", i % 3)).collect();
    d.apply_diff("nested", None, &tar(&files.iter().map(|f| E::file(f, b"x")).collect::<Vec<_>>())[..]).unwrap();
    assert!(d.diff_small("nested", None, &on, 1 << 20).unwrap().is_none(), "21 nested entries were made in memory");
    // Against another parent the export needs mounted views: not made in memory.
    assert!(d.diff_small("top", None, &on, 1 << 20).unwrap().is_none(), "made against another parent");
    // The limit is capped at 1 MiB, whatever the caller asks for.
    d.create("big", None, &CreateOpts::default()).unwrap();
    d.apply_diff("big", None, &tar(&[E::file("blob", &vec![7u8; 3 << 20])])[..]).unwrap();
    assert!(d.diff_small("big", None, &on, u64::MAX).unwrap().is_none(), "a 3 MiB layer was made in memory");
    let mut streamed = Vec::new();
    assert!(d.diff("big", None, &mut streamed).unwrap().tar_bytes > 3 << 20);
    // A redirected directory in the upper needs the mounted path: nothing, not an error
    // (the streamed export takes that path; its own tests cover it).
    std::fs::create_dir(diff_dir(&s.home(), "top").join("moved")).unwrap();
    rustix::fs::setxattr(
        diff_dir(&s.home(), "top").join("moved"),
        "trusted.overlay.redirect",
        b"/etc",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert!(d.diff_small("top", Some("base"), &on, 1 << 20).unwrap().is_none(), "a redirect was exported natively");
    // A missing layer is the same error as from the streamed diff.
    let e = d.diff_small("nope", None, &on, 1 << 20).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(e, d.diff("nope", None, std::io::sink()).unwrap_err());
}

face_test!(diff_bytes_match_dockers_native_diff);
pub fn diff_bytes_match_dockers_native_diff<D: Face>() {
    if !require_root() {
        return;
    }
    let Some(bin) = docker_tar_bin() else { return };
    let s = Scratch::new("docker-bytes");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("top", Some("base"), &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &tar(&rich_tree())[..]).unwrap();
    d.apply_diff(
        "top",
        Some("base"),
        &tar(&[
            E::dir("etc/"),
            E::file("etc/.wh.passwd", b"").owner(7, 8),
            E::dir("usr/").mode(0o700),
            E::file("usr/.wh..wh..opq", b""),
            E::file("usr/new", b"n"),
        ])[..],
    )
    .unwrap();
    add_edge_cases(&diff_dir(&s.home(), "top"));
    for id in ["base", "top"] {
        let mut ours = Vec::new();
        let st = d.diff(id, d.parent(id).unwrap().as_deref(), &mut ours).unwrap();
        let theirs = std::process::Command::new(&bin).arg(diff_dir(&s.home(), id)).output().unwrap();
        assert!(theirs.status.success(), "{}", String::from_utf8_lossy(&theirs.stderr));
        if ours != theirs.stdout {
            let pos = ours
                .iter()
                .zip(&theirs.stdout)
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(theirs.stdout.len()));
            let blk = pos / 512 * 512;
            panic!(
                "{id}: bytes differ at {pos} (lengths {} vs {})\nours:   {:?}\ndocker: {:?}",
                ours.len(),
                theirs.stdout.len(),
                String::from_utf8_lossy(&ours[blk..(blk + 512).min(ours.len())]),
                String::from_utf8_lossy(&theirs.stdout[blk..(blk + 512).min(theirs.stdout.len())])
            );
        }
        assert_eq!(st.digest.unwrap(), format!("sha256:{:x}", Sha256::digest(&theirs.stdout)));
        if id == "top" {
            let names = tar_names(&ours);
            for want in [
                "edge/wh2",
                "edge/.wh.wh2",
                "edge/sticky/.wh..wh..opq",
                "usr/.wh..wh..opq",
                "etc/.wh.passwd",
                "edge/bigid",
            ] {
                assert!(names.iter().any(|n| n == want) || want == "edge/wh2", "{want} missing from {names:?}");
            }
            assert!(!names.iter().any(|n| n.ends_with("sock")));
        }
    }
}

face_test!(three_layer_image_through_a_real_mount);
/// A three-layer image applied from tars, a container layer on it mounted with `get`, changes
/// made through the mount by the kernel, then exported and listed natively.
pub fn three_layer_image_through_a_real_mount<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("mount3");
    let d = D::open_fast(&s.home());
    d.create("l1", None, &CreateOpts::default()).unwrap();
    d.create("l2", Some("l1"), &CreateOpts::default()).unwrap();
    d.create("l3", Some("l2"), &CreateOpts::default()).unwrap();
    d.apply_diff(
        "l1",
        None,
        &tar(&[
            E::dir("etc/"),
            E::file("etc/os-release", b"ID=base\n"),
            E::file("etc/shadow", b"secret\n").mode(0o600),
            E::dir("opt/"),
            E::dir("opt/app/"),
            E::file("opt/app/old.py", b"old"),
            E::file("opt/app/keep.py", b"keep"),
            E::dir("var/"),
            E::file("var/log", b"log"),
        ])[..],
    )
    .unwrap();
    d.apply_diff(
        "l2",
        Some("l1"),
        &gzip(&tar(&[
            E::dir("etc/"),
            E::file("etc/.wh.shadow", b""),
            E::dir("opt/"),
            E::dir("opt/app/"),
            E::file("opt/app/.wh..wh..opq", b""),
            E::file("opt/app/new.py", b"new"),
        ]))[..],
    )
    .unwrap();
    d.apply_diff("l3", Some("l2"), &zstd(&tar(&[E::file(".wh.var", b""), E::file("etc/os-release", b"ID=top\n")]))[..])
        .unwrap();
    d.create_rw("ctr", Some("l3"), &CreateOpts::default()).unwrap();
    let merged = d.get("ctr", None).unwrap();
    let view = |p: &str| std::fs::read_to_string(merged.join(p)).ok();
    // What the image tars say, seen through overlayfs.
    assert_eq!(view("etc/os-release").as_deref(), Some("ID=top\n"));
    assert!(!merged.join("etc/shadow").exists(), "whiteout in l2 hides l1's file");
    assert!(!merged.join("var").exists(), "whiteout of a directory");
    assert!(!merged.join("opt/app/old.py").exists() && !merged.join("opt/app/keep.py").exists(), "opaque dir");
    assert_eq!(view("opt/app/new.py").as_deref(), Some("new"));
    // Change things through the mount: the kernel writes the container layer.
    std::fs::write(merged.join("etc/os-release"), "ID=ctr\n").unwrap();
    std::fs::remove_file(merged.join("opt/app/new.py")).unwrap();
    std::fs::create_dir(merged.join("srv")).unwrap();
    std::fs::write(merged.join("srv/data"), "d").unwrap();
    assert_eq!(d.apply_diff("ctr", Some("l3"), &tar(&[E::file("x", b"x")])[..]).unwrap_err().kind(), ErrorKind::Busy);
    d.put("ctr").unwrap();
    let ch: Vec<String> = d.changes("ctr", Some("l3")).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(
        ch,
        ["C /etc", "C /etc/os-release", "C /opt", "C /opt/app", "D /opt/app/new.py", "A /srv", "A /srv/data"]
    );
    let mut t = Vec::new();
    d.diff("ctr", Some("l3"), &mut t).unwrap();
    assert_eq!(tar_names(&t), ["etc/", "etc/os-release", "opt/", "opt/app/", "opt/app/.wh.new.py", "srv/", "srv/data"]);
    if let Some(bin) = docker_tar_bin() {
        let theirs = std::process::Command::new(bin).arg(diff_dir(&s.home(), "ctr")).output().unwrap();
        assert_eq!(t, theirs.stdout, "a kernel-written upper exports exactly as Docker's Diff does");
    }
    // The exported diff, applied as a new layer on the same image, mounts to the same view.
    d.create("copy", Some("l3"), &CreateOpts::default()).unwrap();
    d.apply_diff("copy", Some("l3"), &t[..]).unwrap();
    d.create_rw("ctr2", Some("copy"), &CreateOpts::default()).unwrap();
    let m2 = d.get("ctr2", None).unwrap();
    assert_eq!(std::fs::read_to_string(m2.join("etc/os-release")).unwrap(), "ID=ctr\n");
    assert!(!m2.join("opt/app/new.py").exists());
    assert_eq!(std::fs::read_to_string(m2.join("srv/data")).unwrap(), "d");
    d.put("ctr2").unwrap();
}

face_test!(apply_builds_the_tree_dockers_unpack_builds);
/// ovl2's apply and Docker's (go-archive `Unpack` with the overlay whiteout format, what the
/// overlay2 driver's ApplyDiff runs) build the same tree from the same tar. Docker applies
/// overlay xattrs verbatim where ovl2 drops them, so the tar here carries none.
pub fn apply_builds_the_tree_dockers_unpack_builds<D: Face>() {
    if !require_root() {
        return;
    }
    let Some(bin) = docker_tar_bin() else { return };
    let s = Scratch::new("docker-apply");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let mut entries = rich_tree();
    entries.extend([
        E::dir("wh/"),
        E::file("wh/.wh.gone", b"").owner(3, 4),
        E::dir("op/").mode(0o750),
        E::file("op/.wh..wh..opq", b""),
        E::file("op/kept", b"k"),
        E::file("dup", b"first"),
        E::file("dup", b"second, longer"),
        E::hardlink("dup-link", "dup"),
        E::symlink("abs-link", "/etc/hosts"),
    ]);
    let data = tar(&entries);
    d.apply_diff("base", None, &data[..]).unwrap();
    let theirs = s.path().join("docker");
    std::fs::create_dir_all(&theirs).unwrap();
    let mut child =
        std::process::Command::new(&bin).arg("apply").arg(&theirs).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &data).unwrap();
    assert!(child.wait().unwrap().success());
    // Whiteouts carry the time they were made in both (neither sets it); implied parents
    // too (directory times are not in the snapshot). Everything else must match.
    let no_wh_time = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter()
            .map(|(k, v)| {
                let v = if v.starts_with("char 0 ") {
                    v.split(' ').filter(|t| !t.starts_with("mtime=")).collect::<Vec<_>>().join(" ")
                } else {
                    v
                };
                (k, v)
            })
            .collect()
    };
    let ours = no_wh_time(snap(&diff_dir(&s.home(), "base")));
    let docker = no_wh_time(snap(&theirs));
    assert_eq!(ours.keys().collect::<Vec<_>>(), docker.keys().collect::<Vec<_>>());
    for (k, v) in &ours {
        assert_eq!(v, &docker[k], "{k}");
    }
}

/// Snapshot of `id`'s mounted view (`get`, then `put`).
fn view<D: Face>(d: &D, id: &str) -> BTreeMap<String, String> {
    let p = d.get(id, None).unwrap();
    let v = snap(&p);
    d.put(id).unwrap();
    v
}

/// Read-write overlay mount for Docker's side of a comparison, detached on drop.
struct RwMount(std::path::PathBuf);
impl RwMount {
    fn new(at: &Path, lowers: &[std::path::PathBuf]) -> RwMount {
        let (upper, work, merged) = (at.join("upper"), at.join("work"), at.join("merged"));
        for p in [&upper, &work, &merged] {
            std::fs::create_dir_all(p).unwrap();
        }
        let ls: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let data =
            format!("index=off,lowerdir={},upperdir={},workdir={}", ls.join(":"), upper.display(), work.display());
        rustix::mount::mount(
            "overlay",
            &merged,
            "overlay",
            rustix::mount::MountFlags::empty(),
            std::ffi::CString::new(data).unwrap().as_c_str(),
        )
        .unwrap();
        RwMount(merged)
    }
}
impl Drop for RwMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A base and a middle layer to apply onto, as tars.
fn naive_chain() -> (Vec<u8>, Vec<u8>) {
    let base = tar(&[
        E::dir("etc/").mode(0o755),
        E::file("etc/a", b"base a"),
        E::file("etc/b", b"base b"),
        E::file("d/x", b"x"),
        E::file("d/sub/y", b"y"),
        E::file("o/p", b"p"),
        E::file("o/q", b"q"),
        E::file("o/keep", b"old keep"),
        E::file("o2/p", b"p"),
        E::file("o2/sub/deep", b"deep"),
        E::file("t1", b"link target").mode(0o640),
        E::symlink("sym", "etc/a"),
    ]);
    let mid = tar(&[E::file("etc/c", b"mid c"), E::file("d/z", b"z"), E::file("o2/sub/kept", b"from mid")]);
    (base, mid)
}

/// What a layer tar does on top of [`naive_chain`]: replace, delete (files, trees, nothing),
/// opaque directories in both orders, hardlinks to lower files, a file turned directory.
fn naive_tar() -> Vec<u8> {
    tar(&[
        E::dir("etc/").mode(0o750),
        E::file("etc/a", b"new a, longer"),
        E::file("etc/.wh.b", b""),
        E::file(".wh.d", b""),
        E::dir("o/"),
        E::file("o/keep", b"new keep"),
        E::file("o/.wh..wh..opq", b""),
        E::dir("o2/"),
        E::file("o2/.wh..wh..opq", b""),
        E::dir("o2/sub/"),
        E::file("o2/sub/kept", b"kept"),
        E::file("new/deep/file", b"implied parents").owner(7, 8),
        E::hardlink("hl", "t1"),
        E::file(".wh.nothing", b""),
        E::file("gone-later", b"short-lived"),
        E::file(".wh.gone-later", b""),
        E::dir("etc/c/"),
        E::file("etc/c/inner", b"file became a dir"),
        E::symlink("sym2", "/etc/a"),
    ])
}

face_test!(apply_onto_another_parent_builds_dockers_naive_tree);
pub fn apply_onto_another_parent_builds_dockers_naive_tree<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("naive");
    let d = D::open_fast(&s.home());
    let (base, mid) = naive_chain();
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &base[..]).unwrap();
    d.create("mid", Some("base"), &CreateOpts::default()).unwrap();
    d.apply_diff("mid", Some("base"), &mid[..]).unwrap();
    let data = naive_tar();
    let header_bytes: u64 = {
        let mut a = tar::Archive::new(&data[..]);
        a.entries().unwrap().map(|e| e.unwrap().header().size().unwrap()).sum()
    };
    // No parent and a parent that is not the layer's own both take the naive path.
    for (id, parent) in [("t-none", None), ("t-base", Some("base"))] {
        d.create(id, Some("mid"), &CreateOpts::default()).unwrap();
        let st = d.apply_diff(id, parent, &data[..]).unwrap();
        assert_eq!(st.size, header_bytes, "{id}: Docker's naive ApplyDiff returns the unpacked header sizes");
        assert_eq!((st.whiteouts, st.opaque_dirs), (0, 0), "{id}: whiteouts and opaque markers are deletions here");
        assert!(staging_empty(&s.home()), "{id}");
        // Deleted lower entries are overlay whiteouts in the layer's own diff now.
        let wh = std::fs::symlink_metadata(diff_dir(&s.home(), id).join("etc/b")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{id}");
    }
    // The private mount works on every strategy (legacy attaches it for a moment).
    let legacy = D::open(
        s.home(),
        Options { sync: false, mount_strategy: Some(ovl2_core::MountStrategy::Legacy), ..Options::default() },
    )
    .unwrap();
    legacy.create("t-legacy", Some("mid"), &CreateOpts::default()).unwrap();
    assert_eq!(legacy.apply_diff("t-legacy", None, &data[..]).unwrap().size, header_bytes);
    drop(legacy);
    assert_eq!(common::mount_points_under(s.path()), Vec::<std::path::PathBuf>::new());
    let ours = view(&d, "t-none");
    assert_eq!(ours, view(&d, "t-base"));
    assert_eq!(ours, view(&d, "t-legacy"));
    assert!(!ours.contains_key("etc/b") && !ours.contains_key("d") && !ours.contains_key("gone-later"));
    assert!(!ours.contains_key("o/p") && !ours.contains_key("o2/p") && !ours.contains_key("o2/sub/deep"));
    assert!(ours.contains_key("o/keep") && ours.contains_key("o2/sub/kept") && ours.contains_key("etc/c/inner"));
    assert!(ours["hl"].contains("hardlink-of=") || ours["t1"].contains("hardlink-of="), "{:?}", ours["hl"]);
    // The layer still exports and sizes like any other.
    assert!(d.diff_size("t-none", Some("mid")).unwrap() > 0);

    let Some(bin) = docker_tar_bin() else { return };
    let m = RwMount::new(&s.path().join("docker"), &[diff_dir(&s.home(), "mid"), diff_dir(&s.home(), "base")]);
    let mut child = std::process::Command::new(&bin)
        .arg("applylayer")
        .arg(&m.0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let size: u64 = String::from_utf8(out.stdout).unwrap().trim().parse().unwrap();
    assert_eq!(size, header_bytes, "Docker's ApplyUncompressedLayer size");
    let docker = snap(&m.0);
    assert_eq!(ours.keys().collect::<Vec<_>>(), docker.keys().collect::<Vec<_>>());
    for (k, v) in &ours {
        assert_eq!(v, &docker[k], "{k}");
    }
}

face_test!(naive_whiteout_of_a_path_component_is_not_followed_from_the_cache);
/// Issue 10 item 8a on the naive path: a whiteout that deletes a component of its own parent
/// path (`a/s -> .`, then `a/s/.wh.s`) must not leave the next entry in the old directory;
/// Docker's `UnpackLayer` re-creates `a/s` as an implied directory.
pub fn naive_whiteout_of_a_path_component_is_not_followed_from_the_cache<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("naive-cache");
    let d = D::open_fast(&s.home());
    d.create("other", None, &CreateOpts::default()).unwrap();
    d.create("n", None, &CreateOpts::default()).unwrap();
    let data = tar(&[E::dir("a/"), E::symlink("a/s", "."), E::file("a/s/.wh.s", b""), E::file("a/s/f", b"f")]);
    // A parent that is not the layer's own takes the naive path.
    d.apply_diff("n", Some("other"), &data[..]).unwrap();
    let ours = snap(&diff_dir(&s.home(), "n"));
    assert!(ours["a/s"].starts_with("dir ") && ours.contains_key("a/s/f") && !ours.contains_key("a/f"), "{ours:#?}");
    let Some(bin) = docker_tar_bin() else { return };
    let theirs = s.path().join("docker");
    std::fs::create_dir_all(&theirs).unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("applylayer")
        .arg(&theirs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &data).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(ours, snap(&theirs));
}

face_test!(apply_of_a_full_tree_onto_a_child_like_dockers_bench);
/// Docker's `DriverBenchDiffApplyN`: the whole tree of a child layer (`Diff(upper, "")`)
/// applied with `ApplyDiff(layer, "")` onto a fresh child of the same base.
pub fn apply_of_a_full_tree_onto_a_child_like_dockers_bench<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("bench-apply");
    let d = D::open_fast(&s.home());
    let many = |prefix: &str, n: usize| -> Vec<E> {
        (0..n).map(|i| E::file(&format!("{prefix}/f{i}"), format!("{prefix} {i}").as_bytes())).collect()
    };
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &tar(&many("b", 20))[..]).unwrap();
    d.create("upper", Some("base"), &CreateOpts::default()).unwrap();
    d.apply_diff("upper", Some("base"), &tar(&many("u", 20))[..]).unwrap();
    let diff_size = d.diff_size("upper", None).unwrap();
    let mut arch = Vec::new();
    d.diff("upper", None, &mut arch).unwrap();
    d.create("diff", Some("base"), &CreateOpts::default()).unwrap();
    let st = d.apply_diff("diff", None, &arch[..]).unwrap();
    assert_eq!(st.size, diff_size, "Apply diff size mismatch");
    assert_eq!(view(&d, "diff"), view(&d, "upper"));
    // The lower's files were replaced through the view by new files renamed over them:
    // each is a plain file of the layer's own now, and no temporary name is left.
    for i in 0..20 {
        let f = diff_dir(&s.home(), "diff").join(format!("b/f{i}"));
        assert_eq!(std::fs::read(&f).unwrap(), format!("b {i}").as_bytes(), "{}", f.display());
    }
    let names = tree_names(&diff_dir(&s.home(), "diff"));
    assert!(!names.iter().any(|n| n.contains(".ovl2-replace-")), "{names:?}");
}

/// Every path under `root`, relative, for checks on names.
fn tree_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

face_test!(a_file_replaced_in_place_is_a_new_file_and_leaves_no_temporary);
/// In a mounted view (the naive apply) a regular file over an existing non-directory is
/// written under a temporary name and renamed over it: the result is Docker's
/// remove-then-create (a new file of the layer's own with the header's metadata; another
/// link keeps the old data), even when the tar itself uses the temporary names.
pub fn a_file_replaced_in_place_is_a_new_file_and_leaves_no_temporary<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("replace");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.apply_diff(
        "base",
        None,
        &tar(&[
            E::file("x", b"old data, longer than the new"),
            E::hardlink("x-link", "x"),
            E::new("p", b'6').mode(0o600),
            E::file("up", b"old upper"),
        ])[..],
    )
    .unwrap();
    d.create("layer", Some("base"), &CreateOpts::default()).unwrap();
    // No parent for a layer that has one: Docker's naive apply, into the mounted view.
    d.apply_diff(
        "layer",
        None,
        &tar(&[
            E::file(".ovl2-replace-1", b"the tar's own file"),
            E::file("x", b"new").mode(0o640).owner(5, 6),
            E::file("p", b"was a fifo"),
            E::file("up", b"first"),
            E::file("up", b"second, over the layer's own file"),
        ])[..],
    )
    .unwrap();
    let dir = diff_dir(&s.home(), "layer");
    assert_eq!(std::fs::read(dir.join("x")).unwrap(), b"new");
    let md = std::fs::symlink_metadata(dir.join("x")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid(), md.nlink()), (0o640, 5, 6, 1));
    assert!(std::fs::symlink_metadata(dir.join("p")).unwrap().is_file());
    assert_eq!(std::fs::read(dir.join("up")).unwrap(), b"second, over the layer's own file");
    assert_eq!(std::fs::read(dir.join(".ovl2-replace-1")).unwrap(), b"the tar's own file");
    // Only the tar's names: no temporary file, and no whiteout for a replaced lower file.
    assert_eq!(tree_names(&dir), [".ovl2-replace-1", "p", "up", "x"]);
    // The lower layer is untouched: its other link still has the old data.
    let base = diff_dir(&s.home(), "base");
    assert_eq!(std::fs::read(base.join("x-link")).unwrap(), b"old data, longer than the new");
    assert_eq!(std::fs::read(base.join("x")).unwrap(), b"old data, longer than the new");
}

face_test!(failed_naive_apply_leaves_the_layer_and_no_mount);
pub fn failed_naive_apply_leaves_the_layer_and_no_mount<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("naive-fail");
    let d = D::open_fast(&s.home());
    let (base, _) = naive_chain();
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &base[..]).unwrap();
    d.create("kid", Some("base"), &CreateOpts::default()).unwrap();
    let mut data = naive_tar();
    data.truncate(data.len() - 1024 - 10);
    let e = d.apply_diff("kid", None, &data[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{e}");
    // A name that climbs out is refused inside the mounted view too, before anything lands.
    let evil = tar(&[E::file("etc/.wh.a", b""), E::file("../escape", b"x")]);
    let e = d.apply_diff("kid", None, &evil[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptArchive, "{e}");
    assert!(!s.home().join("escape").exists() && !s.path().join("escape").exists());
    assert!(std::fs::read_dir(diff_dir(&s.home(), "kid")).unwrap().next().is_none());
    assert!(staging_empty(&s.home()));
    assert_eq!(common::mount_points_under(s.path()), Vec::<std::path::PathBuf>::new());
    assert_eq!(view(&d, "kid")["etc/a"], view(&d, "base")["etc/a"]);
}

face_test!(apply_refuses_a_layer_that_a_mounted_layer_builds_on);
pub fn apply_refuses_a_layer_that_a_mounted_layer_builds_on<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("lower-busy");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("mid", Some("base"), &CreateOpts::default()).unwrap();
    d.create("top", Some("mid"), &CreateOpts::default()).unwrap();
    let data = tar(&[E::file("a", b"1")]);
    d.get("top", None).unwrap();
    // A grandchild's mount uses base/diff as a lower as much as a child's does.
    for (id, parent) in [("base", None), ("mid", Some("base"))] {
        let e = d.apply_diff(id, parent, &data[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy, "{id}: {e}");
        assert!(e.to_string().contains("\"top\""), "{e}");
        assert!(std::fs::read_dir(diff_dir(&s.home(), id)).unwrap().next().is_none());
    }
    d.put("top").unwrap();
    d.apply_diff("base", None, &data[..]).unwrap();
    assert!(staging_empty(&s.home()));
}

face_test!(mutated_tars_never_escape_or_panic);
/// Random damage to a valid layer (bytes flipped in headers and data, cuts anywhere): apply
/// must never panic, never touch anything outside the layer, and either succeed or fail as a
/// corrupt archive with the layer left empty.
pub fn mutated_tars_never_escape_or_panic<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("mutate");
    let outside = sentinel(&s);
    let before = snap(&outside);
    let d = D::open_fast(&s.home());
    let o = outside.display().to_string();
    let base = tar(&[
        E::dir("a/"),
        E::symlink("a/up", "../../../../"),
        E::symlink("abs", &o),
        E::file("a/f", b"data data data"),
        E::hardlink("a/h", "a/f"),
        E::file("a/.wh.x", b""),
        E::dir("b/"),
        E::file("b/.wh..wh..opq", b""),
        E::file("long/".repeat(30).as_str().trim_end_matches('/'), b"pax path"),
        E::file("x", b"y").pax("SCHILY.xattr.user.k", b"v"),
    ]);
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let rounds = std::env::var("OVL2_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for i in 0..rounds {
        let mut t = base.clone();
        match next() % 3 {
            0 => {
                let n = 1 + next() % 4;
                for _ in 0..n {
                    let at = (next() % t.len() as u64) as usize;
                    t[at] = next() as u8;
                }
            }
            1 => {
                // Rewrite a name byte in some header to '/', '.', or a symlink-ish character.
                let hdr = (next() % (t.len() as u64 / 512)) as usize * 512;
                let at = hdr + (next() % 100) as usize;
                t[at] = *[b'/', b'.', b'.', b'a', 0].get((next() % 5) as usize).unwrap();
            }
            _ => {
                let cut = (next() % t.len() as u64) as usize;
                t.truncate(cut);
            }
        }
        let id = format!("m{i}");
        d.create(&id, None, &CreateOpts::default()).unwrap();
        match d.apply_diff(&id, None, &t[..]) {
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e.kind(), ErrorKind::CorruptArchive | ErrorKind::Unsupported), "case {i}: {e}");
                assert!(std::fs::read_dir(diff_dir(&s.home(), &id)).unwrap().next().is_none(), "case {i}");
            }
        }
        assert_eq!(snap(&outside), before, "case {i}: something outside the layer changed");
    }
    assert!(staging_empty(&s.home()));
}

face_test!(redirected_dirs_fall_back_to_mounted_views);
/// An upper written through a mount with `redirect_dir=on` (a renamed directory carries an
/// `overlay.redirect` xattr) cannot be read on its own: changes and diff take Docker's
/// mounted path and agree with Docker's code on the same mounts.
pub fn redirected_dirs_fall_back_to_mounted_views<D: Face>() {
    if !require_root() {
        return;
    }
    let Some(bin) = docker_tar_bin() else { return };
    let s = Scratch::new("redirect");
    let d = D::open_fast(&s.home());
    d.create("l1", None, &CreateOpts::default()).unwrap();
    d.create("l2", Some("l1"), &CreateOpts::default()).unwrap();
    d.apply_diff("l1", None, &tar(&[E::dir("dir/"), E::file("dir/f", b"f"), E::file("keep", b"k")])[..]).unwrap();
    d.apply_diff("l2", Some("l1"), &tar(&[E::file("other", b"o")])[..]).unwrap();
    d.create_rw("ctr", Some("l2"), &CreateOpts::default()).unwrap();
    let md = d.metadata("ctr").unwrap();
    let mount = |target: &Path, data: String| {
        std::fs::create_dir_all(target).unwrap();
        let data = std::ffi::CString::new(data).unwrap();
        rustix::mount::mount("overlay", target, "overlay", rustix::mount::MountFlags::empty(), Some(data.as_c_str()))
            .unwrap();
    };
    let umount = |p: &Path| rustix::mount::unmount(p, rustix::mount::UnmountFlags::empty()).unwrap();
    let m = s.path().join("rw");
    let lower = md.lower_dir.clone().unwrap().into_string().unwrap();
    mount(
        &m,
        format!(
            "lowerdir={lower},upperdir={},workdir={},redirect_dir=on",
            md.upper_dir.display(),
            md.work_dir.display()
        ),
    );
    std::fs::rename(m.join("dir"), m.join("moved")).unwrap();
    umount(&m);
    let mut v = [0u8; 256];
    assert!(
        rustix::fs::lgetxattr(Path::new(&md.upper_dir).join("moved"), "trusted.overlay.redirect", &mut v[..]).is_ok()
    );

    let got: Vec<String> = d.changes("ctr", Some("l2")).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(got, ["D /dir", "A /moved", "A /moved/f"]);
    let mut ours = Vec::new();
    d.diff("ctr", Some("l2"), &mut ours).unwrap();
    assert!(d.mounts().unwrap().is_empty(), "the fallback puts what it mounted");

    // Docker's code over the same views, mounted read-only.
    let new = s.path().join("new");
    let old = s.path().join("old");
    mount(&new, format!("lowerdir={}:{lower},redirect_dir=follow", md.upper_dir.display()));
    mount(&old, format!("lowerdir={lower}"));
    let ch = std::process::Command::new(&bin).arg("changes").arg(&new).arg(&old).output().unwrap();
    let ex = std::process::Command::new(&bin).arg("export").arg(&new).arg(&old).output().unwrap();
    umount(&new);
    umount(&old);
    assert_eq!(got.iter().map(|c| format!("{c}\n")).collect::<String>(), String::from_utf8(ch.stdout).unwrap());
    let names = |t: &[u8]| -> Vec<(String, u8, Vec<u8>)> {
        let mut a = tar::Archive::new(t);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                (String::from_utf8_lossy(&e.path_bytes()).into_owned(), e.header().entry_type().as_byte(), data)
            })
            .collect()
    };
    assert_eq!(names(&ours), names(&ex.stdout));
    assert_eq!(tar_names(&ours), [".wh.dir", "moved/", "moved/f"]);

    // A native export holds its output back only up to 1 MiB: here a larger file comes
    // before the redirected directory, so the whole upper is checked before anything goes
    // out, and the export still falls back to the mounted views.
    std::fs::write(md.upper_dir.join("a-big"), vec![7u8; 3 << 20]).unwrap();
    let mut big = Vec::new();
    d.diff("ctr", Some("l2"), &mut big).unwrap();
    assert!(d.mounts().unwrap().is_empty(), "the fallback puts what it mounted");
    mount(&new, format!("lowerdir={}:{lower},redirect_dir=follow", md.upper_dir.display()));
    mount(&old, format!("lowerdir={lower}"));
    let ex = std::process::Command::new(&bin).arg("export").arg(&new).arg(&old).output().unwrap();
    umount(&new);
    umount(&old);
    assert_eq!(names(&big), names(&ex.stdout));
    assert_eq!(tar_names(&big), ["a-big", ".wh.dir", "moved/", "moved/f"]);
}

face_test!(a_redirect_in_a_base_layer_is_refused_before_or_after_the_first_mib);
/// A base layer has no mounted view to fall back to (its `get` is its own upper), so a
/// redirected directory in it is refused, naming it, whether it comes within the first MiB
/// of output or after it (a base layer's upper is not checked for redirects ahead).
pub fn a_redirect_in_a_base_layer_is_refused_before_or_after_the_first_mib<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("base-redirect");
    let d = D::open_fast(&s.home());
    d.create("b", None, &CreateOpts::default()).unwrap();
    let upper = diff_dir(&s.home(), "b");
    std::fs::create_dir(upper.join("z")).unwrap();
    rustix::fs::setxattr(upper.join("z"), "trusted.overlay.redirect", b"/a", rustix::fs::XattrFlags::empty()).unwrap();
    for big in [false, true] {
        if big {
            std::fs::write(upper.join("a-big"), vec![7u8; 3 << 20]).unwrap();
        }
        let e = d.diff("b", None, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("z carries an overlay redirect"), "big {big}: {e}");
        assert!(e.to_string().contains("cannot express it"), "big {big}: {e}");
        assert!(d.mounts().unwrap().is_empty());
    }
}

face_test!(import_chain_names_stacks_and_applies_each_layer);
pub fn import_chain_names_stacks_and_applies_each_layer<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("import-chain");
    let d = D::open_fast(&s.home());
    let base = tar(&[E::file("etc/os-release", b"base")]);
    let mid = tar(&[E::file("app/bin", b"mid")]);
    let top = tar(&[E::file("app/conf", b"top")]);
    let opts = ApplyOpts { sync: false, ..ApplyOpts::default() };
    let out = d.import_chain("img", None, vec![&base[..], &mid[..], &top[..]], &opts).unwrap();
    let ids: Vec<&str> = out.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["img-1", "img-2", "img"]);
    assert_eq!(ovl2_core::import_chain_ids("img", 3), ids);
    assert_eq!(d.parent("img-1").unwrap(), None);
    assert_eq!(d.parent("img-2").unwrap().as_deref(), Some("img-1"));
    assert_eq!(d.parent("img").unwrap().as_deref(), Some("img-2"));
    assert_eq!(std::fs::read(s.home().join("img-2/diff/app/bin")).unwrap(), b"mid");
    assert_eq!(out[2].1.files, 1);
    assert_eq!(out[1].1.digest, format!("sha256:{:x}", Sha256::digest(&mid)));
    assert!(d.check().unwrap().is_empty());
}

face_test!(a_failed_import_chain_leaves_the_store_as_it_was);
pub fn a_failed_import_chain_leaves_the_store_as_it_was<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("import-chain-fail");
    let d = D::open_fast(&s.home());
    d.create("p", None, &CreateOpts::default()).unwrap();
    let before = common::snapshot(&s.home());
    let good = tar(&[E::file("a", b"a")]);
    let broken = b"this is not a tar".to_vec();
    let opts = ApplyOpts { sync: false, ..ApplyOpts::default() };
    let err = d.import_chain("bad", Some("p"), vec![&good[..], &broken[..]], &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptArchive, "{err}");
    assert!(!d.exists("bad-1").unwrap() && !d.exists("bad").unwrap());
    assert!(!s.home().join("p/committed").exists(), "the marker the chain gave p is taken back");
    assert_eq!(common::snapshot(&s.home()), before);
    let none: Vec<&[u8]> = Vec::new();
    assert_eq!(d.import_chain("x", None, none, &opts).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

face_test!(usage_counts_the_layers_own_blocks_and_inodes);
/// `Driver::usage` (issue 14 item 4, `ovl2 du`): a layer's own blocks and inodes, hardlinks
/// once, symlinks not followed, parents not counted.
pub fn usage_counts_the_layers_own_blocks_and_inodes<D: Face>() {
    let s = Scratch::new("usage");
    let d = D::open_default(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("top", Some("base"), &CreateOpts::default()).unwrap();
    let diff = s.home().join("top/diff");
    let empty = d.usage("top").unwrap();
    let root_blocks = std::fs::metadata(&diff).unwrap().blocks() * 512;
    assert_eq!(empty, ovl2_core::Usage { bytes: root_blocks, inodes: 1 }, "diff/ itself");
    // The parent's content is not the layer's.
    std::fs::write(s.home().join("base/diff/parents"), vec![0u8; 200_000]).unwrap();
    assert_eq!(d.usage("top").unwrap(), empty);
    std::fs::write(diff.join("f"), vec![1u8; 50_000]).unwrap();
    std::fs::hard_link(diff.join("f"), diff.join("g")).unwrap();
    std::fs::create_dir(diff.join("sub")).unwrap();
    // A symlink to the parent's big file counts as the link alone.
    std::os::unix::fs::symlink(s.home().join("base/diff/parents"), diff.join("sub/l")).unwrap();
    let blocks = |p: &str| std::fs::symlink_metadata(diff.join(p)).unwrap().blocks() * 512;
    let want = ovl2_core::Usage { bytes: root_blocks + blocks("f") + blocks("sub") + blocks("sub/l"), inodes: 4 };
    assert_eq!(d.usage("top").unwrap(), want);
    assert!(want.bytes >= root_blocks + 50_000);
    assert_eq!(d.usage("missing").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(d.usage("../x").unwrap_err().kind(), ErrorKind::InvalidArgument);
}

face_test!(every_operation_on_a_missing_layer_is_not_found);
/// "The layer you named does not exist" is `NotFound` (LayerNotFound in C, Go and Python)
/// for every operation that takes a layer id, as a parent too, and it names that layer.
pub fn every_operation_on_a_missing_layer_is_not_found<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("missing");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    let data = tar(&[E::file("a", b"1")]);
    let calls: Vec<(&str, crate::faces::R<()>)> = vec![
        ("parent", d.parent("nope").map(drop)),
        ("metadata", d.metadata("nope").map(drop)),
        ("remove", d.remove("nope", false)),
        ("remove --force", d.remove("nope", true)),
        ("remove_tree", d.remove_tree("nope", false).map(drop)),
        ("get", d.get("nope", None).map(drop)),
        ("put", d.put("nope")),
        ("apply_diff", d.apply_diff("nope", None, &data[..]).map(drop)),
        ("diff", d.diff("nope", None, std::io::sink()).map(drop)),
        ("diff against a missing parent", d.diff("base", Some("nope"), std::io::sink()).map(drop)),
        ("diff_size", d.diff_size("nope", None).map(drop)),
        ("diff_size against a missing parent", d.diff_size("base", Some("nope")).map(drop)),
        ("changes", d.changes("nope", None).map(drop)),
        ("changes against a missing parent", d.changes("base", Some("nope")).map(drop)),
        ("create on a missing parent", d.create("x", Some("nope"), &CreateOpts::default())),
        ("create_container on a missing image", d.create_container("c", "nope", &Default::default())),
        ("remove_container", d.remove_container("nope", false)),
    ];
    for (what, r) in calls {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::NotFound, "{what}: {e}");
        assert!(e.to_string().contains("\"nope"), "{what}: {e}");
    }
}

face_test!(a_layer_whose_files_vanished_is_not_reported_missing);
/// A layer that exists but lost a file inside it (its `diff/`, a lower layer's `diff/`) is
/// not "layer not found": C, Go and Python callers read NotFound as "the id you named does
/// not exist" (LayerNotFoundError). Each of these reported NotFound before.
pub fn a_layer_whose_files_vanished_is_not_reported_missing<D: Face>() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("vanished");
    let d = D::open_fast(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("kid", Some("base"), &CreateOpts::default()).unwrap();
    d.apply_diff("base", None, &tar(&[E::file("a", b"1")])[..]).unwrap();
    std::fs::remove_dir_all(s.home().join("base/diff")).unwrap();
    let calls: Vec<(&str, &str, crate::faces::R<()>)> = vec![
        ("diff", "base/diff", d.diff("base", None, std::io::sink()).map(drop)),
        ("diff_size", "base/diff", d.diff_size("base", None).map(drop)),
        ("changes", "base/diff", d.changes("base", None).map(drop)),
        ("changes of the child", "base/diff", d.changes("kid", Some("base")).map(drop)),
        ("get of the child", "base/diff", d.get("kid", None).map(drop)),
    ];
    for (what, path, r) in calls {
        let e = r.expect_err(what);
        assert_ne!(e.kind(), ErrorKind::NotFound, "{what}: {e}");
        assert_eq!(e.kind(), ErrorKind::Io, "{what}: {e}");
        assert!(e.to_string().contains(path), "{what} must name {path}: {e}");
        assert!(!e.to_string().contains("does not exist"), "{what}: {e}");
    }
    assert!(d.mounts().unwrap().is_empty());
}
