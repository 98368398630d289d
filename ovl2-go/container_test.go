//go:build linux

package ovl2_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ovl2/ovl2/ovl2-go"
)

func TestContainers(t *testing.T) {
	needMount(t)
	d, home := open(t, ovl2.WithSync(false))
	must(t, d.Create("img", "", nil))
	must(t, os.MkdirAll(filepath.Join(home, "img/diff/etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(home, "img/diff/etc/hosts"), []byte("image"), 0o644))

	// Refusals create nothing.
	if err := d.CreateContainer("c", "missing", nil); !errors.Is(err, ovl2.ErrNotFound) {
		t.Fatalf("missing image: %v", err)
	}
	bad := &ovl2.ContainerOpts{Entries: []ovl2.InitEntry{{Path: "relative", Kind: ovl2.InitFile}}}
	if err := d.CreateContainer("c", "img", bad); !errors.Is(err, ovl2.ErrInvalidArgument) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("relative entry: %v", err)
	}
	if err := d.CreateContainer("c\x00x", "img", nil); !errors.Is(err, ovl2.ErrInvalidArgument) {
		t.Fatalf("NUL in id: %v", err)
	}
	if ok, err := d.Exists("c-init"); err != nil || ok {
		t.Fatalf("a refused create left c-init: %v %v", ok, err)
	}

	opts := &ovl2.ContainerOpts{
		Entries: []ovl2.InitEntry{
			{Path: "/run/secrets", Kind: ovl2.InitDir},
			{Path: "/etc/motd", Kind: ovl2.InitSymlink, Target: "/dev/null"},
		},
		RemapRoot: true, RootUID: 100000, RootGID: 100001,
	}
	must(t, d.CreateContainer("c1", "img", opts))
	if err := d.CreateContainer("c1", "img", nil); !errors.Is(err, ovl2.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if p, err := d.Parent("c1"); err != nil || p != "c1-init" {
		t.Fatalf("parent of c1: %q %v", p, err)
	}
	init := filepath.Join(home, "c1-init/diff")
	st, err := os.Stat(filepath.Join(init, "run/secrets"))
	must(t, err)
	if sys := st.Sys().(*syscall.Stat_t); !st.IsDir() || sys.Uid != 100000 || sys.Gid != 100001 {
		t.Fatalf("run/secrets: %v uid %d gid %d", st.Mode(), sys.Uid, sys.Gid)
	}
	if fi, err := os.Stat(filepath.Join(init, "etc/hosts")); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o755 {
		t.Fatalf("Docker's empty /etc/hosts: %v %v", fi, err)
	}
	if tgt, err := os.Readlink(filepath.Join(init, "etc/motd")); err != nil || tgt != "/dev/null" {
		t.Fatalf("extra symlink: %q %v", tgt, err)
	}

	// The container's view: the image shadowed by the init entries.
	merged, err := d.Get("c1", "")
	must(t, err)
	if b, err := os.ReadFile(filepath.Join(merged, "etc/hosts")); err != nil || len(b) != 0 {
		t.Fatalf("merged /etc/hosts: %q %v", b, err)
	}
	if err := d.RemoveContainer("c1"); !errors.Is(err, ovl2.ErrBusy) {
		t.Fatalf("remove while mounted: %v", err)
	}
	must(t, d.ForceRemoveContainer("c1"))
	for _, id := range []string{"c1", "c1-init"} {
		if ok, err := d.Exists(id); err != nil || ok {
			t.Fatalf("%s left after force remove: %v %v", id, ok, err)
		}
	}
	if err := d.RemoveContainer("c1"); !errors.Is(err, ovl2.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	mounts, err := d.Mounts()
	must(t, err)
	if len(mounts) != 0 {
		t.Fatalf("mounts left: %v", mounts)
	}
}
