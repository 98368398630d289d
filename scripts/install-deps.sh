#!/usr/bin/env bash
# Installs, with apt, what the build and the tests need beyond the Rust and Go toolchains:
#   build       protoc (the containerd-snapshots crate compiles containerd's .proto files)
#   containerd  containerd, runc, busybox-static (the snapshotter's integration tests)
#   rootless    uidmap (newuidmap/newgidmap, for the rootless runs with subordinate id ranges)
# Does nothing when everything is already there.
set -euo pipefail
missing=()
for what in "$@"; do
  case "$what" in
    build) command -v protoc >/dev/null || missing+=(protobuf-compiler) ;;
    containerd)
      command -v containerd >/dev/null && command -v containerd-shim-runc-v2 >/dev/null || missing+=(containerd)
      command -v runc >/dev/null || missing+=(runc)
      { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static) ;;
    rootless) command -v newuidmap >/dev/null && command -v newgidmap >/dev/null || missing+=(uidmap) ;;
    *) echo "install-deps.sh: unknown group $what" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ovl2: missing packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2; exit 1
fi
echo "installing with apt: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
