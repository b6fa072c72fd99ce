// Package harness starts real Hangar processes for end-to-end tests: it
// builds the binary once, runs `hangar server` on loopback with its own data
// dir, makes git repositories and runs the CLI against the server.
package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/image/imagetest"
	"github.com/hangar-ci/hangar/internal/syncbuf"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds the hangar binary once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hangar-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "hangar")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		// The race detector watches the service in end-to-end tests too.
		cmd := exec.Command("go", "build", "-race", "-o", binPath, "./cmd/hangar")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Server is a running `hangar server`.
type Server struct {
	t     testing.TB
	URL   string
	Data  string
	Token string
	// CAFile, if set, is the CA of the server's HTTPS certificate: the
	// harness's clients trust it, and the CLI gets SSL_CERT_FILE.
	CAFile string
	http   *http.Client
	cmd    *exec.Cmd
	log    *syncbuf.Buffer
	exited chan struct{}
	err    error // cmd.Wait's error, set before exited is closed
}

// Options configure a server.
type Options struct {
	Driver string   // "sandbox" or "host"
	Args   []string // more flags
	Data   string   // data dir; default: a temporary directory
	// CAFile: the server serves HTTPS (Args give --tls-cert and
	// --tls-key) with a certificate of this CA (a PEM file).
	CAFile string
	// Env is more environment for the server (KEY=VALUE).
	Env []string
	// IP is the address the API listens on (default 127.0.0.1), e.g. a
	// Net's HostIP for runners on its hosts.
	IP string
}

func freePort(t testing.TB, ip string) int {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer starts `hangar server` on a free port and waits until it
// answers. It reports busy, having ended the process, when the server
// could not bind the port because another process had taken it.
func startServer(t testing.TB, o Options, data string) (_ *Server, busy bool) {
	t.Helper()
	bin := Binary(t)
	ip := o.IP
	if ip == "" {
		ip = "127.0.0.1"
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(freePort(t, ip)))
	args := serverArgs(t, addr, data, o)
	s := &Server{t: t, URL: "http://" + addr, Data: data, log: &syncbuf.Buffer{}, exited: make(chan struct{}), http: http.DefaultClient}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("no certificate in %s", o.CAFile)
		}
		s.URL, s.CAFile = "https://"+addr, o.CAFile
		s.http = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	s.cmd = exec.Command(bin, args...)
	if len(o.Env) > 0 {
		s.cmd.Env = append(os.Environ(), o.Env...)
	}
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if api.New(s.URL, "", s.http).Health(context.Background()) == nil {
			return s, false
		}
		select {
		case <-s.exited:
			if strings.Contains(s.log.String(), "--http "+addr+": listen tcp "+addr+": bind: address already in use") {
				return s, true
			}
			t.Fatalf("hangar server exited at start:\n%s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("hangar server did not answer within 30s:\n%s", s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartServer starts `hangar server` and waits until it answers. It is
// stopped (SIGTERM) at cleanup.
func StartServer(t testing.TB, o Options) *Server {
	t.Helper()
	data := o.Data
	if data == "" {
		data = t.TempDir()
	}
	// The port is free when picked, but another process of the machine
	// (a test running alongside) may take it before the server binds it:
	// then the server says so at start, and gets another.
	var s *Server
	for attempt := 1; ; attempt++ {
		var busy bool
		if s, busy = startServer(t, o, data); !busy {
			break
		}
		if attempt == 5 {
			t.Fatalf("hangar server: its --http port was taken before it bound it, 5 times:\n%s", s.log.String())
		}
		t.Logf("hangar server: its --http port was taken before it bound it; again with another")
	}
	t.Cleanup(s.Stop)
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	s.Token = strings.TrimSpace(string(tok))
	return s
}

// serverArgs are the arguments of `hangar server` with o: never the
// default SSH port, and sandbox machines boot from the Debian test image
// (imagetest) unless o names an image or store.
func serverArgs(t testing.TB, addr, data string, o Options) []string {
	args := append([]string{"server", "--http", addr, "--data", data, "--driver", o.Driver, "--log-level", "debug"}, o.Args...)
	if !slices.Contains(o.Args, "--ssh") {
		args = append(args, "--ssh", "127.0.0.1:0") // never the default :2222
	}
	if o.Driver == "sandbox" && !slices.Contains(o.Args, "--images") && !slices.Contains(o.Args, "--default-image") {
		store, name := imagetest.Debian(t)
		args = append(args, "--images", store.Dir(), "--default-image", name)
	}
	return args
}

// StartServerFails runs `hangar server` expecting it to refuse to start:
// it fails the test if the server answers /healthz or still runs after a
// minute, and returns what the server printed.
func StartServerFails(t testing.TB, o Options) string {
	t.Helper()
	data := o.Data
	if data == "" {
		data = t.TempDir()
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	args := serverArgs(t, addr, data, o)
	log := &syncbuf.Buffer{}
	cmd := exec.Command(Binary(t), args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			if err == nil {
				t.Errorf("hangar server exited with status 0, want a refusal:\n%s", log.String())
			}
			return log.String()
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("hangar server did not refuse to start within a minute:\n%s", log.String())
		case <-tick.C:
			if api.New("http://"+addr, "", nil).Health(context.Background()) == nil {
				_ = cmd.Process.Kill()
				<-exited
				t.Fatalf("hangar server answered /healthz, want a refusal before:\n%s", log.String())
			}
		}
	}
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Kill kills the server with SIGKILL (no cleanup) and waits for it to end.
func (s *Server) Kill() {
	s.t.Helper()
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Client is an API client of the server with the admin token.
func (s *Server) Client() *api.Client { return s.ClientWith(s.Token) }

// ClientWith is an API client of the server with another token.
func (s *Server) ClientWith(token string) *api.Client { return api.New(s.URL, token, s.http) }

// HTTPClient is an HTTP client that trusts the server's certificate.
func (s *Server) HTTPClient() *http.Client { return s.http }

// Log is what the server printed so far.
func (s *Server) Log() string { return s.log.String() }

// Signal sends sig to the server process.
func (s *Server) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Wait waits up to within for the server to exit; then it returns true and
// cmd.Wait's error (nil: exit status 0).
func (s *Server) Wait(within time.Duration) (exited bool, err error) {
	select {
	case <-s.exited:
		return true, s.err
	case <-time.After(within):
		return false, nil
	}
}

// Stop stops the server and waits for it to exit.
func (s *Server) Stop() {
	stopProcess(s.t, "hangar server", s.cmd, s.exited, s.log)
}

// stopProcess stops a hangar process (SIGTERM, SIGKILL after 60 s) unless
// exited is closed, and fails the test if the race detector reported in
// its log; the log is shown if the test failed.
func stopProcess(t testing.TB, what string, cmd *exec.Cmd, exited <-chan struct{}, log *syncbuf.Buffer) {
	select {
	case <-exited:
	default:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not stop within 60s of SIGTERM", what)
		}
	}
	// The binary is built with the race detector: a race in the service
	// fails the test that ran it.
	if strings.Contains(log.String(), "WARNING: DATA RACE") {
		t.Errorf("the race detector found a data race in %s", what)
	}
	// Nor may it panic, at its stop or before.
	if strings.Contains("\n"+log.String(), "\npanic: ") {
		t.Errorf("%s panicked", what)
	}
	if t.Failed() {
		t.Logf("%s log:\n%s", what, log.String())
	}
}

// Result is the outcome of a CLI command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Hangar runs the CLI against the server with the admin token.
func (s *Server) Hangar(args ...string) Result {
	return s.HangarEnv([]string{"HANGAR_TOKEN=" + s.Token}, args...)
}

// HangarEnv runs the CLI with extra environment (e.g. another token).
func (s *Server) HangarEnv(env []string, args ...string) Result {
	s.t.Helper()
	return s.HangarIn("", env, args...)
}

// HangarIn runs the CLI in directory dir ("": the test's), with extra
// environment.
func (s *Server) HangarIn(dir string, env []string, args ...string) Result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(s.t), args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "HANGAR_SERVER="+s.URL, "HANGAR_DATA=/nonexistent"), env...)
	if s.CAFile != "" {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+s.CAFile)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		s.t.Fatalf("hangar %v: %v", args, err)
	}
	return r
}

// Repo is a bare git repository made for a test.
type Repo struct {
	Path string
	work string
	t    testing.TB
}

// NewRepo makes a bare repository whose branch main holds files.
func NewRepo(t testing.TB, files map[string]string) *Repo {
	t.Helper()
	dir := t.TempDir()
	r := &Repo{Path: filepath.Join(dir, "repo.git"), work: filepath.Join(dir, "work"), t: t}
	r.git("", "init", "--quiet", "--bare", "--initial-branch", "main", r.Path)
	r.git("", "clone", "--quiet", r.Path, r.work)
	r.git(r.work, "checkout", "--quiet", "-b", "main")
	r.Commit("main", files)
	return r
}

// Commit writes files on branch (created from main if new) and pushes.
func (r *Repo) Commit(branch string, files map[string]string) string {
	r.t.Helper()
	if branch != "main" {
		r.git(r.work, "checkout", "--quiet", "-B", branch)
		defer r.git(r.work, "checkout", "--quiet", "main")
	}
	for name, content := range files {
		p := filepath.Join(r.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git(r.work, "add", "-A")
	r.git(r.work, "-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", "commit", "--quiet", "--allow-empty", "-m", "commit on "+branch)
	r.git(r.work, "push", "--quiet", "--force", "origin", branch)
	return strings.TrimSpace(r.git(r.work, "rev-parse", "HEAD"))
}

func (r *Repo) git(dir string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Need skips t unless every one of bins is on PATH.
func Need(t testing.TB, bins ...string) {
	t.Helper()
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s", bin)
		}
	}
}
