//! Mount benchmark: ovl2's `get` beside the bare syscalls for the same chain, in one run.
//!
//! Run as root: `cargo run --release -p ovl2-core --example bench_mount [ROUNDS]`.
//! Prints a Markdown table (medians; ratio = ovl2 / bare) for docs/benchmarks.md.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ovl2_core::{CreateOpts, Driver, MountOpts, MountStrategy, Options};
use rustix::fs::{Mode, OFlags};
use rustix::mount::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A store with an image chain of `n` layers and a read-write leaf `top` on it.
fn build(root: &Path, n: usize) -> PathBuf {
    let home = root.join(format!("chain{n}"));
    let d = Driver::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    d.create("L1", None, &CreateOpts::default()).unwrap();
    for i in 2..=n {
        d.create(&format!("L{i}"), Some(&format!("L{}", i - 1)), &CreateOpts::default()).unwrap();
    }
    d.create_rw("top", Some(&format!("L{n}")), &CreateOpts::default()).unwrap();
    home
}

fn lowers(home: &Path) -> Vec<String> {
    std::fs::read_to_string(home.join("top/lower"))
        .unwrap()
        .split(':')
        .map(|s| s.trim_start_matches("l/").to_owned())
        .collect()
}

fn unmount(p: &Path) {
    rustix::mount::unmount(p, UnmountFlags::DETACH).unwrap();
}

/// The bare new-API sequence ovl2 issues, without ovl2 around it.
fn bare_new(home: &Path, lids: &[String], fds: bool) {
    let open =
        |p: &Path| rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
    fsconfig_set_string(&fs, "source", "overlay").unwrap();
    fsconfig_set_string(&fs, "index", "off").unwrap();
    let mut keep: Vec<OwnedFd> = Vec::new();
    for l in lids {
        let p = home.join("l").join(l);
        if fds {
            let fd = open(&p);
            fsconfig_set_fd(&fs, "lowerdir+", &fd).unwrap();
            keep.push(fd);
        } else {
            fsconfig_set_string(&fs, "lowerdir+", p.to_str().unwrap()).unwrap();
        }
    }
    for (k, d) in [("upperdir", "top/diff"), ("workdir", "top/work")] {
        if fds {
            let fd = open(&home.join(d));
            fsconfig_set_fd(&fs, k, &fd).unwrap();
            keep.push(fd);
        } else {
            fsconfig_set_string(&fs, k, home.join(d).to_str().unwrap()).unwrap();
        }
    }
    fsconfig_create(&fs).unwrap();
    let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).unwrap();
    move_mount(&m, "", rustix::fs::CWD, home.join("top/merged").as_path(), MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .unwrap();
}

/// The bare `mount(2)` call with the option string form ovl2 would choose for this chain.
fn bare_legacy(home: &Path, lids: &[String]) -> &'static str {
    let page = rustix::param::page_size();
    let abs: Vec<String> = lids.iter().map(|l| format!("{}/l/{l}", home.display())).collect();
    let data = format!(
        "index=off,lowerdir={},upperdir={}/top/diff,workdir={}/top/work",
        abs.join(":"),
        home.display(),
        home.display()
    );
    if data.len() < page {
        mount("overlay", home.join("top/merged"), "overlay", MountFlags::empty(), Some(c_str(&data).as_c_str()))
            .unwrap();
        return "absolute";
    }
    let rel: Vec<String> = lids.iter().map(|l| format!("l/{l}")).collect();
    let data = format!("index=off,lowerdir={},upperdir=top/diff,workdir=top/work", rel.join(":"));
    if data.len() < page {
        // The bare call runs with the cwd already at home (this benchmark chdirs once).
        mount("overlay", "top/merged", "overlay", MountFlags::empty(), Some(c_str(&data).as_c_str())).unwrap();
        return "relative";
    }
    let mut fds = Vec::new();
    for l in lids {
        fds.push(
            rustix::fs::open(home.join("l").join(l), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .unwrap(),
        );
    }
    let u = rustix::fs::open(home.join("top/diff"), OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let w = rustix::fs::open(home.join("top/work"), OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let nums: Vec<String> = fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
    let data = format!("index=off,lowerdir={},upperdir={},workdir={}", nums.join(":"), u.as_raw_fd(), w.as_raw_fd());
    let target = home.join("top/merged");
    rustix::process::chdir("/proc/self/fd").unwrap();
    mount("overlay", &target, "overlay", MountFlags::empty(), Some(c_str(&data).as_c_str())).unwrap();
    rustix::process::chdir(home).unwrap();
    "fd"
}

fn c_str(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let root = std::env::temp_dir().join(format!("ovl2-bench-mount-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    println!("| lowers (+ upper) | strategy | ovl2 first `get` | bare mount syscalls | ratio | bare + `mkdir merged` | ratio |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for n in [1usize, 32, 128, 499] {
        let home = build(&root, n);
        let lids = lowers(&home);
        rustix::process::chdir(&home).unwrap();
        for (name, strategy, disabled) in [
            ("new (fds)", MountStrategy::New, vec![]),
            ("new (paths)", MountStrategy::New, vec!["lowerdir+fd".to_string()]),
            ("legacy", MountStrategy::Legacy, vec![]),
        ] {
            let d = Driver::open(
                &home,
                Options {
                    sync: false,
                    mount_strategy: Some(strategy),
                    disabled_features: disabled.clone(),
                    ..Options::default()
                },
            )
            .unwrap();
            let merged = home.join("top/merged");
            let (mut ours, mut bare, mut bare_mk) = (Vec::new(), Vec::new(), Vec::new());
            let mut form = "";
            for _ in 0..rounds {
                // Interleave the two so drift in the machine hits both alike.
                let t = Instant::now();
                d.get("top", None).unwrap();
                ours.push(t.elapsed());
                d.put("top").unwrap();
                // Docker's format keeps merged/ only while mounted, so ovl2 creates it on
                // every first get; time the bare path with and without that mkdir.
                let t0 = Instant::now();
                std::fs::create_dir(&merged).unwrap();
                let t = Instant::now();
                match name {
                    "new (fds)" => bare_new(&home, &lids, true),
                    "new (paths)" => bare_new(&home, &lids, false),
                    _ => form = bare_legacy(&home, &lids),
                }
                bare.push(t.elapsed());
                bare_mk.push(t0.elapsed());
                unmount(&merged);
                std::fs::remove_dir(&merged).unwrap();
            }
            let label = if name == "legacy" { format!("legacy ({form})") } else { name.to_owned() };
            let (o, b, bm) = (median(ours), median(bare), median(bare_mk));
            println!(
                "| {n} | {label} | {} | {} | {:.2}x | {} | {:.2}x |",
                us(o),
                us(b),
                o.as_secs_f64() / b.as_secs_f64(),
                us(bm),
                o.as_secs_f64() / bm.as_secs_f64()
            );
        }
    }
    // Repeat get/put of an already-mounted layer.
    let home = root.join("chain32");
    let d = Driver::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    d.get("top", None).unwrap();
    let iters = 100_000;
    let t = Instant::now();
    for _ in 0..iters {
        d.get("top", None).unwrap();
        d.put("top").unwrap();
    }
    let fast = t.elapsed() / iters;
    // The same from another process's point of view: a persistent reference goes to disk.
    let other = Driver::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    let p = MountOpts { persistent: true, ..MountOpts::default() };
    let mut slow = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        other.get_with("top", &p).unwrap();
        slow.push(t.elapsed());
        other.put("top").unwrap();
    }
    d.put("top").unwrap();
    println!();
    println!("| repeat get of a mounted layer | time per call |");
    println!("|---|---:|");
    println!("| same process (get + put pair, in-memory reference) | {} |", us(fast));
    println!("| another holder (record on disk, layer flock) | {} |", us(median(slow)));
    rustix::process::chdir("/").unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
