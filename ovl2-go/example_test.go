//go:build linux

package ovl2_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ovl2/ovl2/ovl2-go"
)

func Example() {
	dir, _ := os.MkdirTemp("", "ovl2-example-")
	defer os.RemoveAll(dir)

	d, err := ovl2.Open(filepath.Join(dir, "store"), ovl2.WithMaxDepth(ovl2.DockerMaxDepth))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	_ = d.CreateReadWrite("container", "app", nil)

	layers, _ := d.Layers()
	for _, l := range layers {
		fmt.Printf("%s depth=%d parent=%q\n", l.ID, l.Depth, l.Parent)
	}
	err = d.Remove("base")
	fmt.Println("remove base busy:", errors.Is(err, ovl2.ErrBusy))
	// Output:
	// app depth=1 parent="base"
	// base depth=0 parent=""
	// container depth=2 parent="app"
	// remove base busy: true
}
