// Package proctab reads the process table from /proc: who is whose parent,
// process group and session. The machine drivers, the builder's init and
// its SSH server use it to find every process a build or a session
// started, so that none outlives it.
package proctab

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Proc is one live process.
type Proc struct {
	PID, PPID, PGID, SID int
}

// Table returns the live processes; zombies are left out (they are gone
// for every purpose but their parent's wait).
func Table() []Proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if p, ok := parseStat(pid, data); ok {
			out = append(out, p)
		}
	}
	return out
}

// parseStat reads /proc/PID/stat: "pid (comm) state ppid pgrp session ...";
// comm may hold spaces and parentheses.
func parseStat(pid int, data []byte) (Proc, bool) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Proc{}, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
		return Proc{}, false
	}
	p := Proc{PID: pid}
	p.PPID, _ = strconv.Atoi(f[1])
	p.PGID, _ = strconv.Atoi(f[2])
	p.SID, _ = strconv.Atoi(f[3])
	return p, true
}

// Descendants returns the live descendants of pid in table.
func Descendants(table []Proc, pid int) []int {
	children := make(map[int][]int)
	for _, p := range table {
		children[p.PPID] = append(children[p.PPID], p.PID)
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}
