package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// makeDisk gives a machine a file system of its own of size bytes for its
// writable layer and home: an ext4 file system in the sparse file img,
// loop-mounted on mnt. A build that fills it gets "No space left on
// device" and changes nothing else on the host's disk. The loop device
// clears itself when mnt is unmounted (removeDir does it).
func makeDisk(img, mnt string, size int64) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	// No journal, no reserved blocks, no zeroing: the file system lives
	// as long as the machine.
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
		"-E", "lazy_itable_init=1,nodiscard", img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("disk: mkfs.ext4: %w: %s", err, bytes.TrimSpace(out))
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	dev, err := attachLoop(img)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	defer dev.Close() // the mount holds the device; autoclear does the rest
	// noinit_itable: the inode tables of a new sparse file read as zeros
	// already; the kernel need not write them out.
	if err := unix.Mount(dev.Name(), mnt, "ext4", unix.MS_NOATIME, "noinit_itable"); err != nil {
		return fmt.Errorf("disk: mount %s: %w", dev.Name(), err)
	}
	return nil
}

// attachLoop attaches file img to a free loop device, which detaches
// itself once the last user (the mount) is gone, and returns the device
// opened.
func attachLoop(img string) (*os.File, error) {
	backing, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := os.OpenFile("/dev/loop"+strconv.Itoa(n), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], filepath.Base(img))
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("configure loop device %d: %w", n, err)
		}
		// Another machine took it first: ask again.
	}
	return nil, errors.New("no free loop device")
}

// DiskFull reports whether the machine's writable layer's file system or
// its /tmp is (nearly: less than 1 MiB left) full, which, and its size.
// It knows only while the machine's init runs (for /tmp).
func (m *Machine) DiskFull() (full bool, which string, size int64) {
	if m.layout.disk <= 0 {
		return false, "", 0
	}
	nearlyFull := func(p string) bool {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) != nil || st.Blocks == 0 {
			return false
		}
		return int64(st.Bavail)*int64(st.Bsize) < 1<<20
	}
	if nearlyFull(m.layout.writable()) {
		return true, "disk", m.layout.disk
	}
	if data, err := os.ReadFile(m.layout.pidFile()); err == nil {
		if nearlyFull("/proc/" + strings.TrimSpace(string(data)) + "/root/tmp") {
			return true, "/tmp", m.layout.disk
		}
	}
	return false, "", 0
}

// loopDetachTimeout bounds the wait for the kernel to detach the loop
// device of an unmounted machine disk (it does so asynchronously).
const loopDetachTimeout = 5 * time.Second

// waitLoopsDetached waits until no loop device is backed by a file in dir.
func waitLoopsDetached(dir string) error {
	deadline := time.Now().Add(loopDetachTimeout)
	wait := time.Millisecond
	for {
		left := loopsBackedIn(dir)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop devices %s still attached after %v", strings.Join(left, ", "), loopDetachTimeout)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// loopsBackedIn returns the loop devices whose backing file lies in dir.
func loopsBackedIn(dir string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(data)), dir+"/") {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}
