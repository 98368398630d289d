//! Issue 14 items 4 to 6: Docker-style conveniences (several ids, `ls -q`, `du`), an apply
//! progress bar that moves by input bytes, and messages in the CLI's own words.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

mod common;
use common::*;

#[test]
fn several_ids_per_rm_inspect_umount_and_ls_quiet() {
    let h = Home::new("multi");
    for id in ["a", "b", "c"] {
        h.ok(&["create", id]);
    }
    h.ok(&["create", "d", "--parent", "c"]);
    assert_eq!(h.ok(&["ls", "-q"]), "a\nb\nc\nd\n", "ids only, sorted");
    assert_eq!(h.ok(&["ls"]), "a\nb\nc\n└── d\n", "the tree stays the default");
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["inspect", "a", "d", "--json"])).unwrap();
    assert_eq!((v[0]["id"].as_str(), v[1]["id"].as_str()), (Some("a"), Some("d")));
    let text = h.ok(&["inspect", "a", "d"]);
    assert!(text.starts_with("Id         a\n") && text.contains("Id         d\n"), "{text}");
    // A failing id is reported and the others still go, as `docker rm a x b` does.
    let o = h.run(&["rm", "a", "missing", "b"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "removed a\nremoved b\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "ovl2: layer \"missing\" does not exist\n");
    assert_eq!(h.ok(&["ls", "-q"]), "c\nd\n");
    let o = h.run(&["rm", "x", "y", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 2, "one JSON error per failing id: {err}");
    for l in err.lines() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(e["error"]["kind"], "not_found");
    }
    let o = h.run(&["ls", "-q", "--json"]);
    assert_eq!(o.status.code(), Some(2), "-q and --json exclude each other");
    if !require_root() {
        return;
    }
    h.ok(&["create", "r1", "--parent", "c", "--rw"]);
    h.ok(&["create", "r2", "--parent", "c", "--rw"]);
    h.ok(&["mount", "r1"]);
    h.ok(&["mount", "r2"]);
    let m: serde_json::Value = serde_json::from_str(&h.ok(&["mounts", "--json"])).unwrap();
    assert_eq!(m.as_array().unwrap().len(), 2);
    h.ok(&["umount", "r1", "r2"]);
    assert_eq!(h.ok(&["mounts"]), "", "both unmounted by one umount");
    h.ok(&["rm", "r1", "r2", "d", "c"]);
    assert_eq!(h.ok(&["ls", "-q"]), "");
}

/// What `du` must report for a tree: bytes allocated and distinct inodes, `diff/` included.
fn expected_usage(diff: &Path) -> (u64, u64) {
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    let mut stack = vec![diff.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        if seen.insert(md.ino()) {
            bytes += md.blocks() * 512;
        }
        if md.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    (bytes, seen.len() as u64)
}

#[test]
fn du_reports_each_layers_own_disk_usage_and_inodes() {
    let h = Home::new("du");
    h.ok(&["create", "base"]);
    h.ok(&["create", "top", "--parent", "base"]);
    let diff = h.home().join("base/diff");
    std::fs::create_dir(diff.join("dir")).unwrap();
    std::fs::write(diff.join("dir/big"), vec![7u8; 100_000]).unwrap();
    std::fs::write(diff.join("small"), "x").unwrap();
    std::fs::hard_link(diff.join("small"), diff.join("again")).unwrap();
    std::os::unix::fs::symlink("small", diff.join("link")).unwrap();
    // diff/, dir, big, small (twice linked: one inode), link.
    let (bytes, inodes) = expected_usage(&diff);
    assert_eq!(inodes, 5);
    assert!(bytes >= 100_000);
    // GNU du agrees (it too counts a hardlinked inode once).
    let gnu = Command::new("du").args(["-s", "-B1"]).arg(&diff).output().unwrap();
    let gnu: u64 = String::from_utf8_lossy(&gnu.stdout).split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(gnu, bytes);
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["du", "--json"])).unwrap();
    assert_eq!(v[0], serde_json::json!({"id": "base", "bytes": bytes, "inodes": 5}));
    let (tb, _) = expected_usage(&h.home().join("top/diff"));
    assert_eq!(v[1], serde_json::json!({"id": "top", "bytes": tb, "inodes": 1}), "the parent's files are not counted");
    let text = h.ok(&["du", "base"]);
    assert!(text.starts_with("base\t") && text.ends_with("\t5 inodes\n"), "{text}");
    let o = h.run(&["du", "missing", "top"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("top\t"));
    if !require_root() {
        return;
    }
    // A mount inside the layer is not part of it: du does not walk into it.
    let outside = h.scratch().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("huge"), vec![1u8; 1 << 20]).unwrap();
    let mnt = h.home().join("top/diff/mnt");
    std::fs::create_dir(&mnt).unwrap();
    rustix::mount::mount_bind(&outside, &mnt).unwrap();
    let o = h.run(&["du", "top", "--json"]);
    rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["bytes"], tb, "nothing of the bind mount counted: {v}");
}

/// Item 6: messages in the CLI's words.
#[test]
fn messages_speak_the_clis_language() {
    let h = Home::new("msgs");
    h.ok(&["create", "base"]);
    // create with a missing parent names the parent.
    let e = h.fail(&["create", "x", "--parent", "missing"]);
    assert_eq!(e, "ovl2: parent layer \"missing\" does not exist\n");
    let e = h.fail(&["container", "create", "ctr", "--image", "nope"]);
    assert_eq!(e, "ovl2: image layer \"nope\" does not exist\n");
    // Binary junk from a non-tar input is never echoed: the message is plain printable text.
    let junk = h.scratch().join("junk");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&junk, &bytes).unwrap();
    let e = h.fail(&["apply", "base", junk.to_str().unwrap()]);
    assert!(e.trim_end().chars().all(|c| c.is_ascii_graphic() || c == ' '), "raw bytes in {e:?}");
    assert!(e.contains("bad layer archive"), "{e}");
    // Nor is an entry name made of control bytes and invalid UTF-8 (a truncated entry).
    let evil = h.scratch().join("evil.tar");
    std::fs::write(&evil, truncated_tar(b"a\x1b[2Jevil\xff\x07name")).unwrap();
    for args in [&["apply", "base", evil.to_str().unwrap()][..], &["apply", "base", evil.to_str().unwrap(), "--json"]] {
        let e = h.fail(args);
        assert!(e.trim_end().chars().all(|c| !c.is_control()), "raw control bytes in {e:?}");
        assert!(e.contains("evil"), "the entry is still named: {e}");
    }
    // A file the CLI cannot open or create is named.
    let e = h.fail(&["diff", "base", "-o", "/nonexistent-dir/out.tar"]);
    assert!(e.starts_with("ovl2: /nonexistent-dir/out.tar: "), "{e}");
    let e = h.fail(&["apply", "base", "/nonexistent-dir/in.tar"]);
    assert!(e.starts_with("ovl2: /nonexistent-dir/in.tar: "), "{e}");
    // umount of a layer that is not mounted is an error, also for a base layer.
    let e = h.fail(&["umount", "base"]);
    assert!(e.contains("layer \"base\" is not mounted"), "{e}");
    if !require_root() {
        return;
    }
    // A base layer mounted for real (--ro) unmounts as any other.
    h.ok(&["mount", "base", "--ro"]);
    h.ok(&["umount", "base"]);
    assert_eq!(h.ok(&["mounts"]), "");
    h.ok(&["create", "ctr", "--parent", "base", "--rw"]);
    let e = h.fail(&["umount", "ctr"]);
    assert!(e.contains("layer \"ctr\" is not mounted"), "{e}");
    h.ok(&["mount", "ctr"]);
    for args in [&["rm", "ctr"][..], &["rm", "-r", "base"]] {
        let e = h.fail(args);
        assert!(e.contains("unmount it first (`ovl2 umount ctr`)") && !e.contains("put it"), "{e}");
    }
    let t = h.tarball("t.tar", &[("f", "x")], None);
    h.ok(&["create", "below"]);
    h.ok(&["create", "other", "--parent", "below", "--rw"]);
    h.ok(&["mount", "other"]);
    let e = h.fail(&["apply", "below", t.to_str().unwrap()]);
    assert!(e.contains("unmount it first (`ovl2 umount other`)") && !e.contains("put it"), "{e}");
    h.ok(&["umount", "ctr", "other"]);
    // --label without SELinux says so, not the kernel's "Unknown parameter 'context'".
    if !Path::new("/sys/fs/selinux/enforce").exists() {
        let e = h.fail(&["mount", "ctr", "--label", "system_u:object_r:container_file_t:s0"]);
        assert!(e.contains("SELinux is not enabled"), "{e}");
        assert!(h.ok(&["mounts"]).is_empty());
    }
}

/// A ustar header for a 5000-byte file called `name`, followed by only 1000 bytes of data.
fn truncated_tar(name: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", 5000).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut t = h.to_vec();
    t.extend(std::iter::repeat_n(b'x', 1000));
    t
}

/// Runs `cmd` under a pseudo-terminal (util-linux `script`) and returns what it drew.
fn under_a_terminal(cmd: &str) -> String {
    let o = Command::new("script").args(["-qfec", cmd, "/dev/null"]).env("COLUMNS", "200").output();
    let o = match o {
        Ok(o) => o,
        Err(e) => panic!("util-linux `script` is needed for the terminal test: {e}"),
    };
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The byte counts the bar showed while the tar's one entry was being written.
fn positions(screen: &str, after: &str) -> BTreeSet<String> {
    screen
        .split(['\r', '\n', '\u{1b}'])
        .filter(|f| f.contains(" 1 entries") || f.contains(" 0 entries"))
        .filter_map(|f| f.split(after).nth(1))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            Some(format!("{} {}", w.next()?, w.next()?))
        })
        .collect()
}

/// Item 5: the bar counts input bytes, so it moves inside one large entry (it froze at the
/// entry's start); with a known size it shows the total, the rate and an ETA; on a
/// non-terminal it prints nothing.
#[test]
fn apply_progress_moves_inside_a_large_file() {
    let h = Home::new("progress");
    let src = h.scratch().join("src");
    std::fs::create_dir(&src).unwrap();
    // Incompressible and large enough that a debug build takes seconds over it.
    let mut x = 0x2545F4914F6CDD1Du64;
    let data: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("big"), &data).unwrap();
    let tar = h.scratch().join("big.tar");
    assert!(Command::new("tar").arg("-C").arg(&src).args(["-cf"]).arg(&tar).arg("big").status().unwrap().success());
    let bin = env!("CARGO_BIN_EXE_ovl2");
    let home = h.home();
    let (home, tar) = (home.to_str().unwrap(), tar.to_str().unwrap());
    h.ok(&["create", "sized"]);
    h.ok(&["create", "piped"]);
    h.ok(&["create", "quiet"]);

    let screen = under_a_terminal(&format!("{bin} --home {home} apply sized {tar} --no-sync"));
    let seen = positions(&screen, "] ");
    assert!(seen.len() >= 3, "the bar stood still inside the entry: {seen:?}\n{screen:?}");
    assert!(screen.contains("ETA") && screen.contains("/s"), "no rate or ETA with a known size: {screen:?}");

    let screen = under_a_terminal(&format!("cat {tar} | {bin} --home {home} apply piped - --no-sync"));
    let seen = positions(&screen, "piped ");
    assert!(seen.len() >= 3, "the bar stood still reading a pipe: {seen:?}\n{screen:?}");

    let o = h.run(&["apply", "quiet", tar, "--no-sync"]);
    assert!(o.status.success());
    assert!(o.stderr.is_empty(), "a bar on a non-terminal: {:?}", String::from_utf8_lossy(&o.stderr));
}
