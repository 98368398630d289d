// Command dockertar writes Docker's native overlay2 Diff of a diff directory to stdout:
// go-archive's TarWithOptions with the overlay whiteout format, exactly the call Docker's
// overlay2 driver makes. ovl2's Rust tests compare its own diff bytes against this.
package main

import (
	"io"
	"os"

	"github.com/moby/go-archive"
	"github.com/moby/go-archive/compression"
)

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: dockertar DIFF_DIR\n")
		os.Exit(2)
	}
	rc, err := archive.TarWithOptions(os.Args[1], &archive.TarOptions{
		Compression:    compression.None,
		WhiteoutFormat: archive.OverlayWhiteoutFormat,
	})
	if err != nil {
		panic(err)
	}
	defer rc.Close()
	if _, err := io.Copy(os.Stdout, rc); err != nil {
		panic(err)
	}
}
