package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/syncbuf"
)

const groupsYAML = `workflows:
  release:
    environment:
      groups: [play]
      android_signing: [upload]
      vars:
        URL: https://x.invalid/$PLAY_TOKEN
    scripts:
      - echo release
  ios:
    environment:
      ios_signing:
        distribution_type: app_store
        bundle_identifier: io.example
    scripts:
      - echo ios
  plain:
    scripts:
      - echo plain
`

// newSecretsEnv is a hookEnv whose server keeps groups and keystores in
// a real vault, logging into the returned buffer.
func newSecretsEnv(t *testing.T) (*hookEnv, *syncbuf.Buffer) {
	t.Helper()
	e := newHookEnv(t, groupsYAML)
	sealer, _, err := secrets.LoadSealer("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	e.srv.Close()
	e.srv = httptest.NewServer(New(Config{Store: e.st, Mirrors: &gitrepo.Mirrors{Dir: filepath.Join(t.TempDir(), "mirrors")}, SpoolDir: e.spool,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Secrets: &secrets.Vault{Store: e.st, Sealer: sealer}}))
	t.Cleanup(e.srv.Close)
	return e, logs
}

// raw sends a request with token and returns the status and body.
func (e *hookEnv) raw(method, path, token string, body any) (int, string) {
	e.t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

const value = "tok-VALUE-42"

func TestGroupsAPI(t *testing.T) {
	e, logs := newSecretsEnv(t)
	ctx := context.Background()
	if err := e.st.CreateApp(ctx, &store.App{Name: "other", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddToken(ctx, HashToken("user"), store.Token{Name: "user", Apps: []string{"demo"}}); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	call := func(method, path, token string, body any, want int) string {
		t.Helper()
		code, out := e.raw(method, path, token, body)
		if code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, code, out, want)
		}
		bodies = append(bodies, out)
		return out
	}
	set := api.GroupRequest{Variables: []api.GroupVar{{Name: "PLAY_TOKEN", Value: value}, {Name: "PLAY_USER", Value: "robot-user"}}}
	out := call("PUT", "/api/v1/apps/demo/groups/play", "user", set, http.StatusOK)
	var g api.Group
	json.Unmarshal([]byte(out), &g)
	if g.Name != "play" || g.Global || strings.Join(g.Keys, ",") != "PLAY_TOKEN,PLAY_USER" {
		t.Errorf("group: %+v", g)
	}
	call("PUT", "/api/v1/groups/common", "user", set, http.StatusForbidden)
	call("PUT", "/api/v1/groups/common", "secret", api.GroupRequest{Variables: []api.GroupVar{{Name: "SHARED", Value: value}}}, http.StatusOK)
	call("PUT", "/api/v1/apps/other/groups/x", "user", set, http.StatusForbidden)
	call("PUT", "/api/v1/apps/nope/groups/x", "secret", set, http.StatusNotFound)
	out = call("PUT", "/api/v1/apps/demo/groups/play", "user", api.GroupRequest{Variables: []api.GroupVar{{Name: "1BAD", Value: value}}}, http.StatusBadRequest)
	if !strings.Contains(out, "variable name") {
		t.Errorf("bad name: %s", out)
	}
	call("PUT", "/api/v1/apps/demo/groups/bad%20name", "user", set, http.StatusBadRequest)

	out = call("GET", "/api/v1/apps/demo/groups", "user", nil, http.StatusOK)
	var groups []api.Group
	json.Unmarshal([]byte(out), &groups)
	if len(groups) != 1 || groups[0].Name != "play" || len(groups[0].Keys) != 2 {
		t.Errorf("groups: %s", out)
	}
	out = call("GET", "/api/v1/groups", "user", nil, http.StatusOK)
	if !strings.Contains(out, `"SHARED"`) || !strings.Contains(out, `"global": true`) {
		t.Errorf("global groups: %s", out)
	}
	call("DELETE", "/api/v1/apps/demo/groups/play/variables/PLAY_USER", "user", nil, http.StatusNoContent)
	call("DELETE", "/api/v1/apps/demo/groups/play/variables/PLAY_USER", "user", nil, http.StatusNotFound)
	call("DELETE", "/api/v1/groups/common", "user", nil, http.StatusForbidden)
	call("DELETE", "/api/v1/groups/common", "secret", nil, http.StatusNoContent)
	out = call("DELETE", "/api/v1/groups/common", "secret", nil, http.StatusNotFound)
	if !strings.Contains(out, "no group") {
		t.Errorf("missing group: %s", out)
	}

	// Keystores: write-only too.
	ks := api.KeystoreRequest{Keystore: []byte("keystore-bytes"), KeystorePassword: "store-PASS-1", KeyAlias: "upload", KeyPassword: "key-PASS-2"}
	out = call("PUT", "/api/v1/apps/demo/keystores/upload", "user", ks, http.StatusOK)
	if !strings.Contains(out, `"reference": "upload"`) || !strings.Contains(out, `"key_alias": "upload"`) {
		t.Errorf("keystore: %s", out)
	}
	out = call("PUT", "/api/v1/apps/demo/keystores/other", "user", api.KeystoreRequest{Keystore: []byte("x")}, http.StatusBadRequest)
	if !strings.Contains(out, "password") {
		t.Errorf("keystore without passwords: %s", out)
	}
	call("GET", "/api/v1/apps/demo/keystores", "user", nil, http.StatusOK)
	call("DELETE", "/api/v1/apps/demo/keystores/nope", "user", nil, http.StatusNotFound)

	for _, b := range append(bodies, logs.String()) {
		for _, secret := range []string{value, "robot-user", "store-PASS-1", "key-PASS-2", "a2V5c3RvcmUtYnl0ZXM"} {
			if strings.Contains(b, secret) {
				t.Errorf("%q shows in %s", secret, b)
			}
		}
	}
}

// TestStartNeedsGroupsAndKeystores: a build naming a group or keystore the
// app lacks is refused with what to do (422); once they exist it is
// queued with their names only; ios_signing is refused on Linux.
func TestStartNeedsGroupsAndKeystores(t *testing.T) {
	e, logs := newSecretsEnv(t)
	start := func(wf string) (int, string) {
		t.Helper()
		return e.raw("POST", "/api/v1/builds", "secret", api.StartRequest{App: "demo", Workflow: wf})
	}
	code, out := start("release")
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, "hangar group set demo play KEY=VALUE") {
		t.Fatalf("without the group: %d %s", code, out)
	}
	e.raw("PUT", "/api/v1/groups/play", "secret", api.GroupRequest{Variables: []api.GroupVar{{Name: "PLAY_TOKEN", Value: value}}})
	code, out = start("release")
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, "hangar app keystore add demo upload") {
		t.Fatalf("without the keystore: %d %s", code, out)
	}
	e.raw("PUT", "/api/v1/apps/demo/keystores/upload", "secret", api.KeystoreRequest{Keystore: []byte("ks"), KeystorePassword: "p1", KeyAlias: "a", KeyPassword: "p2"})
	code, out = start("release")
	if code != http.StatusCreated {
		t.Fatalf("with both: %d %s", code, out)
	}
	var b build.Build
	json.Unmarshal([]byte(out), &b)
	spec, err := e.st.BuildSpec(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var s build.Spec
	json.Unmarshal(spec, &s)
	if strings.Join(s.Groups, ",") != "play" || strings.Join(s.Keystores, ",") != "upload" || strings.Contains(string(spec), value) {
		t.Errorf("spec: %s", spec)
	}
	code, out = start("ios")
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, "macOS") {
		t.Errorf("ios_signing: %d %s", code, out)
	}
	if code, out := start("plain"); code != http.StatusCreated {
		t.Errorf("plain: %d %s", code, out)
	}
	if strings.Contains(logs.String(), value) {
		t.Error("the server's log shows the value")
	}
}
