package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
)

// upload is what a fake builder's upload got: the refusal, or the answer.
type upload struct {
	refused string
	res     link.FileResult
}

// put uploads data announced as size bytes, as a builder that may lie.
func (fb *fakeBuilder) put(h link.FileHeader, data string) upload {
	st, err := fb.c.OpenFile(h)
	if err != nil {
		return upload{refused: err.Error()}
	}
	defer st.Close()
	_, _ = io.WriteString(st, data)
	if err := st.CloseWrite(); err != nil {
		return upload{refused: err.Error()}
	}
	var res link.FileResult
	if err := json.NewDecoder(st).Decode(&res); err != nil {
		return upload{refused: "no answer: " + err.Error()}
	}
	return upload{res: res}
}

// TestFilesEnforced: the runner holds a builder to the server's limits
// and names whatever it says: it refuses a bad name, a file over the
// per-file or per-build limit, keeps nothing of an upload larger than
// announced or a cache past its bound; the email notifier gets the
// artifacts kept and its lines go to the log.
func TestFilesEnforced(t *testing.T) {
	var keeper *artifact.Keeper
	results := make(chan []upload, 1)
	notified := make(chan []build.Artifact, 1)
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.passAll()
		results <- []upload{
			fb.put(link.FileHeader{Op: link.PutArtifact, Name: "../etc/passwd", Size: 1}, "x"),
			fb.put(link.FileHeader{Op: link.PutArtifact, Name: "big", Size: 11}, strings.Repeat("x", 11)),
			fb.put(link.FileHeader{Op: link.PutArtifact, Name: "out/a.apk", Size: 10}, "0123456789"),
			fb.put(link.FileHeader{Op: link.PutArtifact, Name: "b", Size: 6}, "012345"),
			fb.put(link.FileHeader{Op: link.PutArtifact, Name: "liar", Size: 3}, "0123456"),
			fb.put(link.FileHeader{Op: link.PutCache}, "123456789"),
			fb.put(link.FileHeader{Op: "rm -rf"}, ""),
		}
		fb.done("")
		fb.wait(ctx)
	}, func(c *Config) {
		keeper = &artifact.Keeper{Dir: t.TempDir(), Store: c.Store.(artifact.Store), MaxFile: 10, MaxBuild: 15, MaxCache: 8}
		c.Files = KeeperFiles{keeper}
		c.PublicURL = func() string { return "https://ci.example.com/" }
		c.Notify = func(_ context.Context, b build.Build, spec *build.Spec, arts []build.Artifact) []string {
			notified <- arts
			return []string{fmt.Sprintf("Email: test notifier saw %s with %d artifact(s)", b.Status, len(arts))}
		}
	})
	spec, _ := json.Marshal(build.Spec{Repo: "/r", Scripts: scripts[:1], Artifacts: []string{"**/*"}, CachePaths: []string{"~/.c"},
		Email: &build.Email{Recipients: []string{"a@example.com"}, Success: true}})
	b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c", Status: build.Queued,
		Trigger: build.Manual, MaxDuration: 3600}
	var sp build.Spec
	_ = json.Unmarshal(spec, &sp)
	b.Steps = sp.Steps()
	if err := e.st.CreateBuild(context.Background(), b, spec); err != nil {
		t.Fatal(err)
	}
	done := e.ended(b.ID)
	if done.Status != build.Finished {
		t.Fatalf("build %s: %s", done.Status, done.Message)
	}
	var got []upload
	select {
	case got = <-results:
	case <-time.After(waitFor):
		t.Fatal("the fake builder did not finish its uploads")
	}
	want := []string{"'.' or '..' component", "over the server's limit of 10 bytes per artifact", "", "past the server's limit of 15 bytes per build", "over the server's bound", "over the server's bound", "unknown file operation"}
	for i, w := range want {
		msg := got[i].refused + got[i].res.Error
		if w == "" && msg != "" || w != "" && !strings.Contains(msg, w) {
			t.Errorf("upload %d: %q, want %q", i, msg, w)
		}
	}
	if u := got[2].res; u.Size != 10 || u.URL != fmt.Sprintf("https://ci.example.com/api/v1/builds/%d/artifacts/out/a.apk", b.ID) || len(u.MD5) != 32 {
		t.Errorf("kept upload's answer: %+v", u)
	}
	list, err := keeper.Artifacts(context.Background(), b.ID)
	if err != nil || len(list) != 1 || list[0].Name != "out/a.apk" {
		t.Errorf("artifacts kept: %+v %v", list, err)
	}
	if caches, _ := keeper.Caches(context.Background(), ""); len(caches) != 0 {
		t.Errorf("a cache past its bound was kept: %+v", caches)
	}
	if arts := <-notified; len(arts) != 1 || arts[0].Name != "out/a.apk" {
		t.Errorf("notifier got %+v", arts)
	}
	contains(t, "log", e.logs(b.ID), "Email: test notifier saw finished with 1 artifact(s)")
}
