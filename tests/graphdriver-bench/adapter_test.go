//go:build linux

package graphdriverbench

import (
	"io"
	"os"
	"testing"

	"github.com/docker/docker/daemon/graphdriver"
	"github.com/moby/go-archive"
	"github.com/moby/sys/user"
	"github.com/ovl2/ovl2/ovl2-go"
)

// ovl2Driver is ovl2 behind Docker's graphdriver.Driver interface, with Docker's semantics:
// Remove ignores children and Exists reports errors as absent.
type ovl2Driver struct{ d *ovl2.Driver }

var _ graphdriver.Driver = ovl2Driver{}

// initOvl2 opens ovl2 with its defaults (fsync on, which Docker's overlay2 does not do);
// OVL2_BENCH_SYNC=off turns fsync off to show what it costs.
func initOvl2(home string, _ []string, _ user.IdentityMapping) (graphdriver.Driver, error) {
	d, err := ovl2.Open(home, ovl2.WithSync(os.Getenv("OVL2_BENCH_SYNC") != "off"))
	if err != nil {
		return nil, err
	}
	return ovl2Driver{d}, nil
}

func (o ovl2Driver) String() string { return "ovl2" }

func toOpts(opts *graphdriver.CreateOpts) *ovl2.CreateOpts {
	if opts == nil {
		return nil
	}
	return &ovl2.CreateOpts{MountLabel: opts.MountLabel, StorageOpt: opts.StorageOpt}
}

func (o ovl2Driver) CreateReadWrite(id, parent string, opts *graphdriver.CreateOpts) error {
	return o.d.CreateReadWrite(id, parent, toOpts(opts))
}

func (o ovl2Driver) Create(id, parent string, opts *graphdriver.CreateOpts) error {
	return o.d.Create(id, parent, toOpts(opts))
}

func (o ovl2Driver) Remove(id string) error {
	return o.d.RemoveWith(id, ovl2.RemoveOpts{IgnoreChildren: true})
}

func (o ovl2Driver) Get(id, mountLabel string) (string, error) { return o.d.Get(id, mountLabel) }
func (o ovl2Driver) Put(id string) error                       { return o.d.Put(id) }

func (o ovl2Driver) Exists(id string) bool {
	ok, err := o.d.Exists(id)
	return err == nil && ok
}

func (o ovl2Driver) Status() [][2]string {
	s, _ := o.d.Status()
	return s
}

func (o ovl2Driver) GetMetadata(id string) (map[string]string, error) {
	m, err := o.d.Metadata(id)
	if err != nil {
		return nil, err
	}
	return m.Map(), nil
}

// Cleanup unmounts what is left and closes the store, as Docker's Cleanup does at shutdown.
func (o ovl2Driver) Cleanup() error {
	err := o.d.Cleanup()
	if cerr := o.d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (o ovl2Driver) Diff(id, parent string) (io.ReadCloser, error) { return o.d.Diff(id, parent) }

func (o ovl2Driver) Changes(id, parent string) ([]archive.Change, error) {
	cs, err := o.d.Changes(id, parent)
	if err != nil {
		return nil, err
	}
	out := make([]archive.Change, len(cs))
	for i, c := range cs {
		kind := archive.ChangeModify
		switch c.Kind {
		case ovl2.ChangeAdd:
			kind = archive.ChangeAdd
		case ovl2.ChangeDelete:
			kind = archive.ChangeDelete
		}
		out[i] = archive.Change{Path: c.Path, Kind: archive.ChangeType(kind)}
	}
	return out, nil
}

func (o ovl2Driver) ApplyDiff(id, parent string, diff io.Reader) (int64, error) {
	return o.d.ApplyDiff(id, parent, diff)
}

func (o ovl2Driver) DiffSize(id, parent string) (int64, error) { return o.d.DiffSize(id, parent) }

// untimedCleanup stops the benchmark timer when graphtest tears the store down (PutDriver
// runs deferred inside each benchmark function, so its Cleanup and RemoveAll would
// otherwise be timed): only the work the benchmark loops over is measured, for both drivers.
type untimedCleanup struct{ graphdriver.Driver }

// current is the benchmark running now; graphtest gives the driver no handle on it.
var current *testing.B

func (u untimedCleanup) Cleanup() error {
	if current != nil {
		current.StopTimer()
	}
	return u.Driver.Cleanup()
}

func untimed(f graphdriver.InitFunc) graphdriver.InitFunc {
	return func(home string, opts []string, idMap user.IdentityMapping) (graphdriver.Driver, error) {
		d, err := f(home, opts, idMap)
		if err != nil {
			return nil, err
		}
		return untimedCleanup{d}, nil
	}
}
