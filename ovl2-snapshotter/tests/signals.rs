//! The service as a process: a stop signal that arrives as soon as the socket exists (as a
//! supervisor or a test harness sends it right after the service comes up) must shut it down
//! cleanly, not kill it with the signal's default action and leave its socket behind.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

fn stop_right_after_listening(signal: Signal, rounds: usize) {
    let dir = std::env::temp_dir().join(format!("ovl2-snap-signals-{}-{}", std::process::id(), signal.as_raw()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    for round in 0..rounds {
        let child = Command::new(env!("CARGO_BIN_EXE_ovl2-snapshotter"))
            .arg("--address")
            .arg(&sock)
            .arg("--home")
            .arg(dir.join("home"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Spin, not sleep: the signal must land in the moment right after bind(2).
        while std::fs::symlink_metadata(&sock).is_err() {
            assert!(Instant::now() < deadline, "round {round}: the service did not create {}", sock.display());
        }
        kill_process(Pid::from_raw(child.id() as i32).unwrap(), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "round {round}: {signal:?} right after listening ended the service with {:?} (signal {:?}); stderr: {}",
            out.status.code(),
            out.status.signal(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!sock.exists(), "round {round}: the socket outlived a clean stop");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigint_right_after_listening_stops_cleanly() {
    stop_right_after_listening(Signal::INT, 30);
}

#[test]
fn sigterm_right_after_listening_stops_cleanly() {
    stop_right_after_listening(Signal::TERM, 30);
}
