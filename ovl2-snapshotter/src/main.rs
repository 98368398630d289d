//! `ovl2-snapshotter`: ovl2 as a containerd snapshotter.
//!
//! containerd loads it as a proxy plugin (`[proxy_plugins.ovl2] type = "snapshot"
//! address = SOCKET`) and speaks its snapshots gRPC API over the unix socket. Snapshots are
//! layers of an ovl2 store in Docker's overlay2 format, so `ovl2 ls/check/diff` and the C, Go and
//! Python faces can open the same home.

mod filters;
mod service;

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use containerd_snapshots::tonic::transport::Server;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

/// Serves containerd's snapshots API (proxy plugin) over an ovl2 store.
#[derive(Parser, Debug)]
#[command(name = "ovl2-snapshotter", version, about)]
struct Cli {
    /// Unix socket to listen on (the `address` of containerd's proxy plugin). A stale socket
    /// left by a killed service is replaced; one that a live service answers on is refused.
    #[arg(long)]
    address: PathBuf,
    /// Store directory (Docker's overlay2 home), as for the `ovl2` command.
    #[arg(long, env = "OVL2_HOME", default_value = "/var/lib/ovl2")]
    home: PathBuf,
}

/// Removes a socket file that no live process answers on; refuses anything else in the way.
fn clear_stale_socket(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot inspect {}: {e}", path.display())),
        Ok(md) if !md.file_type().is_socket() => {
            Err(format!("{} exists and is not a socket; refusing to replace it", path.display()))
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!("{} is in use by a running service", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| format!("removing the stale socket {}: {e}", path.display()))
        }
    }
}

async fn serve(cli: Cli) -> Result<(), String> {
    let snapshotter = service::Ovl2Snapshotter::open(&cli.home).map_err(|e| {
        let s: containerd_snapshots::tonic::Status = e.into();
        format!("opening {}: {}", cli.home.display(), s.message())
    })?;
    // The stop signals are caught from before the socket exists: whoever sees the socket may
    // stop the service at once, and the default action would kill it mid-start, socket left behind.
    let catch = |kind: SignalKind, name: &str| signal(kind).map_err(|e| format!("catching {name}: {e}"));
    let mut int = catch(SignalKind::interrupt(), "SIGINT")?;
    let mut term = catch(SignalKind::terminate(), "SIGTERM")?;
    clear_stale_socket(&cli.address)?;
    if let Some(dir) = cli.address.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(&cli.address).map_err(|e| format!("listening on {}: {e}", cli.address.display()))?;
    let incoming = UnixListenerStream::new(listener);
    let shutdown = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    let res = Server::builder()
        .add_service(containerd_snapshots::server(Arc::new(snapshotter)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("serving on {}: {e}", cli.address.display()));
    let _ = std::fs::remove_file(&cli.address);
    res
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ovl2-snapshotter: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovl2-snapshotter: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = std::env::temp_dir().join(format!("ovl2-snap-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.sock");
        let live = std::os::unix::net::UnixListener::bind(&p).unwrap();
        assert!(clear_stale_socket(&p).unwrap_err().contains("in use"));
        drop(live); // the file stays, as after a SIGKILL
        assert!(p.exists());
        clear_stale_socket(&p).unwrap();
        assert!(!p.exists());
        std::fs::write(&p, b"").unwrap();
        assert!(clear_stale_socket(&p).unwrap_err().contains("not a socket"));
        assert!(p.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
