# Sourced by tests/snapshotter/*.sh inside a private mount namespace: starts ovl2-snapshotter
# and a private containerd (own root, state, sockets, config and /run; CRI disabled) that
# loads it as the proxy plugin "ovl2". Needs SNAP (the service binary) and T (a scratch dir).
: "${SNAP:?}" "${T:?}"
H="$T/home"
mount -t tmpfs -o mode=0755 ovl2-test-run /run   # containerd 1.6 keeps shim state under /run/containerd
cat > "$T/config.toml" <<TOML
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$T/containerd.sock"
[ttrpc]
  address = "$T/containerd.sock.ttrpc"
[debug]
  address = "$T/debug.sock"
[proxy_plugins.ovl2]
  type = "snapshot"
  address = "$T/ovl2.sock"
TOML
CTR=(ctr -a "$T/containerd.sock")

wait_for() { # wait_for WHAT COMMAND...: up to 60 s
  local what=$1; shift
  for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "FAIL: $what did not come up" >&2; return 1
}
start_snapshotter() {
  "$SNAP" --address "$T/ovl2.sock" --home "$H" >>"$T/snapshotter.log" 2>&1 &
  SNAP_PID=$!
  wait_for "ovl2-snapshotter" test -S "$T/ovl2.sock"
}
start_containerd() {
  containerd --config "$T/config.toml" >>"$T/containerd.log" 2>&1 &
  CTRD_PID=$!
  wait_for "containerd" "${CTR[@]}" version
}
stop_all() {
  [ -n "${CTRD_PID:-}" ] && kill "$CTRD_PID" 2>/dev/null && wait "$CTRD_PID" 2>/dev/null || true
  [ -n "${SNAP_PID:-}" ] && kill "$SNAP_PID" 2>/dev/null && wait "$SNAP_PID" 2>/dev/null || true
  CTRD_PID= SNAP_PID=
}
