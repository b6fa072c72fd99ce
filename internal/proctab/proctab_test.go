package proctab

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
)

func TestParseStat(t *testing.T) {
	p, ok := parseStat(42, []byte("42 (a (weird) name) S 7 40 30 0 -1 4194304"))
	if !ok || p != (Proc{PID: 42, PPID: 7, PGID: 40, SID: 30}) {
		t.Errorf("got %+v %v", p, ok)
	}
	if _, ok := parseStat(43, []byte("43 (z) Z 7 40 30")); ok {
		t.Error("a zombie was listed")
	}
	if _, ok := parseStat(44, []byte("garbage")); ok {
		t.Error("garbage was parsed")
	}
}

func TestTableAndDescendants(t *testing.T) {
	// sh -> sleep: both are our descendants, the sleep sh's.
	cmd := exec.Command("sh", "-c", "sleep 300 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var sleepPID int
	if _, err := fmt.Fscan(out, &sleepPID); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(sleepPID, syscall.SIGKILL) }()
	table := Table()
	var self *Proc
	for i := range table {
		if table[i].PID == os.Getpid() {
			self = &table[i]
		}
	}
	if self == nil || self.PGID != os.Getpid() && self.PGID <= 0 {
		t.Fatalf("our own process: %+v", self)
	}
	d := Descendants(table, os.Getpid())
	if !slices.Contains(d, cmd.Process.Pid) || !slices.Contains(d, sleepPID) {
		t.Errorf("descendants %v lack sh %d or sleep %d", d, cmd.Process.Pid, sleepPID)
	}
	if got := Descendants(table, cmd.Process.Pid); !slices.Equal(got, []int{sleepPID}) {
		t.Errorf("sh's descendants %v, want [%d]", got, sleepPID)
	}
}
