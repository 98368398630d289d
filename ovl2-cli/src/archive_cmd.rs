//! The archive commands: `apply`, `diff`, `changes`, `diff-size` and `import`.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use ovl2_core::{ApplyOpts, ApplyProgress, ApplyStats, DiffOpts, Driver};

use crate::failure::{Failure, Res};
use crate::json;

/// An opened input and its length when it is a regular file (for the progress bar).
type Input = (Box<dyn Read>, Option<u64>);

/// Archive subcommands, flattened into the top-level command list.
#[derive(Subcommand, Debug)]
pub enum ArchiveCmd {
    /// Apply a layer tarball (tar, gzip, zstd) into an empty layer.
    ///
    /// Prints the layer's size and digest.
    Apply {
        /// Layer id (created beforehand with `ovl2 create`).
        id: String,
        /// Tarball to read; `-` or nothing reads stdin.
        file: Option<PathBuf>,
        /// Apply as onto this parent instead of the layer's own, as Docker's ApplyDiff does
        /// (through the layer's mounted view: whiteouts delete what the view shows); `""`
        /// means no parent.
        #[arg(long)]
        parent: Option<String>,
        /// Skip the final syncfs (faster; a power cut may lose the layer's data).
        #[arg(long)]
        no_sync: bool,
        /// Refuse the layer unless the uncompressed tar has this digest (sha256:...).
        #[arg(long, value_name = "DIGEST")]
        expect_digest: Option<String>,
    },
    /// Export a layer as a tar in Docker's layer format.
    Diff {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the real parent.
        #[arg(long)]
        parent: Option<String>,
        /// Write to FILE instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// gzip the output.
        #[arg(long, conflicts_with = "zstd")]
        gzip: bool,
        /// zstd the output.
        #[arg(long)]
        zstd: bool,
        /// Do not compute the sha256 (saves the hashing when the caller hashes itself).
        #[arg(long)]
        no_digest: bool,
    },
    /// List what a layer adds (A), changes (C) and deletes (D).
    ///
    /// Relative to its parent, or to --parent.
    Changes {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the real parent.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Print Docker's DiffSize of a layer, in bytes.
    DiffSize {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the real parent.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Build a chain from layer tarballs, base first.
    ///
    /// The last one becomes --top.
    Import {
        /// Layer tarballs in order, base first.
        #[arg(required = true)]
        tars: Vec<PathBuf>,
        /// Id of the top layer; the layers below are named TOP-1, TOP-2, ... from the base.
        #[arg(long)]
        top: String,
        /// Put the chain on top of this existing layer.
        #[arg(long)]
        parent: Option<String>,
        /// Skip the syncfs after each layer.
        #[arg(long)]
        no_sync: bool,
    },
}

/// Runs one archive command against an open store; `json` is the global `--json`.
pub fn run(d: &Driver, cmd: ArchiveCmd, json: bool) -> Res<ExitCode> {
    match cmd {
        ArchiveCmd::Apply { id, file, parent, no_sync, expect_digest } => {
            let parent = match parent {
                Some(p) if p.is_empty() => None,
                Some(p) => Some(p),
                None => d.parent(&id)?,
            };
            let (reader, len): (Box<dyn Read>, Option<u64>) = open_input(file.as_ref())?;
            let st = apply_one(d, &id, parent.as_deref(), reader, len, !no_sync, expect_digest.as_deref(), &id)
                .map_err(|e| Failure::naming(e, parent.as_deref(), "parent"))?;
            print_stats(&id, parent.as_deref(), &st, json)?;
        }
        ArchiveCmd::Diff { id, parent, output, gzip, zstd, no_digest } => {
            let to_file = output.is_some();
            let dopts = DiffOpts { digest: !no_digest };
            let parent = match parent {
                Some(p) => Some(p),
                None => d.parent(&id)?,
            };
            // The output as a plain fd: std's stdout is line-buffered, which split every
            // piece of the tar at its last newline into two writes.
            let out: File = match &output {
                Some(p) => File::create(p).map_err(|e| Failure::from(e).context(&p.display().to_string()))?,
                None => {
                    let stdout = io::stdout();
                    if stdout.is_terminal() {
                        return Err(Failure::usage("refusing to write a tar to a terminal; use -o FILE or a pipe"));
                    }
                    File::from(stdout.as_fd().try_clone_to_owned()?)
                }
            };
            let st = if gzip {
                let mut enc = flate2::write::GzEncoder::new(io::BufWriter::new(&out), flate2::Compression::default());
                let st = d.diff_with(&id, parent.as_deref(), &mut enc, &dopts)?;
                enc.finish()?.flush()?;
                st
            } else if zstd {
                let mut enc = zstd::stream::write::Encoder::new(io::BufWriter::new(&out), 3)?;
                let st = d.diff_with(&id, parent.as_deref(), &mut enc, &dopts)?;
                enc.finish()?.flush()?;
                st
            } else {
                d.diff_to_fd(&id, parent.as_deref(), out.as_fd(), &dopts)?
            };
            // The digest is of the uncompressed tar (the DiffID); say it where it won't mix
            // with tar data: stderr, unless the tar went to a file and stdout is free for JSON.
            if json {
                let v = json::Diffed {
                    id: &id,
                    parent: parent.as_deref(),
                    digest: st.digest.as_deref(),
                    tar_bytes: st.tar_bytes,
                    entries: st.entries,
                };
                let text = serde_json::to_string_pretty(&v)?;
                if to_file {
                    println!("{text}");
                } else {
                    eprintln!("{text}");
                }
            } else {
                match &st.digest {
                    Some(dg) => eprintln!("{dg} {} bytes {} entries", st.tar_bytes, st.entries),
                    None => eprintln!("{} bytes {} entries", st.tar_bytes, st.entries),
                }
            }
        }
        ArchiveCmd::Changes { id, parent } => {
            let parent = match parent {
                Some(p) => Some(p),
                None => d.parent(&id)?,
            };
            if json {
                let ch = d.changes(&id, parent.as_deref())?;
                let out = ch.iter().map(json::Change::of).collect::<Res<Vec<_>>>()?;
                json::print(&out)?;
            } else {
                // Streamed: a deep tree's full paths never need to be in memory at once.
                let mut out = io::BufWriter::new(io::stdout().lock());
                d.changes_each(&id, parent.as_deref(), |c| writeln!(out, "{c}"))?;
                out.flush()?;
            }
        }
        ArchiveCmd::DiffSize { id, parent } => {
            let parent = match parent {
                Some(p) => Some(p),
                None => d.parent(&id)?,
            };
            let size = d.diff_size(&id, parent.as_deref())?;
            if json {
                json::print(&json::DiffSize { id: &id, parent: parent.as_deref(), size })?;
            } else {
                println!("{size}");
            }
        }
        ArchiveCmd::Import { tars, top, parent, no_sync } => {
            // Every tarball is opened before anything is created; the core makes the chain
            // all or nothing (a failure removes the layers it made, and the parent's marker).
            let mut readers = Vec::with_capacity(tars.len());
            let mut total = Some(0u64);
            for tar in &tars {
                let (reader, len) = open_input(Some(tar))?;
                total = total.zip(len).map(|(a, b)| a + b);
                readers.push(reader);
            }
            // Only a person watching a terminal gets a bar: one for the whole chain, moved by
            // every tarball's bytes as they are read.
            let bar = io::stderr().is_terminal().then(|| progress_bar(total, &top));
            let readers: Vec<Box<dyn Read>> = match &bar {
                Some(b) => readers.into_iter().map(|r| Box::new(b.wrap_read(r)) as Box<dyn Read>).collect(),
                None => readers,
            };
            let cb = |p: &ApplyProgress| {
                if let Some(b) = &bar {
                    b.set_prefix(p.entries.to_string());
                }
            };
            let opts = ApplyOpts { sync: !no_sync, progress: Some(&cb), expect_digest: None };
            let res = d.import_chain(&top, parent.as_deref(), readers, &opts);
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let results = res.map_err(|e| Failure::naming(e, parent.as_deref(), "parent"))?;
            // Each layer's parent is the one below it, the first's the chain's parent.
            let parents: Vec<Option<&str>> =
                std::iter::once(parent.as_deref()).chain(results.iter().map(|(id, _)| Some(id.as_str()))).collect();
            if json {
                let v: Vec<_> = results
                    .iter()
                    .zip(&parents)
                    .map(|((id, stats), parent)| json::Applied { id, parent: *parent, stats })
                    .collect();
                json::print(&v)?;
            } else {
                for ((id, st), parent) in results.iter().zip(&parents) {
                    print_stats(id, *parent, st, false)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open_input(file: Option<&PathBuf>) -> Res<Input> {
    match file {
        Some(p) if p.as_os_str() != "-" => {
            let f = File::open(p).map_err(|e| Failure::from(e).context(&p.display().to_string()))?;
            let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            Ok((Box::new(f), len))
        }
        _ => Ok((Box::new(io::stdin().lock()), None)),
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_one(
    d: &Driver,
    id: &str,
    parent: Option<&str>,
    reader: Box<dyn Read>,
    len: Option<u64>,
    sync: bool,
    expect_digest: Option<&str>,
    label: &str,
) -> Result<ApplyStats, ovl2_core::Error> {
    // Only a person watching a terminal gets a bar; logs and pipes get nothing.
    let bar = io::stderr().is_terminal().then(|| progress_bar(len, label));
    let cb = |p: &ApplyProgress| {
        if let Some(b) = &bar {
            b.set_prefix(p.entries.to_string());
        }
    };
    let opts = ApplyOpts { sync, progress: Some(&cb), expect_digest };
    // The bar counts the input's own bytes as they are read, so it moves inside a large
    // entry (core reports progress per entry) and matches the file's length.
    let reader: Box<dyn Read> = match &bar {
        Some(b) => Box::new(b.wrap_read(reader)),
        None => reader,
    };
    let r = d.apply_diff_with(id, parent, reader, &opts);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    r
}

/// The apply bar: bytes of input read, the rate, and with a known size the total and the ETA.
fn progress_bar(len: Option<u64>, label: &str) -> ProgressBar {
    let b = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    b.set_style(
        ProgressStyle::with_template(bar_template(len.is_some())).expect("valid template").progress_chars("=> "),
    );
    b.set_message(label.to_owned());
    b.set_prefix("0");
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// The bar's layout: a known size adds the bar, the total and the ETA.
fn bar_template(sized: bool) -> &'static str {
    if sized {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {prefix} entries"
    } else {
        "{msg} {bytes} {bytes_per_sec} {prefix} entries"
    }
}

fn print_stats(id: &str, parent: Option<&str>, st: &ApplyStats, json: bool) -> Res<()> {
    if json {
        json::print(&json::Applied { id, parent, stats: st })?;
    } else {
        println!(
            "{id}: size {} digest {} ({} entries, {} files, {} dirs, {} whiteouts)",
            st.size, st.digest, st.entries, st.files, st.dirs, st.whiteouts
        );
    }
    Ok(())
}
