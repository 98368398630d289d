#!/usr/bin/env bash
# Runs a command the way a real rootless containerd user runs its snapshotter: as an unprivileged
# user (ovl2-rootless, created here with /etc/subuid and /etc/subgid ranges), inside a user and
# mount namespace whose maps newuidmap/newgidmap set up as rootlesskit and podman do (0 is the
# user, 1..65535 its subordinate range), so files can belong to many uids and gids.
# Usage (as root): scripts/rootless-userns.sh COMMAND [ARGS...]. COMMAND and everything it runs
# must be readable by that user (copy binaries out of a root-only checkout first); it runs in a
# fresh directory owned by the user, which is also its TMPDIR and is removed afterwards.
set -euo pipefail
user=ovl2-rootless
# A high subordinate range, clear of the blocks useradd hands out from 100000 upwards.
first=3221225472 count=65536
scripts_dir="$(dirname "$0")"
"$scripts_dir/install-deps.sh" rootless
if ! id -u "$user" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi
grep -q "^$user:" /etc/subuid 2>/dev/null || usermod --add-subuids "$first-$((first + count - 1))" "$user"
grep -q "^$user:" /etc/subgid 2>/dev/null || usermod --add-subgids "$first-$((first + count - 1))" "$user"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chown "$user:$user" "$work"
cd "$work"
# --map-root-user with --map-auto: 0 -> the user, 1.. -> the first /etc/subuid block (newuidmap).
TMPDIR="$work" setpriv --reuid="$user" --regid="$user" --clear-groups \
  unshare --map-root-user --map-auto --mount --propagation private "$@"
