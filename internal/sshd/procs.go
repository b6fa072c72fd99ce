package sshd

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Every process a session starts is the leader of a new session (setsid),
// so its session id is its pid, and what it starts keeps that id unless it
// calls setsid itself. The server remembers these ids; when it closes (the
// build ends) it ends every process of them, their process groups, and
// every descendant of those processes that is still linked to them (a
// daemon that double-forked out of its session has been re-parented to the
// machine's init, which the machine's end takes care of).

// proc is one line of the process table.
type proc struct {
	pid, ppid, pgid, sid int
}

// procTable reads the live processes (zombies left out) from /proc.
func procTable() []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces and
		// parentheses.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		p := proc{pid: pid}
		p.ppid, _ = strconv.Atoi(f[1])
		p.pgid, _ = strconv.Atoi(f[2])
		p.sid, _ = strconv.Atoi(f[3])
		out = append(out, p)
	}
	return out
}

// sessionProcs returns the live processes that belong to the sessions sids:
// members of the sessions or of process groups with those ids, and their
// descendants.
func sessionProcs(sids map[int]bool) []int {
	if len(sids) == 0 {
		return nil
	}
	table := procTable()
	self := os.Getpid()
	children := make(map[int][]int)
	var out []int
	seen := make(map[int]bool)
	var add func(pid int)
	add = func(pid int) {
		if seen[pid] || pid == self || pid <= 1 {
			return
		}
		seen[pid] = true
		out = append(out, pid)
		for _, c := range children[pid] {
			add(c)
		}
	}
	for _, p := range table {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	for _, p := range table {
		if sids[p.sid] || sids[p.pgid] {
			add(p.pid)
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
