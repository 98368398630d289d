//go:build linux

package ovl2_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ovl2/ovl2/ovl2-go"
)

// needMount skips without root, except under CI=true or OVL2_REQUIRE_MOUNT=1, where a
// mount test that cannot run is a failure (the project's rule).
func needMount(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" || os.Getenv("OVL2_REQUIRE_MOUNT") == "1" {
		t.Fatal("mount tests need root (CI=true or OVL2_REQUIRE_MOUNT=1 is set)")
	}
	t.Skip("mount tests need root")
}

func chain(t *testing.T, d *ovl2.Driver) {
	t.Helper()
	must(t, d.Create("base", "", nil))
	must(t, d.Create("app", "base", nil))
	must(t, d.CreateReadWrite("ctr", "app", nil))
	m, err := d.Metadata("base")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(m.UpperDir, "hello.txt"), []byte("from base"), 0o644))
	m, err = d.Metadata("app")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(m.UpperDir, "app.txt"), []byte("from app"), 0o644))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return string(b)
}

func mountOf(t *testing.T, d *ovl2.Driver, id string) (ovl2.Mount, int) {
	t.Helper()
	ms, err := d.Mounts()
	must(t, err)
	for _, m := range ms {
		if m.ID == id {
			return m, len(ms)
		}
	}
	return ovl2.Mount{}, len(ms)
}

func TestGetPut(t *testing.T) {
	needMount(t)
	d, home := open(t)
	chain(t, d)

	p, err := d.Get("ctr", "")
	must(t, err)
	if p != filepath.Join(home, "ctr", "merged") {
		t.Fatalf("Get = %q", p)
	}
	if readFile(t, filepath.Join(p, "hello.txt")) != "from base" || readFile(t, filepath.Join(p, "app.txt")) != "from app" {
		t.Fatal("lower files not visible through the mount")
	}
	must(t, os.WriteFile(filepath.Join(p, "new.txt"), []byte("from ctr"), 0o644))
	if readFile(t, filepath.Join(home, "ctr", "diff", "new.txt")) != "from ctr" {
		t.Fatal("write did not land in the upper")
	}
	m, n := mountOf(t, d, "ctr")
	if n != 1 || m.Count != 1 || m.Processes != 1 || !m.Mounted || m.ReadOnly || m.Method == "" || m.Path != p {
		t.Fatalf("Mounts() after one Get: %+v (%d)", m, n)
	}
	_, err = d.Get("ctr", "")
	must(t, err)
	wantErr(t, d.Remove("ctr"), ovl2.ErrBusy, syscall.EBUSY, "remove", "ctr")
	must(t, d.Put("ctr"))
	if m, _ := mountOf(t, d, "ctr"); !m.Mounted {
		t.Fatal("unmounted while a reference remains")
	}
	must(t, d.Put("ctr"))
	if _, n := mountOf(t, d, "ctr"); n != 0 {
		t.Fatal("still mounted after the last Put")
	}
	wantErr(t, d.Put("ctr"), ovl2.ErrInvalidArgument, syscall.EINVAL, "put", "ctr")

	// A base layer is not mounted: Get returns its diff dir, Put is a no-op.
	p, err = d.Get("base", "")
	must(t, err)
	if p != filepath.Join(home, "base", "diff") {
		t.Fatalf("Get(base) = %q", p)
	}
	must(t, d.Put("base"))

	_, err = d.Get("nope", "")
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "get", "nope")
	_, err = d.Get("ctr", "a,b")
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "get", "ctr")
	_, err = d.Get("ctr", "a\x00b")
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "get", "ctr")
	wantErr(t, d.Put("nope"), ovl2.ErrNotFound, syscall.ENOENT, "put", "nope")
}

func TestGetWithAndCleanup(t *testing.T) {
	needMount(t)
	d, _ := open(t)
	chain(t, d)

	p, err := d.GetWith("ctr", &ovl2.MountOpts{ReadOnly: true})
	must(t, err)
	if err := os.WriteFile(filepath.Join(p, "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to a read-only mount: %v", err)
	}
	if m, _ := mountOf(t, d, "ctr"); !m.ReadOnly {
		t.Fatalf("mount not read-only: %+v", m)
	}
	_, err = d.Get("ctr", "")
	wantErr(t, err, ovl2.ErrBusy, syscall.EBUSY, "get", "ctr")
	must(t, d.Put("ctr"))

	_, err = d.GetWith("ctr", &ovl2.MountOpts{Persistent: true, Volatile: true})
	must(t, err)
	if m, _ := mountOf(t, d, "ctr"); m.Persistent != 1 || m.Processes != 0 {
		t.Fatalf("persistent reference: %+v", m)
	}
	must(t, d.Put("ctr"))
	_, err = d.GetWith("ctr", nil)
	must(t, err)
	_, err = d.Get("app", "")
	must(t, err)
	must(t, d.Cleanup())
	if ms, err := d.Mounts(); err != nil || len(ms) != 0 {
		t.Fatalf("after Cleanup: %+v %v", ms, err)
	}
}

func TestMountOptions(t *testing.T) {
	needMount(t)
	home := filepath.Join(t.TempDir(), "s")
	_, err := ovl2.Open(home, ovl2.WithMountStrategy(42))
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "open", "")
	_, err = ovl2.Open(home, ovl2.WithDisabledFeatures("warp-drive"))
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "open", "")
	d, err := ovl2.Open(home, ovl2.WithSync(false), ovl2.WithMountStrategy(ovl2.MountLegacy),
		ovl2.WithDisabledFeatures("lowerdir+fd", "O_PATH-fds"))
	must(t, err)
	defer d.Close()
	chain(t, d)
	p, err := d.Get("ctr", "")
	must(t, err)
	if readFile(t, filepath.Join(p, "hello.txt")) != "from base" {
		t.Fatal("legacy mount does not show lower files")
	}
	if m, _ := mountOf(t, d, "ctr"); !strings.HasPrefix(m.Method, "legacy") {
		t.Fatalf("method %q, want legacy-*", m.Method)
	}
	must(t, d.Put("ctr"))
}

// Goroutines share layers' mounts: references from all of them must balance out.
func TestConcurrentGetPut(t *testing.T) {
	needMount(t)
	d, _ := open(t)
	chain(t, d)
	for i := 0; i < 4; i++ {
		must(t, d.CreateReadWrite(fmt.Sprintf("c%d", i), "app", nil))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			id := fmt.Sprintf("c%d", g%4)
			for i := 0; i < 10; i++ {
				p, err := d.Get(id, "")
				if err != nil {
					errs <- err
					return
				}
				if b, err := os.ReadFile(filepath.Join(p, "hello.txt")); err != nil || string(b) != "from base" {
					errs <- fmt.Errorf("read through %s: %q %v", p, b, err)
					return
				}
				if err := d.Put(id); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ms, err := d.Mounts(); err != nil || len(ms) != 0 {
		t.Fatalf("references did not balance: %+v %v", ms, err)
	}
}
