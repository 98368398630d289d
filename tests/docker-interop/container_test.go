//go:build linux

package dockerinterop

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/daemon/graphdriver"
	"github.com/docker/docker/daemon/initlayer"
	"golang.org/x/sys/unix"
)

// dockerdUmask sets the process umask to 022 for the rest of the test, as
// dockerd does at start-up: initlayer.Setup creates its files with
// os.OpenFile(.., 0755) and no chmod, so Docker's result depends on it.
func dockerdUmask(t *testing.T) {
	t.Helper()
	old := unix.Umask(0o022)
	t.Cleanup(func() { unix.Umask(old) })
}

// dockerMount mounts id through Docker's driver. The returned put unmounts it
// once; it is also registered with t.Cleanup so a failing test still unmounts.
func dockerMount(t *testing.T, d graphdriver.Driver, id string) (string, func()) {
	t.Helper()
	p := dockerGet(t, d, id)
	done := false
	put := func() {
		if done {
			return
		}
		done = true
		if err := d.Put(id); err != nil {
			t.Errorf("docker Put(%s): %v", id, err)
		}
	}
	t.Cleanup(put)
	return p, put
}

// dockerContainer makes ctr the way Docker's layer store does for a new
// container: <ctr>-init read-write on the image top, mounted and filled by
// Docker's own initlayer.Setup with the container's root ids, unmounted, then
// <ctr> read-write on it.
func dockerContainer(t *testing.T, d graphdriver.Driver, ctr, imageTop string, uid, gid int) {
	t.Helper()
	init := ctr + "-init"
	if err := d.CreateReadWrite(init, imageTop, &graphdriver.CreateOpts{}); err != nil {
		t.Fatalf("docker CreateReadWrite(%s, %s): %v", init, imageTop, err)
	}
	p, put := dockerMount(t, d, init)
	if err := initlayer.Setup(p, uid, gid); err != nil {
		t.Fatalf("docker initlayer.Setup(%s, %d, %d): %v", p, uid, gid, err)
	}
	put()
	if err := d.CreateReadWrite(ctr, init, &graphdriver.CreateOpts{}); err != nil {
		t.Fatalf("docker CreateReadWrite(%s, %s): %v", ctr, init, err)
	}
}

// layerDirView picks one layer's directory (and its l/ link) out of a
// normalizeLIDs snapshot of the whole home, with paths made relative to the
// layer dir and the container id in link/lower contents replaced by CTR, so
// the layers of two containers on the same image can be compared directly.
func layerDirView(snap map[string]entry, layer, ctr string) map[string]entry {
	out := map[string]entry{}
	for rel, e := range snap {
		var r string
		switch {
		case rel == layer:
			r = "."
		case strings.HasPrefix(rel, layer+"/"):
			r = strings.TrimPrefix(rel, layer+"/")
		case rel == "l/LID("+layer+")":
			r = "<link in l/>"
		default:
			continue
		}
		e.Data = strings.ReplaceAll(e.Data, ctr, "CTR")
		out[r] = e
	}
	return out
}

var (
	uuidXattrRE = regexp.MustCompile(`trusted\.overlay\.uuid="(?:[^"\\]|\\.)*"`)
	workWhRE    = regexp.MustCompile(`^work/work/#[0-9a-f]+$`)
)

// withoutKernelNoise rewrites the two things the kernel makes differently on
// every mount of a layer, whoever asks for the mount: the random
// trusted.overlay.uuid it stamps on an upper dir's root (uuid=auto, Linux
// 6.6+), and the name of the shared whiteout it leaves in work/work, which is
// "#" plus an inode number in hex. Their presence, type, mode and owner are
// still compared.
func withoutKernelNoise(view map[string]entry) map[string]entry {
	out := map[string]entry{}
	var wh []string
	for rel, e := range view {
		e.Xattrs = uuidXattrRE.ReplaceAllString(e.Xattrs, "trusted.overlay.uuid=<random>")
		if workWhRE.MatchString(rel) {
			wh = append(wh, rel)
			continue
		}
		out[rel] = e
	}
	sort.Strings(wh)
	for i, rel := range wh {
		e := view[rel]
		e.Xattrs = uuidXattrRE.ReplaceAllString(e.Xattrs, "trusted.overlay.uuid=<random>")
		out[fmt.Sprintf("work/work/#<inode %d>", i)] = e
	}
	return out
}

// assertContainerLayersEqual compares the on-disk layers of two containers
// made on the same image: want (Docker's) and got (ovl2's). Both the init
// layers' diff trees (every byte, mode, owner, xattr) and the layer dirs
// themselves (diff, link, lower, work, committed, merged, l/ link) must match.
func assertContainerLayersEqual(t *testing.T, home, want, got, when string) {
	t.Helper()
	snap := normalizeLIDs(snapshot(t, home))
	for _, sfx := range []string{"-init", ""} {
		diffSnapshots(t, fmt.Sprintf("%s: layer dir <ctr>%s, docker vs ovl2", when, sfx),
			withoutKernelNoise(layerDirView(snap, want+sfx, want)), withoutKernelNoise(layerDirView(snap, got+sfx, got)))
	}
}

// assertMergedEqual mounts both containers through Docker's driver and
// compares the two merged views entry by entry, then unmounts them. It
// returns Docker's view of want.
func assertMergedEqual(t *testing.T, d graphdriver.Driver, want, got string) map[string]entry {
	t.Helper()
	wp, wput := dockerMount(t, d, want)
	gp, gput := dockerMount(t, d, got)
	ws, gs := snapshot(t, wp), snapshot(t, gp)
	diffSnapshots(t, "merged view through docker's driver, docker container vs ovl2 container", ws, gs)
	gput()
	wput()
	return ws
}

// root describes an entry owned by 0:0 for expectEntries.
func root(typ string, perm os.FileMode, data string) entry {
	return entry{Type: typ, Perm: perm, Data: data}
}

// expectEntries requires the given entries (by path) in a snapshot.
func expectEntries(t *testing.T, what string, snap map[string]entry, want map[string]entry) {
	t.Helper()
	for p, w := range want {
		g, ok := snap[p]
		switch {
		case !ok:
			t.Errorf("%s: %s missing (want %v)", what, p, w)
		case g.Type != w.Type || g.Perm != w.Perm || g.UID != w.UID || g.GID != w.GID || g.Data != w.Data:
			t.Errorf("%s: %s\n want %v\n  got %v", what, p, w, g)
		}
	}
}

// chmod sets raw permission bits (0o1777 means sticky, unlike os.Chmod).
func chmod(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := unix.Chmod(p, uint32(mode)); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	chmod(t, p, mode)
}

// TestContainerLayersMatchDocker: `ovl2 container create` on an image must
// give the same init layer, byte for byte, as Docker's layer store with
// Docker's own initlayer.Setup, and a store Docker's driver mounts to the same
// merged view.
func TestContainerLayersMatchDocker(t *testing.T) {
	requireRoot(t)
	bin := ovl2Bin(t)
	home := newHome(t)
	o := ovl2CLI{t: t, bin: bin, home: home}
	dockerdUmask(t)

	// The image, made by ovl2, its content written straight into the diffs.
	base, top := dockerID(t), dockerID(t)
	o.create(base, "", false)
	o.create(top, base, false)
	diff := func(id string) string { return filepath.Join(home, id, "diff") }
	b := diff(base)
	writeFile(t, filepath.Join(b, "bin/sh"), "#!fake shell\n", 0o755)
	writeFile(t, filepath.Join(b, "etc/hosts"), "127.0.0.1\tlocalhost\n", 0o644)
	writeFile(t, filepath.Join(b, "etc/os-release"), "ID=base\n", 0o644)
	writeFile(t, filepath.Join(b, "etc/shadow"), "root:*:1::::::\n", 0o640)
	if err := os.Chown(filepath.Join(b, "etc/shadow"), 0, 42); err != nil {
		t.Fatal(err)
	}
	symlink(t, "/proc/self/mounts", filepath.Join(b, "etc/mtab"))
	chmod(t, filepath.Join(b, "etc"), 0o751)
	if err := unix.Setxattr(filepath.Join(b, "etc"), "user.ovl2test", []byte("etc-xattr"), 0); err != nil {
		t.Fatalf("setxattr on base etc: %v", err)
	}
	mkdir(t, filepath.Join(b, "proc"), 0o555)
	mkdir(t, filepath.Join(b, "tmp"), 0o1777)
	writeFile(t, filepath.Join(b, "home/app/.profile"), "export A=1\n", 0o644)
	if err := os.Chown(filepath.Join(b, "home/app/.profile"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	// No /dev, /sys, /.dockerenv, /etc/resolv.conf, /etc/hostname in the image.
	tp := diff(top)
	mkdir(t, filepath.Join(tp, "etc"), 0o751)
	writeFile(t, filepath.Join(tp, "etc/app.conf"), "port=8080\n", 0o600)
	writeFile(t, filepath.Join(tp, "app/run"), "#!/bin/sh\nexec app\n", 0o755)

	d := newDriver(t, home)
	c1, c2 := dockerID(t), dockerID(t)
	parents := map[string]string{base: "", top: base}

	start := time.Now()
	o.mustRun("container", "create", c1, "--image", top)
	ovlTook := time.Since(start)
	parents[c1+"-init"], parents[c1] = top, c1+"-init"

	start = time.Now()
	dockerContainer(t, d, c2, top, 0, 0)
	dockerTook := time.Since(start)
	parents[c2+"-init"], parents[c2] = top, c2+"-init"
	t.Logf("container layers made in: ovl2 container create (whole process) %v, docker CreateReadWrite+Get+initlayer.Setup+Put+CreateReadWrite %v", ovlTook, dockerTook)

	// Guard the fixture: Docker's init layer holds what Setup's rules say it
	// must on this image, so matching it is not trivially true.
	initDiff := snapshot(t, diff(c2+"-init"))
	expectEntries(t, "docker's init layer diff", initDiff, map[string]entry{
		".dockerenv":      root("file", 0o755, ""),
		"etc":             root("dir", 0o751, ""),  // copied up, mode kept
		"etc/hosts":       root("file", 0o755, ""), // image file replaced
		"etc/hostname":    root("file", 0o755, ""),
		"etc/resolv.conf": root("file", 0o755, ""),
		"etc/mtab":        root("symlink", 0o777, "/proc/mounts"), // image symlink replaced
		"dev":             root("dir", 0o755, ""),
		"dev/console":     root("file", 0o755, ""),
		"dev/pts":         root("dir", 0o755, ""),
		"dev/shm":         root("dir", 0o755, ""),
		"sys":             root("dir", 0o755, ""),
	})
	for _, p := range []string{"proc", "etc/os-release", "bin", "app"} {
		if _, ok := initDiff[p]; ok {
			t.Errorf("docker's init layer diff has %s; the fixture expects it untouched in the image", p)
		}
	}

	assertContainerLayersEqual(t, home, c2, c1, "after create")
	assertLs(t, o, parents)
	o.assertCheckClean()

	// Docker's driver mounts the ovl2-made container and its own: same view.
	view := assertMergedEqual(t, d, c2, c1)
	expectEntries(t, "docker's merged view of its container", view, map[string]entry{
		"etc/hosts":      root("file", 0o755, ""),
		"etc/os-release": root("file", 0o644, "ID=base\n"),
		"etc/app.conf":   root("file", 0o600, "port=8080\n"),
		"etc/mtab":       root("symlink", 0o777, "/proc/mounts"),
		"proc":           root("dir", 0o555, ""),
		"tmp":            root("dir", 0o1777, ""),
		"app/run":        root("file", 0o755, "#!/bin/sh\nexec app\n"),
	})
	if left := mountsUnder(t, home); len(left) != 0 {
		t.Errorf("mounts left after Put: %v", left)
	}
	assertContainerLayersEqual(t, home, c2, c1, "after docker Get/Put of both")
	o.assertCheckClean()

	// ovl2 removes its container; Docker's stays as it was.
	snap := normalizeLIDs(snapshot(t, home))
	keep := map[string]map[string]entry{}
	for _, id := range []string{c2 + "-init", c2, top, base} {
		keep[id] = layerDirView(snap, id, c2)
	}
	lids := map[string]string{}
	for _, id := range []string{c1, c1 + "-init"} {
		b, err := os.ReadFile(filepath.Join(home, id, "link"))
		if err != nil {
			t.Fatalf("read %s/link: %v", id, err)
		}
		lids[id] = string(b)
	}
	o.mustRun("container", "rm", c1)
	for _, id := range []string{c1, c1 + "-init"} {
		assertAbsent(t, filepath.Join(home, id))
		assertAbsent(t, filepath.Join(home, "l", lids[id]))
		if d.Exists(id) {
			t.Errorf("docker Exists(%s) after ovl2 container rm", id)
		}
		delete(parents, id)
	}
	snap = normalizeLIDs(snapshot(t, home))
	for id, want := range keep {
		diffSnapshots(t, "layer "+id+" across ovl2 container rm of the other container", want, layerDirView(snap, id, c2))
	}
	assertLs(t, o, parents)
	o.assertCheckClean()
	p, put := dockerMount(t, d, c2)
	diffSnapshots(t, "docker's merged view of its container after ovl2 container rm of the other", view, snapshot(t, p))
	put()
	o.assertCheckClean()

	// A user-namespaced container: root is 100000:100000 on the host. ovl2
	// runs under umask 077 here: as a library it cannot count on dockerd's
	// 022, so its result must not depend on the caller's umask.
	t.Run("remapped-root-any-umask", func(t *testing.T) {
		o := o
		o.t = t
		c3, c4 := dockerID(t), dockerID(t)
		old := unix.Umask(0o077)
		o.mustRun("container", "create", c3, "--image", top, "--remap-root", "100000:100000")
		unix.Umask(old)
		dockerContainer(t, d, c4, top, 100000, 100000)
		got := snapshot(t, diff(c4+"-init"))
		if e := got["dev/pts"]; e.UID != 100000 || e.GID != 100000 {
			t.Errorf("fixture: docker made dev/pts %v, want owned by 100000:100000", e)
		}
		assertContainerLayersEqual(t, home, c4, c3, "remapped root")
		assertMergedEqual(t, d, c4, c3)
		// ovl2 removes Docker-made container layers too.
		for _, c := range []string{c3, c4} {
			o.mustRun("container", "rm", c)
			if d.Exists(c) || d.Exists(c+"-init") {
				t.Errorf("docker still sees %s or its init layer after ovl2 container rm", c)
			}
		}
		assertLs(t, o, parents)
		o.assertCheckClean()
	})

	// Images whose init paths are in the way: symlinks, files where dirs go,
	// a dir where a file goes, whiteouts, device nodes, existing dirs with
	// odd modes. Each gets an ovl2 and a Docker container, compared as above.
	variants := []struct {
		name string
		fill func(t *testing.T, x string)
		want map[string]entry // in Docker's init layer diff
		kept []string         // image paths Docker must leave alone (absent from the init diff)
	}{
		{
			name: "obstructed-image",
			fill: func(t *testing.T, x string) {
				symlink(t, ".hostdev", filepath.Join(x, "dev"))
				writeFile(t, filepath.Join(x, ".hostdev/null"), "", 0o666)
				writeFile(t, filepath.Join(x, "sys"), "a file, not a dir\n", 0o644)
				mkdir(t, filepath.Join(x, ".dockerenv"), 0o700)
				mkdir(t, filepath.Join(x, "etc"), 0o751)
				writeFile(t, filepath.Join(x, "etc/hosts/keep"), "hosts is a dir here\n", 0o644)
				symlink(t, "/nonexistent/hostname", filepath.Join(x, "etc/hostname"))
				symlink(t, "../run/resolv.conf", filepath.Join(x, "etc/resolv.conf"))
				writeFile(t, filepath.Join(x, "etc/mtab"), "rootfs / rootfs rw 0 0\n", 0o644)
				mkWhiteout(t, filepath.Join(x, "etc/os-release"))
				symlink(t, "/proc-elsewhere", filepath.Join(x, "proc"))
			},
			want: map[string]entry{
				"dev":             root("dir", 0o755, ""),
				"dev/pts":         root("dir", 0o755, ""),
				"sys":             root("dir", 0o755, ""),
				"proc":            root("dir", 0o755, ""),
				"etc/hostname":    root("file", 0o755, ""),
				"etc/resolv.conf": root("file", 0o755, ""),
				"etc/mtab":        root("symlink", 0o777, "/proc/mounts"),
			},
			kept: []string{"etc/hosts", ".dockerenv", ".hostdev"},
		},
		{
			name: "device-nodes-and-odd-dirs",
			fill: func(t *testing.T, x string) {
				mkdir(t, filepath.Join(x, "dev/pts"), 0o700)
				if err := os.Chown(filepath.Join(x, "dev/pts"), 0, 5); err != nil {
					t.Fatal(err)
				}
				chmod(t, filepath.Join(x, "dev"), 0o750)
				if err := unix.Mknod(filepath.Join(x, "dev/console"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1))); err != nil {
					t.Fatalf("mknod console: %v", err)
				}
				if err := unix.Mknod(filepath.Join(x, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatalf("mknod null: %v", err)
				}
				symlink(t, "/run/shm", filepath.Join(x, "dev/shm"))
				mkdir(t, filepath.Join(x, "sys"), 0o555)
				mkWhiteout(t, filepath.Join(x, "etc"))
			},
			want: map[string]entry{
				"dev":             root("dir", 0o750, ""), // copied up, mode kept
				"dev/console":     root("file", 0o755, ""),
				"dev/shm":         root("dir", 0o755, ""),
				"etc":             root("dir", 0o755, ""), // made anew over the image's whiteout
				"etc/hosts":       root("file", 0o755, ""),
				"etc/mtab":        root("symlink", 0o777, "/proc/mounts"),
				"etc/resolv.conf": root("file", 0o755, ""),
			},
			kept: []string{"dev/pts", "dev/null", "sys", "proc"},
		},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			o := o
			o.t = t
			img := dockerID(t)
			o.create(img, base, false)
			v.fill(t, diff(img))
			co, cd := dockerID(t), dockerID(t)
			o.mustRun("container", "create", co, "--image", img)
			dockerContainer(t, d, cd, img, 0, 0)
			got := snapshot(t, diff(cd+"-init"))
			expectEntries(t, "fixture: docker's init layer", got, v.want)
			for _, p := range v.kept {
				if e, ok := got[p]; ok {
					t.Errorf("fixture: docker's init layer has %s (%v); expected the image's to be left alone", p, e)
				}
			}
			assertContainerLayersEqual(t, home, cd, co, v.name)
			assertMergedEqual(t, d, cd, co)
			for _, c := range []string{co, cd} {
				o.mustRun("container", "rm", c)
			}
			parents[img] = base
			assertLs(t, o, parents)
			o.assertCheckClean()
		})
	}
}
