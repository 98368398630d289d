# Sourced by the install scripts: installs a binary stripped, with its debug info beside it.
#
#   install_stripped SRC DEST MODE
#
# DEST gets SRC without symbols or debug info (a shared library keeps its dynamic symbols),
# plus a .gnu_debuglink naming DEST's .debug file, which holds SRC's debug info (line tables,
# function names) in .debug/ next to DEST: DIR/.debug/NAME.debug. gdb, valgrind and perf look
# there for the link's file (and check its CRC), so backtraces keep file:line with nothing to
# configure. The release profile builds with `debug = 1` for exactly this.
# Needs objcopy (binutils). The new files replace old ones atomically (rename).
install_stripped() {
    local src=$1 dest=$2 mode=$3
    local dir name dbg tmp
    dir=$(dirname "$dest")
    name=$(basename "$dest")
    dbg="$dir/.debug/$name.debug"
    install -d "$dir/.debug"
    tmp=$(mktemp "$dir/.debug/.$name.debug.XXXXXX")
    objcopy --only-keep-debug "$src" "$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dbg"
    tmp=$(mktemp "$dir/.$name.XXXXXX")
    # The link records the basename and CRC of the .debug file; the debuggers find it in
    # .debug/ themselves. An old link (re-install from an installed file) is replaced.
    objcopy --strip-unneeded --remove-section=.gnu_debuglink --add-gnu-debuglink="$dbg" "$src" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
}
