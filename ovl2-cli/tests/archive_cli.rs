//! The archive commands as a user runs them: import an image from tarballs, run a container
//! layer through a mount, list and export its changes; and a rootless apply.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

fn tar_list(p: &Path) -> Vec<String> {
    let o = Command::new("tar").arg("-tf").arg(p).output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn import_mount_change_export() {
    if !require_root() {
        return;
    }
    let h = Home::new("arch-main");
    let base =
        h.tarball("base.tar", &[("etc/os-release", "ID=demo\n"), ("README", "base\n"), ("app/old.py", "old")], None);
    let app = h.tarball("app.tar.gz", &[("app/main.py", "print('hi')\n"), ("app/.wh.old.py", "")], Some("gzip"));
    let out = h.ok(&["import", base.to_str().unwrap(), app.to_str().unwrap(), "--top", "img", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], "img-1");
    assert_eq!(v[1]["id"], "img");
    assert_eq!(v[1]["whiteouts"], 1);
    assert_eq!(v[1]["compression"], "gzip");
    assert!(v[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(h.ok(&["changes", "img"]), "C /app\nA /app/main.py\nD /app/old.py\n");
    assert_eq!(h.ok(&["diff-size", "img"]).trim(), "12");

    h.ok(&["create", "ctr", "--parent", "img", "--rw"]);
    let merged = PathBuf::from(h.ok(&["mount", "ctr"]).trim());
    assert!(!merged.join("app/old.py").exists());
    std::fs::write(merged.join("etc/os-release"), "ID=changed\n").unwrap();
    std::fs::remove_file(merged.join("README")).unwrap();
    std::fs::write(merged.join("new.txt"), "new\n").unwrap();
    h.ok(&["umount", "ctr"]);

    assert_eq!(h.ok(&["changes", "ctr"]), "D /README\nC /etc\nC /etc/os-release\nA /new.txt\n");
    let out = h.scratch().join("ctr.tar");
    h.ok(&["diff", "ctr", "-o", out.to_str().unwrap()]);
    assert_eq!(tar_list(&out), [".wh.README", "etc/", "etc/os-release", "new.txt"]);
    let outz = h.scratch().join("ctr.tar.zst");
    h.ok(&["diff", "ctr", "--zstd", "-o", outz.to_str().unwrap()]);
    // The same diff applies as a new layer, compressed or not.
    h.ok(&["create", "again", "--parent", "img"]);
    let st: serde_json::Value =
        serde_json::from_str(&h.ok(&["apply", "again", outz.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(st["compression"], "zstd");
    assert_eq!(h.ok(&["changes", "again"]), h.ok(&["changes", "ctr"]));
    // A second apply onto a layer with content is refused, as is a broken import (which
    // takes back every layer it made).
    h.fail(&["apply", "again", out.to_str().unwrap()]);
    let broken = h.scratch().join("broken.tar");
    std::fs::write(&broken, &std::fs::read(&base).unwrap()[..1000]).unwrap();
    let err = h.fail(&["import", base.to_str().unwrap(), broken.to_str().unwrap(), "--top", "bad"]);
    assert!(err.contains("bad layer archive"), "{err}");
    let ls = h.ok(&["ls"]);
    assert!(!ls.contains("bad"), "{ls}");
    // Found in review: a broken import on top of an uncommitted layer left it committed (so
    // it then mounted read-only). All or nothing includes the parent's marker.
    h.ok(&["create", "p", "--parent", "img", "--rw"]);
    assert!(!h.home().join("p/committed").exists());
    h.fail(&["import", base.to_str().unwrap(), broken.to_str().unwrap(), "--top", "bad2", "--parent", "p"]);
    assert!(!h.home().join("p/committed").exists(), "the failed import took back the marker it caused");
    assert_eq!(h.ok(&["check"]), "no problems\n");
}

#[test]
fn rootless_apply_uses_user_xattrs() {
    if !require_root() {
        return;
    }
    let strict = std::env::var("CI").as_deref() == Ok("true");
    let h = Home::new("arch-rootless");
    let t = h.tarball("t.tar", &[("d/f", "a"), ("d/.wh..wh..opq", ""), (".wh.gone", "")], None);
    let bin = env!("CARGO_BIN_EXE_ovl2");
    let home = h.home();
    let script =
        format!("{bin} --home {0} create x && {bin} --home {0} apply x {1} --json", home.display(), t.display());
    let o = Command::new("unshare").args(["-Urm", "sh", "-c", &script]).output();
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            assert!(!strict, "unshare is needed in CI: {e}");
            return;
        }
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let diff = home.join("x/diff");
    let mut v = [0u8; 16];
    let n = rustix::fs::lgetxattr(diff.join("d"), "user.overlay.opaque", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(rustix::fs::lgetxattr(diff.join("d"), "trusted.overlay.opaque", &mut v[..]).is_err());
    let st = rustix::fs::lstat(diff.join("gone")).unwrap();
    assert_eq!(rustix::fs::FileType::from_raw_mode(st.st_mode), rustix::fs::FileType::CharacterDevice);
    assert_eq!(st.st_rdev, 0);
}

#[path = "../../ovl2-core/tests/common/tarb.rs"]
mod tarb;

/// Issue 10 item 3: a 1 GiB GNU long name in a small .tar.zst and 3.5 million PAX records in
/// a small gzip are refused before they are read: peak RSS of `ovl2 apply` (ru_maxrss, as
/// GNU time reports it) stays under 64 MiB, and the layer stays empty.
#[test]
fn header_bombs_keep_memory_flat() {
    if !require_root() {
        return;
    }
    let h = Home::new("arch-bombs");
    h.ok(&["create", "x"]);
    let f = tarb::tar(&[tarb::E::file("f", b"f")]);
    let rec = tarb::pax_record("SCHILY.xattr.user.a", b"bc");
    let bombs = [
        ("long-name.tar.zst", tarb::special_compressed(tarb::zstd, b"././@LongLink", b'L', 1 << 30, b"a", &f)),
        (
            "pax-records.tar.gz",
            tarb::special_compressed(tarb::gzip, b"PaxHeaders/f", b'x', 3_500_000 * rec.len() as u64, &rec, &f),
        ),
    ];
    for (name, data) in bombs {
        let p = h.scratch().join(name);
        std::fs::write(&p, &data).unwrap();
        let o = Command::new("/usr/bin/time")
            .args(["-f", "maxrss=%M"])
            .arg(env!("CARGO_BIN_EXE_ovl2"))
            .arg("--home")
            .arg(h.home())
            .args(["apply", "x"])
            .arg(&p)
            .output()
            .expect("GNU time (/usr/bin/time) measures the peak RSS");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: {err}");
        assert!(err.contains("header field too long") && err.contains("1048576"), "{name}: {err}");
        let kib: u64 =
            err.lines().find_map(|l| l.strip_prefix("maxrss=")).expect("maxrss line").trim().parse().unwrap();
        eprintln!("{name} ({} bytes): peak RSS {kib} KiB", data.len());
        assert!(kib < 64 * 1024, "{name}: peak RSS {kib} KiB");
        assert!(std::fs::read_dir(h.home().join("x/diff")).unwrap().next().is_none(), "{name}");
    }
}

/// Issue 10 item 10: a rootless apply of an entry whose owner the user namespace does not
/// map fails naming the entry, the ids and the cause, not with a bare "Invalid argument".
#[test]
fn rootless_apply_names_an_unmapped_owner() {
    if !require_root() {
        return;
    }
    let strict = std::env::var("CI").as_deref() == Ok("true");
    let h = Home::new("arch-unmapped");
    let t = h.scratch().join("owned.tar");
    std::fs::write(&t, tarb::tar(&[tarb::E::dir("d/"), tarb::E::file("d/owned", b"x").owner(1000, 1001)])).unwrap();
    let bin = env!("CARGO_BIN_EXE_ovl2");
    let script = format!("{bin} --home {0} create x && {bin} --home {0} apply x {1}", h.home().display(), t.display());
    let o = match Command::new("unshare").args(["-Urm", "sh", "-c", &script]).output() {
        Ok(o) => o,
        Err(e) => {
            assert!(!strict, "unshare is needed in CI: {e}");
            return;
        }
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("\"d/owned\"") && err.contains("uid 1000, gid 1001"), "{err}");
    assert!(err.contains("not mapped in this user namespace"), "{err}");
    assert!(std::fs::read_dir(h.home().join("x/diff")).unwrap().next().is_none());
}

/// `apply --parent` is Docker's ApplyDiff onto another parent: through the layer's mounted
/// view, so a whiteout of a name the view does not have leaves nothing, while the native
/// path (the layer's own parent) keeps it as an overlay whiteout.
#[test]
fn apply_onto_another_parent_goes_through_the_view() {
    if !require_root() {
        return;
    }
    let h = Home::new("arch-parent");
    let base = h.tarball("base.tar", &[("keep", "k\n"), ("gone", "g\n")], None);
    let top = h.tarball("top.tar", &[("new", "n\n"), (".wh.gone", ""), (".wh.ghost", "")], None);
    h.ok(&["create", "b"]);
    h.ok(&["apply", "b", base.to_str().unwrap()]);
    for id in ["native", "naive"] {
        h.ok(&["create", id, "--parent", "b"]);
    }
    h.ok(&["apply", "native", top.to_str().unwrap()]);
    h.ok(&["apply", "naive", top.to_str().unwrap(), "--parent", ""]);
    let diff = |id: &str| h.home().join(id).join("diff");
    assert!(diff("native").join("ghost").symlink_metadata().is_ok(), "native keeps the whiteout of a name");
    assert!(diff("naive").join("ghost").symlink_metadata().is_err(), "the view had no ghost to delete");
    for id in ["native", "naive"] {
        assert_eq!(h.ok(&["changes", id]), "D /gone\nA /new\n", "{id}");
    }
    h.ok(&["create", "third", "--parent", "b"]);
    let err = h.fail(&["apply", "third", top.to_str().unwrap(), "--parent", "nosuchlayer"]);
    assert!(err.contains("nosuchlayer"), "{err}");
}

/// Exporting a layer that was applied from an export gives back the same bytes, also when a
/// second has passed in between: the applied whiteout once kept the time of the apply, so the
/// C suite's round-trip check failed whenever the clock ticked over a second mid-test.
#[test]
fn export_apply_export_is_byte_identical_across_a_second() {
    if !require_root() {
        return;
    }
    let h = Home::new("roundtrip");
    let src = h.scratch().join("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/a.txt"), "a\n").unwrap();
    std::fs::write(src.join("hello.txt"), "hi\n").unwrap();
    let base = h.scratch().join("base.tar");
    assert!(std::process::Command::new("tar")
        .args(["-C", src.to_str().unwrap(), "-cf", base.to_str().unwrap(), "."])
        .status()
        .unwrap()
        .success());
    h.ok(&["create", "base"]);
    h.ok(&["apply", "base", base.to_str().unwrap()]);
    h.ok(&["create", "child", "--parent", "base", "--rw"]);
    let merged = PathBuf::from(h.ok(&["mount", "child"]).trim());
    std::fs::remove_file(merged.join("dir/a.txt")).unwrap();
    std::fs::write(merged.join("hello.txt"), "changed\n").unwrap();
    h.ok(&["umount", "child"]);
    let first = h.scratch().join("first.tar");
    h.ok(&["diff", "child", "-o", first.to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    h.ok(&["create", "child2", "--parent", "base"]);
    h.ok(&["apply", "child2", first.to_str().unwrap(), "--parent", "base"]);
    let second = h.scratch().join("second.tar");
    h.ok(&["diff", "child2", "-o", second.to_str().unwrap()]);
    assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap(), "the two exports differ");
}
