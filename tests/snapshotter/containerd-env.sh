# Sourced by tests/snapshotter/*.sh inside a private mount namespace: starts ovl2-snapshotter
# and a private containerd (own root, state, sockets, config and /run; CRI disabled) that
# loads it as the proxy plugin "ovl2". Needs SNAP (the service binary) and T (a scratch dir).
: "${SNAP:?}" "${T:?}"
H="$T/home"
mount -t tmpfs -o mode=0755 ovl2-test-run /run   # containerd 1.6 keeps shim state under /run/containerd
if [ "${CONTAINERD_MAJOR:-1}" = 2 ]; then
  # containerd 2.x (config version 3; the CRI plugin is three plugins there). The ovl2 part is
  # the shipped example, so the test proves it: the proxy plugin and the transfer service's
  # unpack_config, without which 2.x's `ctr images import` refuses to unpack into ovl2.
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  { cat <<TOML
version = 3
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs", "io.containerd.podsandbox.controller.v1.podsandbox"]
[grpc]
  address = "$T/containerd.sock"
[ttrpc]
  address = "$T/containerd.sock.ttrpc"
[debug]
  address = "$T/debug.sock"
TOML
    grep -v '^version' "$(dirname "${BASH_SOURCE[0]}")/../../examples/containerd/config-v3.toml" \
      | sed -e "s|/run/ovl2-snapshotter/ovl2.sock|$T/ovl2.sock|" -e "s|linux/amd64|linux/$arch|"
  } >"$T/config.toml"
else
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
fi
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
