//go:build linux

package graphdriverbench

import (
	"io"
	"testing"
	_ "unsafe" // go:linkname

	"github.com/containerd/log"
	"github.com/docker/docker/daemon/graphdriver"
	"github.com/docker/docker/daemon/graphdriver/graphtest"
	"github.com/docker/docker/daemon/graphdriver/overlay2"
	"github.com/moby/go-archive"
	"github.com/moby/sys/user"
)

// Driver names as registered with graphdriver (graphtest opens drivers by name).
const (
	mobyName = "bench-moby-overlay2"
	ovl2Name = "bench-ovl2"
	// floorName is ovl2 with Exists, Get and Put answered from memory (see floorDriver).
	floorName = "bench-floor"
	// stat1Name answers Exists and Get with one fstatat from pure Go (see stat1Driver).
	stat1Name = "bench-stat1"
	// stat2Name answers Get of a base layer with the two stats a base layer's get needs.
	stat2Name = "bench-stat2"
)

// mobyUntar is overlay2's unexported untar hook. moby's overlay2 tests set it to the
// in-process untar (no chroot) before running these benchmarks; do the same, so Docker's
// driver is measured as moby measures it.
//
//go:linkname mobyUntar github.com/docker/docker/daemon/graphdriver/overlay2.untar
var mobyUntar func(io.Reader, string, *archive.TarOptions) error

func init() {
	// graphdriver.New logs each store it opens at info level, once per benchmark call.
	if err := log.SetLevel("warn"); err != nil {
		panic(err)
	}
	mobyUntar = archive.UntarUncompressed
	graphdriver.ApplyUncompressedLayer = archive.ApplyUncompressedLayer
	if err := graphdriver.Register(mobyName, untimed(overlay2.Init)); err != nil {
		panic(err)
	}
	if err := graphdriver.Register(ovl2Name, untimed(initOvl2)); err != nil {
		panic(err)
	}
	if err := graphdriver.Register(floorName, untimed(initFloor)); err != nil {
		panic(err)
	}
	if err := graphdriver.Register(stat1Name, untimed(initStat1)); err != nil {
		panic(err)
	}
	if err := graphdriver.Register(stat2Name, untimed(initStat2)); err != nil {
		panic(err)
	}
}

// floorDriver is ovl2 with Exists, Get and Put doing no work at all: what graphtest's loop
// and the interface calls cost by themselves, the floor under both real drivers' Exists.
// (Not for GetEmpty: graphtest restarts the timer around every Put, and each restart reads
// the runtime's memory statistics, a stop-the-world of tens of µs, untimed; a driver that
// does nothing needs millions of them to fill the bench time.)
type floorDriver struct{ ovl2Driver }

func initFloor(home string, opts []string, idMap user.IdentityMapping) (graphdriver.Driver, error) {
	d, err := initOvl2(home, opts, idMap)
	if err != nil {
		return nil, err
	}
	return floorDriver{d.(ovl2Driver)}, nil
}

func (floorDriver) Exists(string) bool               { return true }
func (floorDriver) Get(id, _ string) (string, error) { return id, nil }
func (floorDriver) Put(string) error                 { return nil }
func (floorDriver) String() string                   { return "floor" }

// Reference drivers, run after both real drivers as sub-benchmarks of their own name.
var (
	floorRef = reference{"floor", floorName}
	stat1Ref = reference{"stat1", stat1Name}
	stat2Ref = reference{"stat2", stat2Name}
)

type reference struct{ sub, name string }

// withRefs is both, then the same benchmark for each reference driver given.
func withRefs(b *testing.B, bench func(b *testing.B, driver string), refs ...reference) {
	both(b, bench)
	for _, r := range refs {
		b.Run(r.sub, func(b *testing.B) {
			current = b
			defer func() { current = nil }()
			bench(b, r.name)
		})
	}
}

// both runs bench for Docker's driver, then ovl2's, as sub-benchmarks "moby" and "ovl2".
// graphtest's functions open a fresh store (new temp dir, new driver) on every call.
func both(b *testing.B, bench func(b *testing.B, driver string)) {
	for _, d := range []struct{ sub, name string }{{"moby", mobyName}, {"ovl2", ovl2Name}} {
		b.Run(d.sub, func(b *testing.B) {
			current = b
			defer func() { current = nil }()
			bench(b, d.name)
		})
	}
}

// The list and parameters of moby's daemon/graphdriver/overlay2/overlay_test.go.

func BenchmarkExists(b *testing.B) {
	withRefs(b, func(b *testing.B, d string) { graphtest.DriverBenchExists(b, d) }, floorRef, stat1Ref)
}

// stat1's Get is one syscall, so filling the bench time takes many iterations, each with
// graphtest's untimed Stop/StartTimer (two reads of the runtime's memory statistics): its
// sub-benchmark takes several times the bench time in wall time, but its ns/op is right.
func BenchmarkGetEmpty(b *testing.B) {
	withRefs(b, func(b *testing.B, d string) { graphtest.DriverBenchGetEmpty(b, d) }, stat1Ref, stat2Ref)
}

func BenchmarkDiffBase(b *testing.B) {
	both(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffBase(b, d) })
}

func BenchmarkDiffSmallUpper(b *testing.B) {
	both(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffN(b, 10, 10, d) })
}

func BenchmarkDiff10KFileUpper(b *testing.B) {
	both(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffN(b, 10, 10000, d) })
}

func BenchmarkDiff10KFilesBottom(b *testing.B) {
	both(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffN(b, 10000, 10, d) })
}

func BenchmarkDiffApply100(b *testing.B) {
	both(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffApplyN(b, 100, d) })
}

func BenchmarkDiff20Layers(b *testing.B) {
	both(b, func(b *testing.B, d string) { graphtest.DriverBenchDeepLayerDiff(b, 20, d) })
}

func BenchmarkRead20Layers(b *testing.B) {
	both(b, func(b *testing.B, d string) { graphtest.DriverBenchDeepLayerRead(b, 20, d) })
}
