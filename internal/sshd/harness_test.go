package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sftpArg makes the test binary act as the SFTP server (see TestMain), so
// that the tests do not depend on cmd/hangar.
const sftpArg = "-hangar-sshd-test-sftp-server"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == sftpArg {
		if err := ServeSFTP(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// clientTimeout bounds every client command of the tests.
const clientTimeout = 60 * time.Second

// harness is a Server listening on 127.0.0.1 and an OpenSSH client set up
// to reach it: its own HOME, a user key the server accepts and the server's
// host key pinned in known_hosts.
type harness struct {
	t          testing.TB
	srv        *Server
	addr       string // host:port
	port       string
	clientHome string
	keyFile    string
	knownHosts string
	hostKey    ssh.PublicKey
	userSigner ssh.Signer
	home, dir  string // the sessions' HOME and starting directory

	mu     sync.Mutex
	events []Event // guarded by mu
	ended  bool    // guarded by mu: the test is over, t must not be used
}

// newHarness starts a server; configure may change it before it serves.
func newHarness(t testing.TB, configure ...func(*harness)) *harness {
	t.Helper()
	h := &harness{t: t}
	base := t.TempDir()
	h.clientHome = filepath.Join(base, "client")
	h.home = filepath.Join(base, "home")
	h.dir = filepath.Join(base, "work")
	for _, d := range []string{h.clientHome, h.home, h.dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	h.hostKey = hostSigner.PublicKey()
	h.keyFile, h.userSigner = writeUserKey(t, filepath.Join(h.clientHome, "id_ed25519"))
	userPub := h.userSigner.PublicKey().Marshal()

	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), userPub) {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(hostSigner)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h.srv = &Server{
		Config: cfg,
		Home:   h.home,
		Env: func() []string {
			return []string{"PATH=" + os.Getenv("PATH"), "X=from-env", "LANG=C.UTF-8"}
		},
		Dir:              func() string { return h.dir },
		SFTPCommand:      []string{exe, sftpArg},
		HandshakeTimeout: 10 * time.Second,
		Events: func(e Event) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if testing.Verbose() && !h.ended {
				t.Logf("event %v %s %q", e.Time.Format("15:04:05.000"), e.Kind, e.Detail)
			}
			h.events = append(h.events, e)
		},
	}
	for _, f := range configure {
		f(h)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	_, h.port, _ = net.SplitHostPort(h.addr)
	h.knownHosts = filepath.Join(h.clientHome, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s", h.port, ssh.MarshalAuthorizedKey(h.hostKey))
	if err := os.WriteFile(h.knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}

	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(l) }()
	t.Cleanup(func() {
		defer func() {
			// Connections may still be winding down: no more logging.
			h.mu.Lock()
			h.ended = true
			h.mu.Unlock()
		}()
		h.srv.CloseAll("")
		select {
		case err := <-served:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v, want ErrServerClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after CloseAll")
		}
	})
	return h
}

// writeUserKey writes a new ed25519 private key in OpenSSH format.
func writeUserKey(t testing.TB, path string) (string, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return path, signer
}

// opts are the OpenSSH options of every client command: no system or user
// configuration, our key only, the host key checked strictly, no prompts.
func (h *harness) opts() []string {
	return []string{
		"-F", "/dev/null",
		"-i", h.keyFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + h.knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10",
		"-o", "UpdateHostKeys=no",
	}
}

// clientEnv is the environment of client commands: HOME is the client's,
// no agent unless asked for.
func (h *harness) clientEnv(extra ...string) []string {
	return append([]string{"HOME=" + h.clientHome, "PATH=" + os.Getenv("PATH"), "LANG=C"}, extra...)
}

// command prepares an OpenSSH client command (ssh, scp, sftp) with the
// harness's options; args follow the options.
func (h *harness) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	portFlag := "-p"
	if name == "scp" || name == "sftp" {
		portFlag = "-P"
	}
	all := append(h.opts(), portFlag, h.port)
	if name != "ssh" {
		all = append(all, "-o", "IdentityAgent=none")
	}
	cmd := exec.CommandContext(ctx, name, append(all, args...)...)
	cmd.Env = h.clientEnv()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// result is what a client command did.
type result struct {
	stdout, stderr string
	code           int
}

// ssh runs `ssh [args] builder@127.0.0.1 remote` with stdin and waits.
func (h *harness) ssh(stdin string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := h.command(ctx, "ssh", args...)
	return h.runCmd(cmd, stdin)
}

// sshTo returns the args for running remote on the server.
func sshTo(remote string, flags ...string) []string {
	return append(append(flags, "builder@127.0.0.1"), remote)
}

func (h *harness) runCmd(cmd *exec.Cmd, stdin string) result {
	h.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		h.t.Fatalf("%v: %v", cmd.Args, err)
	}
	return res
}

// mustSSH runs remote and fails the test unless it exits 0.
func (h *harness) mustSSH(stdin, remote string, flags ...string) string {
	h.t.Helper()
	res := h.ssh(stdin, sshTo(remote, flags...)...)
	if res.code != 0 {
		h.t.Fatalf("ssh %q: exit %d, stderr %q", remote, res.code, res.stderr)
	}
	return res.stdout
}

// goClient dials the server with x/crypto/ssh, for what the OpenSSH client
// cannot be told to do (signals, window changes).
func (h *harness) goClient() *ssh.Client {
	h.t.Helper()
	c, err := ssh.Dial("tcp", h.addr, &ssh.ClientConfig{
		User:            "builder",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(h.userSigner)},
		HostKeyCallback: ssh.FixedHostKey(h.hostKey),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// eventsOf returns the recorded events of one kind.
func (h *harness) eventsOf(kind string) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Event
	for _, e := range h.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEvent waits until an event of kind whose Detail contains substr has
// been recorded.
func (h *harness) waitEvent(kind, substr string) Event {
	h.t.Helper()
	var found Event
	ok := waitFor(10*time.Second, func() bool {
		for _, e := range h.eventsOf(kind) {
			if strings.Contains(e.Detail, substr) {
				found = e
				return true
			}
		}
		return false
	})
	if !ok {
		h.t.Fatalf("no %s event with %q; events: %v", kind, substr, h.allEvents())
	}
	return found
}

func (h *harness) allEvents() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

// background starts a client command that the test ends itself; it is
// killed (by its own pid) at cleanup.
func (h *harness) background(cmd *exec.Cmd) {
	h.t.Helper()
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
}
