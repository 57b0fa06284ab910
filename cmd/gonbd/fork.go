package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// forkReadyEnv names the file descriptor on which a server started by
// --fork reports that it is listening. Its presence marks the child.
const forkReadyEnv = "GONBD_FORK_READY_FD"

// forkServer runs gonbd again in the background with the same arguments and
// returns the parent's exit code: 0 once the child is listening, 1 if it
// exits first. Until then the child's stderr reaches the parent's, so a bad
// flag or a busy port is reported as without --fork.
func forkServer(stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "gonbd: --fork: find own executable: %v\n", err)
		return 1
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "gonbd: --fork: %v\n", err)
		return 1
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "gonbd: --fork: %v\n", err)
		return 1
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(stderr, "gonbd: --fork: %v\n", err)
		return 1
	}

	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), forkReadyEnv+"=3") // ExtraFiles[0] is fd 3
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, errW
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "gonbd: --fork: start %s: %v\n", self, err)
		return 1
	}
	readyW.Close()
	errW.Close()
	devNull.Close()

	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(stderr, errR)
		close(copied)
	}()

	buf := make([]byte, 1)
	n, _ := readyR.Read(buf)
	if n == 1 {
		// The child moved its stderr to /dev/null before it reported ready,
		// so the copy has ended or is about to.
		<-copied
		return 0
	}
	_ = cmd.Wait()
	<-copied
	return 1
}

// notifyForkParent reports to the --fork parent that the server is
// listening, after moving stderr to /dev/null because the parent exits.
func notifyForkParent() {
	fdText := os.Getenv(forkReadyEnv)
	if fdText == "" {
		return
	}
	os.Unsetenv(forkReadyEnv)
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return
	}

	// NOTE: logs after this point are lost because the parent that
	// relayed them exits. qemu-nbd 7.2 --fork instead restores the
	// caller's stderr in the child, which keeps a caller that reads that
	// stderr to EOF (exec.Cmd.Output, say) waiting until the server exits.
	if devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		_ = unix.Dup2(int(devNull.Fd()), 2)
		devNull.Close()
	}
	ready := os.NewFile(uintptr(fd), "fork ready pipe")
	_, _ = ready.Write([]byte{1})
	ready.Close()
}

// isForkChild reports whether this process is the background server that
// --fork started.
func isForkChild() bool {
	return os.Getenv(forkReadyEnv) != ""
}
