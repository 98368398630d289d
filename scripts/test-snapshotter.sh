#!/usr/bin/env bash
# ovl2-snapshotter against real containerd parts: containerd's own snapshotter conformance suite
# (through containerd's proxy client) and a private containerd 1.6 (Debian's package) that imports
# and runs images through the proxy plugin. Installs containerd, runc and busybox-static with apt
# when missing. Needs root; under CI=true a missing prerequisite fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
need cargo "install Rust from https://rustup.rs"
need go "install Go 1.24 or newer"

if [ "$(id -u)" != 0 ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: the snapshotter tests need root (they mount)" >&2; exit 1; fi
  echo "skip: the snapshotter tests need root"; exit 0
fi
scripts/install-deps.sh containerd rootless

cargo build -p ovl2-snapshotter -p ovl2-cli --locked
export SNAP="$PWD/target/debug/ovl2-snapshotter" OVL2="$PWD/target/debug/ovl2"

printf '\n==> containerd snapshotter conformance suite (snapshots/testsuite, containerd 1.6) via the proxy client\n'
# Each test's store must also pass `ovl2 check` once the service has stopped (OVL2_CLI).
(cd tests/snapshotter-conformance && go vet ./... && OVL2_SNAPSHOTTER="$SNAP" OVL2_CLI="$OVL2" go test -count=1 -timeout 20m ./...)

printf '\n==> the same suite rootless: service and mounts inside a user namespace (userxattr)\n'
# One uid is mapped (unshare -Ur), so Chown and DirectoryPermissionOnCommit, which chown files
# to uids 1 and 2, cannot run there; every other test of the suite does.
conf_dir="$(mktemp -d)"
(cd tests/snapshotter-conformance && go test -c -o "$conf_dir/conformance.test" .)
OVL2_SNAPSHOTTER="$SNAP" OVL2_CLI="$OVL2" unshare -Urm --propagation private "$conf_dir/conformance.test" \
  -test.count=1 -test.timeout 20m -test.skip 'TestOvl2Snapshotter/(Chown|DirectoryPermissionOnCommit)$'

printf '\n==> the whole suite rootless as a rootless containerd runs it: an unprivileged user, subuid/subgid ranges\n'
# scripts/rootless-userns.sh maps 0 to an unprivileged user and 1..65535 to its /etc/subuid block
# (newuidmap, as rootlesskit does), so Chown and DirectoryPermissionOnCommit run too. That user
# cannot read a root-only checkout, hence the copies into the (world-readable) temp dir.
chmod 755 "$conf_dir" && cp "$SNAP" "$OVL2" "$conf_dir/" && cp -r tests/snapshotter "$conf_dir/"
chmod -R a+rX "$conf_dir"
OVL2_SNAPSHOTTER="$conf_dir/ovl2-snapshotter" OVL2_CLI="$conf_dir/ovl2" scripts/rootless-userns.sh \
  "$conf_dir/conformance.test" -test.count=1 -test.timeout 20m

printf '\n==> a rootless containerd (same user and namespace, its own /run) unpacking into ovl2\n'
SNAP="$conf_dir/ovl2-snapshotter" OVL2="$conf_dir/ovl2" scripts/rootless-userns.sh \
  bash "$conf_dir/snapshotter/containerd-rootless.sh"
rm -rf "$conf_dir"

printf '\n==> a private containerd with ovl2 as its proxy snapshotter, and Docker'"'"'s overlay2 driver on its store\n'
# Docker's own graph driver, to open the store containerd filled (tests/snapshotter-docker).
dd_dir="$(mktemp -d)"
(cd tests/snapshotter-docker && go vet ./... && go build -o "$dd_dir/dockerdriver" .)
DOCKERDRIVER="$dd_dir/dockerdriver" unshare --mount --propagation private bash tests/snapshotter/containerd.sh
rm -rf "$dd_dir"
