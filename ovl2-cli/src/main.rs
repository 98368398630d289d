//! `ovl2`: the command line face of ovl2-core. Every command is one process and one store
//! operation; the store's own locks make concurrent invocations safe.
//!
//! Exit status (docs/cli-json.md): 0 success, 1 the command failed, 2 usage error; `check`
//! exits 1 while problems remain and 2 when it could not run. With `--json`, results are JSON
//! on stdout and an error is one JSON object on stderr.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
mod archive_cmd;
mod failure;
mod gen_cmd;
mod json;

use failure::{Failure, Res};

use ovl2_core::{
    ContainerOpts, CreateOpts, Driver, InitEntry, LayerInfo, MountOpts, MountStrategy, OpenMode, Options, Owner,
    Problem,
};

/// Docker overlay2-compatible layer store.
#[derive(Parser, Debug)]
#[command(
    name = "ovl2",
    version,
    about,
    propagate_version = true,
    after_help = "Exit status: 0 success, 1 failure, 2 usage error; check: 1 problems remain, 2 could not run.\n\
                  With --json an error is {\"error\": {\"kind\", \"message\", \"errno\"}} on stderr."
)]
struct Cli {
    /// Store directory (Docker's overlay2 home).
    #[arg(long, global = true, env = "OVL2_HOME", hide_env_values = true, default_value = "/var/lib/ovl2")]
    home: PathBuf,
    /// Most lower layers a layer may have (1 to 500; 128 keeps the store mountable by Docker).
    #[arg(long, global = true, default_value_t = ovl2_core::KERNEL_MAX_DEPTH)]
    max_depth: usize,
    /// auto, new (fsopen, lowerdir+) or legacy (mount(2)); default $OVL2_MOUNT_STRATEGY, else auto.
    #[arg(long, global = true, value_name = "STRATEGY")]
    mount_strategy: Option<MountStrategy>,
    /// Print JSON (shapes: docs/cli-json.md), errors too (on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create an empty store in --home (a missing or empty directory).
    ///
    /// A no-op on a store.
    Init,
    /// Create a layer.
    Create {
        /// New layer id.
        id: String,
        /// Parent layer (none: a base layer).
        #[arg(long)]
        parent: Option<String>,
        /// Create a read-write (container) layer.
        #[arg(long)]
        rw: bool,
        /// Storage option KEY=VALUE (Docker's --storage-opt).
        #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
        storage_opt: Vec<String>,
    },
    /// Remove layers (--recursive: and the layers built on them).
    ///
    /// A layer that other layers build on is refused; --recursive removes it with all of them,
    /// deepest first. A layer that is a containerd snapshot of ovl2-snapshotter is refused
    /// (remove it through containerd) unless --force.
    #[command(alias = "remove")]
    Rm {
        /// Layer ids; each is removed in turn, and a failure does not stop the others.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Unmount it (and, with --recursive, the layers built on it) first instead of refusing,
        /// and remove it even when it is a containerd snapshot (`check --repair` then drops
        /// the snapshot's entry while ovl2-snapshotter is stopped).
        #[arg(long)]
        force: bool,
        /// Also remove every layer built on it, deepest first.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// List layers as a tree (children under their parent).
    #[command(alias = "list")]
    Ls {
        /// Print only the ids, one per line (sorted).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show layers' paths (Docker's GetMetadata).
    Inspect {
        /// Layer ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Show what the store runs on.
    Status,
    /// Show each layer's own disk usage and inode count.
    ///
    /// The layer's diff only, like `ctr snapshots usage`: bytes allocated on disk, every
    /// inode once.
    Du {
        /// Layer ids (none: every layer).
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Mount a layer (another reference if already mounted) and print its path.
    Mount {
        /// Layer id.
        id: String,
        /// SELinux mount label.
        #[arg(long)]
        label: Option<String>,
        /// Mount read-only (no upper), even if the layer is not committed.
        #[arg(long)]
        ro: bool,
        /// Mount with `volatile` (no syncs; for throwaway containers).
        #[arg(long)]
        volatile: bool,
    },
    /// Drop one mount reference per layer; the last one unmounts.
    ///
    /// A layer that is not mounted is an error.
    #[command(alias = "unmount")]
    Umount {
        /// Layer ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// List this store's mounts with their reference counts.
    Mounts,
    /// Unmount every layer of the store and drop all references.
    Cleanup,
    /// Container layers: `<ctr>-init` plus `<ctr>`, as Docker makes them.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Look for damage (exit 1: problems remain, 2: could not run).
    ///
    /// Exit status: 0 no problems, 1 problems remain (each line names the fix, or why there is
    /// none), 2 the check could not run.
    Check {
        /// Fix what can be fixed.
        #[arg(long)]
        repair: bool,
    },
    /// Layer archives: apply, diff, changes, diff-size, import.
    #[command(flatten)]
    Archive(archive_cmd::ArchiveCmd),
    /// Print a shell completion script.
    ///
    /// For SHELL: bash, zsh, fish, ...; see the README for where it goes.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the ovl2(1) man page, or write one per command into --out-dir.
    Man {
        /// Write ovl2.1 and ovl2-COMMAND.1 into this directory instead of printing ovl2.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ContainerCmd {
    /// Create `<CTR>-init` on the image top, fill it with Docker's init entries, and create
    /// the container layer `<CTR>` on it.
    Create {
        /// Container layer id.
        ctr: String,
        /// The image's top layer.
        #[arg(long)]
        image: String,
        /// Also create an empty file at this absolute path in the init layer.
        #[arg(long = "init-file", value_name = "PATH")]
        init_file: Vec<String>,
        /// Also create a directory at this absolute path in the init layer.
        #[arg(long = "init-dir", value_name = "PATH")]
        init_dir: Vec<String>,
        /// Start from no init entries instead of Docker's.
        #[arg(long)]
        no_default_init: bool,
        /// The container's root on the host, for user-namespaced containers.
        #[arg(long, value_name = "UID:GID")]
        remap_root: Option<String>,
    },
    /// Remove the container layer and its init layer.
    Rm {
        /// Container layer id.
        ctr: String,
        /// Unmount it first if it is mounted.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return failure::usage_error(e),
    };
    let json = cli.json;
    // `check` keeps its own statuses: 1 is "problems remain", so "could not run" is 2.
    let failed = if matches!(cli.cmd, Cmd::Check { .. }) { CHECK_FAILED } else { failure::FAILED };
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            f.report(json);
            ExitCode::from(if f.is_usage() { failure::USAGE } else { failed })
        }
    }
}

/// `check`'s exit status when it could not run, so scripts can tell it from "problems remain" (1).
const CHECK_FAILED: u8 = 2;

fn run(cli: Cli) -> Res<ExitCode> {
    let json = cli.json;
    // `check` must see the store as it is, so only it skips the repair on open.
    let repair_on_open = !matches!(cli.cmd, Cmd::Check { .. });
    // Generated from the clap definitions alone: no store is opened (or created).
    match &cli.cmd {
        Cmd::Completions { .. } | Cmd::Man { .. } if json => {
            return Err(Failure::usage("completions and man pages are text; --json does not apply to them"));
        }
        Cmd::Completions { shell } => return gen_cmd::completions(*shell),
        Cmd::Man { out_dir } => return gen_cmd::man(out_dir.as_deref()),
        Cmd::Ls { quiet: true } if json => return Err(Failure::usage("ls: --quiet and --json exclude each other")),
        _ => {}
    }
    let opts = Options {
        max_depth: cli.max_depth,
        repair_on_open,
        mount_strategy: cli.mount_strategy,
        open_mode: open_mode(&cli.cmd),
        ..Options::default()
    };
    let d = Driver::open(&cli.home, opts)?;
    match cli.cmd {
        Cmd::Completions { .. } | Cmd::Man { .. } => {}
        Cmd::Init => {
            if json {
                json::print(&json::Home { home: json::utf8(d.home())? })?;
            }
        }
        Cmd::Create { id, parent, rw, storage_opt } => {
            let opts = CreateOpts { storage_opt: parse_storage_opts(&storage_opt)?, mount_label: None };
            let made =
                if rw { d.create_rw(&id, parent.as_deref(), &opts) } else { d.create(&id, parent.as_deref(), &opts) };
            made.map_err(|e| Failure::naming(e, parent.as_deref(), "parent"))?;
            if json {
                json::print(&json::Created { id: &id, parent: parent.as_deref() })?;
            }
        }
        Cmd::Rm { ids, force, recursive } => {
            let mut removed = Vec::new();
            let res = each(&ids, json, |id| {
                let gone = if recursive {
                    d.remove_tree(id, force)?
                } else {
                    d.remove(id, force).map(|()| vec![id.clone()])?
                };
                for g in &gone {
                    if !json {
                        println!("removed {g}");
                    }
                }
                removed.extend(gone);
                Ok(())
            });
            if json {
                json::print(&json::Removed { removed })?;
            }
            res?;
        }
        Cmd::Archive(c) => return archive_cmd::run(&d, c, json),
        Cmd::Ls { quiet } => {
            let layers = d.layers()?;
            if json {
                json::print(&layers)?;
            } else if quiet {
                for l in &layers {
                    println!("{}", l.id);
                }
            } else {
                print_tree(&layers);
            }
        }
        Cmd::Inspect { ids } => {
            let mut all = Vec::new();
            let res = each(&ids, json, |id| {
                let m = d.metadata(id)?;
                if json {
                    all.push(json::Inspected { id: id.clone(), metadata: m });
                } else {
                    if ids.len() > 1 {
                        print_line(&[OsStr::new(&format!("{:<10} {id}", "Id"))])?;
                    }
                    for (k, v) in m.to_map() {
                        print_line(&[OsStr::new(&format!("{k:<10} ")), &v])?;
                    }
                }
                Ok(())
            });
            if json {
                json::print(&all)?;
            }
            res?;
        }
        Cmd::Status => {
            let pairs = d.status()?;
            if json {
                json::print(&json::status(&pairs, json::utf8(d.home())?))?;
            } else {
                let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                for (k, v) in pairs {
                    println!("{k:<w$}  {v}");
                }
            }
        }
        Cmd::Du { ids } => {
            let ids = if ids.is_empty() { d.layers()?.into_iter().map(|l| l.id).collect() } else { ids };
            let mut all = Vec::new();
            let res = each(&ids, json, |id| {
                let u = d.usage(id)?;
                if !json {
                    println!("{id}\t{}\t{} inodes", indicatif::HumanBytes(u.bytes), u.inodes);
                }
                all.push(json::LayerUsage { id: id.clone(), usage: u });
                Ok(())
            });
            if json {
                json::print(&all)?;
            }
            res?;
        }
        Cmd::Mount { id, label, ro, volatile } => {
            // Each command is its own process, so its reference must outlive it.
            let opts = MountOpts { mount_label: label, readonly: ro, volatile, persistent: true };
            let path = d.get_with(&id, &opts)?;
            if json {
                json::print(&json::Mounted { id: &id, path: json::utf8(&path)? })?;
            } else {
                print_line(&[path.as_os_str()])?;
            }
        }
        Cmd::Umount { ids } => {
            let mut released = Vec::new();
            let res = each(&ids, json, |id| {
                umount(&d, id)?;
                released.push(id.clone());
                Ok(())
            });
            if json {
                json::print(&json::Released { released })?;
            }
            res?;
        }
        Cmd::Mounts => {
            let mounts = d.mounts()?;
            if json {
                json::print(&mounts)?;
            } else {
                for m in mounts {
                    let rest = format!(
                        "\tcount={} (persistent {}, processes {})\t{}\t{}",
                        m.count,
                        m.persistent,
                        m.processes,
                        if m.readonly { "ro" } else { "rw" },
                        m.method
                    );
                    print_line(&[OsStr::new(&format!("{}\t", m.id)), m.path.as_os_str(), OsStr::new(&rest)])?;
                }
            }
        }
        Cmd::Cleanup => {
            let unmounted: Vec<String> = d.mounts()?.into_iter().filter(|m| m.mounted).map(|m| m.id).collect();
            d.cleanup()?;
            if json {
                json::print(&json::Unmounted { unmounted })?;
            }
        }
        Cmd::Container(ContainerCmd::Create { ctr, image, init_file, init_dir, no_default_init, remap_root }) => {
            let mut opts = ContainerOpts::default();
            if no_default_init {
                opts.init_entries.clear();
            }
            opts.init_entries.extend(init_file.iter().map(|p| InitEntry::file(p)));
            opts.init_entries.extend(init_dir.iter().map(|p| InitEntry::dir(p)));
            opts.root = remap_root.as_deref().map(parse_owner).transpose()?;
            d.create_container(&ctr, &image, &opts).map_err(|e| Failure::naming(e, Some(&image), "image"))?;
            if json {
                let init = ovl2_core::init_layer_id(&ctr);
                json::print(&json::Container { id: &ctr, init_id: &init, image: &image })?;
            }
        }
        Cmd::Container(ContainerCmd::Rm { ctr, force }) => {
            d.remove_container(&ctr, force)?;
            if json {
                json::print(&json::Removed { removed: vec![ctr.clone(), ovl2_core::init_layer_id(&ctr)] })?;
            }
        }
        Cmd::Check { repair } => {
            let (repaired, remaining) = if repair {
                let r = d.repair()?;
                (r.repaired, r.remaining)
            } else {
                (Vec::new(), d.check()?)
            };
            if json {
                json::print(&json::Checked { problems: &remaining, repaired: &repaired })?;
            } else {
                for p in &repaired {
                    println!("repaired  {}", describe(p));
                }
                for p in &remaining {
                    println!("problem   {}", describe(p));
                }
                if remaining.is_empty() {
                    println!("no problems");
                }
            }
            if !remaining.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `f` on every id, as Docker's `rm a b c` does: a failure is reported and the rest
/// still run; the command fails (with the last error) if any did.
fn each(ids: &[String], json: bool, mut f: impl FnMut(&String) -> Res<()>) -> Res<()> {
    let mut last = None;
    for id in ids {
        if let Err(e) = f(id) {
            if let Some(prev) = last.replace(e) {
                prev.report(json);
            }
        }
    }
    last.map_or(Ok(()), Err)
}

/// `umount` is "unmount": a layer with no mount to drop is an error, also for a base layer,
/// whose plain `mount` (like Docker's Get) hands out its `diff` without mounting anything and
/// whose library `put` is therefore a no-op.
fn umount(d: &Driver, id: &str) -> Res<()> {
    if d.exists(id)? && !d.mounts()?.iter().any(|m| m.id == id) {
        let why = match d.parent(id) {
            Ok(None) => " (a base layer's `ovl2 mount` without --ro prints its diff directory and mounts nothing)",
            _ => "",
        };
        return Err(Failure::new(
            ovl2_core::ErrorKind::InvalidArgument,
            format!("layer {id:?} is not mounted{why}"),
            Some(22),
        ));
    }
    Ok(d.put(id)?)
}

/// Prints one line made of `parts` as raw bytes: paths under a home that is not UTF-8 must
/// reach scripts exactly, not with U+FFFD in them.
fn print_line(parts: &[&OsStr]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for p in parts {
        out.write_all(p.as_bytes())?;
    }
    out.write_all(b"\n")
}

/// What a command may do to --home: only the commands that make layers create a store (and
/// only in a missing or empty directory); reading commands never write anything.
fn open_mode(cmd: &Cmd) -> OpenMode {
    use archive_cmd::ArchiveCmd as A;
    match cmd {
        Cmd::Init
        | Cmd::Create { .. }
        | Cmd::Container(ContainerCmd::Create { .. })
        | Cmd::Archive(A::Apply { .. } | A::Import { .. }) => OpenMode::Create,
        Cmd::Rm { .. }
        | Cmd::Mount { .. }
        | Cmd::Umount { .. }
        | Cmd::Cleanup
        | Cmd::Container(ContainerCmd::Rm { .. })
        | Cmd::Check { repair: true, .. } => OpenMode::Existing,
        Cmd::Ls { .. }
        | Cmd::Inspect { .. }
        | Cmd::Status
        | Cmd::Du { .. }
        | Cmd::Mounts
        | Cmd::Check { repair: false, .. }
        | Cmd::Completions { .. }
        | Cmd::Man { .. }
        | Cmd::Archive(A::Diff { .. } | A::Changes { .. } | A::DiffSize { .. }) => OpenMode::ReadOnly,
    }
}

fn parse_storage_opts(raw: &[String]) -> Res<BTreeMap<String, String>> {
    raw.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(Failure::usage(format!("--storage-opt {kv:?} is not KEY=VALUE"))),
        })
        .collect()
}

fn parse_owner(s: &str) -> Res<Owner> {
    let (u, g) = s.split_once(':').ok_or_else(|| Failure::usage(format!("--remap-root {s:?} is not UID:GID")))?;
    let num =
        |v: &str| v.parse::<u32>().map_err(|_| Failure::usage(format!("--remap-root {s:?}: {v:?} is not a number")));
    Ok(Owner::from_raw(num(u)?, num(g)?))
}

fn describe(p: &Problem) -> String {
    let kind = p.kind.as_str();
    match &p.layer {
        Some(l) => format!("{l}: {kind}: {}", p.detail),
        None => format!("{kind}: {}", p.detail),
    }
}

/// Prints layers as a tree, children under their parent, siblings by id. Nesting stops
/// growing after a few dozen levels (chains go to 500), and deeper lines say their depth.
fn print_tree(layers: &[LayerInfo]) {
    const MAX_INDENT: usize = 24;
    let mut children: BTreeMap<Option<&str>, Vec<&LayerInfo>> = BTreeMap::new();
    let ids: std::collections::BTreeSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    for l in layers {
        // A layer whose parent is missing is shown as a root so it is not hidden.
        let key = l.parent.as_deref().filter(|p| ids.contains(p));
        children.entry(key).or_default().push(l);
    }
    // Iterative, so a 500-deep chain needs no deep recursion.
    let mut stack: Vec<(&LayerInfo, String, bool, usize)> = Vec::new();
    if let Some(roots) = children.get(&None) {
        for r in roots.iter().rev() {
            stack.push((r, String::new(), true, 0));
        }
    }
    while let Some((l, prefix, last, level)) = stack.pop() {
        let (branch, cont) = match (level, last) {
            (0, _) => ("", ""),
            (_, true) => ("└── ", "    "),
            (_, false) => ("├── ", "│   "),
        };
        let mut note = if level >= MAX_INDENT { format!("  [depth {}]", l.depth) } else { String::new() };
        if l.orphan {
            note.push_str("  [orphan: its parent is gone; see `ovl2 check`]");
        }
        println!("{prefix}{branch}{}{note}", l.id);
        let child_prefix = if level >= MAX_INDENT { prefix.clone() } else { format!("{prefix}{cont}") };
        if let Some(kids) = children.get(&Some(l.id.as_str())) {
            for (i, k) in kids.iter().enumerate().rev() {
                stack.push((k, child_prefix.clone(), i + 1 == kids.len(), level + 1));
            }
        }
    }
}
