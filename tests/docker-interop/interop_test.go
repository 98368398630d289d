//go:build linux

package dockerinterop

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/daemon/graphdriver"
	"golang.org/x/sys/unix"
)

// dockerGet mounts id through Docker's driver and registers nothing: callers
// Put explicitly so mount/unmount order is part of the test.
func dockerGet(t *testing.T, d graphdriver.Driver, id string) string {
	t.Helper()
	p, err := d.Get(id, "")
	if err != nil {
		t.Fatalf("docker Get(%s): %v", id, err)
	}
	return p
}

func dockerPut(t *testing.T, d graphdriver.Driver, id string) {
	t.Helper()
	if err := d.Put(id); err != nil {
		t.Fatalf("docker Put(%s): %v", id, err)
	}
}

// TestDockerWritesOvl2Reads is direction 1: Docker's overlay2 driver builds a
// store (image chain + init layer + container layer, with whiteouts and an
// opaque dir made by the kernel through real mounts) and ovl2 must read it.
func TestDockerWritesOvl2Reads(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	d := newDriver(t, home)

	base, mid, top := dockerID(t), dockerID(t), dockerID(t)
	ctr := dockerID(t)
	ctrInit := ctr + "-init"
	parents := map[string]string{base: "", mid: base, top: mid, ctrInit: top, ctr: ctrInit}

	// base: Get returns the diff dir itself (no mount).
	if err := d.Create(base, "", nil); err != nil {
		t.Fatalf("Create base: %v", err)
	}
	p := dockerGet(t, d, base)
	if want := filepath.Join(home, base, "diff"); p != want {
		t.Errorf("Get(base) = %s, want its diff dir %s", p, want)
	}
	writeFile(t, filepath.Join(p, "etc/os-release"), "ID=base\n", 0o644)
	writeFile(t, filepath.Join(p, "etc/delete-me"), "doomed\n", 0o644)
	writeFile(t, filepath.Join(p, "shared.txt"), "from base\n", 0o644)
	writeFile(t, filepath.Join(p, "data/old.txt"), "old\n", 0o644)
	writeFile(t, filepath.Join(p, "bin/tool"), "#!/bin/sh\necho tool\n", 0o755)
	writeFile(t, filepath.Join(p, "secret"), "s3cret", 0o600)
	if err := os.Symlink("shared.txt", filepath.Join(p, "link-to-shared")); err != nil {
		t.Fatal(err)
	}
	dockerPut(t, d, base)

	// mid: rw mount (not committed yet); override, and make an opaque dir.
	if err := d.Create(mid, base, nil); err != nil {
		t.Fatalf("Create mid: %v", err)
	}
	p = dockerGet(t, d, mid)
	writeFile(t, filepath.Join(p, "shared.txt"), "from mid\n", 0o644)
	if err := os.RemoveAll(filepath.Join(p, "data")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(p, "data/new.txt"), "new\n", 0o644)
	writeFile(t, filepath.Join(p, "mid.txt"), "mid\n", 0o644)
	dockerPut(t, d, mid)

	// top: new file, and delete a base file through the mount (whiteout).
	if err := d.Create(top, mid, nil); err != nil {
		t.Fatalf("Create top: %v", err)
	}
	p = dockerGet(t, d, top)
	writeFile(t, filepath.Join(p, "top.txt"), "top\n", 0o644)
	if err := os.Remove(filepath.Join(p, "etc/delete-me")); err != nil {
		t.Fatalf("delete lower file through mount: %v", err)
	}
	dockerPut(t, d, top)

	// -init layer, as Docker's layer store makes it (trimmed initlayer.Setup).
	if err := d.CreateReadWrite(ctrInit, top, &graphdriver.CreateOpts{}); err != nil {
		t.Fatalf("CreateReadWrite init: %v", err)
	}
	p = dockerGet(t, d, ctrInit)
	writeFile(t, filepath.Join(p, ".dockerenv"), "", 0o755)
	writeFile(t, filepath.Join(p, "etc/hosts"), "", 0o755)
	writeFile(t, filepath.Join(p, "etc/hostname"), "", 0o755)
	for _, dir := range []string{"dev/pts", "dev/shm", "proc", "sys"} {
		if err := os.MkdirAll(filepath.Join(p, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/proc/mounts", filepath.Join(p, "etc/mtab")); err != nil {
		t.Fatal(err)
	}
	dockerPut(t, d, ctrInit)

	// container rw layer: write and delete through the mount.
	if err := d.CreateReadWrite(ctr, ctrInit, nil); err != nil {
		t.Fatalf("CreateReadWrite ctr: %v", err)
	}
	p = dockerGet(t, d, ctr)
	writeFile(t, filepath.Join(p, "ctr.txt"), "ctr\n", 0o644)
	if err := os.Remove(filepath.Join(p, "mid.txt")); err != nil {
		t.Fatalf("delete lower file through mount: %v", err)
	}
	// Docker's own merged view, as a sanity check of the fixture.
	assertFile(t, filepath.Join(p, "shared.txt"), "from mid\n")
	assertFile(t, filepath.Join(p, "top.txt"), "top\n")
	assertFile(t, filepath.Join(p, "ctr.txt"), "ctr\n")
	assertAbsent(t, filepath.Join(p, "etc/delete-me"))
	assertAbsent(t, filepath.Join(p, "mid.txt"))
	assertDirNames(t, filepath.Join(p, "data"), "new.txt")
	dockerPut(t, d, ctr)

	if left := mountsUnder(t, home); len(left) != 0 {
		t.Errorf("mounts left after all Puts: %v", left)
	}
	// The kernel, not Docker, produced these; check they are what ovl2 must parse.
	if !isWhiteout(t, filepath.Join(home, top, "diff/etc/delete-me")) {
		t.Errorf("top/diff/etc/delete-me is not a 0:0 char device whiteout")
	}
	if !isWhiteout(t, filepath.Join(home, ctr, "diff/mid.txt")) {
		t.Errorf("ctr/diff/mid.txt is not a 0:0 char device whiteout")
	}
	if x := xattrs(filepath.Join(home, mid, "diff/data")); !strings.Contains(x, `trusted.overlay.opaque="y"`) {
		t.Errorf("mid/diff/data xattrs = %q, want trusted.overlay.opaque=y", x)
	}

	before := snapshot(t, home)

	o := ovl2CLI{t: t, home: home}
	t.Run("ls", func(t *testing.T) {
		o := o
		o.t, o.bin = t, ovl2Bin(t)
		assertLs(t, o, parents)
	})
	t.Run("check", func(t *testing.T) {
		o := o
		o.t, o.bin = t, ovl2Bin(t)
		o.assertCheckClean()
	})
	t.Run("inspect", func(t *testing.T) {
		o := o
		o.t, o.bin = t, ovl2Bin(t)
		for _, id := range []string{base, mid, top, ctrInit, ctr} {
			assertMetadataMatches(t, d, o, id)
		}
	})
	t.Run("inspect-missing-fails", func(t *testing.T) {
		o := o
		o.t, o.bin = t, ovl2Bin(t)
		r := o.run("inspect", "no-such-layer", "--json")
		if r.code == 0 {
			t.Errorf("inspect of a missing layer succeeded: %v", r)
		}
		if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); len(lines) != 1 || lines[0] == "" {
			t.Errorf("want exactly one line on stderr, got %q", r.stderr)
		}
	})
	t.Run("read-only-commands-leave-store-unchanged", func(t *testing.T) {
		ovl2Bin(t)
		diffSnapshots(t, "store after ovl2 ls/check/inspect", before, snapshot(t, home))
	})
	// Mixed: ovl2 stacks a layer on a Docker-made parent; Docker mounts it.
	t.Run("ovl2-child-of-docker-layer", func(t *testing.T) {
		o := o
		o.t, o.bin = t, ovl2Bin(t)
		child := dockerID(t)
		o.create(child, top, false)
		assertMetadataMatches(t, d, o, child)
		m := dockerGet(t, d, child)
		assertFile(t, filepath.Join(m, "shared.txt"), "from mid\n")
		assertFile(t, filepath.Join(m, "top.txt"), "top\n")
		assertAbsent(t, filepath.Join(m, "etc/delete-me"))
		writeFile(t, filepath.Join(m, "child.txt"), "child\n", 0o644)
		dockerPut(t, d, child)
		assertFile(t, filepath.Join(home, child, "diff/child.txt"), "child\n")
		withChild := map[string]string{child: top}
		for k, v := range parents {
			withChild[k] = v
		}
		assertLs(t, o, withChild)
		o.assertCheckClean()
	})
}

// TestOvl2WritesDockerReads is direction 2: ovl2 builds the store, files are
// written straight into diff dirs, and Docker's driver mounts and edits it.
func TestOvl2WritesDockerReads(t *testing.T) {
	requireRoot(t)
	bin := ovl2Bin(t)
	home := newHome(t)
	o := ovl2CLI{t: t, bin: bin, home: home}

	base, mid, top, ctr := dockerID(t), dockerID(t), dockerID(t), dockerID(t)
	parents := map[string]string{base: "", mid: base, top: mid, ctr: top}
	o.create(base, "", false)
	o.create(mid, base, false)
	o.create(top, mid, false)
	o.create(ctr, top, true)

	t.Run("format-matches-docker-create", func(t *testing.T) {
		// Build the same chain with Docker's driver in another home and compare
		// the two stores entry by entry (types, modes, owners, contents, xattrs),
		// with random short link ids normalised.
		ref := newHome(t)
		rd := newDriver(t, ref)
		for _, id := range []string{base, mid, top} {
			if err := rd.Create(id, parents[id], nil); err != nil {
				t.Fatalf("docker Create(%s): %v", id, err)
			}
		}
		if err := rd.CreateReadWrite(ctr, top, nil); err != nil {
			t.Fatalf("docker CreateReadWrite(%s): %v", ctr, err)
		}
		diffSnapshots(t, "ovl2 store vs docker store", normalizeLIDs(snapshot(t, ref)), normalizeLIDs(snapshot(t, home)))
	})

	assertLs(t, o, parents)
	o.assertCheckClean()

	// Content, written directly into the diff dirs.
	diff := func(id string) string { return filepath.Join(home, id, "diff") }
	writeFile(t, filepath.Join(diff(base), "etc/os-release"), "ID=base\n", 0o644)
	writeFile(t, filepath.Join(diff(base), "etc/deleted-by-top"), "doomed\n", 0o644)
	writeFile(t, filepath.Join(diff(base), "shared.txt"), "from base\n", 0o644)
	writeFile(t, filepath.Join(diff(base), "base-only.txt"), "base only\n", 0o644)
	writeFile(t, filepath.Join(diff(base), "opq/old.txt"), "old\n", 0o644)
	writeFile(t, filepath.Join(diff(mid), "shared.txt"), "from mid\n", 0o644)
	writeFile(t, filepath.Join(diff(mid), "opq/new.txt"), "new\n", 0o644)
	if err := unix.Setxattr(filepath.Join(diff(mid), "opq"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatalf("set opaque xattr: %v", err)
	}
	writeFile(t, filepath.Join(diff(top), "top.txt"), "from top\n", 0o644)
	mkWhiteout(t, filepath.Join(diff(top), "etc/deleted-by-top"))

	// Docker must not be bothered by ovl2's private dir (make sure there is one).
	ovlDir := filepath.Join(home, ".ovl2")
	if _, err := os.Lstat(ovlDir); err != nil {
		t.Logf("ovl2 did not create %s (%v); creating one with a marker file", ovlDir, err)
		writeFile(t, filepath.Join(ovlDir, "marker"), "x", 0o600)
	}
	ovlBefore := snapshot(t, ovlDir)

	d := newDriver(t, home)
	assertDirPresent(t, ovlDir, "after docker Init")

	for id := range parents {
		if !d.Exists(id) {
			t.Errorf("docker Exists(%s) = false", id)
		}
		assertMetadataMatches(t, d, o, id)
	}
	if d.Exists("no-such-layer") {
		t.Errorf("docker Exists(no-such-layer) = true")
	}

	t.Run("docker-reads-top", func(t *testing.T) {
		m := dockerGet(t, d, top)
		defer dockerPut(t, d, top)
		if want := filepath.Join(home, top, "merged"); m != want {
			t.Errorf("Get(top) = %s, want %s", m, want)
		}
		assertFile(t, filepath.Join(m, "etc/os-release"), "ID=base\n")
		assertFile(t, filepath.Join(m, "shared.txt"), "from mid\n")
		assertFile(t, filepath.Join(m, "base-only.txt"), "base only\n")
		assertFile(t, filepath.Join(m, "top.txt"), "from top\n")
		assertAbsent(t, filepath.Join(m, "etc/deleted-by-top"))
		assertDirNames(t, filepath.Join(m, "etc"), "os-release")
		assertDirNames(t, filepath.Join(m, "opq"), "new.txt")
		// top has a child (ctr), so Docker mounts it read-only.
		if err := os.WriteFile(filepath.Join(m, "nope"), nil, 0o644); err == nil {
			t.Errorf("committed layer %s was mounted writable", top)
		}
		t.Logf("mount options: %s", mountOptions(t, m))
	})

	t.Run("docker-writes-rw-layer", func(t *testing.T) {
		m := dockerGet(t, d, ctr)
		assertFile(t, filepath.Join(m, "shared.txt"), "from mid\n")
		assertFile(t, filepath.Join(m, "top.txt"), "from top\n")
		assertAbsent(t, filepath.Join(m, "etc/deleted-by-top"))
		writeFile(t, filepath.Join(m, "ctr.txt"), "ctr\n", 0o644)
		if err := os.Remove(filepath.Join(m, "base-only.txt")); err != nil {
			t.Errorf("delete through rw mount: %v", err)
		}
		dockerPut(t, d, ctr)
		assertFile(t, filepath.Join(diff(ctr), "ctr.txt"), "ctr\n")
		if !isWhiteout(t, filepath.Join(diff(ctr), "base-only.txt")) {
			t.Errorf("deleting through Docker's mount did not leave a whiteout in ctr/diff")
		}
		o := o
		o.t = t
		o.assertCheckClean()
	})

	if left := mountsUnder(t, home); len(left) != 0 {
		t.Errorf("mounts left after Put: %v", left)
	}
	assertDirPresent(t, ovlDir, "after docker Get/Put")

	t.Run("docker-remove-top", func(t *testing.T) {
		o := o
		o.t = t
		lid, err := os.ReadFile(filepath.Join(home, ctr, "link"))
		if err != nil {
			t.Fatalf("read ctr link: %v", err)
		}
		if err := d.Remove(ctr); err != nil {
			t.Fatalf("docker Remove(%s): %v", ctr, err)
		}
		if d.Exists(ctr) {
			t.Errorf("Exists after Remove")
		}
		assertAbsent(t, filepath.Join(home, "l", string(lid)))
		delete(parents, ctr)
		assertLs(t, o, parents)
		o.assertCheckClean()
		// And the next one down, which has a committed marker left behind.
		if err := d.Remove(top); err != nil {
			t.Fatalf("docker Remove(%s): %v", top, err)
		}
		delete(parents, top)
		assertLs(t, o, parents)
		o.assertCheckClean()
		// Removing a missing id is success in Docker.
		if err := d.Remove(top); err != nil {
			t.Errorf("docker Remove of a missing id: %v", err)
		}
	})

	if err := d.Cleanup(); err != nil {
		t.Errorf("docker Cleanup: %v", err)
	}
	assertDirPresent(t, ovlDir, "after docker Remove/Cleanup")
	// ovl2's own commands may rewrite files in .ovl2 (lock contents), so only
	// require that nothing Docker could have touched disappeared or changed type.
	ovlAfter := snapshot(t, ovlDir)
	for p, e := range ovlBefore {
		if a, ok := ovlAfter[p]; !ok {
			t.Errorf("home/.ovl2/%s (%s) vanished across docker Init/Get/Put/Remove/Cleanup", p, e.Type)
		} else if a.Type != e.Type {
			t.Errorf("home/.ovl2/%s changed type %s -> %s", p, e.Type, a.Type)
		}
	}
	o.assertCheckClean()
}

// TestOvl2DeepChainDockerReads: 100 layers made by ovl2; Docker mounts the
// top. The absolute mount data exceeds a page, so Docker must fall back to
// relative lowerdirs (chdir into home on a dedicated thread).
func TestOvl2DeepChainDockerReads(t *testing.T) {
	requireRoot(t)
	bin := ovl2Bin(t)
	home := newHome(t)
	o := ovl2CLI{t: t, bin: bin, home: home}

	const n = 100
	ids := make([]string, n)
	parents := map[string]string{}
	for i := range ids {
		ids[i] = dockerID(t)
		parent := ""
		if i > 0 {
			parent = ids[i-1]
		}
		parents[ids[i]] = parent
		o.create(ids[i], parent, false)
		writeFile(t, filepath.Join(home, ids[i], "diff", "files", fmt.Sprintf("layer-%03d", i)), fmt.Sprintf("content %d\n", i), 0o644)
	}
	topID := ids[n-1]

	lower, err := os.ReadFile(filepath.Join(home, topID, "lower"))
	if err != nil {
		t.Fatalf("read top lower: %v", err)
	}
	if got := len(strings.Split(string(lower), ":")); got != n-1 {
		t.Errorf("top lower has %d entries, want %d", got, n-1)
	}
	absLen := len("index=off,lowerdir=,upperdir=,workdir=") + 2*len(filepath.Join(home, topID, "diff"))
	for _, s := range strings.Split(string(lower), ":") {
		absLen += len(filepath.Join(home, s)) + 1
	}
	if absLen <= unix.Getpagesize()-1 {
		t.Fatalf("absolute mount data is only %d bytes; test would not exercise Docker's relative fallback", absLen)
	}
	t.Logf("absolute mount data ~%d bytes > page %d: Docker must use relative paths (lower file is %d bytes)", absLen, unix.Getpagesize(), len(lower))

	assertLs(t, o, parents)
	o.assertCheckClean()

	d := newDriver(t, home)
	assertMetadataMatches(t, d, o, topID)
	assertMetadataMatches(t, d, o, ids[n/2])

	m := dockerGet(t, d, topID)
	var want []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("layer-%03d", i)
		want = append(want, name)
		assertFile(t, filepath.Join(m, "files", name), fmt.Sprintf("content %d\n", i))
	}
	assertDirNames(t, filepath.Join(m, "files"), want...)
	opts := mountOptions(t, m)
	if !strings.Contains(opts, "lowerdir=l/") {
		t.Logf("note: mountinfo options for %s do not show relative lowerdirs: %.200s", m, opts)
	}
	dockerPut(t, d, topID)
	if left := mountsUnder(t, home); len(left) != 0 {
		t.Errorf("mounts left after Put: %v", left)
	}
	o.assertCheckClean()
}

// TestDepthBoundaryMatchesDocker: `ovl2 --max-depth 128` accepts exactly the layers Docker's
// overlay2 driver accepts (it refuses only when len(lowers) > 128): a layer with 128 lower
// layers is created by both and mounted by Docker; one with 129 is refused by both.
func TestDepthBoundaryMatchesDocker(t *testing.T) {
	requireRoot(t)
	bin := ovl2Bin(t)
	home := newHome(t)
	o := ovl2CLI{t: t, bin: bin, home: home}

	// ids[i] has i lower layers.
	const docker = 128
	ids := make([]string, docker+1)
	parents := map[string]string{}
	for i := range ids {
		ids[i] = dockerID(t)
		parent := ""
		if i > 0 {
			parent = ids[i-1]
		}
		parents[ids[i]] = parent
		args := []string{"--max-depth", fmt.Sprint(docker), "create", ids[i]}
		if parent != "" {
			args = append(args, "--parent", parent)
		}
		o.mustRun(args...)
		writeFile(t, filepath.Join(home, ids[i], "diff", fmt.Sprintf("layer-%03d", i)), fmt.Sprint(i), 0o644)
	}
	top := ids[docker]
	lower, err := os.ReadFile(filepath.Join(home, top, "lower"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Split(string(lower), ":")); n != docker {
		t.Fatalf("top has %d lower layers, want %d", n, docker)
	}
	assertLs(t, o, parents)

	past := dockerID(t)
	r := o.run("--max-depth", fmt.Sprint(docker), "create", past, "--parent", top)
	if r.code == 0 || !strings.Contains(r.stderr, "max depth exceeded") {
		t.Errorf("ovl2 accepted a layer with %d lower layers: %v", docker+1, r)
	}

	d := newDriver(t, home)
	if err := d.Create(past, top, nil); err == nil || !strings.Contains(err.Error(), "max depth exceeded") {
		t.Errorf("docker Create with %d lower layers: %v, want max depth exceeded", docker+1, err)
	}
	// Docker accepts the same boundary layer ovl2 did: a sibling of top, made by Docker.
	sibling := dockerID(t)
	if err := d.Create(sibling, ids[docker-1], nil); err != nil {
		t.Fatalf("docker Create with %d lower layers: %v", docker, err)
	}
	m := dockerGet(t, d, top)
	for i := range ids {
		assertFile(t, filepath.Join(m, fmt.Sprintf("layer-%03d", i)), fmt.Sprint(i))
	}
	dockerPut(t, d, top)
	parents[sibling] = ids[docker-1]
	assertLs(t, o, parents)
	// Docker's refused Create removes its layer dir but leaks the l/ link it made first;
	// ovl2's repair removes that dangling link, and nothing else is wrong.
	if r := o.run("check", "--repair"); r.code != 0 || !strings.Contains(r.stdout, "dangling_short_link") {
		t.Errorf("check --repair after Docker's refused Create: %v", r)
	}
	o.assertCheckClean()
}
