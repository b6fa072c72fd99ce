package sshd

import (
	"bufio"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// account is the user sessions run as.
type account struct {
	uid, gid int
	name     string
	home     string // from the password database; may be empty
	shell    string // login shell, always runnable
}

// lookupAccount describes the user sessions run as: Credential's uid, or our
// own. Unknown uids get their number as name.
func (s *Server) lookupAccount() account {
	a := account{uid: os.Getuid(), gid: os.Getgid()}
	if s.Credential != nil {
		a.uid, a.gid = int(s.Credential.Uid), int(s.Credential.Gid)
	}
	a.name = strconv.Itoa(a.uid)
	if u, err := user.LookupId(strconv.Itoa(a.uid)); err == nil {
		a.name, a.home = u.Username, u.HomeDir
	}
	a.shell = loginShell(passwdShell("/etc/passwd", a.uid))
	return a
}

// passwdShell returns the shell field of uid's line in a passwd file, or "".
func passwdShell(path string, uid int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	want := strconv.Itoa(uid)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// name:password:uid:gid:gecos:home:shell
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[2] == want {
			return fields[6]
		}
	}
	return ""
}

// loginShell returns shell when it can run an interactive session, else
// bash (or sh). Accounts such as nobody have nologin as shell, but a build
// machine exists to be logged into, so a shell that refuses is replaced.
func loginShell(shell string) string {
	switch filepath.Base(shell) {
	case "", ".", "/", "nologin", "false", "true":
	default:
		if st, err := os.Stat(shell); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return shell
		}
	}
	for _, sh := range []string{"/bin/bash", "/usr/bin/bash", "/bin/sh"} {
		if _, err := os.Stat(sh); err == nil {
			return sh
		}
	}
	return "/bin/sh"
}

// isDir reports whether path names an existing directory.
func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// home returns HOME of sessions.
func (s *Server) home(a account) string {
	switch {
	case s.Home != "":
		return s.Home
	case a.home != "":
		return a.home
	}
	return "/"
}

// dir returns the starting directory of a session.
func (s *Server) dir(home string) string {
	if s.Dir != nil {
		if d := s.Dir(); d != "" && isDir(d) {
			return d
		}
	}
	if isDir(home) {
		return home
	}
	return "/"
}

// defaultPath is PATH when Env gives none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// acceptEnv reports whether a variable sent by the client ("env" request)
// is taken, as Debian's sshd does with AcceptEnv LANG LC_* COLORTERM NO_COLOR.
func acceptEnv(name string) bool {
	switch name {
	case "LANG", "LANGUAGE", "COLORTERM", "NO_COLOR", ShellEnv:
		return true
	}
	return strings.HasPrefix(name, "LC_") && len(name) > 3 && !strings.ContainsAny(name, "=\x00")
}

// envList is an environment being built: later sets win.
type envList struct {
	keys []string
	vals map[string]string
}

func newEnv(base []string) *envList {
	e := &envList{vals: make(map[string]string)}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		e.set(k, v)
	}
	return e
}

func (e *envList) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

func (e *envList) unset(k string) {
	if _, ok := e.vals[k]; !ok {
		return
	}
	delete(e.vals, k)
	for i, key := range e.keys {
		if key == k {
			e.keys = append(e.keys[:i], e.keys[i+1:]...)
			break
		}
	}
}

func (e *envList) has(k string) bool { _, ok := e.vals[k]; return ok }

func (e *envList) list() []string {
	out := make([]string, 0, len(e.keys))
	for _, k := range e.keys {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// hostPort splits a net.Addr as SSH_CONNECTION wants it: "HOST PORT".
func hostPort(a net.Addr) string {
	if a == nil {
		return "0.0.0.0 0"
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return "0.0.0.0 0"
	}
	return h + " " + p
}
