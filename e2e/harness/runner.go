package harness

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/hangar-ci/hangar/internal/syncbuf"
)

// Runner is a `hangar runner` process, stopped (SIGTERM) at cleanup.
type Runner struct {
	t      testing.TB
	cmd    *exec.Cmd
	log    *syncbuf.Buffer
	exited chan struct{}
	// Data is its data directory.
	Data string
}

// StartRunner starts `hangar runner` with the host driver, data dir data
// (a temporary one if ""), the runner token and more flags; servers are
// the servers' URLs, comma-separated. It returns at once: the runner
// starts in the background (see its Log, or the servers' runner list).
func StartRunner(t testing.TB, servers, token, data string, args ...string) *Runner {
	t.Helper()
	return startRunner(t, nil, servers, token, data, args...)
}

// StartRunnerOn is StartRunner on host h of a Net: in its network
// namespace, with its host name.
func StartRunnerOn(t testing.TB, h *Host, servers, token, data string, args ...string) *Runner {
	t.Helper()
	return startRunner(t, h, servers, token, data, args...)
}

func startRunner(t testing.TB, h *Host, servers, token, data string, args ...string) *Runner {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	r := &Runner{t: t, log: &syncbuf.Buffer{}, exited: make(chan struct{}), Data: data}
	argv := append([]string{"runner", "--server", servers, "--data", data, "--driver", "host", "--log-level", "debug"}, args...)
	if h != nil {
		r.cmd = h.Command(Binary(t), argv...)
	} else {
		r.cmd = exec.Command(Binary(t), argv...)
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	r.cmd.Env = append(os.Environ(), "HANGAR_RUNNER_TOKEN="+token)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(r.Stop)
	return r
}

// PID is the runner's process id.
func (r *Runner) PID() int { return r.cmd.Process.Pid }

// Log is what the runner printed so far.
func (r *Runner) Log() string { return r.log.String() }

// Exited is closed when the runner process has exited.
func (r *Runner) Exited() <-chan struct{} { return r.exited }

// Kill kills the runner with SIGKILL (no cleanup) and waits for it to end.
func (r *Runner) Kill() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// Stop stops the runner (SIGTERM) and waits for it to exit.
func (r *Runner) Stop() {
	stopProcess(r.t, "hangar runner", r.cmd, r.exited, r.log)
}
