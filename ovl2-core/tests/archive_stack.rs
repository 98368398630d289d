//! Random layer stacks through a real overlay mount: what the merged mount shows must equal
//! applying the same tars in order with AUFS rules (a model), ovl2's native `changes` must
//! equal Docker's `ChangesDirs` over the mounted trees, and `diff` -> `apply` must rebuild a
//! layer that mounts to the same tree.

mod common;
#[path = "common/docker_tool.rs"]
mod docker_tool;
#[path = "common/tarb.rs"]
mod tarb;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{require_root, Scratch};
use ovl2_core::{CreateOpts, Driver, Options};
use tarb::{tar, E};

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Dir(u32),
    File(Vec<u8>, u32),
    Link(String),
}

type Model = BTreeMap<String, Node>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn ancestors(p: &str) -> Vec<String> {
    let parts: Vec<&str> = p.split('/').collect();
    (1..parts.len()).map(|i| parts[..i].join("/")).collect()
}

fn remove_subtree(m: &mut Model, p: &str) {
    let pre = format!("{p}/");
    m.retain(|k, _| k != p && !k.starts_with(&pre));
}

fn under(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}/"))
}

/// One layer: its tar entries, with the model updated by AUFS rules as they are emitted.
fn gen_layer(rng: &mut Rng, m: &mut Model, layer: usize) -> Vec<E> {
    let names = ["a", "b", "c", "d"];
    let mut out = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let mut whited: Vec<String> = Vec::new();
    let mtime = 1_600_000_000 + layer as u64 * 1000;
    let rand_path = |rng: &mut Rng| {
        let depth = 1 + rng.below(3);
        (0..depth).map(|_| *rng.pick(&names)).collect::<Vec<_>>().join("/")
    };
    let ops = 3 + rng.below(6);
    for op in 0..ops {
        let kind = rng.below(100);
        // Ensures every ancestor of `p` is a directory, emitting entries as a real tar would.
        let parents = |m: &mut Model, out: &mut Vec<E>, created: &mut Vec<String>, p: &str| {
            for a in ancestors(p) {
                match m.get(&a) {
                    Some(Node::Dir(mode)) => out.push(E::dir(&format!("{a}/")).mode(*mode).mtime(mtime)),
                    _ => {
                        remove_subtree(m, &a);
                        m.insert(a.clone(), Node::Dir(0o755));
                        out.push(E::dir(&format!("{a}/")).mode(0o755).mtime(mtime));
                    }
                }
                created.push(a);
            }
        };
        let p = rand_path(rng);
        if whited.iter().any(|w| under(&p, w) || under(w, &p)) {
            continue;
        }
        // A non-directory this layer created, turned into a directory by the same layer,
        // would leave a plain (non-opaque) dir in the upper that merges with the lower one:
        // real layer tars never do that, and AUFS order would not describe the result.
        let mut to_dir = ancestors(&p);
        if kind >= 85 {
            to_dir.push(p.clone());
        }
        if to_dir.iter().any(|a| created.contains(a) && m.get(a).is_some_and(|n| !matches!(n, Node::Dir(_)))) {
            continue;
        }
        if kind < 40 {
            parents(m, &mut out, &mut created, &p);
            let content = format!("layer{layer} op{op} {}", rng.next() % 1000).into_bytes();
            let mode = *rng.pick(&[0o644, 0o600, 0o755, 0o4755]);
            remove_subtree(m, &p);
            m.insert(p.clone(), Node::File(content.clone(), mode));
            out.push(E::file(&p, &content).mode(mode).mtime(mtime + op as u64));
            created.push(p);
        } else if kind < 60 {
            let keys: Vec<String> = m.keys().cloned().collect();
            if keys.is_empty() {
                continue;
            }
            let x = rng.pick(&keys).clone();
            if created.iter().any(|c| under(c, &x)) || whited.iter().any(|w| under(&x, w) || under(w, &x)) {
                continue;
            }
            parents(m, &mut out, &mut created, &x);
            let (dir, base) = match x.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b.to_owned()),
                None => (String::new(), x.clone()),
            };
            out.push(E::file(&format!("{dir}.wh.{base}"), b"").mtime(mtime));
            remove_subtree(m, &x);
            whited.push(x);
        } else if kind < 75 {
            let dirs: Vec<String> =
                m.iter().filter(|(_, n)| matches!(n, Node::Dir(_))).map(|(k, _)| k.clone()).collect();
            if dirs.is_empty() {
                continue;
            }
            let d = rng.pick(&dirs).clone();
            if created.iter().any(|c| c.starts_with(&format!("{d}/")))
                || whited.iter().any(|w| under(&d, w) || under(w, &d))
            {
                continue;
            }
            parents(m, &mut out, &mut created, &d);
            let Some(Node::Dir(mode)) = m.get(&d).cloned() else { continue };
            out.push(E::dir(&format!("{d}/")).mode(mode).mtime(mtime));
            out.push(E::file(&format!("{d}/.wh..wh..opq"), b"").mtime(mtime));
            let pre = format!("{d}/");
            m.retain(|k, _| !k.starts_with(&pre));
            created.push(d);
        } else if kind < 85 {
            parents(m, &mut out, &mut created, &p);
            let target = format!("target-{}", rng.below(5));
            remove_subtree(m, &p);
            m.insert(p.clone(), Node::Link(target.clone()));
            out.push(E::symlink(&p, &target).mtime(mtime));
            created.push(p);
        } else {
            parents(m, &mut out, &mut created, &p);
            let mode = *rng.pick(&[0o755, 0o700, 0o750, 0o1777]);
            if !matches!(m.get(&p), Some(Node::Dir(_))) {
                remove_subtree(m, &p);
            }
            m.insert(p.clone(), Node::Dir(mode));
            out.push(E::dir(&format!("{p}/")).mode(mode).mtime(mtime));
            created.push(p);
        }
    }
    out
}

fn read_tree(root: &Path) -> Model {
    let mut m = Model::new();
    fn walk(root: &Path, p: &Path, m: &mut Model) {
        let mut names: Vec<PathBuf> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for n in names {
            let rel = n.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let md = std::fs::symlink_metadata(&n).unwrap();
            let node = if md.is_dir() {
                Node::Dir(md.permissions().mode() & 0o7777)
            } else if md.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&n).unwrap().to_str().unwrap().to_owned())
            } else {
                Node::File(std::fs::read(&n).unwrap(), md.mode() & 0o7777)
            };
            let is_dir = md.is_dir();
            m.insert(rel, node);
            if is_dir {
                walk(root, &n, m);
            }
        }
    }
    walk(root, root, &mut m);
    m
}

/// A tar's entries for comparison; whiteout markers' mtimes are the time of export.
fn entries_of(t: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(t);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let link = e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            let wh = name.rsplit('/').next().unwrap_or("").starts_with(".wh.");
            let mtime = if wh { 0 } else { h.mtime().unwrap() };
            format!(
                "{name} type={:?} mode={:o} {}:{} mtime={mtime} link={link} data={data:?}",
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap()
            )
        })
        .collect()
}

struct Mount(PathBuf);
impl Mount {
    fn new(target: &Path, lowers: &[PathBuf], spare: &Path) -> Mount {
        std::fs::create_dir_all(target).unwrap();
        let mut ls: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        if ls.len() == 1 {
            // overlay needs two lowers when there is no upper.
            ls.push(spare.display().to_string());
        }
        let data = CString::new(format!("lowerdir={}", ls.join(":"))).unwrap();
        rustix::mount::mount("overlay", target, "overlay", rustix::mount::MountFlags::RDONLY, Some(data.as_c_str()))
            .unwrap_or_else(|e| panic!("overlay mount of {ls:?}: {e}"));
        Mount(target.to_owned())
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn diff_of(home: &Path, id: &str) -> PathBuf {
    home.join(id).join("diff")
}

#[test]
fn random_stacks_mount_to_the_aufs_model() {
    if !require_root() {
        return;
    }
    let docker = docker_tool::docker_tar_bin();
    let s = Scratch::new("stacks");
    let d = Driver::open(s.home(), Options { sync: false, ..Options::default() }).unwrap();
    let spare = s.path().join("spare");
    std::fs::create_dir_all(&spare).unwrap();
    let seeds = std::env::var("OVL2_STACK_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40u64);
    for seed in 1..=seeds {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut model = Model::new();
        let depth = 2 + rng.below(3);
        let mut ids: Vec<String> = Vec::new();
        for layer in 0..depth {
            let before = model.clone();
            let entries = gen_layer(&mut rng, &mut model, layer);
            let id = format!("s{seed}-{layer}");
            let parent = ids.last().cloned();
            d.create(&id, parent.as_deref(), &CreateOpts::default()).unwrap();
            let data = tar(&entries);
            let st = d
                .apply_diff(&id, parent.as_deref(), &data[..])
                .unwrap_or_else(|e| panic!("seed {seed} layer {layer}: {e}"));
            assert_eq!(d.diff_size(&id, parent.as_deref()).unwrap(), st.size);
            ids.push(id.clone());
            let lowers: Vec<PathBuf> = ids.iter().rev().map(|i| diff_of(&s.home(), i)).collect();
            let mnt = s.path().join(format!("m-{seed}-{layer}"));
            let m = Mount::new(&mnt, &lowers, &spare);
            assert_eq!(
                read_tree(&mnt),
                model,
                "seed {seed} layer {layer}: merged mount differs from the AUFS model\n{:?}",
                entries.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect::<Vec<_>>()
            );
            // ovl2's native changes against Docker's ChangesDirs over the mounted trees.
            if let Some(bin) = &docker {
                let pm;
                let old = if layer == 0 {
                    spare.clone()
                } else {
                    let pmnt = s.path().join(format!("p-{seed}-{layer}"));
                    pm = Mount::new(&pmnt, &lowers[1..], &spare);
                    pm.0.clone()
                };
                let out = std::process::Command::new(bin).arg("changes").arg(&mnt).arg(&old).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let theirs = String::from_utf8(out.stdout).unwrap();
                let ours: String =
                    d.changes(&id, parent.as_deref()).unwrap().iter().map(|c| format!("{c}\n")).collect();
                assert_eq!(ours, theirs, "seed {seed} layer {layer}: changes differ from Docker's");
                if layer >= 2 {
                    // Against a layer that is not the parent: the naive comparison.
                    let gmnt = s.path().join(format!("g-{seed}-{layer}"));
                    let gm = Mount::new(&gmnt, &lowers[2..], &spare);
                    let out = std::process::Command::new(bin).arg("changes").arg(&mnt).arg(&gm.0).output().unwrap();
                    let theirs = String::from_utf8(out.stdout).unwrap();
                    let ours: String =
                        d.changes(&id, Some(&ids[layer - 2])).unwrap().iter().map(|c| format!("{c}\n")).collect();
                    assert_eq!(ours, theirs, "seed {seed} layer {layer}: naive changes differ from Docker's");
                    // The naive diff against the grandparent: Docker's ExportChanges.
                    let out = std::process::Command::new(bin).arg("export").arg(&mnt).arg(&gm.0).output().unwrap();
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                    let mut t = Vec::new();
                    d.diff(&id, Some(&ids[layer - 2]), &mut t).unwrap();
                    assert_eq!(
                        entries_of(&t),
                        entries_of(&out.stdout),
                        "seed {seed} layer {layer}: naive diff differs"
                    );
                }
                if layer >= 1 {
                    // A whole layer against no parent: Docker tars the mounted view.
                    let out = std::process::Command::new(bin).arg("tar").arg(&mnt).output().unwrap();
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                    let mut t = Vec::new();
                    d.diff(&id, None, &mut t).unwrap();
                    assert!(
                        t == out.stdout,
                        "seed {seed} layer {layer}: naive diff with no parent differs from Docker's bytes"
                    );
                }
            }
            drop(m);
            // Export and re-apply on the same parent: the mount shows the same tree.
            let mut t = Vec::new();
            d.diff(&id, parent.as_deref(), &mut t).unwrap();
            let copy = format!("{id}-copy");
            d.create(&copy, parent.as_deref(), &CreateOpts::default()).unwrap();
            d.apply_diff(&copy, parent.as_deref(), &t[..]).unwrap();
            let mut lowers2 = lowers.clone();
            lowers2[0] = diff_of(&s.home(), &copy);
            let m2 = Mount::new(&s.path().join(format!("c-{seed}-{layer}")), &lowers2, &spare);
            assert_eq!(
                read_tree(&m2.0),
                model,
                "seed {seed} layer {layer}: diff -> apply changed the tree (was {before:?})"
            );
        }
    }
}
