// Package testenv is what the project's tests share about the machine
// they run on: the peer tools they drive and whether they run in CI.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// UnderCI reports whether the tests run under CI=true, where a missing
// peer tool fails a test instead of skipping it.
func UnderCI() bool { return os.Getenv("CI") == "true" }

// RequireTool returns the path of the peer tool name. A missing tool
// fails the test under CI=true and skips it otherwise.
func RequireTool(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if UnderCI() {
		tb.Fatalf("peer tool %s not found on PATH (CI=true): install it, see scripts/setup", name)
	}
	tb.Skipf("peer tool %s not found on PATH; install it or run scripts/setup test", name)
	return ""
}
