package server

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
)

// TestAppBranches: the branches come from the mirror, fetched on asking,
// the default branch first, then the most recently committed to.
func TestAppBranches(t *testing.T) {
	e := newHookEnv(t, startFile)
	// Commit times (one-second resolution) are set, so that "most
	// recent" is well defined.
	at := func(d time.Duration) { t.Setenv("GIT_COMMITTER_DATE", time.Now().Add(d).Format(time.RFC3339)) }
	at(time.Hour)
	e.commit("feature/old", map[string]string{"a": "1"})
	at(2 * time.Hour)
	e.commit("feature/new", map[string]string{"b": "2"})
	var br api.Branches
	if code := e.do("GET", "/api/v1/apps/demo/branches", nil, &br); code != http.StatusOK {
		t.Fatalf("branches: %d", code)
	}
	if br.Default != "main" || !slices.Equal(br.Branches, []string{"main", "feature/new", "feature/old"}) || br.Truncated {
		t.Errorf("branches: %+v, want main first, then newest first", br)
	}
	var apiErr api.Error
	if code := e.do("GET", "/api/v1/apps/nope/branches", nil, &apiErr); code != http.StatusNotFound {
		t.Errorf("unknown app: %d %+v", code, apiErr)
	}
}

// TestStartErrorField: errors about one field of a start request name it,
// so that the web UI can point at the field in its own words.
func TestStartErrorField(t *testing.T) {
	e := newHookEnv(t, startFile)
	for _, tc := range []struct {
		req   api.StartRequest
		field string
	}{
		{api.StartRequest{App: "demo"}, "workflow"},
		{api.StartRequest{App: "demo", Workflow: "nope"}, "workflow"},
		{api.StartRequest{App: "demo", Workflow: "minimal", Branch: "nope"}, "branch"},
		{api.StartRequest{App: "demo", Workflow: "inputs", Inputs: map[string]any{"count": "x"}}, "inputs"},
		// Not about a field: this server has no SSH.
		{api.StartRequest{App: "demo", Workflow: "minimal", SSH: true}, ""},
	} {
		var apiErr api.Error
		code := e.do("POST", "/api/v1/builds", tc.req, &apiErr)
		if code < 400 || apiErr.Field != tc.field || apiErr.Message == "" {
			t.Errorf("%+v: %d %+v, want field %q", tc.req, code, apiErr, tc.field)
		}
	}
}
