//! Deep trees (issue 10 item 4): every walk (diff, changes, diff-size, du, rm, the sweep on open)
//! works at any depth with a bounded number of fds and bounded memory. Each command runs as
//! its own process with RLIMIT_NOFILE 256; before, a file at depth 2000 made `diff` and `rm`
//! fail with EMFILE at 1024 fds, and after that every command.

mod common;

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;

const NOFILE: u64 = 256;

/// Bound on each command's data segment (heap and private mappings): the commands must not
/// grow with the tree, so they run with little room.
const DATA: u64 = 64 << 20;

/// `ovl2 ARGS` with at most 256 open files and a 64 MiB data segment.
fn limited(h: &Home, args: &[&str]) -> Command {
    let mut c = h.cmd();
    c.args(args);
    // SAFETY: setrlimit is async-signal-safe and touches no state of the parent.
    unsafe {
        c.pre_exec(|| {
            let l = rustix::process::Rlimit { current: Some(NOFILE), maximum: Some(NOFILE) };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, l).map_err(std::io::Error::from)?;
            let l = rustix::process::Rlimit { current: Some(DATA), maximum: Some(DATA) };
            rustix::process::setrlimit(rustix::process::Resource::Data, l).map_err(std::io::Error::from)
        });
    }
    c
}

/// Runs a limited command, output discarded; returns stderr on failure.
fn run_limited(h: &Home, args: &[&str]) -> Result<(), String> {
    let o = limited(h, args).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", o.status, String::from_utf8_lossy(&o.stderr)))
    }
}

/// Runs a limited command and returns how many lines it printed and the last one's end,
/// reading the output as it streams without keeping it.
fn count_lines(h: &Home, args: &[&str]) -> (usize, Vec<u8>) {
    use std::io::BufRead;
    let mut child = limited(h, args).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = 0usize;
    let mut last = Vec::new();
    let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut buf = Vec::new();
    while r.read_until(b'\n', &mut buf).unwrap() > 0 {
        lines += 1;
        last = buf[buf.len().saturating_sub(8)..].to_vec();
        buf.clear();
    }
    assert!(child.wait().unwrap().success(), "ovl2 {args:?} failed at the limits");
    (lines, last)
}

fn ok_limited(h: &Home, args: &[&str]) {
    if let Err(e) = run_limited(h, args) {
        panic!("ovl2 {args:?} at RLIMIT_NOFILE {NOFILE}: {e}");
    }
}

/// One 512-byte ustar header.
fn header(name: &[u8], ty: u8, size: usize) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let mut put = |at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}", w = len - 1);
        h[at..at + len - 1].copy_from_slice(s.as_bytes());
    };
    put(100, 8, 0o644);
    put(108, 8, 0);
    put(116, 8, 0);
    put(124, 12, size as u64);
    put(136, 12, 1_700_000_000);
    h[156] = ty;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

fn pad(v: &mut Vec<u8>) {
    while v.len() % 512 != 0 {
        v.push(0);
    }
}

/// The tar: a single file at depth `depth` (`d/d/.../d/f`), its path in a PAX
/// header, no directory entries.
fn deep_file_tar(depth: usize) -> Vec<u8> {
    let path = format!("{}f", "d/".repeat(depth));
    let rec_body = format!(" path={path}\n");
    let mut n = rec_body.len() + 1;
    while format!("{n}{rec_body}").len() != n {
        n = format!("{n}{rec_body}").len();
    }
    let rec = format!("{n}{rec_body}");
    let mut t = Vec::new();
    t.extend_from_slice(&header(b"PaxHeaders/f", b'x', rec.len()));
    t.extend_from_slice(rec.as_bytes());
    pad(&mut t);
    t.extend_from_slice(&header(b"f", b'0', 4));
    t.extend_from_slice(b"deep");
    pad(&mut t);
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// The commands the issue found failing, then proof the store is still usable.
fn every_walk_at_the_limit(h: &Home, id: &str, full_diff: bool) {
    if full_diff {
        ok_limited(h, &["diff", id, "-o", "/dev/null"]);
    } else {
        // The whole export of a 30,000-deep chain is 900 MB of tar headers (every entry
        // carries its full path), minutes in a debug build. Its walk runs to the bottom
        // first anyway (the redirect check), and the first 32 MiB of the stream reach depth
        // ~4,000, far past where 256 fds ran out before.
        use std::io::Read;
        let mut child = limited(h, &["diff", id, "--no-digest"]).stdout(Stdio::piped()).spawn().unwrap();
        let mut r = child.stdout.take().unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while got < 32 << 20 {
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0, "diff stopped after {got} bytes: {:?}", child.wait());
            got += n;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    ok_limited(h, &["changes", id]);
    ok_limited(h, &["diff-size", id]);
    ok_limited(h, &["du", id]);
    ok_limited(h, &["check"]);
    ok_limited(h, &["rm", id]);
    ok_limited(h, &["ls"]);
    ok_limited(h, &["create", &format!("after-{id}")]);
    assert!(!h.home().join(id).exists(), "{id} removed");
    let check = h.ok(&["check"]);
    assert!(!check.contains("staging"), "no leftovers: {check}");
}

/// Makes `d/d/.../d/LEAF` (`n` dirs) below `dir`, one mkdirat at a time, as a container would.
fn chain(dir: &std::path::Path, n: usize, leaf: &std::ffi::CStr) {
    let mut fd = rustix::fs::open(dir, rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY, 0.into()).unwrap();
    for _ in 0..n {
        match rustix::fs::mkdirat(fd.as_fd(), c"d", 0o700.into()) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => panic!("mkdir: {e}"),
        }
        fd = rustix::fs::openat(
            fd.as_fd(),
            c"d",
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW,
            0.into(),
        )
        .unwrap();
    }
    let f = rustix::fs::openat(
        fd.as_fd(),
        leaf,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::TRUNC,
        0o644.into(),
    )
    .unwrap();
    rustix::io::write(&f, b"changed in the container").unwrap();
}

#[test]
fn a_file_at_depth_2000_works_at_256_fds() {
    if !require_root() {
        return;
    }
    let h = Home::new("deep-2000");
    let tar = h.scratch().join("deep.tar");
    std::fs::write(&tar, deep_file_tar(2000)).unwrap();
    h.ok(&["create", "deep"]);
    h.ok(&["apply", "deep", tar.to_str().unwrap()]);
    let mut p = h.home().join("deep/diff");
    for _ in 0..40 {
        p.push("d");
    }
    assert!(p.is_dir(), "the tar applied");
    let (lines, last) = count_lines(&h, &["changes", "deep"]);
    assert_eq!(lines, 2001, "2000 dirs and the file are added");
    assert_eq!(last, b"d/d/d/f\n");
    // A container layer that copied the whole chain up and changed the file: the walk meets
    // the same 2000 directories in the upper and in the lower.
    h.ok(&["create", "ctr", "--parent", "deep"]);
    chain(&h.home().join("ctr/diff"), 2000, c"f");
    let (lines, last) = count_lines(&h, &["changes", "ctr"]);
    assert_eq!(lines, 2001, "every dir on the path and the file are modified");
    assert_eq!(last, b"d/d/d/f\n");
    // Against another layer, Docker's naive path walks both merged views in full.
    h.ok(&["create", "empty"]);
    let (lines, _) = count_lines(&h, &["changes", "ctr", "--parent", "empty"]);
    assert_eq!(lines, 2001, "against an empty layer everything is added");
    every_walk_at_the_limit(&h, "ctr", true);
    every_walk_at_the_limit(&h, "deep", true);
}

/// A container nesting 30,000 directories (made here directly in the layer's diff, one
/// mkdirat at a time). Every command also runs with a 64 MiB data segment: `changes` used to
/// hold every full path (900 MB for this chain).
#[test]
fn a_chain_of_30000_dirs_works_at_256_fds_in_bounded_memory() {
    if !require_root() {
        return;
    }
    let h = Home::new("deep-30000");
    h.ok(&["create", "base"]);
    h.ok(&["create", "ctr", "--parent", "base"]);
    chain(&h.home().join("ctr/diff"), 30_000, c"leaf");
    let (lines, last) = count_lines(&h, &["changes", "ctr"]);
    assert_eq!(lines, 30_001, "30,000 dirs and the leaf are added");
    assert_eq!(last, b"/d/leaf\n");
    every_walk_at_the_limit(&h, "ctr", false);
}
