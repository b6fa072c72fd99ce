package sshd

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func TestAcceptEnv(t *testing.T) {
	for name, want := range map[string]bool{
		"LANG": true, "LC_ALL": true, "LC_CTYPE": true, "COLORTERM": true,
		"LC_": false, "PATH": false, "LD_PRELOAD": false, "HOME": false, "TERM": false, "BASH_ENV": false,
	} {
		if got := acceptEnv(name); got != want {
			t.Errorf("acceptEnv(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestLoginShell(t *testing.T) {
	for _, bad := range []string{"", "/usr/sbin/nologin", "/bin/false", "/nonexistent/shell"} {
		if got := loginShell(bad); got != "/bin/bash" && got != "/usr/bin/bash" && got != "/bin/sh" {
			t.Errorf("loginShell(%q) = %q, want a real shell", bad, got)
		}
	}
	if got := loginShell("/bin/sh"); got != "/bin/sh" {
		t.Errorf("loginShell(/bin/sh) = %q", got)
	}
}

func TestPasswdShell(t *testing.T) {
	p := filepath.Join(t.TempDir(), "passwd")
	data := "root:x:0:0:root:/root:/bin/bash\nbuilder:x:1000:1000::/home/builder:/bin/zsh\nbroken line\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := passwdShell(p, 1000); got != "/bin/zsh" {
		t.Errorf("uid 1000: %q", got)
	}
	if got := passwdShell(p, 42); got != "" {
		t.Errorf("unknown uid: %q", got)
	}
}

func TestEnvList(t *testing.T) {
	e := newEnv([]string{"A=1", "B=2", "junk", "=x", "A=3"})
	e.set("C", "4")
	e.set("B", "5")
	e.unset("A")
	if got, want := e.list(), []string{"B=5", "C=4"}; !slices.Equal(got, want) {
		t.Errorf("list = %q, want %q", got, want)
	}
}

func TestSignalName(t *testing.T) {
	if got := signalName(syscall.SIGTERM); got != "TERM" {
		t.Errorf("SIGTERM: %q", got)
	}
	if got := signalName(syscall.SIGWINCH); got != "WINCH@openssh.com" {
		t.Errorf("SIGWINCH: %q", got)
	}
}

func TestCredentialOfOwnUser(t *testing.T) {
	s := &Server{Credential: &syscall.Credential{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}}
	if got := s.credential(); (got == nil) != (os.Geteuid() != 0) {
		t.Errorf("credential() = %v for our own user (euid %d)", got, os.Geteuid())
	}
}
