package runner

import (
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/image"
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
