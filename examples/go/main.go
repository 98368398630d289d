//go:build linux

// Command ovl2-quickstart walks through the ovl2 Go API on a store: it builds a chain of
// layers, applies a layer tar, mounts the container layer and reads and writes through it,
// exports the container's changes as a tar, prints metadata, mounts, changes, status and
// layers, checks the store, shows how errors are matched, and cleans up. Mounting needs
// root.
//
//	ovl2-quickstart [STORE_DIR]    (a temporary directory by default)
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/ovl2/ovl2/ovl2-go"
)

func main() {
	log.SetFlags(0)
	home := ""
	if len(os.Args) > 1 {
		home = os.Args[1]
	} else {
		dir, err := os.MkdirTemp("", "ovl2-quickstart-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
		home = filepath.Join(dir, "store")
	}
	if err := run(home); err != nil {
		log.Fatal(err)
	}
}

func run(home string) error {
	fmt.Println("libovl2", ovl2.Version())
	d, err := ovl2.Open(home, ovl2.WithMaxDepth(ovl2.DockerMaxDepth))
	if err != nil {
		return err
	}
	defer d.Close()

	// The base layer, filled from a layer tar (any io.Reader; an *os.File is passed as is).
	if err := d.Create("base", "", nil); err != nil {
		return err
	}
	size, err := d.ApplyDiff("base", "", bytes.NewReader(layerTar("hello.txt", "hello from the base layer\n")))
	if err != nil {
		return err
	}
	fmt.Println("applied base:", size, "bytes")

	// An image layer and a container layer on top.
	if err := d.Create("app", "base", nil); err != nil {
		return err
	}
	if err := d.CreateReadWrite("container", "app", nil); err != nil {
		return err
	}
	m, err := d.Metadata("container")
	if err != nil {
		return err
	}
	for _, k := range []string{"LowerDir", "UpperDir", "WorkDir", "MergedDir"} {
		fmt.Printf("%-9s %s\n", k, m.Map()[k])
	}

	// Mount the container layer, read through it, write to it, unmount.
	merged, err := d.Get("container", "")
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(merged, "hello.txt"))
	if err != nil {
		d.Put("container")
		return err
	}
	fmt.Printf("read through the mount at %s: %s", merged, b)
	if err := os.WriteFile(filepath.Join(merged, "note.txt"), []byte("written in the container\n"), 0o644); err != nil {
		d.Put("container")
		return err
	}
	mounts, err := d.Mounts()
	if err != nil {
		return err
	}
	for _, mt := range mounts {
		fmt.Printf("mount %s: %d reference(s), method %s\n", mt.ID, mt.Count, mt.Method)
	}
	if err := d.Put("container"); err != nil {
		return err
	}
	_, err = os.Stat(filepath.Join(m.UpperDir, "note.txt"))
	fmt.Println("the write landed in the container's diff:", err == nil)

	// What the container changed, exported as a layer tar.
	changes, err := d.Changes("container", "app")
	if err != nil {
		return err
	}
	for _, c := range changes {
		fmt.Println("change", c)
	}
	rc, err := d.Diff("container", "app")
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		fmt.Println("exported entry:", h.Name, h.Size, "bytes")
	}

	st, err := d.Status()
	if err != nil {
		return err
	}
	for _, kv := range st {
		fmt.Printf("status: %s = %s\n", kv[0], kv[1])
	}
	layers, err := d.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		fmt.Printf("layer %-9s depth %d parent %q l/%s\n", l.ID, l.Depth, l.Parent, l.ShortID)
	}

	// Errors match sentinels and errnos.
	err = d.Remove("base")
	fmt.Println("remove base:", err, "| busy:", errors.Is(err, ovl2.ErrBusy))
	_, err = d.Metadata("missing")
	fmt.Println("metadata missing:", errors.Is(err, ovl2.ErrNotFound), errors.Is(err, fs.ErrNotExist))

	problems, err := d.Check()
	if err != nil {
		return err
	}
	fmt.Println("problems:", len(problems))
	for _, id := range []string{"container", "app", "base"} {
		if err := d.Remove(id); err != nil {
			return err
		}
	}
	return nil
}

// layerTar makes a one-file layer tar; in real use it comes from an image registry.
func layerTar(name, body string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write([]byte(body))
	tw.Close()
	return buf.Bytes()
}
