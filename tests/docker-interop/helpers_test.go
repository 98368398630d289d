//go:build linux

package dockerinterop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/daemon/graphdriver"
	"github.com/docker/docker/daemon/graphdriver/overlay2"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"
)

// strict reports whether missing prerequisites must fail the test instead of
// skipping it.
func strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("OVL2_REQUIRE_MOUNT") == "1"
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if strict() {
		t.Fatalf(format+" (required because CI=true or OVL2_REQUIRE_MOUNT=1)", args...)
	}
	t.Skipf(format, args...)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "test needs root for real overlay mounts (euid=%d)", os.Geteuid())
	}
}

// ovl2Bin returns the absolute path of the ovl2 binary named by $OVL2_BIN.
func ovl2Bin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("OVL2_BIN")
	if bin == "" {
		skipOrFail(t, "OVL2_BIN is not set")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatalf("OVL2_BIN=%q: %v", bin, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		t.Fatalf("OVL2_BIN=%q: %v", bin, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("OVL2_BIN=%q is not an executable file (mode %v)", bin, st.Mode())
	}
	return abs
}

// newHome returns a not-yet-existing driver home inside a fresh t.TempDir()
// that lives on a filesystem overlayfs can use as upper layer. It registers a
// cleanup that fails the test and force-unmounts if anything is still mounted
// under the home when the test ends.
func newHome(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	switch int64(sfs.Type) {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC, unix.OVERLAYFS_SUPER_MAGIC:
		skipOrFail(t, "temp dir %s is on fs magic %#x (tmpfs/ramfs/overlay); set TMPDIR to a directory on ext4 or xfs", dir, sfs.Type)
	}
	home := filepath.Join(dir, "overlay2")
	// Registered after t.TempDir, so it runs before the TempDir RemoveAll.
	t.Cleanup(func() {
		left := mountsUnder(t, home)
		if len(left) == 0 {
			return
		}
		t.Errorf("mounts left under %s at end of test: %v", home, left)
		// Deepest first.
		sort.Slice(left, func(i, j int) bool { return len(left[i]) > len(left[j]) })
		for _, m := range left {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				t.Errorf("force unmount %s: %v", m, err)
			}
		}
	})
	return home
}

// mountsUnder lists mount points in /proc/self/mountinfo at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("open mountinfo: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	return out
}

// mountOptions returns the super options of the mount at mp ("" if absent).
func mountOptions(t *testing.T, mp string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != mp {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+3 < len(fields) {
				return fields[i+1] + " " + fields[i+3]
			}
		}
	}
	return ""
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// newDriver initialises Docker's real overlay2 driver on home (no userns
// remapping) and registers Cleanup.
func newDriver(t *testing.T, home string) graphdriver.Driver {
	t.Helper()
	d, err := overlay2.Init(home, nil, user.IdentityMapping{})
	if err != nil {
		t.Fatalf("docker overlay2.Init(%s): %v", home, err)
	}
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("docker driver Cleanup: %v", err)
		}
	})
	return d
}

// dockerID returns a random 64-hex-character id like Docker's stringid.
func dockerID(t *testing.T) string {
	t.Helper()
	for {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		id := hex.EncodeToString(b)
		if _, err := strconv.ParseUint(id[:12], 10, 64); err != nil {
			return id // Docker re-rolls ids whose first 12 chars are all digits.
		}
	}
}

// --- ovl2 CLI wrapper -------------------------------------------------------

type ovl2CLI struct {
	t    *testing.T
	bin  string
	home string
}

type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("ovl2 %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

func (o ovl2CLI) run(args ...string) result {
	o.t.Helper()
	full := append([]string{"--home", o.home}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: full, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		o.t.Fatalf("running %s %v: %v", o.bin, full, err)
	}
	if ctx.Err() != nil {
		o.t.Fatalf("ovl2 %v timed out", full)
	}
	return r
}

func (o ovl2CLI) mustRun(args ...string) result {
	o.t.Helper()
	r := o.run(args...)
	if r.code != 0 {
		o.t.Fatalf("unexpected failure: %v", r)
	}
	return r
}

func (o ovl2CLI) create(id, parent string, rw bool) {
	o.t.Helper()
	args := []string{"create", id}
	if parent != "" {
		args = append(args, "--parent", parent)
	}
	if rw {
		args = append(args, "--rw")
	}
	o.mustRun(args...)
}

type lsEntry struct {
	ID     string  `json:"id"`
	Parent *string `json:"parent"`
	Depth  int     `json:"depth"`
}

func (o ovl2CLI) ls() map[string]lsEntry {
	o.t.Helper()
	r := o.mustRun("ls", "--json")
	var list []lsEntry
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		o.t.Fatalf("ls --json output is not a JSON array of layers: %v\n%v", err, r)
	}
	m := make(map[string]lsEntry, len(list))
	for _, e := range list {
		if _, dup := m[e.ID]; dup {
			o.t.Errorf("ls --json lists %q twice", e.ID)
		}
		m[e.ID] = e
	}
	return m
}

type problem struct {
	Layer  *string `json:"layer"`
	Kind   string  `json:"kind"`
	Detail string  `json:"detail"`
}

func (p problem) String() string {
	l := "<store>"
	if p.Layer != nil {
		l = *p.Layer
	}
	return fmt.Sprintf("[%s] %s: %s", l, p.Kind, p.Detail)
}

// assertCheckClean runs `ovl2 check --json` and requires zero problems and exit 0.
func (o ovl2CLI) assertCheckClean() {
	o.t.Helper()
	r := o.run("check", "--json")
	var out struct {
		Problems *[]problem `json:"problems"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Problems == nil {
		o.t.Fatalf("check --json output is not {\"problems\":[...]} (err=%v)\n%v", err, r)
	}
	for _, p := range *out.Problems {
		o.t.Errorf("ovl2 check problem: %v", p)
	}
	if r.code != 0 {
		o.t.Errorf("ovl2 check exit code %d, want 0 (problems: %d)\nstderr: %s", r.code, len(*out.Problems), r.stderr)
	}
	if len(*out.Problems) == 0 && r.code != 0 {
		o.t.Errorf("exit code %d with an empty problem list", r.code)
	}
}

func (o ovl2CLI) inspect(id string) map[string]string {
	o.t.Helper()
	r := o.mustRun("inspect", id, "--json")
	// One entry per id; Docker's GetMetadata map is its "metadata" (docs/cli-json.md).
	var entries []struct {
		ID       string            `json:"id"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 1 || entries[0].ID != id {
		o.t.Fatalf("inspect --json output is not [{\"id\": %q, \"metadata\": {...}}]: %v\n%v", id, err, r)
	}
	return entries[0].Metadata
}

// assertMetadataMatches compares Docker's GetMetadata with `ovl2 inspect`.
func assertMetadataMatches(t *testing.T, d graphdriver.Driver, o ovl2CLI, id string) {
	t.Helper()
	want, err := d.GetMetadata(id)
	if err != nil {
		t.Fatalf("docker GetMetadata(%s): %v", id, err)
	}
	got := o.inspect(id)
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	for k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !wok:
			t.Errorf("layer %s: ovl2 inspect has extra key %s=%q (docker has no such key)", id, k, g)
		case !gok:
			t.Errorf("layer %s: ovl2 inspect lacks key %s (docker: %q)", id, k, w)
		case w != g:
			t.Errorf("layer %s: key %s differs\n docker: %q\n   ovl2: %q", id, k, w, g)
		}
	}
}

// assertLs checks the ovl2 ls output against the expected id -> parent map.
func assertLs(t *testing.T, o ovl2CLI, parents map[string]string) {
	t.Helper()
	got := o.ls()
	// Depth counts lower layers, as Docker's maxDepth does: 0 for a base layer.
	depth := func(id string) int {
		n := 0
		for id = parents[id]; id != ""; id = parents[id] {
			n++
		}
		return n
	}
	for id, parent := range parents {
		e, ok := got[id]
		if !ok {
			t.Errorf("ovl2 ls: layer %s missing", id)
			continue
		}
		gotParent := ""
		if e.Parent != nil {
			gotParent = *e.Parent
			if gotParent == "" {
				t.Errorf("ovl2 ls: layer %s has parent \"\" (contract says null for a base layer)", id)
			}
		}
		if gotParent != parent {
			t.Errorf("ovl2 ls: layer %s parent = %q, want %q", id, gotParent, parent)
		}
		if want := depth(id); e.Depth != want {
			t.Errorf("ovl2 ls: layer %s depth = %d, want %d", id, e.Depth, want)
		}
	}
	for id := range got {
		if _, ok := parents[id]; !ok {
			t.Errorf("ovl2 ls: unexpected layer %q", id)
		}
	}
}

// --- filesystem helpers -----------------------------------------------------

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mkWhiteout(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(p, unix.S_IFCHR, int(unix.Mkdev(0, 0))); err != nil {
		t.Fatalf("mknod whiteout %s: %v", p, err)
	}
}

func assertFile(t *testing.T, p, want string) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read %s: %v", p, err)
		return
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", p, got, want)
	}
}

func assertAbsent(t *testing.T, p string) {
	t.Helper()
	if fi, err := os.Lstat(p); err == nil {
		t.Errorf("%s exists (mode %v), want absent", p, fi.Mode())
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lstat %s: %v", p, err)
	}
}

func assertDirNames(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("readdir %s: %v", dir, err)
		return
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s contains %v, want %v", dir, got, want)
	}
}

func isWhiteout(t *testing.T, p string) bool {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// --- store snapshots ----------------------------------------------------------

// entry is a comparable description of one filesystem object in a store.
type entry struct {
	Type   string
	Perm   os.FileMode // permission + setuid/setgid/sticky
	UID    uint32
	GID    uint32
	Rdev   uint64
	Data   string // file content (<=64KiB) or symlink target
	Xattrs string
}

func (e entry) String() string {
	s := fmt.Sprintf("%s %#o %d:%d", e.Type, uint32(e.Perm), e.UID, e.GID)
	if e.Type == "chardev" || e.Type == "blockdev" {
		s += fmt.Sprintf(" rdev=%d:%d", unix.Major(e.Rdev), unix.Minor(e.Rdev))
	}
	if e.Data != "" || e.Type == "file" {
		s += fmt.Sprintf(" data=%q", e.Data)
	}
	if e.Xattrs != "" {
		s += " xattrs{" + e.Xattrs + "}"
	}
	return s
}

// snapshot walks home and describes every entry except those under .ovl2/.
func snapshot(t *testing.T, home string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(home, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(home, p)
		if rel == ".ovl2" {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{
			Perm: os.FileMode(st.Mode & 0o7777),
			UID:  st.Uid, GID: st.Gid,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = "dir"
		case unix.S_IFREG:
			e.Type = "file"
			if st.Size <= 64*1024 {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				e.Data = string(b)
			} else {
				e.Data = fmt.Sprintf("<%d bytes>", st.Size)
			}
		case unix.S_IFLNK:
			e.Type = "symlink"
			tgt, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.Data = tgt
		case unix.S_IFCHR:
			e.Type, e.Rdev = "chardev", st.Rdev
		case unix.S_IFBLK:
			e.Type, e.Rdev = "blockdev", st.Rdev
		default:
			e.Type = fmt.Sprintf("type%#o", st.Mode&unix.S_IFMT)
		}
		e.Xattrs = xattrs(p)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", home, err)
	}
	return out
}

func xattrs(p string) string {
	buf := make([]byte, 64*1024)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		v := make([]byte, 64*1024)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			parts = append(parts, name+"=<"+err.Error()+">")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q", name, v[:vn]))
	}
	return strings.Join(parts, ",")
}

// lidRE is the short link id format: 26 characters of RFC 4648 base32.
var lidRE = regexp.MustCompile(`^[A-Z2-7]{26}$`)

// normalizeLIDs rewrites the random short link ids in a snapshot to
// "LID(<layer id>)" so stores built by different tools can be compared. A LID
// is only rewritten when it is well formed and l/<LID> points at
// ../<id>/diff, so malformed ids (trailing newline, wrong alphabet, dangling
// link) stay visible in diffs.
func normalizeLIDs(snap map[string]entry) map[string]entry {
	lidToID := map[string]string{}
	for rel, e := range snap {
		dir, base := filepath.Split(rel)
		if dir != "l/" || e.Type != "symlink" || !lidRE.MatchString(base) {
			continue
		}
		parts := strings.Split(e.Data, "/")
		if len(parts) == 3 && parts[0] == ".." && parts[2] == "diff" {
			lidToID[base] = parts[1]
		}
	}
	name := func(lid string) string {
		if id, ok := lidToID[lid]; ok {
			return "LID(" + id + ")"
		}
		return lid
	}
	out := map[string]entry{}
	for rel, e := range snap {
		dir, base := filepath.Split(rel)
		switch {
		case dir == "l/":
			rel = "l/" + name(base)
		case base == "link" && strings.Count(rel, "/") == 1:
			e.Data = name(e.Data)
		case base == "lower" && strings.Count(rel, "/") == 1:
			parts := strings.Split(e.Data, ":")
			for i, p := range parts {
				if strings.HasPrefix(p, "l/") {
					parts[i] = "l/" + name(strings.TrimPrefix(p, "l/"))
				}
			}
			e.Data = strings.Join(parts, ":")
		}
		out[rel] = e
	}
	return out
}

// diffSnapshots reports every difference between want and got.
func diffSnapshots(t *testing.T, what string, want, got map[string]entry) {
	t.Helper()
	paths := map[string]bool{}
	for p := range want {
		paths[p] = true
	}
	for p := range got {
		paths[p] = true
	}
	var sorted []string
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	for _, p := range sorted {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !gok:
			t.Errorf("%s: %s missing (want %v)", what, p, w)
		case !wok:
			t.Errorf("%s: %s unexpected (got %v)", what, p, g)
		case w != g:
			t.Errorf("%s: %s differs\n want %v\n  got %v", what, p, w, g)
		}
	}
}

// assertDirPresent fails if home/.ovl2 (or any path) is missing or not a dir.
func assertDirPresent(t *testing.T, p, when string) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Errorf("%s: %s: %v", when, p, err)
		return
	}
	if !fi.IsDir() {
		t.Errorf("%s: %s is %v, want a directory", when, p, fi.Mode())
	}
}
