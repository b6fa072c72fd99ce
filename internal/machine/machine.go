// Package machine defines how the runner gets an isolated builder machine for
// one build, and holds the drivers that provide them (host, sandbox).
//
// A driver is long-lived: it owns shared resources (a bridge, firewall rules)
// from New until Close. A Machine is one build's machine: it runs exactly one
// process, `hangar builder`, and everything it creates is removed by Destroy.
package machine

import (
	"context"
	"io"
	"net"
)

// Spec is what the runner asks of a machine.
type Spec struct {
	// Name is unique among live machines, e.g. "build-12". It is the
	// machine's hostname and names its resources (netns, veth, cgroup).
	Name string
	// Builder is the path, on the host, of the hangar binary that the machine
	// runs as `hangar builder`. Drivers expose it inside the machine read-only.
	Builder string
	// Args are the arguments after the binary, e.g. ["builder"].
	Args []string
	// Env is the builder process's environment (KEY=VALUE). It carries no secret.
	Env []string
	// Stdin is fed to the builder process (the runner writes the builder's
	// credentials there, so they appear in no environment, file or argv).
	Stdin io.Reader
	// Output receives the builder process's own stdout and stderr
	// (diagnostics, not the build log). May be nil.
	Output io.Writer
	// Mounts are host paths exposed to the machine read-only, e.g. the
	// repository mirror the builder clones from.
	Mounts []Mount
	// Resources limit the machine; drivers that cannot enforce them
	// ignore them (the host driver does).
	Resources Resources
	// Image is the root filesystem of an isolated machine (required by
	// the sandbox driver); the host driver ignores it.
	Image *Image
}

// Resources are a machine's limits; a zero field means no limit of that
// kind (the driver's default). Same fields as build.Resources.
type Resources struct {
	// CPUs is CPU time, in CPUs' worth per wall-clock second.
	CPUs float64
	// Memory is the most memory, tmpfs files included, in bytes; no swap.
	Memory int64
	// Pids is the most processes and threads at once.
	Pids int64
	// Disk is, in bytes, the size of the machine's /tmp and, apart, of
	// the file system of its writable layer (/home and whatever it writes
	// outside /tmp and /run).
	Disk int64
}

// OOMReporter is implemented by machines that can tell whether the kernel
// killed one of their processes for lack of memory. The runner asks it when
// a build fails, before Destroy.
type OOMReporter interface {
	// OOMKilled reports whether a process of the machine was killed because
	// the machine reached its memory limit, and that limit in bytes.
	OOMKilled() (killed bool, limit int64)
}

// Mount exposes a host path read-only inside the machine at Target.
type Mount struct {
	Source string
	Target string
}

// Driver provisions machines.
type Driver interface {
	// Name is "host" or "sandbox".
	Name() string
	// Isolated reports whether machines are isolated from the host and from
	// each other. Mounts of an isolated machine appear at their Target; a
	// machine that is not isolated sees the host's files, mounts at Source.
	Isolated() bool
	// Listen opens a TCP listener on the host that machines of this driver
	// can reach (and, for isolating drivers, the only host port they can
	// reach). The runner serves the builder link on it.
	Listen() (net.Listener, error)
	// Start creates the machine and starts the builder process in it.
	// Besides spec.Env, the driver sets in the builder's environment:
	//   HANGAR_HOME  the home directory steps run in (/home/builder in a sandbox)
	//   HANGAR_USER  the account steps run as ("" or unset: the builder's own)
	// On error nothing of the machine is left behind.
	Start(ctx context.Context, spec Spec) (Machine, error)
	// Close removes the driver's shared resources. Machines must have been
	// destroyed first.
	Close() error
}

// Machine is one running builder machine.
type Machine interface {
	// Wait blocks until the builder process has exited and returns its error.
	Wait() error
	// Destroy kills every process of the machine and removes every resource
	// it created (mounts, network namespace, links, directories). It is
	// idempotent, safe to call concurrently with Wait, and returns only when
	// everything is gone.
	Destroy(ctx context.Context) error
}

// Image is the root filesystem a machine boots from: the unpacked layers of
// an OCI image, shared read-only by every machine that uses it, under a
// writable layer of the machine's own.
type Image struct {
	// Name is the image's name, for messages.
	Name string
	// Layers are the host directories of the image's unpacked layers,
	// lowest first. Their whiteouts are overlayfs ones.
	Layers []string
	// Env is the image's environment (its PATH is the builder's).
	Env []string
}

// DiskReporter is implemented by machines whose disk space is limited. The
// runner asks it when a build fails, before Destroy.
type DiskReporter interface {
	// DiskFull reports whether one of the machine's size-limited file
	// systems (its writable layer, its /tmp) is full, which one ("/tmp",
	// "disk"), and its size in bytes.
	DiskFull() (full bool, which string, size int64)
}
