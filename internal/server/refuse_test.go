package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

const unsupportedYAML = `workflows:
  odd:
    labels: [nightly]
    integrations:
      app_store_connect: key
    triggering:
      events: [push]
    scripts:
      - echo odd
  plain:
    triggering:
      events: [push]
    scripts:
      - echo plain
`

// TestRefuseUnsupported: an app with refuse_unsupported refuses to start,
// by hand (422), as a rerun or from a webhook (a build failed at once), a
// workflow using keys Hangar does not support, saying which and how to
// allow it; a workflow without such keys, or the same app without the
// setting, builds. The setting is changed by an admin or a token of the
// app, not by one of another app.
func TestRefuseUnsupported(t *testing.T) {
	e := newHookEnv(t, unsupportedYAML)
	ctx := context.Background()
	if err := e.st.CreateApp(ctx, &store.App{Name: "elsewhere", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	for name, apps := range map[string][]string{"demo-token": {"demo"}, "elsewhere-token": {"elsewhere"}} {
		if err := e.st.AddToken(ctx, HashToken(name), store.Token{Name: name, Apps: apps}); err != nil {
			t.Fatal(err)
		}
	}
	start := func(wf string) (int, string) {
		t.Helper()
		return e.raw("POST", "/api/v1/builds", "secret", api.StartRequest{App: "demo", Workflow: wf})
	}
	setting := func() bool {
		t.Helper()
		var a api.App
		if code := e.do("GET", "/api/v1/apps/demo", nil, &a); code != http.StatusOK {
			t.Fatalf("get app: %d", code)
		}
		return a.RefuseUnsupported
	}
	yes, no := true, false

	// Without the setting: built, as before.
	if setting() {
		t.Fatal("a new app refuses unsupported keys")
	}
	code, out := start("odd")
	if code != http.StatusCreated {
		t.Fatalf("without the setting: %d %s", code, out)
	}
	var first build.Build
	if err := json.Unmarshal([]byte(out), &first); err != nil {
		t.Fatal(err)
	}
	e.finish(first.ID)

	// Who may change it.
	if code, out := e.raw("PATCH", "/api/v1/apps/demo", "elsewhere-token", api.AppSettings{RefuseUnsupported: &yes}); code != http.StatusForbidden {
		t.Errorf("a token of another app: %d %s", code, out)
	}
	if code, out := e.raw("PATCH", "/api/v1/apps/demo", "", api.AppSettings{RefuseUnsupported: &yes}); code != http.StatusUnauthorized {
		t.Errorf("no token: %d %s", code, out)
	}
	if setting() {
		t.Fatal("a refused PATCH changed the setting")
	}
	if code, out := e.raw("PATCH", "/api/v1/apps/demo", "demo-token", api.AppSettings{}); code != http.StatusBadRequest || !strings.Contains(out, "refuse_unsupported") {
		t.Errorf("nothing to change: %d %s", code, out)
	}
	if code, out := e.raw("PATCH", "/api/v1/apps/nosuch", "secret", api.AppSettings{RefuseUnsupported: &yes}); code != http.StatusNotFound {
		t.Errorf("no such app: %d %s", code, out)
	}
	code, out = e.raw("PATCH", "/api/v1/apps/demo", "demo-token", api.AppSettings{RefuseUnsupported: &yes})
	if code != http.StatusOK || !strings.Contains(out, `"refuse_unsupported": true`) {
		t.Fatalf("the app's token: %d %s", code, out)
	}
	if !setting() {
		t.Fatal("PATCH did not keep the setting")
	}

	// With it: refused by hand, with each key, why, and how to allow it.
	refusal := func(where, msg string) {
		t.Helper()
		for _, want := range []string{"labels (labels are not shown", "integrations (integrations", "workflow odd",
			"hangar app set demo --refuse-unsupported=false", "PATCH /api/v1/apps/demo"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: %q does not say %q", where, msg, want)
			}
		}
	}
	code, out = start("odd")
	var apiErr api.Error
	if code != http.StatusUnprocessableEntity || json.Unmarshal([]byte(out), &apiErr) != nil {
		t.Fatalf("with the setting: %d %s", code, out)
	}
	refusal("start", apiErr.Message)
	code, out = e.raw("POST", fmt.Sprintf("/api/v1/builds/%d/rerun", first.ID), "secret", api.RerunRequest{})
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("rerun with the setting: %d %s", code, out)
	}
	refusal("rerun", out)
	if code, out := start("plain"); code != http.StatusCreated {
		t.Errorf("a workflow without unsupported keys: %d %s", code, out)
	}

	// From a webhook: the refused workflow is a failed build saying why.
	head := e.commit("main", map[string]string{"x.txt": "x"})
	code, res, raw := e.hook("push", "d1", pushPayload("refs/heads/main", head))
	if code != http.StatusAccepted || len(res.Builds) != 2 {
		t.Fatalf("webhook: %d %s", code, raw)
	}
	for _, b := range res.Builds {
		switch b.Workflow {
		case "odd":
			if b.Status != build.Failed {
				t.Errorf("webhook, odd: %s %q", b.Status, b.Message)
			}
			refusal("webhook", b.Message)
		case "plain":
			if b.Status != build.Queued {
				t.Errorf("webhook, plain: %s %q", b.Status, b.Message)
			}
		}
	}

	// Unset: built again.
	if code, out := e.raw("PATCH", "/api/v1/apps/demo", "secret", api.AppSettings{RefuseUnsupported: &no}); code != http.StatusOK {
		t.Fatalf("admin unsets: %d %s", code, out)
	}
	if code, out := start("odd"); code != http.StatusCreated {
		t.Errorf("after unsetting: %d %s", code, out)
	}
}
