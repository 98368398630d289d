#!/usr/bin/env bash
# ovl2-snapshotter against containerd 2.x, built from the Go module proxy at the version pinned in
# tests/containerd2/go.mod (Debian ships only 1.6): containerd 2.x's own snapshotter conformance
# suite (core/snapshots/testsuite) through 2.x's proxy client, as root and rootless, then a private
# containerd 2.x daemon with its ctr and runc shim, built with `go build` into target/containerd2
# (the Go build cache makes every build after the first a relink). Needs root; under CI=true a
# missing prerequisite fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
need cargo "install Rust from https://rustup.rs"
need go "install Go 1.25 or newer (containerd 2.x needs it)"

if [ "$(id -u)" != 0 ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: the containerd 2.x tests need root (they mount)" >&2; exit 1; fi
  echo "skip: the containerd 2.x tests need root"; exit 0
fi
scripts/install-deps.sh containerd rootless  # runc, busybox-static (and Debian's containerd 1.6, unused here), uidmap

cargo build -p ovl2-snapshotter -p ovl2-cli --locked
export SNAP="$PWD/target/debug/ovl2-snapshotter" OVL2="$PWD/target/debug/ovl2"
export OVL2_CLI="$OVL2"   # the suite runs `ovl2 check` on each test's store once the service stopped
BIN="$PWD/target/containerd2"
mkdir -p "$BIN"

start=$(date +%s)
(cd tests/containerd2 && go vet ./... && go test -c -o "$BIN/conformance.test" . \
  && go build -o "$BIN/" github.com/containerd/containerd/v2/cmd/containerd \
       github.com/containerd/containerd/v2/cmd/ctr github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
echo "  (containerd $(cd tests/containerd2 && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2): suite, containerd, ctr and shim built in $(($(date +%s) - start)) s)"

printf '\n==> containerd 2.x snapshotter conformance suite (core/snapshots/testsuite) via the proxy client\n'
# Rename renames a lower layer's directory, which overlayfs refuses (EXDEV) without redirect_dir;
# containerd exempts its overlay-based snapshotters from that step, so it runs under their rules.
OVL2_SNAPSHOTTER="$SNAP" "$BIN/conformance.test" -test.count=1 -test.timeout 20m \
  -test.run '^TestOvl2Snapshotter$' -test.skip '^TestOvl2Snapshotter$/^Rename$'
OVL2_SNAPSHOTTER="$SNAP" "$BIN/conformance.test" -test.count=1 -test.timeout 5m \
  -test.run '^TestOvl2SnapshotterOverlayRules$/^Rename$'

printf '\n==> the same suite rootless: service and mounts inside a user namespace (userxattr)\n'
# One uid is mapped, so Chown and DirectoryPermissionOnCommit (uids 1 and 2) cannot run there.
OVL2_SNAPSHOTTER="$SNAP" unshare -Urm --propagation private "$BIN/conformance.test" -test.count=1 -test.timeout 20m \
  -test.run '^TestOvl2Snapshotter$' -test.skip '^TestOvl2Snapshotter$/^(Rename|Chown|DirectoryPermissionOnCommit)$'

printf '\n==> the whole suite rootless as a rootless containerd runs it: an unprivileged user, subuid/subgid ranges\n'
# 0 is an unprivileged user, 1..65535 its /etc/subuid block (scripts/rootless-userns.sh), so
# Chown and DirectoryPermissionOnCommit run too; the binaries are copied where that user can read.
rl_dir="$(mktemp -d)" && chmod 755 "$rl_dir" && cp "$SNAP" "$OVL2" "$BIN/conformance.test" "$rl_dir/"
OVL2_SNAPSHOTTER="$rl_dir/ovl2-snapshotter" OVL2_CLI="$rl_dir/ovl2" scripts/rootless-userns.sh sh -c \
  "$rl_dir/conformance.test -test.count=1 -test.timeout 20m -test.run '^TestOvl2Snapshotter\$' -test.skip '^TestOvl2Snapshotter\$/^Rename\$' \
   && $rl_dir/conformance.test -test.count=1 -test.timeout 5m -test.run '^TestOvl2SnapshotterOverlayRules\$/^Rename\$'"
rm -rf "$rl_dir"

printf '\n==> a private containerd 2.x with ovl2 as its proxy snapshotter\n'
PATH="$BIN:$PATH" unshare --mount --propagation private bash tests/snapshotter/containerd2.sh
