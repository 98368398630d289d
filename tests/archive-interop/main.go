// Command dockertar runs Docker's own archive code (github.com/moby/go-archive) so ovl2's
// tests can compare against it byte for byte:
//
//	dockertar DIFF_DIR           the native overlay2 Diff of DIFF_DIR (TarWithOptions with the
//	                             overlay whiteout format, the call Docker's driver makes)
//	dockertar changes NEW OLD    ChangesDirs(NEW, OLD), sorted by path, one "C /p" per line
//	dockertar tar DIR            archive.Tar(DIR): Docker's naive Diff of a layer with no parent
//	dockertar export NEW OLD     ExportChanges(NEW, ChangesDirs(NEW, OLD)): Docker's naive Diff
//	dockertar apply DIR < TAR    Unpack with the overlay whiteout format into DIR (what
//	                             Docker's overlay2 ApplyDiff runs, minus the chroot)
//	dockertar applylayer DIR < TAR
//	                             ApplyUncompressedLayer into DIR, a mounted layer (what the
//	                             naive ApplyDiff runs, minus the chroot); prints the size
//	dockertar apply-chroot DIR < TAR
//	                             the same chrooted into DIR and unpacking to "/", exactly as
//	                             chrootarchive.UntarUncompressed does (safe for hostile tars;
//	                             needs root); a refusal is exit status 1 and the error on stderr
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"syscall"

	"github.com/moby/go-archive"
	"github.com/moby/go-archive/compression"
	"github.com/moby/sys/user"
)

func main() {
	switch {
	case len(os.Args) == 2:
		diff(os.Args[1])
	case len(os.Args) == 4 && os.Args[1] == "changes":
		changes(os.Args[2], os.Args[3])
	case len(os.Args) == 3 && os.Args[1] == "tar":
		rc, err := archive.Tar(os.Args[2], compression.None)
		if err != nil {
			panic(err)
		}
		copyOut(rc)
	case len(os.Args) == 4 && os.Args[1] == "export":
		ch, err := archive.ChangesDirs(os.Args[2], os.Args[3])
		if err != nil {
			panic(err)
		}
		rc, err := archive.ExportChanges(os.Args[2], ch, user.IdentityMapping{})
		if err != nil {
			panic(err)
		}
		copyOut(rc)
	case len(os.Args) == 3 && os.Args[1] == "apply":
		// Docker unpacks chrooted into the layer, so hardlink names (which go-archive also
		// looks up relative to the working directory) resolve there; chdir stands in for it.
		if err := os.Chdir(os.Args[2]); err != nil {
			panic(err)
		}
		err := archive.Unpack(os.Stdin, os.Args[2], &archive.TarOptions{WhiteoutFormat: archive.OverlayWhiteoutFormat})
		if err != nil {
			panic(err)
		}
	case len(os.Args) == 3 && os.Args[1] == "applylayer":
		if err := os.Chdir(os.Args[2]); err != nil {
			panic(err)
		}
		size, err := archive.ApplyUncompressedLayer(os.Args[2], os.Stdin, &archive.TarOptions{})
		if err != nil {
			panic(err)
		}
		fmt.Println(size)
	case len(os.Args) == 3 && os.Args[1] == "apply-chroot":
		if err := syscall.Chroot(os.Args[2]); err != nil {
			panic(err)
		}
		if err := os.Chdir("/"); err != nil {
			panic(err)
		}
		err := archive.Unpack(os.Stdin, "/", &archive.TarOptions{WhiteoutFormat: archive.OverlayWhiteoutFormat})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		os.Stderr.WriteString("usage: dockertar DIFF_DIR | dockertar changes NEW OLD | dockertar apply DIR < TAR\n")
		os.Exit(2)
	}
}

func diff(dir string) {
	rc, err := archive.TarWithOptions(dir, &archive.TarOptions{
		Compression:    compression.None,
		WhiteoutFormat: archive.OverlayWhiteoutFormat,
	})
	if err != nil {
		panic(err)
	}
	copyOut(rc)
}

func copyOut(rc io.ReadCloser) {
	defer rc.Close()
	if _, err := io.Copy(os.Stdout, rc); err != nil {
		panic(err)
	}
}

func changes(newDir, oldDir string) {
	ch, err := archive.ChangesDirs(newDir, oldDir)
	if err != nil {
		panic(err)
	}
	sort.Slice(ch, func(i, j int) bool { return ch[i].Path < ch[j].Path })
	for _, c := range ch {
		fmt.Println(c.String())
	}
}
