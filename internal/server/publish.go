package server

import (
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// addPublishing freezes wf's artifacts, cache paths, publishing scripts
// and email into spec, with inputs substituted.
func addPublishing(spec *build.Spec, wf *workflow.Workflow, values map[string]any) {
	sub := func(list []string) []string {
		var out []string
		for _, s := range list {
			out = append(out, workflow.SubstituteInputs(s, values))
		}
		return out
	}
	spec.Artifacts = sub(wf.Artifacts)
	spec.CachePaths = sub(wf.CachePaths)
	for i, sc := range wf.Publishing.Scripts {
		spec.Publish = append(spec.Publish, build.SpecScript{
			Name: workflow.SubstituteInputs(sc.Name, values), File: publishFile(sc, i),
			Script: workflow.SubstituteInputs(sc.Script, values), IgnoreFailure: sc.IgnoreFailure,
			WorkingDirectory: workflow.SubstituteInputs(sc.WorkingDirectory, values),
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
