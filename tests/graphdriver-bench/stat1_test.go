//go:build linux

package graphdriverbench

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/docker/docker/daemon/graphdriver"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"
)

// stat1Driver is the least a driver that asks the kernel whether a layer is there can do,
// in pure Go (no cgo, no libovl2): Exists is exactly one fstatat of <home>/<id> relative to
// an fd on the store home, and Get of a base layer is that same one fstatat, answering
// <home>/<id>/diff. It stands beside the "floor" driver (no syscall at all) so the table can
// say what one stat from Go costs against both real drivers. Create, Remove and the rest are
// ovl2's, so the store holds ovl2's layout (<home>/<id>/diff) for the stat to find.
type stat1Driver struct {
	ovl2Driver
	home   string
	homeFd int
}

func initStat1(home string, opts []string, idMap user.IdentityMapping) (graphdriver.Driver, error) {
	d, err := initOvl2(home, opts, idMap)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(home, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = d.Cleanup()
		return nil, fmt.Errorf("stat1: open store home %s: %w", home, err)
	}
	return &stat1Driver{ovl2Driver: d.(ovl2Driver), home: home, homeFd: fd}, nil
}

// statLayer is the one syscall (newfstatat on amd64, fstatat on arm64) both calls make.
func (s *stat1Driver) statLayer(id string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(s.homeFd, id, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	return nil
}

func (s *stat1Driver) Exists(id string) bool { return s.statLayer(id) == nil }

// Get answers for a base layer only (no lower to mount), which is all GetEmpty asks.
func (s *stat1Driver) Get(id, _ string) (string, error) {
	if err := s.statLayer(id); err != nil {
		return "", &os.PathError{Op: "stat layer", Path: filepath.Join(s.home, id), Err: err}
	}
	return filepath.Join(s.home, id, "diff"), nil
}

func (s *stat1Driver) Put(string) error { return nil }
func (s *stat1Driver) String() string   { return "stat1" }

func (s *stat1Driver) Cleanup() error {
	err := unix.Close(s.homeFd)
	if cerr := s.ovl2Driver.Cleanup(); cerr != nil {
		err = cerr
	}
	return err
}

// stat2Driver is stat1Driver whose Get of a base layer makes the two stats that Docker's
// driver (a stat of the layer, then an open of its missing lower file) and ovl2 (a stat of
// the layer, then of its missing lower file) both make: the least a Get can do that must
// tell a base layer from a child every time, with nothing remembered between calls.
type stat2Driver struct{ *stat1Driver }

func initStat2(home string, opts []string, idMap user.IdentityMapping) (graphdriver.Driver, error) {
	d, err := initStat1(home, opts, idMap)
	if err != nil {
		return nil, err
	}
	return stat2Driver{d.(*stat1Driver)}, nil
}

// Get answers for a base layer only, which is all GetEmpty asks; a child is refused.
func (s stat2Driver) Get(id, _ string) (string, error) {
	if err := s.statLayer(id); err != nil {
		return "", &os.PathError{Op: "stat layer", Path: filepath.Join(s.home, id), Err: err}
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(s.homeFd, id+"/lower", &st, unix.AT_SYMLINK_NOFOLLOW); err {
	case unix.ENOENT:
		return filepath.Join(s.home, id, "diff"), nil
	case nil:
		return "", fmt.Errorf("stat2: layer %s has a parent; only base layers are answered", id)
	default:
		return "", &os.PathError{Op: "stat lower", Path: filepath.Join(s.home, id, "lower"), Err: err}
	}
}

func (s stat2Driver) String() string { return "stat2" }
