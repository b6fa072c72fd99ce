package sshd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/proctab"
	"golang.org/x/sys/unix"
)

const (
	// killGrace is how long a hung-up process group has between SIGHUP and
	// SIGKILL.
	killGrace = 2 * time.Second
	// ptyDrain is how long output is still read from a pty once its shell has
	// exited, while background jobs keep the terminal open.
	ptyDrain     = 200 * time.Millisecond
	ptyDrainMax  = 10 * time.Second
	maxClientEnv = 64
	maxDetail    = 256
)

// session is one "session" channel: at most one process (shell, command or
// SFTP server).
type session struct {
	c  *conn
	ch ssh.Channel

	// Owned by the request loop; read-only once started is set.
	started bool
	env     []string // variables the client sent and we accept
	term    string
	ptm     *os.File // pty master; nil without a pty
	pts     *os.File // pty slave, until the process starts
	agent   bool     // agent forwarding asked for
	login   bool     // a login shell: pty + shell
	sh      *shell   // the login shell this session is attached to
	// The client's window (pty-req, window-change).
	cols, rows, width, height uint32

	exited atomic.Bool   // the process has been reaped
	hungUp atomic.Bool   // hangup signalled the process while it ran
	done   chan struct{} // closed when run has finished

	// eof orders notices (Write, read lock) before the end of output
	// (CloseWrite, write lock): x/crypto's channel does not allow both at
	// once.
	eof     sync.RWMutex
	eofSent bool // guarded by eof

	mu      sync.Mutex
	pid     int         // guarded by mu: process (and group) id; 0 before start
	onPTY   bool        // guarded by mu: the process runs on the pty
	closers []io.Closer // guarded by mu: our ends of the process's stdio
}

func (c *conn) handleSession(nch ssh.NewChannel) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	c.srv.emit(c.id, EventChannel, "session")
	s := &session{c: c, ch: ch, done: make(chan struct{})}
	c.addSession(s)
	defer c.removeSession(s)
	for req := range reqs {
		ok, then := s.request(req)
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		if then != nil {
			then()
		}
	}
	// The channel is closed (by the client, or the connection is gone).
	if s.sh != nil {
		// A login shell lives on, detached, until it exits.
		s.sh.detach(s)
		return
	}
	if !s.started {
		if s.ptm != nil {
			s.ptm.Close()
			s.pts.Close()
		}
		ch.Close()
		return
	}
	s.hangup()
	<-s.done
}

// notice writes text to the session's terminal unless its output has
// ended.
func (s *session) notice(text []byte) {
	s.eof.RLock()
	defer s.eof.RUnlock()
	if !s.eofSent {
		_, _ = s.ch.Write(text)
	}
}

// noticeStderr writes line to the session's standard error unless its
// output has ended.
func (s *session) noticeStderr(line []byte) {
	s.eof.RLock()
	defer s.eof.RUnlock()
	if !s.eofSent {
		_, _ = s.ch.Stderr().Write(line)
	}
}

// running reports whether the session's process runs, and whether on a
// pty.
func (s *session) running() (running, onPTY bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid != 0 && !s.exited.Load(), s.onPTY
}

// request handles one channel request. It returns the reply, and a function
// to run once the reply is sent (to start a process's I/O after "ok").
func (s *session) request(req *ssh.Request) (bool, func()) {
	switch req.Type {
	case "pty-req":
		if s.started || s.ptm != nil {
			return false, nil
		}
		var p struct {
			Term                      string
			Cols, Rows, Width, Height uint32
			Modes                     string
		}
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false, nil
		}
		ptm, pts, err := openPTY()
		if err != nil {
			s.c.srv.emit(s.c.id, EventError, "open pty: "+err.Error())
			return false, nil
		}
		s.ptm, s.pts, s.term = ptm, pts, p.Term
		s.cols, s.rows, s.width, s.height = p.Cols, p.Rows, p.Width, p.Height
		_ = setWinsize(ptm, p.Cols, p.Rows, p.Width, p.Height)
		return true, nil
	case "window-change":
		var p struct{ Cols, Rows, Width, Height uint32 }
		if (s.ptm == nil && s.sh == nil) || ssh.Unmarshal(req.Payload, &p) != nil {
			return false, nil
		}
		s.cols, s.rows, s.width, s.height = p.Cols, p.Rows, p.Width, p.Height
		if s.sh != nil {
			return s.sh.resize(s), nil
		}
		return setWinsize(s.ptm, p.Cols, p.Rows, p.Width, p.Height) == nil, nil
	case "env":
		var p struct{ Name, Value string }
		if s.started || ssh.Unmarshal(req.Payload, &p) != nil || !acceptEnv(p.Name) || len(s.env) >= maxClientEnv {
			return false, nil
		}
		s.env = append(s.env, p.Name+"="+p.Value)
		return true, nil
	case "auth-agent-req@openssh.com":
		if s.started {
			return false, nil
		}
		s.agent = true
		return true, nil
	case "signal":
		var p struct{ Signal string }
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false, nil
		}
		sig, ok := signals[p.Signal]
		if !ok {
			return false, nil
		}
		if s.sh != nil {
			return s.sh.signal(sig), nil
		}
		return s.signal(sig), nil
	case "shell", "exec", "subsystem":
		if s.started {
			return false, nil
		}
		var arg string
		if req.Type != "shell" {
			var p struct{ Value string }
			if ssh.Unmarshal(req.Payload, &p) != nil {
				return false, nil
			}
			arg = p.Value
		}
		var then func()
		var err error
		if req.Type == "shell" && s.ptm != nil {
			then, err = s.loginShell()
		} else {
			then, err = s.start(req.Type, arg)
		}
		var ue userError
		if errors.As(err, &ue) {
			// Accepted, so that the client shows the reason, and ended
			// with exit status 1.
			s.c.srv.emit(s.c.id, EventError, req.Type+": "+err.Error())
			s.started = true
			return true, func() {
				_, _ = fmt.Fprintf(s.ch.Stderr(), "hangar: %v\r\n", err)
				_ = s.ch.CloseWrite()
				_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{1}))
				_ = s.ch.Close()
			}
		}
		if err != nil {
			s.c.srv.emit(s.c.id, EventError, req.Type+": "+err.Error())
			_, _ = fmt.Fprintf(s.ch.Stderr(), "hangar: %s request refused\r\n", req.Type)
			return false, nil
		}
		s.started = true
		return true, then
	}
	// x11-req, keepalive@openssh.com, eow@openssh.com and all the rest.
	return false, nil
}

// start starts the session's process for a shell, exec or subsystem
// request. On success it returns the function that starts its I/O.
func (s *session) start(kind, arg string) (func(), error) {
	srv := s.c.srv
	acct := srv.lookupAccount()
	var cmd *exec.Cmd
	usePTY := s.ptm != nil
	detail := kind
	switch kind {
	case "shell":
		// A login shell, as sshd starts it: argv[0] is "-bash".
		cmd = &exec.Cmd{Path: acct.shell, Args: []string{"-" + filepath.Base(acct.shell)}}
	case "exec":
		cmd = &exec.Cmd{Path: acct.shell, Args: []string{filepath.Base(acct.shell), "-c", arg}}
		detail = "exec: " + truncate(arg)
	case "subsystem":
		if arg != "sftp" || len(srv.SFTPCommand) == 0 {
			return nil, fmt.Errorf("subsystem %q is not available", truncate(arg))
		}
		cmd = exec.Command(srv.SFTPCommand[0], srv.SFTPCommand[1:]...)
		if cmd.Err != nil {
			return nil, cmd.Err
		}
		detail = "subsystem: " + arg
		usePTY = false // SFTP speaks binary on pipes, pty or not
	}
	srv.emit(s.c.id, EventChannel, detail)

	home := srv.home(acct)
	env := newEnv(nil)
	if srv.Env != nil {
		env = newEnv(srv.Env())
	}
	env.set("HOME", home)
	env.set("USER", acct.name)
	env.set("LOGNAME", acct.name)
	env.set("SHELL", acct.shell)
	if !env.has("PATH") {
		env.set("PATH", defaultPath)
	}
	for _, k := range []string{"SSH_AUTH_SOCK", "SSH_TTY", "SSH_CONNECTION", "SSH_CLIENT", "SSH_ORIGINAL_COMMAND"} {
		env.unset(k)
	}
	for _, kv := range s.env {
		k, v, _ := strings.Cut(kv, "=")
		if k != ShellEnv { // for us, not the shell
			env.set(k, v)
		}
	}
	shellID := 0
	if kind == "shell" && usePTY {
		shellID = srv.reserveShellID()
		env.set("HANGAR_SHELL_ID", strconv.Itoa(shellID))
	}
	remote, local := hostPort(s.c.nc.RemoteAddr()), hostPort(s.c.nc.LocalAddr())
	env.set("SSH_CONNECTION", remote+" "+local)
	_, lport, _ := strings.Cut(local, " ")
	env.set("SSH_CLIENT", remote+" "+lport)
	if usePTY {
		term := s.term
		if term == "" {
			term = "dumb"
		}
		env.set("TERM", term)
		env.set("SSH_TTY", s.pts.Name())
	}

	var agent *agentSocket
	if s.agent && kind != "subsystem" {
		a, err := s.c.startAgent(acct, srv.Credential != nil)
		if err != nil {
			srv.emit(s.c.id, EventError, "agent forwarding: "+err.Error())
		} else {
			agent = a
			env.set("SSH_AUTH_SOCK", a.path)
		}
	}

	cmd.Env = env.list()
	cmd.Dir = srv.dir(home)
	attr := &syscall.SysProcAttr{Setsid: true, Credential: srv.credential()}
	cmd.SysProcAttr = attr

	// parent: our ends of the stdio; child: the process's ends, closed here
	// once it has started.
	var parent, child []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	var stdinW, stdoutR, stderrR *os.File
	if usePTY {
		if srv.Credential != nil {
			_ = os.Chown(s.pts.Name(), acct.uid, -1)
			_ = os.Chmod(s.pts.Name(), 0o620)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s.pts, s.pts, s.pts
		attr.Setctty = true
		attr.Ctty = 0 // the child's stdin
		parent, child = []*os.File{s.ptm}, []*os.File{s.pts}
	} else {
		var pipes [3][2]*os.File // [i][0] read end, [i][1] write end
		for i := range pipes {
			r, w, err := os.Pipe()
			if err != nil {
				for _, p := range pipes[:i] {
					p[0].Close()
					p[1].Close()
				}
				agent.close()
				return nil, err
			}
			pipes[i] = [2]*os.File{r, w}
		}
		stdinW, stdoutR, stderrR = pipes[0][1], pipes[1][0], pipes[2][0]
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes[0][0], pipes[1][1], pipes[2][1]
		parent = []*os.File{stdinW, stdoutR, stderrR}
		child = []*os.File{pipes[0][0], pipes[1][1], pipes[2][1]}
		if s.ptm != nil { // a pty was asked for but is not used (sftp)
			parent = append(parent, s.ptm)
			child = append(child, s.pts)
		}
	}
	if err := cmd.Start(); err != nil {
		closeAll(child)
		closeAll(parent)
		agent.close()
		return nil, err
	}
	closeAll(child)
	s.pts = nil
	s.started = true
	s.login = kind == "shell" && usePTY
	s.mu.Lock()
	s.pid = cmd.Process.Pid
	s.onPTY = usePTY
	for _, f := range parent {
		s.closers = append(s.closers, f)
	}
	if agent != nil {
		s.closers = append(s.closers, agent)
	}
	s.mu.Unlock()
	srv.addSession(cmd.Process.Pid)
	if s.login {
		// It outlives this session: the shell owns the pty and the agent.
		sh := srv.newShell(s, shellID, cmd, agent)
		s.mu.Lock()
		s.pid, s.closers = 0, nil
		s.mu.Unlock()
		s.ptm = nil
		srv.logins.Add(1)
		srv.emit(s.c.id, EventLoginStart, sh.describe())
		return func() {
			if srv.Banner != nil {
				// Before the shell's output: that waits in the pty until
				// run copies it.
				if text := srv.Banner(); text != "" {
					sh.notice([]byte(strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", "\r\n") + "\r\n"))
				}
			}
			sh.input(s)
			go sh.run(cmd)
		}, nil
	}

	// handleSession waits for run to finish (s.done).
	return func() { go s.run(cmd, usePTY, stdinW, stdoutR, stderrR, agent) }, nil
}

// run copies the process's I/O, waits for it and reports how it ended.
func (s *session) run(cmd *exec.Cmd, usePTY bool, stdinW, stdoutR, stderrR *os.File, agent *agentSocket) {
	var out sync.WaitGroup
	if usePTY {
		ptm := s.ptm
		s.c.goTracked(func() { _, _ = copyBuffer(ptm, s.ch) })
		out.Go(func() { s.copyPTY(ptm) })
	} else {
		s.c.goTracked(func() {
			_, _ = copyBuffer(stdinW, s.ch)
			stdinW.Close() // EOF from the client: EOF on stdin
		})
		out.Go(func() {
			_, _ = copyBuffer(s.ch, stdoutR)
			stdoutR.Close()
		})
		out.Go(func() {
			_, _ = copyBuffer(s.ch.Stderr(), stderrR)
			stderrR.Close()
		})
	}
	_ = cmd.Wait()
	s.exited.Store(true)
	if usePTY {
		_ = s.ptm.SetReadDeadline(time.Now().Add(ptyDrain))
	}
	// Without a pty, output ends when every holder of the pipes has closed
	// them (as with sshd); hangup closes our ends when the client goes.
	out.Wait()
	s.finish(cmd, agent)
}

// finish reports the end of the process to the client and releases what the
// session holds.
func (s *session) finish(cmd *exec.Cmd, agent *agentSocket) {
	defer close(s.done)
	s.eof.Lock()
	s.eofSent = true
	sendExit(s.ch, cmd)
	s.eof.Unlock()
	if s.ptm != nil {
		s.ptm.Close()
	}
	agent.close()
	// Stragglers in the process group (`nohup cmd &`) of a process that
	// ended by itself live on, as with sshd, until the server closes (the
	// build ends: see addSession). Those of a process hung up because its
	// client went away are ended with the connection.
	if pid := cmd.Process.Pid; s.hungUp.Load() && unix.Kill(-pid, 0) == nil {
		s.c.addStraggler(pid)
	}
}

// copyPTY copies the pty's output to the client until the terminal is
// closed on the other side (EIO), or shortly after the process exited.
func (s *session) copyPTY(ptm *os.File) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var exitedAt time.Time
	for {
		n, err := ptm.Read(buf)
		if n > 0 {
			if _, werr := s.ch.Write(buf[:n]); werr != nil {
				return
			}
			if s.exited.Load() {
				// Keep reading while output flows, within bounds.
				if exitedAt.IsZero() {
					exitedAt = time.Now()
				}
				d := time.Now().Add(ptyDrain)
				if limit := exitedAt.Add(ptyDrainMax); d.After(limit) {
					d = limit
				}
				_ = ptm.SetReadDeadline(d)
			}
		}
		if err != nil {
			return
		}
	}
}

// hangup ends the session's process when the client has gone: SIGHUP to its
// process group, SIGKILL after killGrace if it is still there, and our ends
// of its stdio closed so that no copy waits on it.
func (s *session) hangup() {
	s.mu.Lock()
	pid, closers := s.pid, s.closers
	s.closers = nil
	s.mu.Unlock()
	if pid != 0 && !s.exited.Load() {
		s.hungUp.Store(true)
		_ = unix.Kill(-pid, unix.SIGHUP)
		_ = unix.Kill(-pid, unix.SIGCONT)
		timer := time.AfterFunc(killGrace, func() {
			if !s.exited.Load() {
				_ = unix.Kill(-pid, unix.SIGKILL)
			}
		})
		go func() { <-s.done; timer.Stop() }()
	}
	for _, c := range closers {
		_ = c.Close()
	}
}

// signal sends sig to the session's process group, while its leader runs.
func (s *session) signal(sig unix.Signal) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pid == 0 || s.exited.Load() {
		return false
	}
	return unix.Kill(-s.pid, sig) == nil
}

// addStraggler remembers a process group that outlived its session.
func (c *conn) addStraggler(pgid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stragglers = append(c.stragglers, pgid)
}

// killStragglers ends the process groups of hung-up sessions that outlived
// them.
func (c *conn) killStragglers() {
	c.mu.Lock()
	groups := c.stragglers
	c.stragglers = nil
	c.mu.Unlock()
	killGroups(groups)
}

// addSession remembers the session id of a process it started (each is a
// session leader), whose processes are all ended when the server closes.
// After that it ends them at once.
func (s *Server) addSession(sid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		go endSessions(map[int]bool{sid: true}, killGrace)
		return
	}
	if s.sids == nil {
		s.sids = make(map[int]bool)
	}
	if len(s.sids) >= 64 {
		// Forget the sessions that have no process left.
		live := make(map[int]bool)
		for _, p := range proctab.Table() {
			live[p.SID], live[p.PGID] = true, true
		}
		for id := range s.sids {
			if !live[id] {
				delete(s.sids, id)
			}
		}
	}
	s.sids[sid] = true
}

// endAll ends every process the server's sessions started, detached shells
// included, and waits (a few seconds at most) until the shells are released.
func (s *Server) endAll() {
	s.mu.Lock()
	sids := s.sids
	s.sids = nil
	s.closed = true
	s.mu.Unlock()
	endSessions(sids, killGrace)
	done := make(chan struct{})
	go func() { s.shellsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(killGrace):
	}
}

// killGroups ends process groups: SIGHUP, then SIGKILL to those left after
// killGrace.
func killGroups(groups []int) {
	var alive []int
	for _, g := range groups {
		if unix.Kill(-g, unix.SIGHUP) == nil {
			_ = unix.Kill(-g, unix.SIGCONT)
			alive = append(alive, g)
		}
	}
	deadline := time.Now().Add(killGrace)
	for len(alive) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		alive = slices.DeleteFunc(alive, func(g int) bool { return unix.Kill(-g, 0) != nil })
	}
	for _, g := range alive {
		_ = unix.Kill(-g, unix.SIGKILL)
	}
}

// credential returns what processes are started with: Credential, unless
// it names who we already are (setgroups would fail unprivileged).
func (s *Server) credential() *syscall.Credential {
	c := s.Credential
	if c == nil {
		return nil
	}
	if os.Geteuid() != 0 && int(c.Uid) == os.Geteuid() && int(c.Gid) == os.Getegid() {
		return nil
	}
	return c
}

// openPTY opens a pty pair. The master is put in non-blocking mode so that
// it works with the runtime poller: reads can have deadlines, and Close
// interrupts them.
func openPTY() (ptm, pts *os.File, err error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	// pty.Open's ioctls go through File.Fd, which makes m blocking; move the
	// descriptor to a fresh, pollable *os.File.
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		t.Close()
		return nil, nil, fmt.Errorf("pty master: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), t, nil
}

// setWinsize sets the terminal size (TIOCSWINSZ) on the pty master; the
// kernel sends SIGWINCH to the foreground process group.
func setWinsize(ptm *os.File, cols, rows, width, height uint32) error {
	ws := &unix.Winsize{Row: clamp16(rows), Col: clamp16(cols), Xpixel: clamp16(width), Ypixel: clamp16(height)}
	rc, err := ptm.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil {
		return err
	}
	return ierr
}

func clamp16(v uint32) uint16 { return uint16(min(v, 0xffff)) }

// signals are the signal names of RFC 4254 section 6.10.
var signals = map[string]unix.Signal{
	"ABRT": unix.SIGABRT, "ALRM": unix.SIGALRM, "FPE": unix.SIGFPE, "HUP": unix.SIGHUP,
	"ILL": unix.SIGILL, "INT": unix.SIGINT, "KILL": unix.SIGKILL, "PIPE": unix.SIGPIPE,
	"QUIT": unix.SIGQUIT, "SEGV": unix.SIGSEGV, "TERM": unix.SIGTERM, "USR1": unix.SIGUSR1,
	"USR2": unix.SIGUSR2,
}

// signalName names sig for exit-signal: RFC 4254's names, or
// "NAME@openssh.com" for the others, as sshd does.
func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	name := unix.SignalName(sig)
	if len(name) > 3 {
		name = name[3:]
	} else {
		name = strconv.Itoa(int(sig))
	}
	return name + "@openssh.com"
}

func truncate(s string) string {
	if len(s) > maxDetail {
		return s[:maxDetail] + "..."
	}
	return s
}
