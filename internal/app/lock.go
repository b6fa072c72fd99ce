package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockFile is the file of the data dir that the running server holds an
// exclusive flock on, and writes its PID into.
const lockFile = "server.lock"

// ErrDataDirInUse is returned by New when another server holds the data
// dir.
var ErrDataDirInUse = errors.New("data dir in use")

// lockDataDir takes the data dir's exclusive lock and writes our PID in
// it; the lock lasts until the returned file is closed (or the process
// ends, however it ends). It fails at once, naming the holder's PID, if
// another process holds it.
func lockDataDir(data string) (*os.File, error) {
	p := filepath.Join(data, lockFile)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock the data dir: %s: %w", p, err)
		}
		holder := "another hangar server"
		if b, err := os.ReadFile(p); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = fmt.Sprintf("another hangar server (pid %d)", pid)
			}
		}
		return nil, fmt.Errorf("%w: --data %s is held by %s: stop it first, or give this server its own --data (nothing was changed)",
			ErrDataDirInUse, data, holder)
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the data dir: %s: %w", p, err)
	}
	return f, nil
}
