//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ovl2_core::{Driver, Options};

/// A name part no other scratch dir of this process (or a recent one) has.
fn unique() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:x}{:x}", t.subsec_nanos(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A scratch directory on the real filesystem (under $TMPDIR), removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let base = std::env::var_os("OVL2_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!("ovl2-test-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn home(&self) -> PathBuf {
        self.0.join("home")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A failed test may leave mounts behind; detach them so the tree can go.
        for m in mount_points_under(&self.0) {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mount points at or below `root`, deepest first, from /proc/self/mountinfo.
pub fn mount_points_under(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo_lines().into_iter().map(|(p, _)| p).filter(|p| p.starts_with(root)).collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

/// The super options of the mount at exactly `p`, if something is mounted there.
pub fn mountinfo_options(p: &Path) -> Option<String> {
    mountinfo_lines().into_iter().rfind(|(at, _)| at == p).map(|(_, opts)| opts)
}

/// Every mount of this namespace as (mount point, super options). Read as bytes: a
/// parallel test's mount at a non-UTF-8 path must not make every other mount invisible
/// (a UTF-8 read of the whole file fails, and the mounts looked gone).
pub fn mountinfo_lines() -> Vec<(PathBuf, String)> {
    use std::os::unix::ffi::OsStringExt;
    let info = std::fs::read("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
    info.split(|&b| b == b'\n')
        .filter_map(|l| {
            let point = l.split(|&b| b == b' ').nth(4)?;
            let opts = l.rsplit(|&b| b == b' ').next()?;
            Some((
                PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo(point))),
                String::from_utf8_lossy(opts).into_owned(),
            ))
        })
        .collect()
}

/// Mountinfo escapes space, tab, newline and backslash (every byte it must) as `\ooo` octal.
pub fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

pub fn open(home: &Path) -> Driver {
    Driver::open(home, Options::default()).unwrap()
}

pub fn open_fast(home: &Path) -> Driver {
    Driver::open(home, Options { sync: false, ..Options::default() }).unwrap()
}

/// Whether tests that need root must run (CI) rather than skip.
pub fn require_root() -> bool {
    let strict = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("OVL2_REQUIRE_MOUNT").is_ok_and(|v| v == "1");
    let root = rustix::process::geteuid().is_root();
    if !root && strict {
        panic!("this test needs root and CI=true/OVL2_REQUIRE_MOUNT=1 forbids skipping it");
    }
    if !root {
        eprintln!("skipping: needs root (set CI=true to make this a failure)");
    }
    root
}

/// Everything in a tree, for before/after comparisons: path -> (type, mode, uid, gid, content or target).
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
    let md = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(_) => return,
    };
    let rel = p.strip_prefix(root).unwrap().display().to_string();
    let ft = md.file_type();
    let desc = if ft.is_symlink() {
        format!("link -> {}", std::fs::read_link(p).unwrap().display())
    } else if ft.is_dir() {
        format!("dir {:o} {}:{}", md.permissions().mode() & 0o7777, md.uid(), md.gid())
    } else if ft.is_file() {
        let c = std::fs::read(p).unwrap_or_default();
        format!(
            "file {:o} {}:{} {:?}",
            md.permissions().mode() & 0o7777,
            md.uid(),
            md.gid(),
            String::from_utf8_lossy(&c)
        )
    } else {
        format!("other {:o}", md.mode())
    };
    out.insert(rel, desc);
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for n in names {
            walk(root, &n, out);
        }
    }
}

pub fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn read(p: &Path) -> String {
    String::from_utf8(std::fs::read(p).unwrap()).unwrap()
}

/// Asserts a layer is complete: diff, a valid link with a matching l/ symlink, and lower and
/// work exactly when it has a parent.
pub fn assert_complete(home: &Path, id: &str, has_parent: bool) {
    let dir = home.join(id);
    assert!(dir.join("diff").is_dir(), "{id}: diff");
    let link = read(&dir.join("link"));
    assert!(ovl2_core::id::is_short_id(link.as_bytes()), "{id}: link {link:?}");
    assert_eq!(
        std::fs::read_link(home.join("l").join(&link)).unwrap(),
        PathBuf::from(format!("../{id}/diff")),
        "{id}: l/{link}"
    );
    assert_eq!(dir.join("lower").exists(), has_parent, "{id}: lower");
    assert_eq!(dir.join("work").is_dir(), has_parent, "{id}: work");
}

/// Mounts a tmpfs with few inodes at `dir`, so ENOSPC can be made to hit any step.
pub fn tiny_fs(dir: &Path, opts: &std::ffi::CStr) {
    std::fs::create_dir_all(dir).unwrap();
    rustix::mount::mount(c"ovl2-test", dir, c"tmpfs", rustix::mount::MountFlags::empty(), opts).unwrap();
}

/// Fills the filesystem's inodes with empty files in `dir`; returns how many it made.
/// Deleting `dir/<k>` frees one inode again.
pub fn fill_inodes(dir: &Path) -> usize {
    std::fs::create_dir(dir).unwrap();
    let mut n = 0;
    while std::fs::write(dir.join(n.to_string()), "").is_ok() {
        n += 1;
    }
    n
}
