package runnerapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/server"
)

// TestNotify: the servers send the publishing.email of a runner's build
// as it ends, to the recipients of the build's own spec and with the
// artifacts the store keeps of it (linked at the public URL); another
// runner's build, a second email of a build, a status that is not final
// and an ended build are refused.
func TestNotify(t *testing.T) {
	eachBackend(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		type sent struct {
			b    build.Build
			spec *build.Spec
			arts []build.Artifact
		}
		got := make(chan sent, 4)
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		srv := httptest.NewServer(server.New(server.Config{Store: e.st, Logger: log, Runners: e.st, RunnerStaleAfter: time.Minute,
			RunnerAPI: New(Config{Store: e.st, Logger: log, StaleAfter: time.Minute, MaxWait: 2 * time.Second,
				PublicURL: func() string { return "https://ci.example.com/" },
				Notify: func(_ context.Context, b build.Build, spec *build.Spec, arts []build.Artifact) []string {
					got <- sent{b, spec, arts}
					return []string{"Email: sent to " + strings.Join(spec.Email.Recipients, ", ")}
				}})}))
		t.Cleanup(srv.Close)
		id := e.queue(t, build.Spec{Email: &build.Email{Recipients: []string{"dev@example.com"}, Success: true, Failure: true}}, false)
		c := NewClient([]string{srv.URL}, e.runner(t, "r1"), nil)
		if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		b, _, err := c.ClaimBuild(ctx)
		if err != nil || b.ID != id {
			t.Fatalf("claim: %v %v", b, err)
		}
		if err := e.st.AddArtifact(ctx, id, build.Artifact{Name: "out/app v1.apk", Size: 3, ExpiresAt: time.Now().Add(time.Hour)}, "db:x"); err != nil {
			t.Fatal(err)
		}
		// The runner's spec is not trusted: the server reads its own.
		lies := &build.Spec{Email: &build.Email{Recipients: []string{"attacker@example.com"}}}
		final := *b
		final.Status = build.Failed
		lines := c.Notify(ctx, final, lies, nil)
		if len(lines) != 1 || lines[0] != "Email: sent to dev@example.com" {
			t.Errorf("lines: %q", lines)
		}
		s := <-got
		if s.b.Status != build.Failed || s.b.ID != id || len(s.arts) != 1 ||
			s.arts[0].URL != "https://ci.example.com/api/v1/builds/1/artifacts/out/app%20v1.apk" {
			t.Errorf("notified %+v with %+v", s.b, s.arts)
		}
		var out NotifyResponse
		// Once per build: a runner does not mail the recipients again and
		// again (with a reason of its own).
		if err := c.call(ctx, http.MethodPost, buildPath(id, "/notify"), NotifyRequest{Status: build.Failed, Message: "again"}, &out); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("a second email: %v; want 409", err)
		}
		if err := c.call(ctx, http.MethodPost, buildPath(id, "/notify"), NotifyRequest{Status: build.Building}, &out); api.StatusOf(err) != http.StatusBadRequest {
			t.Errorf("a status that is not final: %v; want 400", err)
		}
		other := NewClient([]string{srv.URL}, e.runner(t, "r2"), nil)
		if _, err := other.Start(ctx, StartRequest{Host: "h2", Labels: []string{"linux"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		if err := other.call(ctx, http.MethodPost, buildPath(id, "/notify"), NotifyRequest{Status: build.Failed}, &out); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("another runner's build: %v; want 403", err)
		}
		if lines := other.Notify(ctx, final, lies, nil); len(lines) != 1 || !strings.HasPrefix(lines[0], "Email: NOT sent") {
			t.Errorf("another runner's build: lines %q", lines)
		}
		select {
		case s := <-got:
			t.Errorf("refused requests notified: %+v", s.b)
		default:
		}
	})
}

// TestTextBounds: the text a runner sends is bounded (400 beyond, saying
// which field and its bound); the client cuts what it sends to fit, on a
// rune boundary.
func TestTextBounds(t *testing.T) {
	eachBackend(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.queue(t, build.Spec{Email: &build.Email{Recipients: []string{"dev@example.com"}, Success: true}}, false)
		c := NewClient(e.urls, e.runner(t, "r1"), nil)
		long := strings.Repeat("x", 300)
		err := c.call(ctx, http.MethodPost, "/api/runner/v1/start", StartRequest{Host: "h", Labels: []string{"linux", long}, Capacity: 1}, nil)
		if api.StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "label: 300 bytes, at most 255") {
			t.Errorf("a long label: %v", err)
		}
		if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim: %v %v", b, err)
		}
		err = c.call(ctx, http.MethodPost, buildPath(id, "/notify"), NotifyRequest{Status: build.Failed, Message: strings.Repeat("m", maxText+1)}, nil)
		if api.StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "message: 4097 bytes, at most 4096") {
			t.Errorf("a long message: %v", err)
		}
	})
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghijkl", 10, "abcdefg…"},
		{"ééééé", 8, "éé…"}, // é is 2 bytes, … 3: a cut inside é moves back
	} {
		if got := truncate(c.in, c.max); got != c.want || len(got) > c.max {
			t.Errorf("truncate(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}
