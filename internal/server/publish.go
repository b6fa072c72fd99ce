package server

import (
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// addPublishing freezes wf's artifacts, cache paths, publishing scripts
// and email into spec (wf has its inputs substituted: Resolve).
func addPublishing(spec *build.Spec, wf *workflow.Workflow) {
	spec.Artifacts = wf.Artifacts
	spec.CachePaths = wf.CachePaths
	for i, sc := range wf.Publishing.Scripts {
		spec.Publish = append(spec.Publish, build.SpecScript{
			Name: sc.Name, File: publishFile(sc, i),
			Script: sc.Script, IgnoreFailure: sc.IgnoreFailure, WorkingDirectory: sc.WorkingDirectory,
		})
	}
	if e := wf.Publishing.Email; e != nil {
		spec.Email = &build.Email{Recipients: e.Recipients, Success: e.Success, Failure: e.Failure}
	}
}

// publishFile is the file name of the i-th publishing script in the
// machine: "publish-NN-name.sh".
func publishFile(sc workflow.Script, i int) string {
	return "publish-" + sc.FileName(i+1)
}
