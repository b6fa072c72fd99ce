package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/store"
)

const workflowFile = `workflows:
  first:
    name: First
    scripts:
      - name: one
        script: echo one
      - name: two
        script: echo two
  second:
    triggering:
      events: [push]
    scripts:
      - echo second
`

// env is a real API server (SQLite store in a temporary directory, real
// git mirrors) without a runner, and a client with the admin token.
type env struct {
	t     *testing.T
	st    *store.Store
	srv   *httptest.Server
	c     *api.Client
	repo  string
	admin string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const admin = "hgr_admin"
	if err := st.AddToken(t.Context(), server.HashToken(admin), store.Token{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	s := server.New(server.Config{
		Store: st, Mirrors: &gitrepo.Mirrors{Dir: filepath.Join(dir, "repos")},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Driver: "host",
	})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	e := &env{t: t, st: st, srv: srv, c: api.New(srv.URL+"/", admin, srv.Client()), repo: filepath.Join(dir, "repo"), admin: admin}
	e.git("init", "--quiet", "--initial-branch", "main", e.repo)
	if err := os.WriteFile(filepath.Join(e.repo, "codemagic.yaml"), []byte(workflowFile), 0o644); err != nil {
		t.Fatal(err)
	}
	e.git("-C", e.repo, "add", "-A")
	e.git("-C", e.repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet", "-m", "first")
	return e
}

func (e *env) git(args ...string) {
	e.t.Helper()
	if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
		e.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// addApp adds app "demo" of the test repository.
func (e *env) addApp() *api.App {
	e.t.Helper()
	a, err := e.c.AddApp(e.t.Context(), api.AppRequest{Name: "demo", Repo: e.repo})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// wantError checks that err is an error answer with status and a message
// that contains msg.
func wantError(t *testing.T, err error, status int, msg string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want an *api.Error with status %d", err, err, status)
	}
	if ae.Status != status || !strings.Contains(ae.Message, msg) || ae.Error() != ae.Message {
		t.Errorf("error %d %q, want %d with %q", ae.Status, ae.Message, status, msg)
	}
	if api.StatusOf(err) != status || api.StatusOf(fmt.Errorf("wrapped: %w", err)) != status {
		t.Errorf("StatusOf(%v) = %d, want %d", err, api.StatusOf(err), status)
	}
}

func TestApps(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.addApp()
	if a.Name != "demo" || a.Repo != e.repo || a.ID == 0 || a.CreatedAt.IsZero() || a.WebhookSecret == "" ||
		a.WebhookURL != e.srv.URL+"/api/v1/webhooks/demo" {
		t.Errorf("added %+v", a)
	}
	_, err := e.c.AddApp(ctx, api.AppRequest{Name: "demo", Repo: e.repo})
	wantError(t, err, http.StatusConflict, "already exists")
	_, err = e.c.AddApp(ctx, api.AppRequest{Name: "-bad", Repo: e.repo})
	wantError(t, err, http.StatusBadRequest, "not valid")

	got, err := e.c.App(ctx, "demo")
	if err != nil || got.Name != "demo" || got.WebhookSecret != "" || got.ID != a.ID {
		t.Errorf("App: %+v %v", got, err)
	}
	list, err := e.c.Apps(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "demo" {
		t.Errorf("Apps: %+v %v", list, err)
	}
	wfs, err := e.c.Workflows(ctx, "demo", "")
	if err != nil || wfs.Branch != "main" || wfs.File != "codemagic.yaml" || len(wfs.Commit) != 40 || len(wfs.Workflows) != 2 {
		t.Fatalf("Workflows: %+v %v", wfs, err)
	}
	if w := wfs.Workflows[0]; w.ID != "first" || w.Name != "First" || !slices.Equal(w.Scripts, []string{"one", "two"}) || len(w.Events) != 0 {
		t.Errorf("workflow: %+v", w)
	}
	if w := wfs.Workflows[1]; w.ID != "second" || !slices.Equal(w.Events, []string{"push"}) {
		t.Errorf("workflow: %+v", w)
	}
	_, err = e.c.Workflows(ctx, "demo", "nope")
	wantError(t, err, http.StatusUnprocessableEntity, `no branch "nope"`)

	if err := e.c.DeleteApp(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.App(ctx, "demo")
	wantError(t, err, http.StatusNotFound, `no app "demo"`)
	wantError(t, e.c.DeleteApp(ctx, "demo"), http.StatusNotFound, `no app "demo"`)
	// Names are escaped in paths.
	_, err = e.c.App(ctx, "a/b?c")
	wantError(t, err, http.StatusNotFound, `no app "a/b?c"`)
}

func TestTokens(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.addApp()
	if _, err := e.c.AddApp(ctx, api.AppRequest{Name: "other", Repo: e.repo}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.c.CreateToken(ctx, api.TokenRequest{Name: "dev", Apps: []string{"demo"}})
	if err != nil || !strings.HasPrefix(tok.Token, "hgr_") || tok.Name != "dev" || tok.Admin || !slices.Equal(tok.Apps, []string{"demo"}) {
		t.Fatalf("CreateToken: %+v %v", tok, err)
	}
	dev := api.New(e.srv.URL, tok.Token, nil)
	list, err := dev.Apps(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "demo" {
		t.Errorf("the dev token's apps: %+v %v", list, err)
	}
	_, err = dev.App(ctx, "other")
	wantError(t, err, http.StatusForbidden, "no access to app other")
	_, err = dev.CreateToken(ctx, api.TokenRequest{Name: "x"})
	wantError(t, err, http.StatusForbidden, "admin")

	_, err = api.New(e.srv.URL, "", nil).Apps(ctx)
	wantError(t, err, http.StatusUnauthorized, "missing API token")
	_, err = api.New(e.srv.URL, "hgr_wrong", nil).Apps(ctx)
	wantError(t, err, http.StatusUnauthorized, "invalid API token")
}

func TestInfo(t *testing.T) {
	e := newEnv(t)
	if err := e.c.Health(t.Context()); err != nil {
		t.Error(err)
	}
	info, err := e.c.Info(t.Context())
	if err != nil || info.Driver != "host" || info.Isolated || info.SSH.Enabled || !strings.Contains(info.SSH.Reason, "--ssh off") {
		t.Errorf("Info: %+v %v", info, err)
	}
}

func TestBuilds(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.addApp()
	_, err := e.c.StartBuild(ctx, api.StartRequest{App: "demo"})
	wantError(t, err, http.StatusBadRequest, "several workflows")
	_, err = e.c.StartBuild(ctx, api.StartRequest{App: "nope"})
	wantError(t, err, http.StatusNotFound, `no app "nope"`)
	_, err = e.c.StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "first", SSH: true, Trigger: "webhook"})
	wantError(t, err, http.StatusUnprocessableEntity, "manually triggered")
	_, err = e.c.StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "first", SSH: true})
	wantError(t, err, http.StatusUnprocessableEntity, "SSH access is not enabled")

	b, err := e.c.StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "first", Branch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if b.ID == 0 || b.App != "demo" || b.Workflow != "first" || b.WorkflowName != "First" || b.Branch != "main" ||
		b.Status != build.Queued || b.Trigger != build.Manual || b.StartedBy != "admin" || len(b.Steps) != 4 {
		t.Errorf("started %+v", b)
	}
	got, err := e.c.Build(ctx, b.ID)
	if err != nil || got.ID != b.ID || got.Commit != b.Commit {
		t.Errorf("Build: %+v %v", got, err)
	}
	_, err = e.c.Build(ctx, b.ID+100)
	wantError(t, err, http.StatusNotFound, fmt.Sprintf("no build %d", b.ID+100))

	second, err := e.c.StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "second"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.c.Builds(ctx, "demo", 0)
	if err != nil || len(list) != 2 || list[0].ID != second.ID || list[1].ID != b.ID {
		t.Errorf("Builds: %+v %v", list, err)
	}
	if list, err := e.c.Builds(ctx, "", 1); err != nil || len(list) != 1 || list[0].ID != second.ID {
		t.Errorf("Builds limit 1: %+v %v", list, err)
	}
	_, err = e.c.Builds(ctx, "nope", 0)
	wantError(t, err, http.StatusNotFound, `no app "nope"`)

	// Canceling a queued build ends it; canceling it again is a conflict.
	c, err := e.c.CancelBuild(ctx, second.ID)
	if err != nil || c.Status != build.Canceled {
		t.Errorf("CancelBuild: %+v %v", c, err)
	}
	_, err = e.c.CancelBuild(ctx, second.ID)
	wantError(t, err, http.StatusConflict, "already ended")

	// A build without SSH has no SSH access and no events.
	_, err = e.c.SSHAccess(ctx, b.ID)
	wantError(t, err, http.StatusConflict, "without SSH access")
	_, err = e.c.SSHScript(ctx, b.ID, "powershell")
	wantError(t, err, http.StatusConflict, "without SSH access")
	_, err = e.c.TerminalTicket(ctx, b.ID)
	wantError(t, err, http.StatusConflict, "without SSH access")
	if evs, err := e.c.Events(ctx, b.ID); err != nil || evs == nil || len(evs) != 0 {
		t.Errorf("Events: %+v %v", evs, err)
	}
}

// run plays the runner for build b: it claims it, writes n log lines in
// step 2 and ends it.
func (e *env) run(b *build.Build, n int) {
	ctx := context.Background()
	now := time.Now().UTC()
	b.Status, b.StartedAt = build.Building, &now
	b.Steps[2].Status, b.Steps[2].StartedAt = build.StepRunning, &now
	if _, err := e.st.UpdateBuild(ctx, b); err != nil {
		e.t.Error(err)
		return
	}
	for i := 1; i <= n; i++ {
		c := build.LogChunk{Seq: int64(i), Lines: 1, Step: 2, Time: now, Data: fmt.Appendf(nil, "line %d\n", i)}
		if err := e.st.AppendLog(ctx, b.ID, []build.LogChunk{c}); err != nil {
			e.t.Error(err)
			return
		}
	}
	end := time.Now().UTC()
	b.Status, b.FinishedAt = build.Finished, &end
	b.Steps[2].Status, b.Steps[2].FinishedAt = build.StepSuccess, &end
	if _, err := e.st.UpdateBuild(ctx, b); err != nil {
		e.t.Error(err)
	}
}

func TestLogs(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.addApp()
	b, err := e.c.StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if lines, err := e.c.Logs(ctx, b.ID, 0, 0); err != nil || lines == nil || len(lines) != 0 {
		t.Errorf("Logs of a queued build: %v %v", lines, err)
	}
	e.run(b, 5)
	var texts []string
	var after int64
	for pages := 0; ; pages++ {
		lines, err := e.c.Logs(ctx, b.ID, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			texts = append(texts, l.Text)
			after = l.Seq
		}
		if len(lines) < 2 {
			if pages != 2 {
				t.Errorf("%d full pages, want 2", pages)
			}
			break
		}
	}
	if want := []string{"line 1", "line 2", "line 3", "line 4", "line 5"}; !slices.Equal(texts, want) {
		t.Errorf("paged lines %q, want %q", texts, want)
	}
	_, err = e.c.Logs(ctx, b.ID, 0, api.MaxLogPage+1)
	wantError(t, err, http.StatusBadRequest, "limit")
}

func TestFollow(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.addApp()
	b, err := e.c.StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "first"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1500 // more than the server sends at once
	go e.run(b, n)
	var lines int
	var last *build.Build
	var end *api.End
	err = e.c.Follow(ctx, b.ID, func(ev api.LogEvent) error {
		switch {
		case ev.Line != nil:
			lines++
			if want := fmt.Sprintf("line %d", lines); ev.Line.Text != want || ev.Line.Seq != int64(lines) {
				t.Errorf("line %d: %+v", lines, ev.Line)
			}
		case ev.Build != nil:
			last = ev.Build
		case ev.End != nil:
			end = ev.End
		default:
			t.Errorf("an empty event")
		}
		if end != nil && ev.End == nil {
			t.Errorf("an event after the end")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if lines != n || end == nil || end.Status != build.Finished || last == nil || last.Status != build.Finished {
		t.Errorf("followed %d lines, end %+v, last build %+v", lines, end, last)
	}

	// fn's error stops Follow and is returned.
	stop := errors.New("stop")
	if err := e.c.Follow(ctx, b.ID, func(api.LogEvent) error { return stop }); err != stop {
		t.Errorf("Follow returned %v, want fn's error", err)
	}
	err = e.c.Follow(ctx, b.ID+100, func(api.LogEvent) error { return nil })
	wantError(t, err, http.StatusNotFound, "no build")
}

// TestFollowResumes: a dropped stream is resumed after the last line.
func TestFollowResumes(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Last-Event-ID"))
		if r.Header.Get("Accept") != "text/event-stream" || r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != "/api/v1/builds/7/logs" {
			t.Errorf("request %s %v", r.URL, r.Header)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		switch r.Header.Get("Last-Event-ID") {
		case "":
			fmt.Fprint(w, ": hello\n\nid: 1\nevent: log\ndata: {\"seq\":1,\"text\":\"a\"}\n\nevent: unknown\ndata: {}\n\n")
		case "1":
			fmt.Fprint(w, "id: 2\nevent: log\ndata: {\"seq\":2,\"text\":\"b\"}\n\nevent: end\ndata: {\"status\":\"failed\"}\n\n")
		}
	}))
	defer srv.Close()
	var texts []string
	var end build.Status
	err := api.New(srv.URL, "tok", nil).Follow(t.Context(), 7, func(ev api.LogEvent) error {
		switch {
		case ev.Line != nil:
			texts = append(texts, ev.Line.Text)
		case ev.End != nil:
			end = ev.End.Status
		}
		return nil
	})
	if err != nil || !slices.Equal(texts, []string{"a", "b"}) || end != build.Failed || !slices.Equal(got, []string{"", "1"}) {
		t.Errorf("Follow: %v, lines %q, end %q, Last-Event-IDs %q", err, texts, end, got)
	}
}

func TestErrors(t *testing.T) {
	// An error answer that is not the API's JSON.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	}))
	_, err := api.New(srv.URL, "", nil).Apps(t.Context())
	wantError(t, err, http.StatusBadGateway, "server answered 502 Bad Gateway")
	srv.Close()

	// No server: the error says so, and is not an API error.
	c := api.New(srv.URL, "", nil)
	_, err = c.Apps(t.Context())
	if !errors.Is(err, api.ErrUnreachable) || api.StatusOf(err) != 0 || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("no server: %v", err)
	}
	err = c.Follow(t.Context(), 1, func(api.LogEvent) error { return nil })
	if !errors.Is(err, api.ErrUnreachable) {
		t.Errorf("Follow without a server: %v", err)
	}

	// A canceled context ends the call with the context's error.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Apps(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}

// TestWire checks the JSON names the server sends, which the web UI and
// other clients read (docs/api.md).
func TestWire(t *testing.T) {
	e := newEnv(t)
	e.addApp()
	keys := func(path string, status int) []string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != status {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
		}
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	for path, want := range map[string][]string{
		"/api/v1/apps/demo":           {"created_at", "id", "name", "refuse_unsupported", "repo", "webhook_url"},
		"/api/v1/apps/demo/workflows": {"branch", "commit", "file", "workflows"},
		"/api/v1/info":                {"driver", "http", "isolated", "ssh"},
	} {
		if got := keys(path, http.StatusOK); !slices.Equal(got, want) {
			t.Errorf("%s: keys %q, want %q", path, got, want)
		}
	}
	if got := keys("/api/v1/apps/nope", http.StatusNotFound); !slices.Equal(got, []string{"error"}) {
		t.Errorf("error keys %q", got)
	}
}
