# Sourced by the scripts: puts the usual toolchain locations on PATH, so the scripts work
# from a bare root shell (CI runs without a login profile).
for d in "$HOME/.cargo/bin" /usr/local/go/bin "$HOME/go/bin" "$HOME/.pyenv/shims"; do
  case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && PATH="$d:$PATH" ;; esac
done
export PATH
need() { command -v "$1" >/dev/null 2>&1 || { echo "ovl2: '$1' is required but not installed ($2)" >&2; exit 1; }; }
