//! `ovl2`: the command line face of ovl2-core. Every command is one process and one store
//! operation; the store's own locks make concurrent invocations safe.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
mod archive_cmd;
mod gen_cmd;

use ovl2_core::{
    ContainerOpts, CreateOpts, Driver, InitEntry, LayerInfo, MountOpts, MountStrategy, OpenMode, Options, Owner,
    Problem,
};

/// Docker overlay2-compatible layer store.
#[derive(Parser, Debug)]
#[command(name = "ovl2", version, about, propagate_version = true)]
struct Cli {
    /// Store directory (Docker's overlay2 home).
    #[arg(long, global = true, env = "OVL2_HOME", default_value = "/var/lib/ovl2")]
    home: PathBuf,
    /// Most lower layers a layer may have, counted as Docker counts them (1 to 500; 128 keeps the store mountable by Docker).
    #[arg(long, global = true, default_value_t = ovl2_core::KERNEL_MAX_DEPTH)]
    max_depth: usize,
    /// How to mount: auto, new (fsopen/lowerdir+) or legacy (mount(2)). Default: $OVL2_MOUNT_STRATEGY, else auto.
    #[arg(long, global = true, value_name = "STRATEGY")]
    mount_strategy: Option<MountStrategy>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create an empty store in --home (a missing or empty directory); a no-op on a store.
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
    /// Remove a layer. One that other layers build on is refused; --recursive removes it with
    /// all of them (deepest first).
    #[command(alias = "remove")]
    Rm {
        /// Layer id.
        id: String,
        /// Unmount it (and, with --recursive, the layers built on it) first instead of refusing.
        #[arg(long)]
        force: bool,
        /// Also remove every layer built on it, deepest first.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// List layers as a tree.
    #[command(alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a layer's paths (Docker's GetMetadata).
    Inspect {
        /// Layer id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what the store runs on.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    /// Drop one reference taken by `mount`; unmounts with the last one.
    #[command(alias = "unmount")]
    Umount {
        /// Layer id.
        id: String,
    },
    /// List this store's mounts with their reference counts.
    Mounts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Unmount every layer of the store and drop all references.
    Cleanup,
    /// Container layers: `<ctr>-init` plus `<ctr>`, as Docker makes them.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Look for damage. Exit status: 0 no problems, 1 problems remain (each line names the
    /// fix, or why there is none), 2 the check could not run.
    Check {
        /// Fix what can be fixed.
        #[arg(long)]
        repair: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Layer archives: apply, diff, changes, diff-size, import.
    #[command(flatten)]
    Archive(archive_cmd::ArchiveCmd),
    /// Print the completion script for SHELL (bash, zsh, fish, ...); see the README for where it goes.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the ovl2(1) man page (roff), or write a page per command into --out-dir.
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

/// `check`'s exit status when it could not run, so scripts can tell it from "problems remain" (1).
const CHECK_FAILED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_check = matches!(cli.cmd, Cmd::Check { .. });
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ovl2: {e}");
            if is_check {
                ExitCode::from(CHECK_FAILED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // `check` must see the store as it is, so only it skips the repair on open.
    let repair_on_open = !matches!(cli.cmd, Cmd::Check { .. });
    // Generated from the clap definitions alone: no store is opened (or created).
    match &cli.cmd {
        Cmd::Completions { shell } => return gen_cmd::completions(*shell),
        Cmd::Man { out_dir } => return gen_cmd::man(out_dir.as_deref()),
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
        Cmd::Init | Cmd::Completions { .. } | Cmd::Man { .. } => {}
        Cmd::Create { id, parent, rw, storage_opt } => {
            let opts = CreateOpts { storage_opt: parse_storage_opts(&storage_opt)?, mount_label: None };
            if rw {
                d.create_rw(&id, parent.as_deref(), &opts)?;
            } else {
                d.create(&id, parent.as_deref(), &opts)?;
            }
        }
        Cmd::Rm { id, force, recursive: false } => d.remove(&id, force)?,
        Cmd::Rm { id, force, recursive: true } => {
            for gone in d.remove_tree(&id, force)? {
                println!("removed {gone}");
            }
        }
        Cmd::Archive(c) => return archive_cmd::run(&d, c),
        Cmd::Ls { json } => {
            let layers = d.layers()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&layers)?);
            } else {
                print_tree(&layers);
            }
        }
        Cmd::Inspect { id, json } => {
            let m = d.metadata(&id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                for (k, v) in m.to_map() {
                    print_line(&[OsStr::new(&format!("{k:<10} ")), &v])?;
                }
            }
        }
        Cmd::Status { json } => {
            let pairs = d.status()?;
            if json {
                let fields: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        format!("  {}: {}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap())
                    })
                    .collect();
                println!("{{\n{}\n}}", fields.join(",\n"));
            } else {
                let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                for (k, v) in pairs {
                    println!("{k:<w$}  {v}");
                }
            }
        }
        Cmd::Mount { id, label, ro, volatile } => {
            // Each command is its own process, so its reference must outlive it.
            let opts = MountOpts { mount_label: label, readonly: ro, volatile, persistent: true };
            print_line(&[d.get_with(&id, &opts)?.as_os_str()])?;
        }
        Cmd::Umount { id } => d.put(&id)?,
        Cmd::Mounts { json } => {
            let mounts = d.mounts()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&mounts)?);
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
        Cmd::Cleanup => d.cleanup()?,
        Cmd::Container(ContainerCmd::Create { ctr, image, init_file, init_dir, no_default_init, remap_root }) => {
            let mut opts = ContainerOpts::default();
            if no_default_init {
                opts.init_entries.clear();
            }
            opts.init_entries.extend(init_file.iter().map(|p| InitEntry::file(p)));
            opts.init_entries.extend(init_dir.iter().map(|p| InitEntry::dir(p)));
            opts.root = remap_root.as_deref().map(parse_owner).transpose()?;
            d.create_container(&ctr, &image, &opts)?;
        }
        Cmd::Container(ContainerCmd::Rm { ctr, force }) => d.remove_container(&ctr, force)?,
        Cmd::Check { repair, json } => {
            let (repaired, remaining) = if repair {
                let r = d.repair()?;
                (r.repaired, r.remaining)
            } else {
                (Vec::new(), d.check()?)
            };
            if json {
                let mut out = BTreeMap::new();
                out.insert("problems", &remaining);
                if repair {
                    out.insert("repaired", &repaired);
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
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
        | Cmd::Status { .. }
        | Cmd::Mounts { .. }
        | Cmd::Check { repair: false, .. }
        | Cmd::Completions { .. }
        | Cmd::Man { .. }
        | Cmd::Archive(A::Diff { .. } | A::Changes { .. } | A::DiffSize { .. }) => OpenMode::ReadOnly,
    }
}

fn parse_storage_opts(raw: &[String]) -> Result<BTreeMap<String, String>, String> {
    raw.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(format!("storage option {kv:?} is not KEY=VALUE")),
        })
        .collect()
}

fn parse_owner(s: &str) -> Result<Owner, String> {
    let (u, g) = s.split_once(':').ok_or_else(|| format!("--remap-root {s:?} is not UID:GID"))?;
    let num = |v: &str| v.parse::<u32>().map_err(|_| format!("--remap-root {s:?}: {v:?} is not a number"));
    Ok(Owner { uid: num(u)?, gid: num(g)? })
}

fn describe(p: &Problem) -> String {
    let kind = serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
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
