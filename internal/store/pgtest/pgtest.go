// Package pgtest runs a throwaway PostgreSQL server for tests: Debian's
// binaries (package postgresql), a new cluster in a temporary directory,
// reached on a Unix socket there, started on first use and stopped and
// removed when the test binary's tests end. Each test gets a database of
// its own.
//
// A package that uses DB calls Main from its TestMain. Where the binaries
// are missing its tests skip, saying so, unless HANGAR_TEST_POSTGRES=require
// (as `make test` sets): then they fail.
package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv names the environment variable that turns a missing
// PostgreSQL into a test failure when set to "require".
const RequireEnv = "HANGAR_TEST_POSTGRES"

var (
	mainRan bool
	once    sync.Once
	srv     *server
	srvErr  error
	dbs     int // guarded by dbsMu
	dbsMu   sync.Mutex
)

// Main runs m's tests and then stops the server if one was started. Call
// it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	mainRan = true
	code := m.Run()
	if srv != nil {
		if err := srv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// DB creates an empty database and returns its URL; the server starts on
// the first call. The database is dropped at the test's cleanup (after the
// cleanups registered later, such as closing the stores that use it).
func DB(t testing.TB) string {
	t.Helper()
	if !mainRan {
		t.Fatal("pgtest: call pgtest.Main from the package's TestMain (it stops the server)")
	}
	once.Do(func() { srv, srvErr = start() })
	if srvErr != nil {
		var missing *missingError
		if errors.As(srvErr, &missing) && os.Getenv(RequireEnv) != "require" {
			t.Skipf("PostgreSQL tests skipped: %v (install Debian's postgresql package, or run `make test`, which does)", srvErr)
		}
		t.Fatalf("PostgreSQL for tests: %v", srvErr)
	}
	dbsMu.Lock()
	dbs++
	name := fmt.Sprintf("test%d", dbs)
	dbsMu.Unlock()
	if err := srv.admin("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.admin("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return srv.url(name)
}

// missingError says the PostgreSQL binaries are not installed.
type missingError struct{ msg string }

func (e *missingError) Error() string { return e.msg }

// server is a running postgres.
type server struct {
	dir     string // the cluster (dir/data) and the socket
	cmd     *exec.Cmd
	log     *logBuffer
	done    chan struct{} // closed once cmd has exited
	logDone chan struct{} // closed once its log is read to the end
}

const superuser = "hangar"

// url is database name's URL, on the socket.
func (s *server) url(name string) string {
	return "postgres://" + superuser + "@/" + name + "?host=" + url.QueryEscape(s.dir) + "&sslmode=disable"
}

func (s *server) admin(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.url("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// binDir finds the directory of initdb and postgres: PATH, else the newest
// of Debian's /usr/lib/postgresql/<version>/bin.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", &missingError{"no initdb on PATH nor in /usr/lib/postgresql/*/bin"}
}

// start creates a cluster and starts postgres on it. PostgreSQL refuses
// to run as root: as root, the cluster belongs to the user postgres (made
// by Debian's package), or nobody, and the server runs as that user.
func start() (*server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hangar-pg-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, log: &logBuffer{}, done: make(chan struct{}), logDone: make(chan struct{})}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = unprivileged(); err == nil {
			err = os.Chown(dir, int(cred.Uid), int(cred.Gid))
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// Only the socket; durability is of no use to a test, nor much memory.
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=16MB")
	s.cmd.Env = append(os.Environ(), "LC_ALL=C")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	// A pipe of its own, not StderrPipe: Wait would close that before the
	// last lines (why it stopped) are read.
	stderr, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.cmd.Stderr = w
	// Pdeathsig fires when the thread that started the process ends, not
	// the test binary: start it from a thread kept until it exits.
	started := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.cmd.Wait()
		close(s.done)
	}()
	err = <-started
	w.Close()
	if err != nil {
		stderr.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("postgres: %w", err)
	}
	ready := make(chan struct{})
	go s.readLog(stderr, ready)
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		<-s.logDone
		err = fmt.Errorf("postgres exited at start:\n%s", s.log)
	case <-time.After(2 * time.Minute):
		err = fmt.Errorf("postgres not ready within 2 minutes:\n%s", s.log)
	}
	if serr := s.stop(); serr != nil {
		err = fmt.Errorf("%w; %v", err, serr)
	}
	return nil, err
}

// unprivileged is the user that runs PostgreSQL for root.
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("neither user postgres nor nobody exists to run PostgreSQL (it refuses root)")
}

// readLog keeps the server's log and closes ready once it accepts
// connections.
func (s *server) readLog(r io.ReadCloser, ready chan struct{}) {
	defer close(s.logDone)
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		s.log.add(sc.Text())
		if ready != nil && strings.Contains(sc.Text(), "database system is ready to accept connections") {
			close(ready)
			ready = nil
		}
	}
	io.Copy(io.Discard, r)
}

// stop ends postgres (fast shutdown: clients are disconnected), killing
// it after a minute, and removes the cluster.
func (s *server) stop() error {
	var err error
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(time.Minute):
			s.cmd.Process.Kill()
			<-s.done
			err = fmt.Errorf("postgres did not stop within a minute of SIGINT; killed:\n%s", s.log)
		}
	}
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// logBuffer keeps the server's last log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []string // guarded by mu
}

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) == 200 {
		b.lines = b.lines[1:]
	}
	b.lines = append(b.lines, line)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}
