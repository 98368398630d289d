#!/bin/bash
# Follows README.md's "Use from Go" exactly as written, as a new user would: from this
# checkout, with a fresh $HOME (so ~/.local and ~/hello-ovl2 are temporary) and a fresh Go
# build cache (so nothing built against another libovl2 is reused). The section's first
# ```sh block, its ```go block saved as ~/hello-ovl2/main.go, and its second ```sh block run
# in one bash session; the program must print the layers the README says it prints.
# PROFILE=debug|release is passed through to scripts/install-lib.sh (default here: debug,
# which the other suites have built already).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
export PATH=$HOME/.cargo/bin:$PATH
export PROFILE=${PROFILE:-debug}
# The store's build dir stays where it is; only what the README writes goes to the new home.
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
work=$(mktemp -d /tmp/ovl2-go-readme.XXXXXX)
trap 'rm -rf "$work"' EXIT
export HOME=$work/home GOCACHE=$work/gocache
mkdir -p "$HOME"
unset PKG_CONFIG_PATH LD_LIBRARY_PATH CGO_CFLAGS CGO_LDFLAGS GOFLAGS

python3 - "$root/README.md" "$work" <<'PY'
import pathlib, re, sys
readme, work = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
section = re.search(r"^## Use from Go\n(.*?)(?=^## )", readme, re.S | re.M)
if not section:
    sys.exit("README.md has no '## Use from Go' section")
blocks = re.findall(r"^```(\w+)\n(.*?)^```", section.group(1), re.S | re.M)
kinds = [k for k, _ in blocks]
if kinds != ["sh", "go", "sh"]:
    sys.exit(f"'Use from Go' should hold a sh, a go and a sh block, found {kinds}")
(sh1, go, sh2) = (b for _, b in blocks)
(work / "steps.sh").write_text(
    "set -euxo pipefail\n" + sh1
    + "cat > ~/hello-ovl2/main.go <<'OVL2_README_GO'\n" + go + "OVL2_README_GO\n" + sh2
)
PY

bash "$work/steps.sh" >"$work/out.txt" 2>"$work/err.txt" || {
    echo "the README's 'Use from Go' steps failed:" >&2
    tail -n 40 "$work/err.txt" >&2
    exit 1
}
cat "$work/out.txt"
grep -qx 'app parent="base" depth=1' "$work/out.txt" && grep -qx 'base parent="" depth=0' "$work/out.txt" || {
    echo "the README's Go program did not print what the README says" >&2
    exit 1
}
echo "README 'Use from Go' works verbatim from a new module"
