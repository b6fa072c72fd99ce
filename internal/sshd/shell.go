package sshd

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// A login shell (a session with a pty that asks for a shell) outlives its
// connection, as a shell in tmux or mosh does: when the client goes away
// without the shell exiting (a dropped network, a killed ssh, a closed
// browser tab) the shell is detached and keeps running, its output kept in a
// terminal emulator (screen). The next login shell request re-attaches to
// the most recently detached shell and gets its screen back; the client's
// environment chooses otherwise (ShellEnv). Only the shell's own end (exit,
// logout, Ctrl-D, a signal) ends it; the server's end kills it.

// ShellEnv is the variable a client sends (ssh -o SetEnv=HANGAR_SHELL=new,
// or SendEnv) to choose the shell a login attaches to: "new" starts a
// separate shell; a shell's number (HANGAR_SHELL_ID in that shell) attaches
// to that one, taking it over from another connection if need be; empty or
// "attach" re-attaches to the most recently detached shell, or starts a new
// one when none is detached.
const ShellEnv = "HANGAR_SHELL"

// probeTimeout bounds how long a connection holding a shell has to answer a
// keepalive when a new login looks for a shell to attach to.
const probeTimeout = 3 * time.Second

// shell is a login shell and its pty, attached to at most one session.
type shell struct {
	srv  *Server
	id   int
	pid  int
	ptm  *os.File
	done chan struct{} // closed once the shell has ended and been released

	detached atomic.Bool // no client reads the output (the emulator answers queries)

	// mu guards the fields below. Output is fed to the screen under it, and
	// the client it is then written to is chosen under it, so that a client
	// that attaches gets the screen and then exactly the output after it.
	// Writes to clients happen outside it: a client that does not read
	// (a frozen network) holds up only its own output.
	mu     sync.Mutex
	scr    *screen      // fed by feed; read and resized only after feed.sync
	feed   *feeder      // output on its way to scr
	att    *session     // the attached session; nil while detached
	live   bool         // att has its screen and gets output
	since  time.Time    // when it was detached last (or started)
	exited bool         // the process has been reaped
	agent  *agentSocket // the forwarded agent of the connection that started it
}

// userError is an error the client is shown as it is.
type userError struct{ msg string }

func (e userError) Error() string { return e.msg }

// shellChoice is what a login asks for.
type shellChoice struct {
	fresh bool // a new shell
	id    int  // that shell (0: the most recently detached one)
}

// parseShellChoice reads ShellEnv from the client's variables.
func parseShellChoice(env []string) (shellChoice, error) {
	var v string
	for _, kv := range env {
		if k, val, _ := cutEnv(kv); k == ShellEnv {
			v = val
		}
	}
	switch v {
	case "", "attach":
		return shellChoice{}, nil
	case "new":
		return shellChoice{fresh: true}, nil
	}
	id, err := strconv.Atoi(v)
	if err != nil || id <= 0 {
		return shellChoice{}, userError{fmt.Sprintf("%s=%q: use new, attach or a shell's number (HANGAR_SHELL_ID in that shell)", ShellEnv, v)}
	}
	return shellChoice{id: id}, nil
}

func cutEnv(kv string) (k, v string, ok bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

// loginShell serves a "shell" request of a session with a pty: it attaches
// to a detached shell or starts a new one, as the client asked. On success
// it returns what to run once the request's reply is sent.
func (s *session) loginShell() (func(), error) {
	srv := s.c.srv
	choice, err := parseShellChoice(s.env)
	if err != nil {
		return nil, err
	}
	if !choice.fresh {
		sh, err := srv.claimShell(s, choice.id)
		if err != nil {
			return nil, err
		}
		if sh == nil && choice.id == 0 && srv.probeShells() {
			sh, err = srv.claimShell(s, 0)
			if err != nil {
				return nil, err
			}
		}
		if sh != nil {
			s.closePTY()
			return func() { sh.attach(s) }, nil
		}
	}
	return s.start("shell", "")
}

// closePTY closes the pty the session asked for but does not use.
func (s *session) closePTY() {
	if s.ptm != nil {
		s.ptm.Close()
		s.pts.Close()
		s.ptm, s.pts = nil, nil
	}
}

// claimShell reserves a shell for s: shell id, or the most recently
// detached one when id is 0. A shell asked for by its number is taken over
// from the connection it is attached to. It returns nil when there is no
// such shell to attach to (only an error for a number that names none).
func (srv *Server) claimShell(s *session, id int) (*shell, error) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if id != 0 {
		sh := srv.shells[id]
		if sh == nil || !sh.claim(s, true) {
			return nil, userError{fmt.Sprintf("there is no shell %d (it has ended, or never was): %s=new starts a new one", id, ShellEnv)}
		}
		return sh, nil
	}
	var cands []*shell
	for _, sh := range srv.shells {
		cands = append(cands, sh)
	}
	// Most recently detached first.
	slices.SortFunc(cands, func(a, b *shell) int { return b.detachedAt().Compare(a.detachedAt()) })
	for _, sh := range cands {
		if sh.claim(s, false) {
			return sh, nil
		}
	}
	return nil, nil
}

func (sh *shell) detachedAt() time.Time {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.since
}

// claim reserves the shell for s if it is detached, or, with takeOver,
// whoever holds it: the other session is told and closed.
func (sh *shell) claim(s *session, takeOver bool) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.exited {
		return false
	}
	if old := sh.att; old != nil {
		if !takeOver {
			return false
		}
		live := sh.live
		go func() {
			if live {
				_, _ = old.ch.Write([]byte("\r\n*** Hangar: this shell was attached from another connection ***\r\n"))
			}
			_ = old.ch.Close()
		}()
		sh.srv.emit(old.c.id, EventLoginDetach, sh.describe()+": attached elsewhere")
	}
	sh.att, sh.live = s, false
	sh.detached.Store(true) // until attach sends the screen
	s.sh = sh
	return true
}

// probeShells asks every connection that holds a shell whether it is still
// there (a keepalive, as OpenSSH's ClientAlive) and closes those that do not
// answer within probeTimeout: after a network drop the server may not have
// noticed yet that the client is gone. It reports whether it found any
// gone; it returns once their shells are detached.
func (srv *Server) probeShells() bool {
	srv.mu.Lock()
	var conns []*conn
	for _, sh := range srv.shells {
		sh.mu.Lock()
		if sh.att != nil && !slices.Contains(conns, sh.att.c) {
			conns = append(conns, sh.att.c)
		}
		sh.mu.Unlock()
	}
	srv.mu.Unlock()
	var wg sync.WaitGroup
	var closed atomic.Bool
	for _, c := range conns {
		wg.Go(func() {
			answered := make(chan error, 1)
			go func() {
				_, _, err := c.sc.SendRequest("keepalive@openssh.com", true, nil)
				answered <- err
			}()
			select {
			case err := <-answered:
				if err == nil {
					return
				}
				// Gone already; its shells are being detached.
			case <-time.After(probeTimeout):
				srv.emit(c.id, EventDisconnect, "no answer to a keepalive: closing it")
			}
			closed.Store(true)
			c.nc.Close()
			<-c.done
		})
	}
	wg.Wait()
	return closed.Load()
}

// describe names the shell in events.
func (sh *shell) describe() string {
	return "pid " + strconv.Itoa(sh.pid) + ": shell " + strconv.Itoa(sh.id)
}

// newShell registers the login shell that s has just started, attached to
// s.
func (srv *Server) newShell(s *session, id int, cmd *exec.Cmd, agent *agentSocket) *shell {
	scr := newScreen(int(s.cols), int(s.rows))
	sh := &shell{
		srv: srv, id: id, pid: cmd.Process.Pid, ptm: s.ptm, done: make(chan struct{}),
		scr: scr, feed: newFeeder(scr), att: s, live: true, since: time.Now(), agent: agent,
	}
	srv.mu.Lock()
	if srv.shells == nil {
		srv.shells = make(map[int]*shell)
	}
	srv.shells[sh.id] = sh
	srv.shellsWG.Add(1)
	srv.mu.Unlock()
	s.sh = sh
	return sh
}

// reserveShellID returns the number of a new login shell.
func (srv *Server) reserveShellID() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.nextShell++
	return srv.nextShell
}

// run copies the shell's output to its screen and attached client, answers
// the terminal queries of a detached shell, waits for the shell and
// releases it. cmd is the shell's process.
func (sh *shell) run(cmd *exec.Cmd) {
	defer sh.srv.shellsWG.Done()
	go sh.answer()
	var fed sync.WaitGroup
	fed.Go(sh.feed.run)
	var out sync.WaitGroup
	out.Go(sh.copyOut)
	_ = cmd.Wait()
	sh.mu.Lock()
	sh.exited = true
	sh.mu.Unlock()
	_ = sh.ptm.SetReadDeadline(time.Now().Add(ptyDrain))
	out.Wait()
	sh.feed.close()
	fed.Wait()
	sh.end(cmd)
}

// copyOut copies the pty's output until the terminal is closed on the other
// side, or shortly after the shell exited (see session.copyPTY).
func (sh *shell) copyOut() {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var exitedAt time.Time
	for {
		n, err := sh.ptm.Read(buf)
		if n > 0 {
			sh.mu.Lock()
			sh.feed.add(buf[:n])
			var to ssh.Channel
			if sh.live {
				to = sh.att.ch
			}
			exited := sh.exited
			sh.mu.Unlock()
			if to != nil {
				// An error means the client is gone: it is detached soon.
				_, _ = to.Write(buf[:n])
			}
			if exited {
				if exitedAt.IsZero() {
					exitedAt = time.Now()
				}
				d := time.Now().Add(ptyDrain)
				if limit := exitedAt.Add(ptyDrainMax); d.After(limit) {
					d = limit
				}
				_ = sh.ptm.SetReadDeadline(d)
			}
		}
		if err != nil {
			return
		}
	}
}

// answer passes the emulator's answers to terminal queries (cursor
// position, device attributes) to the shell while no client is attached to
// answer them; while one is, they are dropped.
func (sh *shell) answer() {
	buf := make([]byte, 256)
	for {
		n, err := sh.scr.term.Read(buf)
		if err != nil {
			return
		}
		if sh.detached.Load() {
			_ = sh.ptm.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = sh.ptm.Write(buf[:n])
		}
	}
}

// attach sends s the shell's screen at s's window size and makes s the
// shell's client. s has claimed the shell.
func (sh *shell) attach(s *session) {
	sh.mu.Lock()
	if sh.att != s || sh.exited {
		// Taken over, or ended, in the meantime.
		sh.mu.Unlock()
		_ = s.ch.Close()
		return
	}
	sh.feed.sync()
	sh.scr.resize(int(s.cols), int(s.rows))
	_, _ = s.ch.Write(sh.scr.render())
	sh.live = true
	sh.detached.Store(false)
	sh.mu.Unlock()
	_ = setWinsize(sh.ptm, s.cols, s.rows, s.width, s.height)
	sh.srv.emit(s.c.id, EventLoginAttach, sh.describe())
	sh.input(s)
}

// input copies what s's client types to the shell.
func (sh *shell) input(s *session) {
	ptm := sh.ptm
	s.c.goTracked(func() { _, _ = copyBuffer(ptm, s.ch) })
}

// detach lets the shell run on without s, whose client has gone.
func (sh *shell) detach(s *session) {
	sh.mu.Lock()
	if sh.att != s {
		sh.mu.Unlock()
		return
	}
	sh.att, sh.live = nil, false
	sh.detached.Store(true)
	sh.since = time.Now()
	exited := sh.exited
	agent := sh.agent
	sh.agent = nil
	sh.mu.Unlock()
	// The agent is the connection's: it goes with it.
	agent.close()
	_ = s.ch.Close()
	if !exited {
		sh.srv.emit(s.c.id, EventLoginDetach, sh.describe()+": the connection dropped; it keeps running")
	}
}

// resize follows the attached client's window.
func (sh *shell) resize(s *session) bool {
	sh.mu.Lock()
	if sh.att != s {
		sh.mu.Unlock()
		return false
	}
	sh.feed.sync()
	sh.scr.resize(int(s.cols), int(s.rows))
	sh.mu.Unlock()
	return setWinsize(sh.ptm, s.cols, s.rows, s.width, s.height) == nil
}

// notice writes text on the shell's terminal, and so on its screen.
func (sh *shell) notice(text []byte) {
	sh.mu.Lock()
	if sh.exited {
		sh.mu.Unlock()
		return
	}
	sh.feed.add(text)
	var to ssh.Channel
	if sh.live {
		to = sh.att.ch
	}
	sh.mu.Unlock()
	if to != nil {
		_, _ = to.Write(text)
	}
}

// signal sends sig to the shell's process group.
func (sh *shell) signal(sig unix.Signal) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.exited {
		return false
	}
	return unix.Kill(-sh.pid, sig) == nil
}

// end reports the shell's end to its client, if one is attached, and
// releases it.
func (sh *shell) end(cmd *exec.Cmd) {
	defer close(sh.done)
	sh.mu.Lock()
	att := sh.att
	sh.att, sh.live = nil, false
	agent := sh.agent
	sh.agent = nil
	sh.mu.Unlock()
	sh.scr.close() // the answer loop returns

	how := exitHow(cmd)
	if att != nil {
		att.eof.Lock()
		att.eofSent = true
		att.eof.Unlock()
		sendExit(att.ch, cmd)
	}
	sh.ptm.Close()
	agent.close()
	srv := sh.srv
	srv.mu.Lock()
	delete(srv.shells, sh.id)
	srv.mu.Unlock()
	srv.logins.Add(-1)
	conn := uint64(0)
	if att != nil {
		conn = att.c.id
	}
	srv.emit(conn, EventLoginEnd, "pid "+strconv.Itoa(sh.pid)+": "+how)
}

// exitHow says how cmd ended, for events.
func exitHow(cmd *exec.Cmd) string {
	ws := waitStatus(cmd)
	if ws.Signaled() {
		return "signal " + signalName(ws.Signal())
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

func waitStatus(cmd *exec.Cmd) syscall.WaitStatus {
	if cmd.ProcessState != nil {
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			return ws
		}
	}
	return syscall.WaitStatus(255 << 8) // not reaped by us: report 255
}

// sendExit ends a session channel the way sshd does: end of output, the
// process's exit status or signal, close.
func sendExit(ch ssh.Channel, cmd *exec.Cmd) {
	_ = ch.CloseWrite()
	ws := waitStatus(cmd)
	if ws.Signaled() {
		_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Message    string
			Lang       string
		}{signalName(ws.Signal()), ws.CoreDump(), "", ""}))
	} else {
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(ws.ExitStatus())}))
	}
	_ = ch.Close()
}

// shellList returns the running shells.
func (srv *Server) shellList() []*shell {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	out := make([]*shell, 0, len(srv.shells))
	for _, sh := range srv.shells {
		out = append(out, sh)
	}
	return out
}

// DetachedShells returns how many login shells run with no client attached.
func (srv *Server) DetachedShells() int {
	n := 0
	for _, sh := range srv.shellList() {
		sh.mu.Lock()
		if sh.att == nil && !sh.exited {
			n++
		}
		sh.mu.Unlock()
	}
	return n
}
