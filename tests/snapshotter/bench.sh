#!/usr/bin/env bash
# Benchmark (not a test): `ctr images import` and the first `ctr run` of the same images through
# ovl2-snapshotter and through containerd's built-in overlayfs snapshotter, side by side in one
# private containerd. Run as root: unshare --mount --propagation private bash tests/snapshotter/bench.sh
# Needs SNAP (ovl2-snapshotter). LAYERS (default 500) sets the deep image's layer count.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d /tmp/ovl2-bench.XXXXXX)"
export T
. "$HERE/containerd-env.sh"
trap 'stop_all; umount -R "$T" 2>/dev/null || true; rm -rf "$T"' EXIT
start_snapshotter
start_containerd
LAYERS=${LAYERS:-500}
python3 "$HERE/mkimage.py" basic "$T/basic.tar" docker.io/ovl2bench/basic:1
python3 "$HERE/mkimage.py" deep "$T/deep.tar" "docker.io/ovl2bench/deep:$LAYERS" "$LAYERS"
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
printf '| image | snapshotter | import (s) | first run (s) |\n|---|---|---|---|\n'
for img in basic:1 "deep:$LAYERS"; do
  for sn in overlayfs ovl2; do
    i=$(secs "${CTR[@]}" images import --snapshotter "$sn" "$T/${img%%:*}.tar")
    r=$(secs "${CTR[@]}" run --rm --snapshotter "$sn" "docker.io/ovl2bench/$img" "b-$sn" true)
    printf '| %s | %s | %.1f | %.1f |\n' "$img" "$sn" "$i" "$r"
    "${CTR[@]}" images rm --sync "docker.io/ovl2bench/$img" >/dev/null
  done
done
