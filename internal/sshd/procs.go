package sshd

import (
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/proctab"
)

// Every process a session starts is the leader of a new session (setsid),
// so its session id is its pid, and what it starts keeps that id unless it
// calls setsid itself. The server remembers these ids; when it closes (the
// build ends) it ends every process of them, their process groups, and
// every descendant of those processes that is still linked to them (a
// daemon that double-forked out of its session has been re-parented to the
// machine's init, which the machine's end takes care of).

// sessionProcs returns the live processes that belong to the sessions sids:
// members of the sessions or of process groups with those ids, and their
// descendants.
func sessionProcs(sids map[int]bool) []int {
	if len(sids) == 0 {
		return nil
	}
	table := proctab.Table()
	self := os.Getpid()
	var out []int
	seen := make(map[int]bool)
	add := func(pid int) {
		if !seen[pid] && pid != self && pid > 1 {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	for _, p := range table {
		if sids[p.SID] || sids[p.PGID] {
			add(p.PID)
			for _, d := range proctab.Descendants(table, p.PID) {
				add(d)
			}
		}
	}
	return out
}

// endSessions ends every process of the sessions sids: SIGHUP (and SIGCONT,
// for stopped ones), then SIGKILL to what is left after grace. It returns
// once none is left, or a little after grace if some cannot be killed.
func endSessions(sids map[int]bool, grace time.Duration) {
	pids := sessionProcs(sids)
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGHUP)
		_ = unix.Kill(pid, unix.SIGCONT)
	}
	deadline := time.Now().Add(grace)
	for len(pids) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		pids = sessionProcs(sids)
	}
	// Kill until none is left: a process may fork while it is killed.
	deadline = time.Now().Add(grace)
	for len(pids) > 0 && time.Now().Before(deadline) {
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
		pids = sessionProcs(sids)
	}
}
