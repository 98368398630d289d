//go:build linux

package ovl2

/*
#include <stdlib.h>
#include <ovl2.h>
*/
import "C"

import "unsafe"

// InitKind is what an init entry creates.
type InitKind uint32

// Init entry kinds.
const (
	InitDir     InitKind = C.OVL2_INIT_DIR     // a directory, 0755
	InitFile    InitKind = C.OVL2_INIT_FILE    // an empty file, 0755 (a bind-mount target)
	InitSymlink InitKind = C.OVL2_INIT_SYMLINK // a symlink to Target
)

// InitEntry is one entry of a container's init layer, by absolute path in the container.
type InitEntry struct {
	Path   string
	Kind   InitKind
	Target string // for InitSymlink
}

// ContainerOpts tunes CreateContainer. The zero value gives Docker's init layer.
type ContainerOpts struct {
	// NoDefaultEntries starts from no init entries instead of Docker's (/dev/pts,
	// /etc/hosts, /.dockerenv, ...).
	NoDefaultEntries bool
	// Entries are added after the defaults (or alone, with NoDefaultEntries).
	Entries []InitEntry
	// RemapRoot owns new init entries by RootUID:RootGID (a user-namespaced container's
	// root) instead of the store's root.
	RemapRoot        bool
	RootUID, RootGID uint32
	// MountLabel is the SELinux label for both layers.
	MountLabel string
}

// CreateContainer creates container ctr on the image layer imageTop as Docker does:
// ctr+"-init" filled with the init entries through a mount, then ctr on top of it. opts may
// be nil. All or nothing, even if the process dies half way.
func (d *Driver) CreateContainer(ctr, imageTop string, opts *ContainerOpts) error {
	const op = "create_container"
	return d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cctr, err := a.str(op, ctr, "ctr", ctr)
		if err != nil {
			return err
		}
		ctop, err := a.str(op, ctr, "image top", imageTop)
		if err != nil {
			return err
		}
		var co C.ovl2_container_opts
		C.ovl2_container_opts_init(&co)
		var entries unsafe.Pointer
		if opts != nil {
			co.no_default_entries = cflag(opts.NoDefaultEntries)
			co.remap_root = cflag(opts.RemapRoot)
			co.root_uid = C.uint32_t(opts.RootUID)
			co.root_gid = C.uint32_t(opts.RootGID)
			if co.mount_label, err = a.optStr(op, ctr, "mount label", opts.MountLabel); err != nil {
				return err
			}
			if n := len(opts.Entries); n > 0 {
				// The array lives in C memory: cgo forbids Go memory holding C pointers.
				size := C.size_t(n) * C.size_t(unsafe.Sizeof(C.ovl2_init_entry{}))
				entries = C.malloc(size)
				defer C.free(entries)
				arr := unsafe.Slice((*C.ovl2_init_entry)(entries), n)
				for i, e := range opts.Entries {
					if arr[i].path, err = a.str(op, ctr, "init entry path", e.Path); err != nil {
						return err
					}
					arr[i].kind = C.uint32_t(e.Kind)
					if arr[i].target, err = a.optStr(op, ctr, "init entry target", e.Target); err != nil {
						return err
					}
				}
				co.entries = (*C.ovl2_init_entry)(entries)
				co.n_entries = C.size_t(n)
			}
		}
		return call(op, ctr, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_create_container(cd, cctr, ctop, &co, e)
		})
	})
}

// RemoveContainer removes container ctr and its init layer. It fails with ErrBusy while the
// container is mounted.
func (d *Driver) RemoveContainer(ctr string) error { return d.removeContainer(ctr, false) }

// ForceRemoveContainer removes container ctr and its init layer, unmounting them first.
func (d *Driver) ForceRemoveContainer(ctr string) error { return d.removeContainer(ctr, true) }

func (d *Driver) removeContainer(ctr string, force bool) error {
	const op = "remove_container"
	return d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cctr, err := a.str(op, ctr, "ctr", ctr)
		if err != nil {
			return err
		}
		return call(op, ctr, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_remove_container(cd, cctr, C.bool(force), e)
		})
	})
}
