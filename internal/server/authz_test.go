package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/store"
)

// TestRoutesDenyOtherAppsToken walks every route of a server that keeps
// groups, keystores, artifacts, caches and runners, about app demo and
// its build, with a token of another app and with no token: none answers
// 2xx, but the lists that show only what the token may see (and then
// nothing of demo's), and the routes that take a credential of their own
// (a webhook's signature, a ticket) answer without a token. The admin's
// walk of the routes of groups, keystores, artifacts, caches and runners
// answers 2xx: the requests are right, the check can fail.
func TestRoutesDenyOtherAppsToken(t *testing.T) {
	e := newHookEnv(t, groupsYAML)
	ctx := context.Background()
	sealer, _, err := secrets.LoadSealer("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vault := &secrets.Vault{Store: e.st, Sealer: sealer}
	keeper := &artifact.Keeper{Dir: t.TempDir(), Store: e.st}
	e.srv.Close()
	api := New(Config{Store: e.st, Mirrors: &gitrepo.Mirrors{Dir: filepath.Join(t.TempDir(), "mirrors")}, SpoolDir: e.spool,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Secrets: vault, Files: keeper, Runners: e.st, RunnerStaleAfter: time.Minute})
	e.srv = httptest.NewServer(api)
	t.Cleanup(e.srv.Close)

	if err := e.st.CreateApp(ctx, &store.App{Name: "elsewhere", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddToken(ctx, HashToken("elsewhere-token"), store.Token{Name: "elsewhere", Apps: []string{"elsewhere"}}); err != nil {
		t.Fatal(err)
	}
	b := &build.Build{App: "demo", Workflow: "release", WorkflowName: "release", Branch: "main", Commit: "c0ffee", Status: build.Finished,
		Trigger: build.Manual, MaxDuration: 60, Steps: []build.Step{}}
	if err := e.st.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	accept := func(int64) error { return nil }
	if _, err := keeper.PutArtifact(ctx, b.ID, "demo-notes.txt", strings.NewReader("hi"), 2, accept); err != nil {
		t.Fatal(err)
	}
	if _, err := keeper.PutCache(ctx, "demo", "release", b.ID, strings.NewReader("tar"), accept); err != nil {
		t.Fatal(err)
	}
	if err := vault.SetGroup(ctx, "demo", "play", []secrets.Var{{Name: "TOKEN", Value: "demo-value"}}); err != nil {
		t.Fatal(err)
	}
	if err := vault.PutKeystore(ctx, "demo", "upload", &secrets.Keystore{File: []byte("ks"), Password: "p", Alias: "demo-alias", KeyPassword: "k"}); err != nil {
		t.Fatal(err)
	}

	bodies := map[string]string{
		"PUT /api/v1/groups/{group}":                    `{"variables": [{"name": "TOKEN", "value": "v"}]}`,
		"PUT /api/v1/apps/{name}/groups/{group}":        `{"variables": [{"name": "TOKEN", "value": "v"}]}`,
		"PUT /api/v1/apps/{name}/keystores/{ref}":       `{"keystore": "a3M=", "keystore_password": "p", "key_alias": "demo-alias", "key_password": "k"}`,
		"POST /api/v1/builds/{id}/artifact-tickets":     `{"name": "demo-notes.txt"}`,
		"POST /api/v1/runners":                          `{"name": "r9"}`,
		"GET /api/v1/builds/{id}/artifacts/{name...}":   "",
		"DELETE /api/v1/groups/{group}/variables/{key}": "",
	}
	// Routes a token of another app may get 2xx from: lists of what it
	// may see, checked below to hold nothing of demo's.
	lists := map[string]bool{
		"GET /api/v1/apps": true, "GET /api/v1/builds": true, "GET /api/v1/info": true,
		"GET /api/v1/groups": true, "GET /api/v1/caches": true,
	}
	// The routes of this review, which the admin's walk must pass.
	reviewed := func(route string) bool {
		for _, s := range []string{"/groups", "/keystores", "/artifact", "/caches", "/runners"} {
			if strings.Contains(route, s) {
				return true
			}
		}
		return false
	}
	reqs := walkRequests(t, api.patterns, b.ID, "AAAA")
	do := func(wr walkRequest, token string) (int, string) {
		t.Helper()
		if body, ok := bodies[wr.route]; ok {
			wr.body = body
		}
		path := strings.ReplaceAll(wr.path, "{name...}", "demo-notes.txt")
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(cctx, wr.method, e.srv.URL+path, bytes.NewReader([]byte(wr.body)))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range wr.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", wr.method, path, err)
		}
		defer resp.Body.Close()
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			return resp.StatusCode, ""
		}
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	checked := 0
	for _, wr := range reqs {
		if !reviewed(wr.route) || ending(wr.route) {
			continue
		}
		checked++
		if code, body := do(wr, "secret"); code/100 != 2 {
			t.Errorf("admin: %s %s -> %d %.200s (the walk's request is wrong: the check below cannot fail)", wr.method, wr.path, code, body)
		}
	}
	if checked < 12 {
		t.Fatalf("the admin's walk made %d requests of the reviewed routes", checked)
	}
	// A download with a ticket that was never issued.
	reqs = append(reqs, walkRequest{route: "GET /api/v1/builds/{id}/artifacts/{name...}", method: "GET",
		path: fmt.Sprintf("/api/v1/builds/%d/artifacts/demo-notes.txt?ticket=%s", b.ID, strings.Repeat("ab", 24))})
	// The global group the admin's walk made is every app's to list.
	if err := vault.DeleteGroup(ctx, "", "play"); err != nil {
		t.Fatal(err)
	}
	for _, token := range []string{"elsewhere-token", ""} {
		for _, wr := range reqs {
			code, body := do(wr, token)
			if code/100 != 2 && code/100 != 3 || wr.route == "GET /healthz" {
				continue
			}
			if token != "" && lists[wr.route] {
				for _, needle := range []string{"demo-notes.txt", "c0ffee", `"play"`, "TOKEN", "demo-alias", `"app": "demo"`} {
					if strings.Contains(body, needle) {
						t.Errorf("token %q: %s %s lists demo's %s:\n%.500s", token, wr.method, wr.path, needle, body)
					}
				}
				continue
			}
			t.Errorf("token %q: %s %s%s -> %d %.200s", token, wr.method, wr.path, fmt.Sprint(" ", wr.body), code, body)
		}
	}
}
