//! The archive commands: `apply`, `diff`, `changes`, `diff-size` and `import`.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use ovl2_core::{ApplyOpts, ApplyProgress, ApplyStats, CreateOpts, DiffOpts, Driver};

type Res = Result<ExitCode, Box<dyn std::error::Error>>;
/// An opened input and its length when it is a regular file (for the progress bar).
type Input = (Box<dyn Read>, Option<u64>);

/// Archive subcommands, flattened into the top-level command list.
#[derive(Subcommand, Debug)]
pub enum ArchiveCmd {
    /// Apply a layer tarball (tar, gzip or zstd) to an empty layer; prints size and digest.
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    /// List what a layer adds (A), changes (C) and deletes (D) relative to its parent.
    Changes {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the real parent.
        #[arg(long)]
        parent: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print Docker's DiffSize of a layer, in bytes.
    DiffSize {
        /// Layer id.
        id: String,
        /// Compare against this layer instead of the real parent.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Build a chain from layer tarballs, bottom first; the last one becomes --top.
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one archive command against an open store.
pub fn run(d: &Driver, cmd: ArchiveCmd) -> Res {
    match cmd {
        ArchiveCmd::Apply { id, file, parent, no_sync, expect_digest, json } => {
            let parent = match parent {
                Some(p) if p.is_empty() => None,
                Some(p) => Some(p),
                None => d.parent(&id)?,
            };
            let (reader, len): (Box<dyn Read>, Option<u64>) = open_input(file.as_ref())?;
            let st = apply_one(d, &id, parent.as_deref(), reader, len, !no_sync, expect_digest.as_deref(), &id)?;
            print_stats(&id, &st, json)?;
        }
        ArchiveCmd::Diff { id, parent, output, gzip, zstd, no_digest } => {
            let dopts = DiffOpts { digest: !no_digest };
            let parent = match parent {
                Some(p) => Some(p),
                None => d.parent(&id)?,
            };
            let sink: Box<dyn Write> = match &output {
                Some(p) => Box::new(File::create(p)?),
                None => {
                    if io::stdout().is_terminal() {
                        return Err("refusing to write a tar to a terminal; use -o FILE or a pipe".into());
                    }
                    Box::new(io::stdout().lock())
                }
            };
            let st = if gzip {
                let mut enc = flate2::write::GzEncoder::new(sink, flate2::Compression::default());
                let st = d.diff_with(&id, parent.as_deref(), &mut enc, &dopts)?;
                enc.finish()?.flush()?;
                st
            } else if zstd {
                let mut enc = zstd::stream::write::Encoder::new(sink, 3)?;
                let st = d.diff_with(&id, parent.as_deref(), &mut enc, &dopts)?;
                enc.finish()?.flush()?;
                st
            } else {
                let mut sink = sink;
                let st = d.diff_with(&id, parent.as_deref(), &mut sink, &dopts)?;
                sink.flush()?;
                st
            };
            // The digest is of the uncompressed tar (the DiffID); say it where it won't mix
            // with tar data.
            match &st.digest {
                Some(dg) => eprintln!("{dg} {} bytes {} entries", st.tar_bytes, st.entries),
                None => eprintln!("{} bytes {} entries", st.tar_bytes, st.entries),
            }
        }
        ArchiveCmd::Changes { id, parent, json } => {
            let parent = match parent {
                Some(p) => Some(p),
                None => d.parent(&id)?,
            };
            if json {
                let ch = d.changes(&id, parent.as_deref())?;
                println!("{}", serde_json::to_string_pretty(&ch)?);
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
            println!("{}", d.diff_size(&id, parent.as_deref())?);
        }
        ArchiveCmd::Import { tars, top, parent, no_sync, json } => {
            let ids: Vec<String> =
                (1..=tars.len()).map(|i| if i == tars.len() { top.clone() } else { format!("{top}-{i}") }).collect();
            let mut made: Vec<String> = Vec::new();
            let parent_was_committed = match &parent {
                Some(p) => d.is_committed(p)?,
                None => true,
            };
            let mut below = parent.clone();
            let mut results = Vec::new();
            let res = (|| -> Result<(), Box<dyn std::error::Error>> {
                for (tar, id) in tars.iter().zip(&ids) {
                    d.create(id, below.as_deref(), &CreateOpts::default())?;
                    made.push(id.clone());
                    let (reader, len) = open_input(Some(tar))?;
                    let st =
                        apply_one(d, id, below.as_deref(), reader, len, !no_sync, None, &tar.display().to_string())?;
                    if !json {
                        print_stats(id, &st, false)?;
                    }
                    results.push((id.clone(), st));
                    below = Some(id.clone());
                }
                Ok(())
            })();
            if let Err(e) = res {
                // All or nothing: take back the layers this run created, and the parent's
                // committed marker if they gave it one.
                let _ = d.undo_created(&made, parent.as_deref(), parent_was_committed);
                return Err(e);
            }
            if json {
                let v: Vec<_> = results.iter().map(|(id, st)| serde_json::json!({"id": id, "stats": st})).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open_input(file: Option<&PathBuf>) -> Result<Input, Box<dyn std::error::Error>> {
    match file {
        Some(p) if p.as_os_str() != "-" => {
            let f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
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
) -> Result<ApplyStats, Box<dyn std::error::Error>> {
    let bar = io::stderr().is_terminal().then(|| {
        let b = match len {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::no_length(),
        };
        let tmpl = if len.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {prefix} entries"
        } else {
            "{msg} {bytes} {bytes_per_sec} {prefix} entries"
        };
        b.set_style(ProgressStyle::with_template(tmpl).expect("valid template").progress_chars("=> "));
        b.set_message(label.to_owned());
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let cb = |p: &ApplyProgress| {
        if let Some(b) = &bar {
            b.set_position(p.input_bytes);
            b.set_prefix(p.entries.to_string());
        }
    };
    let opts = ApplyOpts { sync, progress: Some(&cb), expect_digest };
    let r = d.apply_diff_with(id, parent, reader, &opts);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(r?)
}

fn print_stats(id: &str, st: &ApplyStats, json: bool) -> io::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(st).map_err(io::Error::other)?);
    } else {
        println!(
            "{id}: size {} digest {} ({} entries, {} files, {} dirs, {} whiteouts)",
            st.size, st.digest, st.entries, st.files, st.dirs, st.whiteouts
        );
    }
    Ok(())
}
