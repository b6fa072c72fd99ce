package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/store"
)

// walkRequest is one request of the walk over every route.
type walkRequest struct {
	route, method, path, body string
	header                    map[string]string
}

// walkRequests makes requests for every route the server registered (so a
// new route cannot be left out): path parameters filled in with build id,
// app "demo" and a well-formed one-line grant, a plausible body for each
// POST, and the live variants (SSE) of the log stream. Routes that change
// or end things come last.
func walkRequests(t *testing.T, patterns []string, id int64, grant string) []walkRequest {
	t.Helper()
	params := map[string]string{"id": fmt.Sprint(id), "name": "demo", "app": "demo", "grant": grant, "group": "play", "key": "TOKEN", "ref": "upload"}
	bodies := map[string][]string{
		"POST /api/v1/apps":                   {`{"name": "leak", "repo": "/nonexistent/leak.git"}`},
		"POST /api/v1/builds":                 {`{"app": "demo", "ssh": true}`, `{"app": "demo"}`},
		"POST /api/v1/tokens":                 {`{"name": "more", "apps": ["demo"]}`},
		"POST /api/v1/builds/{id}/ssh/extend": {`{"by": "10m"}`},
		"POST /api/v1/builds/{id}/rerun":      {`{"ssh": true}`},
		"POST /api/v1/webhooks/{app}":         {`{"ref": "refs/heads/main"}`},
	}
	variants := map[string][]string{
		"GET /api/v1/builds":                  {"", "?app=demo", "?app=other"},
		"GET /api/v1/builds/{id}/logs":        {"", "?follow=1"},
		"GET /api/v1/builds/{id}/ssh/script":  {"", "?shell=powershell"},
		"GET /ssh/{id}/{grant}":               {"", "?shell=powershell"},
		"GET /api/v1/builds/{id}/terminal/ws": {"", "?ticket=0123"},
		"GET /api/v1/apps/{name}/workflows":   {""},
		"/":                                   {"", "builds/" + fmt.Sprint(id)},
		"/api/":                               {"", "v1/builds/" + fmt.Sprint(id) + "/ssh"},
	}
	sorted := slices.Clone(patterns)
	slices.SortStableFunc(sorted, func(a, b string) int {
		switch {
		case ending(a) && !ending(b):
			return 1
		case !ending(a) && ending(b):
			return -1
		}
		return 0
	})
	param := regexp.MustCompile(`\{([a-z]+)\}`)
	var out []walkRequest
	for _, route := range sorted {
		method, path, ok := strings.Cut(route, " ")
		if !ok {
			method, path = "GET", route
		}
		path = param.ReplaceAllStringFunc(path, func(m string) string {
			v, ok := params[strings.Trim(m, "{}")]
			if !ok {
				t.Fatalf("route %q has parameter %s, which the walk does not know: add it to walkRequests", route, m)
			}
			return v
		})
		vs := variants[route]
		if vs == nil {
			vs = []string{""}
		}
		bs := bodies[route]
		if method == "POST" && bs == nil {
			bs = []string{""}
		}
		if bs == nil {
			bs = []string{""}
		}
		for _, v := range vs {
			for _, b := range bs {
				out = append(out, walkRequest{route: route, method: method, path: path + v, body: b})
			}
		}
		if route == "GET /api/v1/builds/{id}/logs" {
			out = append(out, walkRequest{route: route, method: method, path: path,
				header: map[string]string{"Accept": "text/event-stream"}})
		}
	}
	return out
}

// ending reports whether route ends builds or apps.
func ending(route string) bool {
	return strings.HasSuffix(route, "/cancel") || strings.HasPrefix(route, "DELETE ")
}

// walk makes every request with token and returns what each answered. A
// live stream is read until it has sent the build (or ended).
func (e *sshEnv) walk(reqs []walkRequest, token string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, wr := range reqs {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var body io.Reader
		if wr.body != "" {
			body = strings.NewReader(wr.body)
		}
		req, err := http.NewRequestWithContext(ctx, wr.method, e.srv.URL+wr.path, body)
		if err != nil {
			e.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		for k, v := range wr.header {
			req.Header.Set(k, v)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			cancel()
			e.t.Fatalf("%s %s: %v", wr.method, wr.path, err)
		}
		var got strings.Builder
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			// Up to the end of the first build event: what the stream
			// shows of the build.
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			inBuild := false
			for sc.Scan() {
				got.WriteString(sc.Text() + "\n")
				if sc.Text() == "event: build" {
					inBuild = true
				}
				if inBuild && sc.Text() == "" {
					break
				}
			}
			if !inBuild {
				e.t.Errorf("%s %s: the stream ended without a build event:\n%s", wr.method, wr.path, got.String())
			}
		} else {
			data, err := io.ReadAll(resp.Body)
			if err != nil {
				e.t.Errorf("%s %s: %v", wr.method, wr.path, err)
			}
			got.Write(data)
		}
		resp.Body.Close()
		cancel()
		key := fmt.Sprintf("%s %s %s %v -> %d", wr.method, wr.path, wr.body, wr.header, resp.StatusCode)
		out[key] = got.String()
	}
	return out
}

// TestNoSSHMaterialWithoutSSHRights walks every route of the server with a
// token that may not have SSH access to a build whose access is open, on a
// server with isolated machines (sandbox driver: an app-scoped token may
// SSH into its own app's builds only) and one without (host driver: only
// admin tokens may), and with tokens made without SSH (--no-ssh), and checks that no answer, list, event or live
// stream carries the build's private key, certificate, one-line command or
// URL. The same walk with the admin token finds them: the needles are real.
func TestNoSSHMaterialWithoutSSHRights(t *testing.T) {
	for _, c := range []struct {
		driver   string
		isolated bool
		token    store.Token // the scoped token
	}{
		{"host", false, store.Token{Apps: []string{"demo"}}},
		{"host", false, store.Token{Apps: []string{"other"}}},
		{"host", false, store.Token{Admin: true, NoSSH: true}},
		{"sandbox", true, store.Token{Apps: []string{"other"}}},
		{"sandbox", true, store.Token{Apps: []string{"demo"}, NoSSH: true}},
		{"sandbox", true, store.Token{Admin: true, NoSSH: true}},
	} {
		t.Run(fmt.Sprintf("%s driver, token %+v", c.driver, c.token), func(t *testing.T) {
			e := newSSHEnv(t, sshEnvOptions{isolated: c.isolated})
			b, key, cert := e.sshBuild("demo")
			path, _ := e.oneLiner(b.ID, e.admin)
			grant := path[strings.LastIndex(path, "/")+1:]
			// Events to list: the admin fetched the script.
			if code, _ := e.do("GET", path, "", nil); code != http.StatusOK {
				t.Fatalf("admin's URL: %d", code)
			}
			c.token.Name = "scoped"
			scoped := e.addToken(c.token)
			needles := map[string]string{
				"private key":        strings.Split(strings.TrimSpace(key), "\n")[1],
				"PEM header":         "PRIVATE KEY",
				"certificate":        strings.Fields(cert)[1],
				"one-line command":   "curl -fsSL",
				"PowerShell command": "iwr -UseBasicParsing",
				"one-line URL":       fmt.Sprintf("/ssh/%d/", b.ID),
				"the admin's grant":  grant,
			}
			// The scoped token never sees the admin's grant; a well-formed
			// grant of its own making stands in for the anonymous route.
			reqs := walkRequests(t, e.api.patterns, b.ID, grant[:len(grant)-4]+"AAAA")
			if len(reqs) < len(e.api.patterns) {
				t.Fatalf("%d requests for %d routes", len(reqs), len(e.api.patterns))
			}
			t.Logf("%d requests over the server's %d routes", len(reqs), len(e.api.patterns))
			// The admin's walk finds each needle: the check can fail. It
			// leaves out what ends the build, which the scoped walk needs
			// running.
			var safe []walkRequest
			for _, r := range reqs {
				if !ending(r.route) {
					safe = append(safe, r)
				}
			}
			found := map[string]bool{}
			for _, answer := range e.walk(safe, e.admin) {
				for what, needle := range needles {
					if strings.Contains(answer, needle) {
						found[what] = true
					}
				}
			}
			for _, what := range []string{"private key", "PEM header", "certificate", "one-line command", "PowerShell command", "one-line URL"} {
				if !found[what] {
					t.Errorf("the admin's walk never found the %s: the check cannot fail", what)
				}
			}
			if b, err := e.st.Build(t.Context(), b.ID); err != nil || b.Status.Done() {
				t.Fatalf("the build ended during the admin's walk: %v", err)
			}
			e.cancelOnRequest()
			for req, answer := range e.walk(reqs, scoped) {
				for what, needle := range needles {
					if strings.Contains(answer, needle) {
						t.Errorf("%s: the answer holds the build's %s:\n%.2000s", req, what, answer)
					}
				}
			}
		})
	}
}

// TestNoSSHToken: a token made with no_ssh reads its app's builds without
// their SSH material and is refused SSH access with a reason, on a server
// whose machines are isolated.
func TestNoSSHToken(t *testing.T) {
	e := newSSHEnv(t, sshEnvOptions{isolated: true})
	b, _, _ := e.sshBuild("demo")
	code, body := e.do("POST", "/api/v1/tokens", e.admin, strings.NewReader(`{"name": "dashboard", "apps": ["demo"], "no_ssh": true}`))
	var tok struct {
		Token string `json:"token"`
		NoSSH bool   `json:"no_ssh"`
	}
	if err := json.Unmarshal([]byte(body), &tok); code != http.StatusCreated || err != nil || !tok.NoSSH {
		t.Fatalf("create token: %d %s", code, body)
	}
	if code, body := e.do("GET", fmt.Sprintf("/api/v1/builds/%d", b.ID), tok.Token, nil); code != http.StatusOK || strings.Contains(body, "command") {
		t.Errorf("the build for a no-SSH token: %d %s", code, body)
	}
	for _, r := range []struct{ method, path, body string }{
		{"GET", fmt.Sprintf("/api/v1/builds/%d/ssh/script", b.ID), ""},
		{"GET", fmt.Sprintf("/api/v1/builds/%d/ssh/access", b.ID), ""},
		{"POST", fmt.Sprintf("/api/v1/builds/%d/terminal", b.ID), ""},
		{"POST", "/api/v1/builds", `{"app": "demo", "ssh": true}`},
	} {
		code, body := e.do(r.method, r.path, tok.Token, strings.NewReader(r.body))
		if code != http.StatusForbidden || !strings.Contains(body, "made without SSH access") {
			t.Errorf("%s %s: %d %s", r.method, r.path, code, body)
		}
	}
	// The same app's token with SSH gets it.
	if code, body := e.do("GET", fmt.Sprintf("/api/v1/builds/%d/ssh/script", b.ID), e.token("dev", false, "demo"), nil); code != http.StatusOK || !strings.Contains(body, "PRIVATE KEY") {
		t.Errorf("script for an app token with SSH: %d", code)
	}
}
