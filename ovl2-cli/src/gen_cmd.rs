//! `ovl2 completions` and `ovl2 man`: shell completions and man pages generated from the clap
//! definitions at run time, so they always match `ovl2 --help` of the binary installed.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::failure::{Failure, Res};
use crate::Cli;

/// Writes the completion script for `shell` to stdout.
pub(crate) fn completions(shell: Shell) -> Res<ExitCode> {
    // Generated into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ovl2", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes ovl2(1) as roff to stdout, or, with `out_dir`, `ovl2.1` and one `ovl2-<command>.1`
/// per subcommand into that directory (for `man -M` or an install's `share/man/man1`).
pub(crate) fn man(out_dir: Option<&Path>) -> Res<ExitCode> {
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::from(e).context(&format!("cannot create {}", dir.display())))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .map_err(|e| Failure::from(e).context(&format!("cannot write man pages into {}", dir.display())))?;
        }
        None => {
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
