package runner

import (
	"strings"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/machine"
)

// pickImage finds the image of the build's instance type and checks the
// toolchain versions the workflow asks for against its labels, so that a
// build asking for what the image lacks fails at once, with what it has.
// A driver that is not isolated boots no image: it says so.
func (j *job) pickImage() *outcome {
	if !j.r.cfg.Driver.Isolated() || j.r.cfg.Images == nil {
		if len(j.spec.Toolchains) > 0 {
			j.logs.Printf(0, "Toolchains: not checked (the %s driver runs the build on the server, not in an image)", j.r.cfg.Driver.Name())
		}
		return nil
	}
	instance := j.spec.InstanceType
	if instance == "" {
		instance = build.DefaultInstanceType
	}
	root, labels, err := j.r.cfg.Images.ForInstanceType(instance)
	if err != nil {
		return failed(err.Error())
	}
	j.logs.Printf(0, "Image: %s (%s)", root.Name, image.Versions(labels))
	if err := image.CheckToolchains(j.spec.Toolchains, root.Name, labels); err != nil {
		return failed(err.Error())
	}
	j.image = root
	return nil
}

// outOfDisk returns the outcome of a failed build whose machine filled one
// of its size-limited file systems (the likely cause of the failure), or
// out. The machine is still there: Destroy comes after.
func (j *job) outOfDisk(out *outcome) *outcome {
	r, ok := j.m.(machine.DiskReporter)
	if !ok || strings.HasPrefix(out.msg, "the build ran out of memory") {
		return out
	}
	full, which, size := r.DiskFull()
	if !full {
		return out
	}
	msg := "the build ran out of disk space (" + which + " is full, limit " + build.FormatBytes(size) + ")"
	if out.msg != "" {
		j.logs.Printf(lastStarted(j.b), "hangar: %s", out.msg)
	}
	return failed(msg)
}
