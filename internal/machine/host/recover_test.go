package host

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRecover: the processes a killed driver's machine left, working in
// its directory in their own process group, are killed and the directory
// goes; another directory's processes are left alone.
func TestRecover(t *testing.T) {
	state := t.TempDir()
	left := filepath.Join(state, "build-7", "home")
	if err := os.MkdirAll(left, 0o700); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	start := func(dir string) *exec.Cmd {
		cmd := exec.Command("sleep", "1000")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	orphan, bystander := start(left), start(other)
	t.Cleanup(func() {
		_ = bystander.Process.Kill()
		_ = bystander.Wait()
	})
	if err := (&Driver{StateDir: state}).Recover(); err != nil {
		t.Fatal(err)
	}
	if err := orphan.Wait(); err == nil {
		t.Error("the leftover machine's process exited by itself?")
	}
	if _, err := os.Stat(filepath.Join(state, "build-7")); !os.IsNotExist(err) {
		t.Errorf("the leftover machine's directory: %v", err)
	}
	if err := bystander.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("a process of another directory was killed: %v", err)
	}
	if err := (&Driver{StateDir: filepath.Join(state, "none")}).Recover(); err != nil {
		t.Errorf("no state dir yet: %v", err)
	}
}
