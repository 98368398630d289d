//! Multi-process tests. This binary is its own worker: run with `worker ...` it loops over
//! store operations, so the tests can SIGKILL it at random moments or run several at once.
//! (A custom harness, because a killed worker must be a separate process.)

mod common;
#[path = "common/tarb.rs"]
mod tarb;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use ovl2_core::{CreateOpts, Driver, ErrorKind, Options, ProblemKind};

/// Tiny xorshift PRNG, seeded per worker, so failures are reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => {
            worker(Path::new(&args[2]), &args[3], args[4].parse().unwrap(), args[5].parse().unwrap());
            return;
        }
        Some("worker-getput") => return worker_getput(Path::new(&args[2]), &args[3]),
        Some("worker-containers") => return worker_containers(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("worker-imports") => return worker_imports(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("worker-getput-forever") => return worker_getput_forever(Path::new(&args[2]), &args[3]),
        Some("worker-hold") => return worker_hold(Path::new(&args[2]), &args[3]),
        Some("worker-hold-after-fork") => return worker_hold_after_fork(Path::new(&args[2]), &args[3]),
        Some("worker-rootless") => return worker_rootless(Path::new(&args[2]), &args[3]),
        Some("worker-fork-child-gets") => return worker_fork_child_gets(Path::new(&args[2]), &args[3]),
        Some("worker-fork-parent-holds") => return worker_fork_parent_holds(Path::new(&args[2]), &args[3]),
        Some("worker-fork-child-puts") => return worker_fork_child_puts(Path::new(&args[2]), &args[3]),
        Some("worker-low-fds-diff") => return worker_low_fds_diff(Path::new(&args[2])),
        Some("worker-open") => {
            Driver::open(Path::new(&args[2]), Options::default()).expect("open");
            return;
        }
        _ => {}
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tests: &[(&str, fn())] = &[
        ("kill_during_create_remove", kill_during_create_remove),
        ("processes_share_a_store", processes_share_a_store),
        ("mount_refcounts_across_processes", mount_refcounts_across_processes),
        ("killed_mount_holder_is_reconciled", killed_mount_holder_is_reconciled),
        ("rootless_get_put", rootless_get_put),
        ("kill_during_get_put", kill_during_get_put),
        ("kill_during_container_create_remove", kill_during_container_create_remove),
        ("kill_during_import_chain", kill_during_import_chain),
        ("dead_holder_seen_by_a_long_lived_driver", dead_holder_seen_by_a_long_lived_driver),
        ("forked_child_keeps_its_mount", forked_child_keeps_its_mount),
        ("forked_child_leaves_the_parents_references", forked_child_leaves_the_parents_references),
        ("forked_childs_put_is_not_the_parents", forked_childs_put_is_not_the_parents),
        ("holder_with_a_non_utf8_name_is_alive", holder_with_a_non_utf8_name_is_alive),
        ("a_mount_an_unmount_left_is_not_stacked_on", a_mount_an_unmount_left_is_not_stacked_on),
        ("a_child_forked_before_a_mount_does_not_keep_it_alive", a_child_forked_before_a_mount_does_not_keep_it_alive),
        ("naive_diff_of_a_deep_tree_fits_a_tight_fd_limit", naive_diff_of_a_deep_tree_fits_a_tight_fd_limit),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        let t = Instant::now();
        match std::panic::catch_unwind(f) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Loops creating and removing layers. `ops == 0` means forever (until killed).
fn worker(home: &Path, prefix: &str, seed: u64, ops: u64) {
    let d = Driver::open(home, Options::default()).expect("worker open");
    let mut rng = Rng(seed | 1);
    let co = CreateOpts::default();
    let mut n = 0u64;
    while ops == 0 || n < ops {
        n += 1;
        let layers = d.layers().expect("layers");
        let mine: Vec<_> = layers.iter().filter(|l| l.id.starts_with(prefix)).collect();
        if rng.below(2) == 0 || mine.is_empty() {
            let parent = &layers[rng.below(layers.len() as u64) as usize];
            let id = format!("{prefix}{seed}-{n}");
            match d.create(&id, Some(&parent.id), &co) {
                Ok(()) => {}
                // Another worker removed the parent between listing and creating.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::MaxDepth => {}
                Err(e) => panic!("create {id} on {}: {e}", parent.id),
            }
        } else {
            let victim = &mine[rng.below(mine.len() as u64) as usize];
            match d.remove(&victim.id, false) {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::Busy | ErrorKind::NotFound) => {}
                Err(e) => panic!("remove {}: {e}", victim.id),
            }
        }
    }
}

fn spawn_worker(home: &Path, prefix: &str, seed: u64, ops: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["worker", home.to_str().unwrap(), prefix, &seed.to_string(), &ops.to_string()])
        .spawn()
        .expect("spawn worker")
}

/// A killed process may leave only these behind: everything else would mean a half layer.
const CRASH_LEFTOVERS: &[ProblemKind] =
    &[ProblemKind::StaleStaging, ProblemKind::DanglingShortLink, ProblemKind::MissingCommitted];

fn kill_during_create_remove() {
    let s = Scratch::new("kill");
    let home = s.home();
    {
        let d = open(&home);
        d.create("base", None, &CreateOpts::default()).unwrap();
        d.create("mid", Some("base"), &CreateOpts::default()).unwrap();
    }
    let kills: u64 = std::env::var("OVL2_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut rng = Rng(0x5eed_1234_abcd ^ u64::from(std::process::id()));
    let mut seen = BTreeSet::new();
    let mut layer_counts = Vec::new();
    for k in 0..kills {
        let seed = rng.next();
        let mut child = spawn_worker(&home, "w", seed, 0);
        // Most kills land mid-operation: the worker does nothing but create and remove.
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(25_000)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "worker {k} (seed {seed}) exited by itself: {status}");

        let raw = Driver::open(&home, Options { repair_on_open: false, ..Options::default() }).unwrap();
        for p in raw.check().unwrap() {
            assert!(CRASH_LEFTOVERS.contains(&p.kind), "kill {k} (seed {seed}) left a half layer: {p:?}");
            seen.insert(p.kind);
        }
        drop(raw);
        let d = open(&home);
        let problems = d.check().unwrap();
        assert!(problems.is_empty(), "kill {k} (seed {seed}): after open: {problems:?}");
        let layers = d.layers().unwrap();
        for l in &layers {
            assert_complete(&home, &l.id, l.parent.is_some());
        }
        layer_counts.push(layers.len());
    }
    eprintln!(
        "  {kills} kills; leftovers repaired: {seen:?}; layers after kills: min {} max {}",
        layer_counts.iter().min().unwrap(),
        layer_counts.iter().max().unwrap()
    );
    assert!(layer_counts.iter().max().unwrap() > &2, "workers made progress between kills");
}

fn processes_share_a_store() {
    let s = Scratch::new("procs");
    let home: PathBuf = s.home();
    {
        let d = open(&home);
        d.create("base", None, &CreateOpts::default()).unwrap();
    }
    let workers: Vec<Child> = (0..4).map(|i| spawn_worker(&home, &format!("p{i}-"), 1000 + i, 150)).collect();
    for mut w in workers {
        let st = w.wait().unwrap();
        assert!(st.success(), "a worker failed: {st}");
    }
    let d = open(&home);
    assert!(d.check().unwrap().is_empty());
    let layers = d.layers().unwrap();
    for l in &layers {
        assert_complete(&home, &l.id, l.parent.is_some());
    }
    // Every parent named in the listing exists: no remove raced a create on top of it.
    let ids: BTreeSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    for l in &layers {
        if let Some(p) = &l.parent {
            assert!(ids.contains(p.as_str()), "{} has missing parent {p}", l.id);
        }
    }
    eprintln!("  {} layers after 4 x 150 concurrent operations", layers.len());
}

/// 8 threads x 200 get/put of one layer.
fn worker_getput(home: &Path, id: &str) {
    let d = std::sync::Arc::new(Driver::open(home, Options::default()).expect("open"));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let d = d.clone();
            let id = id.to_owned();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let p = d.get(&id, None).expect("get");
                    assert!(p.join("bottom").exists(), "lower visible while held");
                    d.put(&id).expect("put");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

/// Mounts a layer, says so, and waits to be killed. With `OVL2_TEST_COMM` set, first renames
/// the process to those bytes (hex), as a process with a non-UTF-8 name would be.
fn worker_hold(home: &Path, id: &str) {
    if let Ok(hex) = std::env::var("OVL2_TEST_COMM") {
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        rustix::thread::set_name(&std::ffi::CString::new(bytes).unwrap()).expect("PR_SET_NAME");
    }
    let d = Driver::open(home, Options::default()).expect("open");
    let p = d.get(id, None).expect("get");
    println!("{}", p.display());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

/// Gets and puts `id` (the holder file stays), forks a child that only sleeps, then gets
/// `id` again, prints "<child pid> <merged>" and waits to be killed.
fn worker_hold_after_fork(home: &Path, id: &str) {
    let d = Driver::open(home, Options::default()).expect("open");
    d.get(id, None).expect("first get");
    d.put(id).expect("put");
    let child = match fork() {
        Some(pid) => pid,
        None => {
            std::thread::sleep(Duration::from_secs(120));
            exit_child(true)
        }
    };
    let p = d.get(id, None).expect("get after the fork");
    println!("{child} {}", p.display());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

/// Runs inside `unshare -Urm`: mounts with userxattr, writes through the mount, puts.
fn worker_rootless(home: &Path, id: &str) {
    let d = Driver::open(home, Options::default()).expect("open in user namespace");
    let st = d.status().expect("status");
    let userxattr = st.iter().find(|(k, _)| k == "userxattr").map(|(_, v)| v.clone());
    assert_eq!(userxattr.as_deref(), Some("true"), "status must say userxattr inside a user namespace");
    let p = d.get(id, None).expect("rootless get");
    assert!(p.join("bottom").exists());
    std::fs::write(p.join("from-userns"), "hello").expect("write through rootless mount");
    std::fs::remove_file(p.join("bottom")).expect("delete lower file in userns");
    d.put(id).expect("rootless put");
    assert!(!p.exists(), "merged removed");
    println!("rootless ok");
}

fn mounted(p: &Path) -> bool {
    mountinfo_options(p).is_some()
}

fn small_chain(home: &Path) {
    let d = open(home);
    d.create("base", None, &CreateOpts::default()).unwrap();
    std::fs::write(home.join("base/diff/bottom"), "b").unwrap();
    d.create_rw("ctr", Some("base"), &CreateOpts::default()).unwrap();
}

fn mount_refcounts_across_processes() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("mrefs");
    let home = s.home();
    small_chain(&home);
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["worker-getput", home.to_str().unwrap(), "ctr"])
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success(), "a get/put worker failed");
    assert!(!mounted(&home.join("ctr/merged")), "no mount left");
    assert!(!home.join("ctr/merged").exists());
    assert!(open(&home).mounts().unwrap().is_empty(), "zero count");
    let rec = std::fs::read_to_string(home.join(".ovl2/mounts/ctr")).unwrap_or_default();
    assert!(rec.is_empty() || rec.starts_with("end\n"), "zero count: the record holds no reference: {rec:?}");
}

fn killed_mount_holder_is_reconciled() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("mkill");
    let home = s.home();
    small_chain(&home);
    let (mut child, merged) = spawn_holder(&home, "ctr");
    assert!(mounted(&merged), "the worker mounted {merged:?}");
    // Another process's view while the holder lives: one reference, held by a process.
    let m = Driver::open(&home, Options::default()).unwrap().mounts().unwrap();
    assert_eq!((m.len(), m[0].count, m[0].processes), (1, 1, 1), "{m:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(mounted(&merged), "the kernel keeps the mount after its holder dies");
    let d = open(&home); // reconciles
    assert!(!mounted(&merged), "open dropped the dead holder's reference and unmounted");
    assert!(d.mounts().unwrap().is_empty());
    assert!(!merged.exists());
}

fn rootless_get_put() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("rootless");
    let home = s.home();
    small_chain(&home);
    let out = Command::new("unshare")
        .args([
            "-Urm",
            std::env::current_exe().unwrap().to_str().unwrap(),
            "worker-rootless",
            home.to_str().unwrap(),
            "ctr",
        ])
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "rootless worker failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(home.join("ctr/diff/from-userns")).unwrap(), "hello");
    // The whiteout made inside the user namespace is a real one.
    let wh = std::fs::symlink_metadata(home.join("ctr/diff/bottom")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    assert!(open(&home).check().unwrap().is_empty());
}

/// get/put in a loop, alternating process and persistent references, until killed.
fn worker_getput_forever(home: &Path, id: &str) {
    let d = Driver::open(home, Options::default()).expect("open");
    let persistent = ovl2_core::MountOpts { persistent: true, ..Default::default() };
    loop {
        d.get(id, None).expect("get");
        d.get_with(id, &persistent).expect("persistent get");
        d.put(id).expect("put");
        d.put(id).expect("put");
    }
}

fn kill_during_get_put() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("mkillloop");
    let home = s.home();
    small_chain(&home);
    let merged = home.join("ctr/merged");
    let mut rng = Rng(0xfeed_beef ^ u64::from(std::process::id()));
    let mut stranded = 0;
    for k in 0..60 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["worker-getput-forever", home.to_str().unwrap(), "ctr"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(3_000 + rng.below(20_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // A persistent reference can legitimately survive its process; drop it the way a
        // user would, then nothing may be left.
        let d = open(&home);
        for m in d.mounts().unwrap() {
            assert_eq!(m.processes, 0, "kill {k}: a dead process still holds a reference: {m:?}");
            for _ in 0..m.persistent {
                d.put("ctr").unwrap();
            }
            stranded += 1;
        }
        assert!(d.mounts().unwrap().is_empty(), "kill {k}: references left");
        assert!(!mounted(&merged), "kill {k}: still mounted");
        assert!(!merged.exists(), "kill {k}: merged/ left");
        assert!(d.check().unwrap().is_empty());
    }
    eprintln!("  60 kills during get/put; {stranded} left a persistent reference, as designed");
}

/// Creates and removes containers on the image `top` until killed.
fn worker_containers(home: &Path, seed: u64) {
    let d = Driver::open(home, Options::default()).expect("open");
    let mut rng = Rng(seed | 1);
    let mut n = 0u64;
    loop {
        n += 1;
        let ctr = format!("c{seed}-{n}");
        d.create_container(&ctr, "top", &ovl2_core::ContainerOpts::default()).expect("create_container");
        if rng.below(2) == 0 {
            d.remove_container(&ctr, false).expect("remove_container");
        }
    }
}

fn kill_during_container_create_remove() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ckill");
    let home = s.home();
    {
        let d = open(&home);
        d.create("top", None, &CreateOpts::default()).unwrap();
        std::fs::create_dir_all(home.join("top/diff/etc")).unwrap();
    }
    let mut rng = Rng(0xc0ffee ^ u64::from(std::process::id()));
    let mut repaired = 0;
    for k in 0..60 {
        let seed = rng.next() % 1_000_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["worker-containers", home.to_str().unwrap(), &seed.to_string()])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(5_000 + rng.below(40_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        let raw = Driver::open(&home, Options { repair_on_open: false, ..Options::default() }).unwrap();
        repaired += raw.check().unwrap().iter().filter(|p| p.kind == ProblemKind::IncompleteContainer).count();
        drop(raw);
        let d = open(&home);
        assert!(d.check().unwrap().is_empty(), "kill {k}: {:?}", d.check().unwrap());
        assert!(d.mounts().unwrap().is_empty(), "kill {k}: the init mount outlived its process");
        let layers = d.layers().unwrap();
        let ids: BTreeSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
        for l in &layers {
            if let Some(ctr) = l.id.strip_suffix("-init") {
                assert!(ids.contains(ctr), "kill {k}: init layer {} without its container", l.id);
            } else if l.id != "top" {
                assert!(ids.contains(format!("{}-init", l.id).as_str()), "kill {k}: container {} without init", l.id);
            }
        }
        assert!(std::fs::read_dir(home.join(".ovl2/pending")).unwrap().next().is_none());
        // A container on top implies the marker. (Removing containers never takes it back,
        // as in Docker; only a rolled-back create does.)
        if layers.len() > 1 {
            assert!(home.join("top/committed").exists(), "kill {k}: a container sits on an uncommitted top");
        }
    }
    eprintln!("  60 kills; {repaired} half-made containers rolled back by open");
}

/// The three tarballs of each chain `kill_during_import_chain` imports: layer `i` holds
/// `layer{i}/f` (a few files, so an apply takes long enough to be cut).
fn import_tars() -> Vec<Vec<u8>> {
    (0..3)
        .map(|i| {
            let files: Vec<tarb::E> =
                (0..40).map(|k| tarb::E::file(&format!("layer{i}/f{k}"), &[b'x'; 3000][..])).collect();
            tarb::tar(&files)
        })
        .collect()
}

/// Imports 3-layer chains `i<seed>x<n>` onto `base` until killed.
fn worker_imports(home: &Path, seed: u64) {
    let d = Driver::open(home, Options::default()).expect("open");
    let tars = import_tars();
    let mut n = 0u64;
    loop {
        n += 1;
        let top = format!("i{seed}x{n}");
        let readers: Vec<&[u8]> = tars.iter().map(Vec::as_slice).collect();
        d.import_chain(&top, Some("base"), readers, &ovl2_core::ApplyOpts::default()).expect("import_chain");
    }
}

/// A SIGKILL at any moment of `import_chain` leaves, after the next open, each chain whole
/// (three layers, each with its files) or gone, `base` committed only under a chain, and
/// `check` clean.
fn kill_during_import_chain() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("ikill");
    let home = s.home();
    open(&home).create("base", None, &CreateOpts::default()).unwrap();
    let mut rng = Rng(0x1a2b3c ^ u64::from(std::process::id()));
    let (mut rolled_back, mut whole) = (0, 0);
    for k in 0..40 {
        let seed = rng.next() % 1_000_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["worker-imports", home.to_str().unwrap(), &seed.to_string()])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(10_000 + rng.below(400_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        let raw = Driver::open(&home, Options { repair_on_open: false, ..Options::default() }).unwrap();
        rolled_back += usize::from(!raw.check().unwrap().is_empty());
        drop(raw);
        let d = open(&home);
        assert!(d.check().unwrap().is_empty(), "kill {k}: {:?}", d.check().unwrap());
        let mut chains: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for l in d.layers().unwrap() {
            if l.id != "base" {
                let top = l.id.split('-').next().unwrap().to_owned();
                chains.entry(top).or_default().push(l.id);
            }
        }
        for (top, ids) in &chains {
            assert_eq!(ids.len(), 3, "kill {k}: chain {top} is partial: {ids:?}");
            for (i, id) in ovl2_core::import_chain_ids(top, 3).iter().enumerate() {
                let f = home.join(id).join(format!("diff/layer{i}/f39"));
                assert!(f.exists(), "kill {k}: layer {id} of chain {top} lacks its applied files");
            }
        }
        whole = chains.len();
        assert_eq!(
            home.join("base/committed").exists(),
            !chains.is_empty(),
            "kill {k}: base is committed exactly when a chain sits on it"
        );
        assert!(std::fs::read_dir(home.join(".ovl2/pending")).unwrap().next().is_none(), "kill {k}");
    }
    eprintln!("  40 kills; {rolled_back} cut-off imports rolled back by open; {whole} whole chains kept");
}

/// Found in review: a Driver opened before the holder died must not stack a second mount
/// on the same upper/workdir (its open-time reconcile ran too early to see the death).
fn dead_holder_seen_by_a_long_lived_driver() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("deadlong");
    let home = s.home();
    small_chain(&home);
    let d = open(&home); // opened while the holder is still alive
    let (mut child, merged) = spawn_holder(&home, "ctr");
    child.kill().unwrap();
    child.wait().unwrap();
    let count = || mount_points_under(&merged).len();
    assert_eq!(count(), 1, "the dead holder's mount is still there");
    d.get("ctr", None).unwrap();
    assert_eq!(count(), 1, "exactly one mount on merged/ after get, not two stacked");
    d.put("ctr").unwrap();
    assert_eq!(count(), 0, "nothing left after the put");
    assert!(d.mounts().unwrap().is_empty());
}

/// Found in review of issue 13's changes: when a dead holder's mount is taken down but a
/// mount stays on merged/ (here one stacked on it; in life one locked in a user namespace),
/// a get must not stack a second overlay on the same upper and workdir.
fn a_mount_an_unmount_left_is_not_stacked_on() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("leftmount");
    let home = s.home();
    small_chain(&home);
    let d = open(&home);
    let (mut child, merged) = spawn_holder(&home, "ctr");
    rustix::mount::mount(c"none", &merged, c"tmpfs", rustix::mount::MountFlags::empty(), None)
        .expect("tmpfs stacked on merged/");
    child.kill().unwrap();
    child.wait().unwrap();
    let overlays = || mountinfo_lines().iter().filter(|(at, o)| at == &merged && o.contains("lowerdir")).count();
    let r = d.get("ctr", None);
    let (stacked, left) = (overlays(), mount_points_under(&merged).len());
    while mounted(&merged) {
        rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
    assert_eq!(stacked, 1, "a second overlay was stacked on merged/ ({r:?})");
    assert_eq!(r.expect_err("a mount is still in place").kind(), ErrorKind::Busy);
    assert!(left >= 1);
}

/// Found in review of issue 13's changes: the holder file now lasts as long as its Driver,
/// and a forked child shares its flock. A child forked while the Driver held nothing must
/// not keep alive the references the parent takes afterwards.
fn a_child_forked_before_a_mount_does_not_keep_it_alive() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("forklock");
    let home = s.home();
    small_chain(&home);
    let mut worker = Command::new(std::env::current_exe().unwrap())
        .args(["worker-hold-after-fork", home.to_str().unwrap(), "ctr"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(worker.stdout.take().unwrap()), &mut line).unwrap();
    let (pid, merged) = line.trim().split_once(' ').expect("pid and path");
    let (pid, merged): (libc::pid_t, PathBuf) = (pid.parse().unwrap(), PathBuf::from(merged));
    let mut worker = KillOnDrop(worker);
    assert!(mounted(&merged));
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    let d = open(&home);
    let still = mounted(&merged);
    // SAFETY: signals the sleeping child the worker forked (now reparented).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(!still, "the forked child kept the dead parent's mount alive");
    assert!(d.mounts().unwrap().is_empty());
}

/// Starts a worker that mounts `id` and waits to be killed; returns it with the merged path.
fn spawn_holder(home: &Path, id: &str) -> (Child, PathBuf) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["worker-hold", home.to_str().unwrap(), id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    (child, PathBuf::from(line.trim()))
}

/// Forks (the worker process is single-threaded, so fork is safe); `Some(pid)` in the parent.
fn fork() -> Option<libc::pid_t> {
    // SAFETY: called from a single-threaded worker process.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    (pid != 0).then_some(pid)
}

/// Leaves a forked child without running exit handlers or destructors twice.
fn exit_child(ok: bool) -> ! {
    // SAFETY: plain process exit.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

fn wait_child(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Runs `child` in a forked child and returns whether it succeeded.
fn fork_and_wait(child: impl FnOnce() -> bool) -> bool {
    // A child forked in the same clock tick as its parent started shares its start time;
    // real children (a multiprocessing pool) come much later.
    std::thread::sleep(Duration::from_millis(50));
    match fork() {
        Some(pid) => wait_child(pid),
        None => exit_child(std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false)),
    }
}

/// Another process opening the store (which reconciles every record, as `ovl2 ls` does).
fn open_elsewhere(home: &Path) {
    let st =
        Command::new(std::env::current_exe().unwrap()).args(["worker-open", home.to_str().unwrap()]).status().unwrap();
    assert!(st.success(), "worker-open failed");
}

/// Opens a Driver, forks; the child gets `id`, lets another process open the store, and
/// checks that its mount survived and its put works (issue 10, item 5a).
fn worker_fork_child_gets(home: &Path, id: &str) {
    let d = Driver::open(home, Options::default()).expect("open");
    let ok = fork_and_wait(|| {
        let p = d.get(id, None).expect("child get");
        open_elsewhere(home);
        let alive = mounted(&p) && p.join("bottom").exists();
        eprintln!("child: mount alive after another open: {alive}");
        let put = d.put(id);
        eprintln!("child: put: {put:?}");
        alive && put.is_ok() && !mounted(&p)
    });
    assert!(ok, "the forked child lost its mount or its put failed");
    assert!(!mounted(&home.join(id).join("merged")), "nothing left mounted");
}

/// The parent holds `id` and forks; the child drops its copy of the Driver and exits (and a
/// second child gets and puts the layer itself); the parent's reference must survive both.
fn worker_fork_parent_holds(home: &Path, id: &str) {
    let d = Driver::open(home, Options::default()).expect("open");
    let p = d.get(id, None).expect("parent get");
    match fork() {
        Some(pid) => assert!(wait_child(pid)),
        None => {
            drop(d);
            exit_child(true)
        }
    }
    open_elsewhere(home);
    assert!(mounted(&p), "a child dropping its copy of the Driver released the parent's reference");
    assert!(fork_and_wait(|| {
        let q = d.get(id, None).expect("child get");
        let r = d.put(id).is_ok() && mounted(&q);
        eprintln!("child: get/put on a layer the parent holds: {r}");
        r
    }));
    open_elsewhere(home);
    assert!(mounted(&p), "the child's put released the parent's reference");
    d.put(id).expect("parent put");
    assert!(!mounted(&p), "the parent's put unmounts");
}

/// The parent holds `id` once (and a base layer by a plain get) and forks; a child that puts
/// them is a new holder with nothing to give back: its put of `id` is refused, and neither
/// the parent's reference on disk nor its base-layer get in memory is spent by it.
fn worker_fork_child_puts(home: &Path, id: &str) {
    let d = Driver::open(home, Options::default()).expect("open");
    let p = d.get(id, None).expect("parent get");
    let base = d.get("base", None).expect("parent get of the base layer");
    assert!(!mounted(&base), "a base layer's get mounts nothing");
    assert!(fork_and_wait(|| {
        let put = d.put(id);
        eprintln!("child: put of a layer only the parent holds: {put:?}");
        let refused = put.is_err_and(|e| e.kind() == ErrorKind::InvalidArgument);
        let base_put = d.put("base");
        eprintln!("child: put of the base layer: {base_put:?}");
        refused && base_put.is_ok() && mounted(&p)
    }));
    open_elsewhere(home);
    assert!(mounted(&p), "the child's put released the parent's reference");
    assert_eq!(d.mounts().unwrap().len(), 1, "the parent's reference is still recorded");
    d.put("base").expect("the parent's put of its base-layer get");
    d.put(id).expect("parent put");
    assert!(!mounted(&p), "the parent's put unmounts");
}

fn run_worker(home: &Path, what: &str, id: &str) {
    let out = Command::new(std::env::current_exe().unwrap()).args([what, home.to_str().unwrap(), id]).output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Under an fd limit of 80, the naive diff (and changes) of a 600-deep tree against another
/// layer: the walk parks its views early enough to stay within it.
fn worker_low_fds_diff(home: &Path) {
    let lim = rustix::process::Rlimit { current: Some(80), maximum: None };
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    rustix::process::setrlimit(rustix::process::Resource::Nofile, rustix::process::Rlimit { maximum: max, ..lim })
        .expect("setrlimit");
    let d = Driver::open(home, Options { sync: false, ..Options::default() }).expect("open");
    let mut tar = Vec::new();
    let st = d.diff("child", Some("other"), &mut tar).expect("naive diff under the fd limit");
    assert_eq!(st.entries, 602, "600 directories, their file and the child's file");
    assert_eq!(d.changes("child", Some("other")).expect("naive changes under the fd limit").len(), 602);
}

/// Issue 13: views of a merged walk are parked only past an fd budget, which must follow the
/// process's limit (a fixed 128 failed this with EMFILE).
fn naive_diff_of_a_deep_tree_fits_a_tight_fd_limit() {
    let s = Scratch::new("lowfds");
    let home = s.home();
    let d = Driver::open(&home, Options { sync: false, ..Options::default() }).unwrap();
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("child", Some("base"), &CreateOpts::default()).unwrap();
    d.create("other", None, &CreateOpts::default()).unwrap();
    let deep: PathBuf = std::iter::repeat_n("d", 600).collect();
    std::fs::create_dir_all(home.join("base/diff").join(&deep)).unwrap();
    std::fs::write(home.join("base/diff").join(&deep).join("f"), "f").unwrap();
    std::fs::write(home.join("child/diff/top"), "t").unwrap();
    drop(d);
    run_worker(&home, "worker-low-fds-diff", "");
}

/// Issue 10, item 5a: a child's get after fork was recorded with the parent's start time,
/// so the next open by anyone decided the child was dead and unmounted its rootfs.
fn forked_child_keeps_its_mount() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("forkchild");
    let home = s.home();
    small_chain(&home);
    run_worker(&home, "worker-fork-child-gets", "ctr");
    assert!(open(&home).mounts().unwrap().is_empty());
}

fn forked_child_leaves_the_parents_references() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("forkparent");
    let home = s.home();
    small_chain(&home);
    run_worker(&home, "worker-fork-parent-holds", "ctr");
    assert!(open(&home).mounts().unwrap().is_empty());
}

/// Issue 13: the fork check became a fork generation (no `getpid` per get and put); a
/// child must still start as a new holder, never spending the parent's references.
fn forked_childs_put_is_not_the_parents() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("forkput");
    let home = s.home();
    small_chain(&home);
    run_worker(&home, "worker-fork-child-puts", "ctr");
    assert!(open(&home).mounts().unwrap().is_empty());
}

/// Issue 10, item 5b: a holder whose process name is not UTF-8 was recorded with start time
/// 0 and reaped by the next open.
fn holder_with_a_non_utf8_name_is_alive() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("comm");
    let home = s.home();
    small_chain(&home);
    std::env::set_var("OVL2_TEST_COMM", "ff2928fe20");
    let (child, merged) = spawn_holder(&home, "ctr");
    std::env::remove_var("OVL2_TEST_COMM");
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let comm = std::fs::read(format!("/proc/{}/comm", child.id())).unwrap();
    assert_eq!(comm, b"\xff)(\xfe \n", "the holder's name is set");
    let m = open(&home).mounts().unwrap();
    assert!(mounted(&merged), "the next open reaped a live holder with a non-UTF-8 name");
    assert_eq!((m.len(), m[0].processes), (1, 1), "{m:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let d = open(&home);
    assert!(!mounted(&merged), "once it is killed, the holder is reaped");
    assert!(d.mounts().unwrap().is_empty());
}

/// A worker killed however the test ends (a failed assertion must not leave it running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
