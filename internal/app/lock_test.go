package app

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	f, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, lockFile)); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("lock file holds %q, %v; want our pid", b, err)
	}
	// A second lock (its own open file, as another process's would be)
	// is refused, naming the holder.
	_, err = lockDataDir(dir)
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second lock: %v; want ErrDataDirInUse naming pid %d", err, os.Getpid())
	}
	f.Close()
	g, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	g.Close()
}

// TestNewRefusesAndReleases: New refuses a data dir another server holds,
// and a New that fails late (its HTTP address taken) releases the lock and
// the store, so that the next New on the data dir starts.
func TestNewRefusesAndReleases(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{Data: dir, Driver: "host", HTTP: "127.0.0.1:0", SSH: "off", MaxBuilds: 1, Logger: quiet}

	held, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("New on a held data dir: %v, want ErrDataDirInUse", err)
	}
	held.Close()

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := cfg
	taken.HTTP = busy.Addr().String()
	_, err = New(taken)
	busy.Close()
	if err == nil || !strings.Contains(err.Error(), "--http") {
		t.Fatalf("New with its HTTP address taken: %v", err)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New after a failed New: %v", err)
	}
	if err := a.release(); err != nil {
		t.Fatal(err)
	}
}
