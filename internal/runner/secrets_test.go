package runner

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/store"
)

// queueNaming stores a queued build of scripts whose workflow names groups
// and keystores.
func (e *env) queueNaming(groups, keystores []string) *build.Build {
	e.t.Helper()
	spec, _ := json.Marshal(build.Spec{Repo: "https://example.com/o/demo.git", Scripts: scripts[:1],
		Env: []string{"CM_PULL_REQUEST=false"}, Vars: []string{"URL=https://x.invalid/$PLAY_TOKEN"}, Groups: groups, Keystores: keystores})
	b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "0123456789abcdef",
		Status: build.Queued, Trigger: build.Manual, MaxDuration: 3600, Steps: build.NewSteps(scripts[:1])}
	if err := e.st.CreateBuild(context.Background(), b, spec); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// TestSecrets: the runner opens the groups and keystores a build names and
// sends them with the job (group variables after the built-in ones, every
// value to mask); a group missing when the build starts fails it before a
// machine is made, saying what to do.
func TestSecrets(t *testing.T) {
	got := make(chan *link.Job, 1)
	var vault *secrets.Vault
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		got <- fb.job
		fb.passAll()
		fb.done("")
		fb.wait(ctx)
	}, func(c *Config) {
		sealer, _, err := secrets.LoadSealer("", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		vault = &secrets.Vault{Store: c.Store.(*store.Store), Sealer: sealer}
		c.Secrets = VaultSecrets{vault}
	})
	ctx := context.Background()
	if err := vault.SetGroup(ctx, "demo", "play", []secrets.Var{{Name: "PLAY_TOKEN", Value: "tok-123456"}, {Name: "CM_BRANCH", Value: "from-group"}}); err != nil {
		t.Fatal(err)
	}
	if err := vault.PutKeystore(ctx, "demo", "upload", &secrets.Keystore{File: []byte("ks"), Password: "store-pw", Alias: "upload", KeyPassword: "key-pw"}); err != nil {
		t.Fatal(err)
	}
	b := e.ended(e.queueNaming([]string{"play"}, []string{"upload"}).ID)
	want(t, b, build.Finished, "", ok, ok, ok)
	job := <-got
	// Built-in first, then the event's, then the groups' (which may
	// override a built-in, as on Codemagic); vars apart, after them.
	i, j := slices.Index(job.Env, "CM_BRANCH=main"), slices.Index(job.Env, "CM_BRANCH=from-group")
	if i < 0 || j < i || slices.Index(job.Env, "PLAY_TOKEN=tok-123456") < i || slices.Index(job.Env, "CM_PULL_REQUEST=false") > j {
		t.Errorf("job env: %q", job.Env)
	}
	for _, s := range []string{"tok-123456", "from-group", "store-pw", "key-pw"} {
		if !slices.Contains(job.Secure, s) {
			t.Errorf("secure values lack %q: %q", s, job.Secure)
		}
	}
	if len(job.Keystores) != 1 || string(job.Keystores[0].File) != "ks" || job.Keystores[0].Alias != "upload" || job.Keystores[0].Password != "store-pw" {
		t.Errorf("keystores: %+v", job.Keystores)
	}
	logs := e.logs(b.ID)
	contains(t, "log", logs, "Environment variable groups: play (2 variables; their values are hidden in this log)", "Android keystores: upload")
	for _, s := range []string{"tok-123456", "store-pw"} {
		if strings.Contains(logs, s) {
			t.Errorf("the log shows %q", s)
		}
	}

	_, before := e.driver.counts()
	b = e.ended(e.queueNaming([]string{"play", "nope"}, nil).ID)
	want(t, b, build.Failed, "hangar group set demo nope KEY=VALUE", bad, skip, skip)
	if _, after := e.driver.counts(); after != before {
		t.Errorf("a machine was made for a build whose group is missing")
	}
}
