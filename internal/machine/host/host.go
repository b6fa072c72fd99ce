// Package host is the machine driver without isolation: the builder runs as
// a plain child process of the service, in a fresh directory, as the
// service's own user. It is for development and for running Hangar without
// root; a build can do anything the service's user can.
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/proctab"
)

// Driver runs builders as local processes. StateDir must be set.
type Driver struct {
	// StateDir holds one directory per machine.
	StateDir string
}

// Name implements machine.Driver.
func (d *Driver) Name() string { return "host" }

// Isolated implements machine.Driver: host machines are not isolated.
func (d *Driver) Isolated() bool { return false }

// Listen implements machine.Driver with a loopback listener.
func (d *Driver) Listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// Close implements machine.Driver.
func (d *Driver) Close() error { return nil }

// Start implements machine.Driver. Mounts are visible at their Source.
func (d *Driver) Start(ctx context.Context, spec machine.Spec) (machine.Machine, error) {
	if d.StateDir == "" {
		return nil, errors.New("host driver: no state dir")
	}
	dir := filepath.Join(d.StateDir, spec.Name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("host driver: %w", err)
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("host driver: %w", err)
	}
	cmd := exec.Command(spec.Builder, spec.Args...)
	cmd.Dir = home
	// The builder runs under its init as a child subreaper (see
	// builder.InitEnv): every process of the machine stays a descendant of
	// it, so that Destroy finds them all, even those that left their
	// session (setsid) and were orphaned.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HANGAR_HOME=" + home, "HANGAR_INIT=subreaper"}, spec.Env...)
	cmd.Stdin = spec.Stdin
	out := spec.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout = out
	cmd.Stderr = out
	// Its own process group, so that Destroy reaches the steps' processes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("host driver: start builder: %w", err)
	}
	m := &hostMachine{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() {
		m.err = cmd.Wait()
		close(m.done)
	}()
	return m, nil
}

type hostMachine struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	err  error // set before done is closed

	once       sync.Once
	destroyErr error
}

func (m *hostMachine) Wait() error {
	<-m.done
	return m.err
}

func (m *hostMachine) Destroy(ctx context.Context) error {
	m.once.Do(func() {
		pgid := m.cmd.Process.Pid
		// First every descendant of the init (the builder, steps, SSH
		// sessions and whatever they started, in any session or group)
		// until none is left: what a dying process orphans is re-parented
		// to the init, a subreaper, and found in the next round.
		deadline := time.Now().Add(5 * time.Second)
		for {
			kids := proctab.Descendants(proctab.Table(), pgid)
			if len(kids) == 0 || time.Now().After(deadline) {
				break
			}
			for _, pid := range kids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Then the whole group until no live process is left in it: the
		// init may be gone already while steps it started still run.
		// Orphans that died wait as zombies for init to reap them; they
		// are gone for our purpose.
		deadline = time.Now().Add(5 * time.Second)
		for {
			err := syscall.Kill(-pgid, syscall.SIGKILL)
			if errors.Is(err, syscall.ESRCH) || !liveInGroup(pgid) || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		select {
		case <-m.done:
		case <-ctx.Done():
			m.destroyErr = ctx.Err()
		}
		if err := os.RemoveAll(m.dir); err != nil && m.destroyErr == nil {
			m.destroyErr = fmt.Errorf("host driver: %w", err)
		}
	})
	return m.destroyErr
}

// liveInGroup reports whether a process of group pgid is alive (not a zombie).
func liveInGroup(pgid int) bool {
	for _, p := range proctab.Table() {
		if p.PGID == pgid {
			return true
		}
	}
	return false
}

// Recover removes the machines an earlier driver of StateDir left (its
// process was killed): the processes of their process groups that still
// work in a machine's directory are killed, then the directories go. Call
// it before the first Start.
func (d *Driver) Recover() error {
	if d.StateDir == "" {
		return errors.New("host driver: no state dir")
	}
	ents, err := os.ReadDir(d.StateDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("host driver: %w", err)
	}
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(d.StateDir, e.Name())
		for pgid := range groupsIn(dir) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("host driver: remove a leftover machine: %w", err))
		}
	}
	return errors.Join(errs...)
}

// groupsIn returns the process groups of the live processes whose working
// directory is dir or below it (what a machine of dir runs).
func groupsIn(dir string) map[int]bool {
	groups := map[int]bool{}
	own := syscall.Getpgrp()
	for _, p := range proctab.Table() {
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(p.PID) + "/cwd")
		if err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) && p.PGID > 1 && p.PGID != own {
			groups[p.PGID] = true
		}
	}
	return groups
}
