// Package conformance runs containerd's own snapshotter conformance suite
// (github.com/containerd/containerd/snapshots/testsuite) against ovl2-snapshotter,
// through containerd's proxy client over the service's unix socket: every test gets
// a fresh service process with a fresh home, as the suite expects a fresh snapshotter.
package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// check runs `ovl2 check` (OVL2_CLI names the CLI) on the home the service left behind, in the
// same namespaces, so every store the suite fills (rootless ones too) must check clean.
func check(home string) error {
	cli := os.Getenv("OVL2_CLI")
	if cli == "" {
		return fmt.Errorf("OVL2_CLI must name the ovl2 binary (each test's store is checked with it)")
	}
	out, err := exec.Command(cli, "check", "--home", home).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ovl2 check --home %s on the store the suite left: %w\n%s", home, err, out)
	}
	return nil
}

func binary(t *testing.T) string {
	b := os.Getenv("OVL2_SNAPSHOTTER")
	if b == "" {
		t.Fatal("OVL2_SNAPSHOTTER must name the ovl2-snapshotter binary")
	}
	return b
}

func TestOvl2Snapshotter(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the conformance suite needs root (it mounts what the snapshotter returns)")
		}
		t.Skip("needs root")
	}
	bin := binary(t)
	testsuite.SnapshotterSuite(t, "ovl2", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sock := filepath.Join(root, "snap.sock")
		home := filepath.Join(root, "home")
		cmd := exec.Command(bin, "--address", sock, "--home", home)
		cmd.Stdout = os.Stderr
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, nil, err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := net.Dial("unix", sock)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				return nil, nil, fmt.Errorf("ovl2-snapshotter did not listen on %s: %w", sock, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		conn, err := grpc.Dial("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, nil, err
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "ovl2")
		return sn, func() error {
			conn.Close()
			cmd.Process.Signal(os.Interrupt)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					return fmt.Errorf("ovl2-snapshotter exited badly: %w", err)
				}
				return check(home)
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				return fmt.Errorf("ovl2-snapshotter did not stop within 30s of SIGINT")
			}
		}, nil
	})
}
