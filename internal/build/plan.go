package build

import (
	"fmt"
	"time"
)

// Step kinds: what a step of a build is besides the workflow's scripts
// (Kind empty).
const (
	KindCacheRestore = "cache_restore"
	KindArtifacts    = "artifacts"
	KindPublishing   = "publishing"
	KindCacheSave    = "cache_save"
)

// Names of the steps a build may have around the workflow's scripts.
const (
	StepCacheRestore = "Restoring cache"
	StepArtifacts    = "Uploading artifacts"
	StepCacheSave    = "Saving cache"
)

// Email is a workflow's publishing.email, frozen into the spec.
type Email struct {
	Recipients []string `json:"recipients"`
	Success    bool     `json:"success"`
	Failure    bool     `json:"failure"`
}

// PlannedStep is one step of a build's machine, after the clone: a
// script of the workflow, or one of Hangar's own (Kind).
type PlannedStep struct {
	Name   string
	Kind   string      // "" for a workflow script
	Script *SpecScript // scripts and publishing scripts
}

// AfterFailure reports whether the step runs also after a failed step
// (artifacts and publishing scripts, as Codemagic does).
func (p PlannedStep) AfterFailure() bool {
	return p.Kind == KindArtifacts || p.Kind == KindPublishing
}

// Plan is the machine's steps after the clone, in order: the cache's
// restore, the scripts, the artifacts' upload, the publishing scripts and
// the cache's save (each only when the workflow asks for it).
func (s *Spec) Plan() []PlannedStep {
	var out []PlannedStep
	if len(s.CachePaths) > 0 {
		out = append(out, PlannedStep{Name: StepCacheRestore, Kind: KindCacheRestore})
	}
	for i := range s.Scripts {
		out = append(out, PlannedStep{Name: s.Scripts[i].Name, Script: &s.Scripts[i]})
	}
	if len(s.Artifacts) > 0 {
		out = append(out, PlannedStep{Name: StepArtifacts, Kind: KindArtifacts})
	}
	for i := range s.Publish {
		out = append(out, PlannedStep{Name: s.Publish[i].Name, Kind: KindPublishing, Script: &s.Publish[i]})
	}
	if len(s.CachePaths) > 0 {
		out = append(out, PlannedStep{Name: StepCacheSave, Kind: KindCacheSave})
	}
	return out
}

// Steps returns the build's steps for its spec, all pending: the
// runner's, the clone, then Plan's.
func (s *Spec) Steps() []Step {
	steps := NewSteps(nil)
	for _, p := range s.Plan() {
		steps = append(steps, Step{Name: p.Name, Status: StepPending, Kind: p.Kind})
	}
	return steps
}

// Artifact is a file a build produced and the server keeps.
type Artifact struct {
	Name      string    `json:"name"` // unique in the build: its path relative to the clone
	Size      int64     `json:"size"`
	MD5       string    `json:"md5"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// URL downloads it (the API; with an API token).
	URL string `json:"url,omitempty"`
}

// Cache is what a workflow of an app has cached.
type Cache struct {
	App       string    `json:"app"`
	Workflow  string    `json:"workflow"`
	Size      int64     `json:"size"`  // the compressed archive
	Build     int64     `json:"build"` // the build that saved it
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// HumanBytes writes n for a log line: "812 bytes", "3.4 KiB", "12.1 MiB",
// "1.2 GiB".
func HumanBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
