//! Multi-process tests. This binary is its own worker: run with `worker ...` it loops over
//! store operations, so the tests can SIGKILL it at random moments or run several at once.
//! (A custom harness, because a killed worker must be a separate process.)

mod common;

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
    if args.get(1).map(String::as_str) == Some("worker") {
        worker(Path::new(&args[2]), &args[3], args[4].parse().unwrap(), args[5].parse().unwrap());
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let tests: &[(&str, fn())] = &[("kill_during_create_remove", kill_during_create_remove), ("processes_share_a_store", processes_share_a_store)];
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
