package qcow2

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// killChildEnv names the image a re-executed test binary writes to until
// it is killed.
const killChildEnv = "GONBD_QCOW2_KILL_CHILD"

// TestKillChildWriter is the child of TestKillMidWrite: it writes to the
// image in a loop and prints a line every 200 requests.
func TestKillChildWriter(t *testing.T) {
	path := os.Getenv(killChildEnv)
	if path == "" {
		t.Skip("runs only as the child of TestKillMidWrite")
	}
	img, err := Open(path, Options{Discard: true})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	size, _ := img.Size()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := bytes.Repeat([]byte{0x5a}, 512<<10)
	// Bounded so that a parent that never kills still ends.
	for i := 1; i <= 1_000_000; i++ {
		off := rng.Int64N(size)
		n := min(1+rng.Int64N(int64(len(buf))), size-off)
		switch rng.IntN(8) {
		case 0:
			err = img.Zero(off, n, 1)
		case 1:
			err = img.Trim(off, n)
		default:
			_, err = img.WriteAt(buf[:n], off)
		}
		if err != nil {
			fmt.Println("request:", err)
			os.Exit(1)
		}
		if i%200 == 0 {
			fmt.Println("progress", i)
		}
	}
}

func TestKillMidWrite(t *testing.T) {
	cases := []struct {
		name string
		opts []string
	}{
		{"Cluster64K", nil},
		{"LazyRefcounts", []string{"lazy_refcounts=on"}},
		{"Cluster512Refcount64", []string{"cluster_size=512", "refcount_bits=64"}},
		{"ExtendedL2", []string{"extended_l2=on"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := createImage(t, t.TempDir(), "disk.qcow2", "64M", c.opts...)
			cmd := exec.Command(os.Args[0], "-test.run", "^TestKillChildWriter$")
			cmd.Env = append(os.Environ(), killChildEnv+"="+path)
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())

			// Kill the writer after it has made some progress, at
			// whatever point it has reached.
			lines := bufio.NewScanner(stdout)
			progress := 0
			for progress < 3 && lines.Scan() {
				require.Contains(t, lines.Text(), "progress", "child output")
				progress++
			}
			require.NoError(t, cmd.Process.Kill())
			_ = cmd.Wait()
			require.Equal(t, 3, progress, "child made progress before it was killed")

			out, code := qemuCode(t, "qemu-img", "check", path)
			// 0: clean, 3: leaked clusters only.
			require.Contains(t, []int{0, 3}, code, "qemu-img check after SIGKILL:\n%s", out)
		})
	}
}
