package builder

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/proctab"
)

// InitEnv, set to "subreaper" in the builder's environment, makes it run as
// Init even when it is not PID 1 (the host driver): it then becomes a
// child subreaper (PR_SET_CHILD_SUBREAPER), so that every process of the
// machine, even one that left its session and was orphaned, stays its
// descendant until the machine is destroyed.
const InitEnv = "HANGAR_INIT"

// Init is what the builder does when it is PID 1 of its machine (or asked
// to by InitEnv): it runs the builder proper as its child, forwards SIGTERM
// and SIGINT to it, and reaps every process orphaned inside the machine (so
// that steps' background processes leave no zombies behind). It returns the
// child's exit status.
func Init(args []string) int {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, "hangar init: subreaper:", err)
			return 1
		}
	}
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, InitEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The builder goes with its init.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "hangar init:", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 1
		}
		if pid == cmd.Process.Pid {
			if os.Getpid() != 1 {
				// Not the machine's PID 1, whose end ends the machine: end
				// what is left so that nothing is orphaned past us.
				endDescendants()
			}
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// endDescendants kills every descendant of this process and reaps them,
// until none is left (a few seconds at most).
func endDescendants() {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		kids := proctab.Descendants(proctab.Table(), os.Getpid())
		if len(kids) == 0 {
			return
		}
		for _, pid := range kids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Reap what has died; the rest are waited for in the next round.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
