package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// TestCancelBuild: a queued build is canceled by the server in the store;
// a running one by its runner, which the server asks through the store.
func TestCancelBuild(t *testing.T) {
	ctx := context.Background()
	st, srv := apiServer(t, "admin")
	newBuild := func() *build.Build {
		b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c",
			Status: build.Queued, Trigger: build.Manual, MaxDuration: 60, Steps: build.NewSteps(nil)}
		if err := st.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		return b
	}
	cancel := func(id int64) (int, *build.Build) {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/builds/%d/cancel", srv.URL, id), nil)
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b build.Build
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, &b
	}

	queued := newBuild()
	if code, b := cancel(queued.ID); code != http.StatusOK || b.Status != build.Canceled || b.Message != "canceled before it started" {
		t.Errorf("cancel queued: %d %s %q", code, b.Status, b.Message)
	}
	if code, _ := cancel(queued.ID); code != http.StatusConflict {
		t.Errorf("cancel ended: %d, want 409", code)
	}
	if code, _ := cancel(999); code != http.StatusNotFound {
		t.Errorf("cancel unknown: %d, want 404", code)
	}

	// A claimed build: a stand-in runner ends it when it sees the request.
	running := newBuild()
	if b, _, err := st.ClaimBuild(ctx); err != nil || b.ID != running.ID {
		t.Fatalf("claim: %v", err)
	}
	wake, unsub := st.Subscribe(0)
	defer unsub()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		deadline := time.After(10 * time.Second)
		for {
			ids, err := st.CancelRequests(ctx)
			if err != nil {
				t.Errorf("cancel requests: %v", err)
				return
			}
			if len(ids) == 1 && ids[0] == running.ID {
				b, _ := st.Build(ctx, running.ID)
				if b.Status != build.Preparing || b.FinishedAt != nil {
					t.Errorf("the server wrote the running build: %s %v", b.Status, b.FinishedAt)
				}
				now := time.Now()
				b.Status, b.Message, b.FinishedAt = build.Canceled, "canceled", &now
				if _, err := st.UpdateBuild(ctx, b); err != nil {
					t.Errorf("update: %v", err)
				}
				return
			}
			select {
			case <-wake:
			case <-deadline:
				t.Error("no cancel request reached the runner")
				return
			}
		}
	}()
	if code, b := cancel(running.ID); code != http.StatusOK || b.Status != build.Canceled || b.Message != "canceled" {
		t.Errorf("cancel running: %d %s %q", code, b.Status, b.Message)
	}
	<-ran
}

// TestSSHCommandOnlyForThoseWhoMayConnect: on a server whose machines are
// not isolated, the one-line SSH command (a bearer credential) is shown to
// admin tokens only; an app-scoped token sees the build without it.
func TestSSHCommandOnlyForThoseWhoMayConnect(t *testing.T) {
	ctx := context.Background()
	for _, isolated := range []bool{false, true} {
		st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
		for _, tok := range []store.Token{{Name: "admin", Admin: true}, {Name: "scoped", Apps: []string{"demo"}}} {
			if err := st.AddToken(ctx, HashToken(tok.Name), tok); err != nil {
				t.Fatal(err)
			}
		}
		srv := httptest.NewServer(New(Config{Store: st, Isolated: isolated, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			SSH: &SSHConfig{Store: st, URLKey: []byte("0123456789abcdef0123456789abcdef"), PublicURL: "http://127.0.0.1"}}))
		defer srv.Close()
		b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c",
			Status: build.Building, Trigger: build.Manual, MaxDuration: 60, Steps: build.NewSteps(nil),
			SSH: build.SSH{Enabled: true, State: build.SSHReady}}
		if err := st.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		for _, token := range []string{"admin", "scoped"} {
			for _, path := range []string{fmt.Sprintf("/api/v1/builds/%d", b.ID), "/api/v1/builds?app=demo"} {
				req, _ := http.NewRequest("GET", srv.URL+path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s as %s: %d %s", path, token, resp.StatusCode, body)
				}
				shown := strings.Contains(string(body), "/ssh/")
				if want := isolated || token == "admin"; shown != want {
					t.Errorf("isolated=%v, %s as %s: SSH command shown %v, want %v", isolated, path, token, shown, want)
				}
			}
		}
	}
}

func TestBreakpoints(t *testing.T) {
	wf := &workflow.Workflow{ID: "w", Scripts: []workflow.Script{{Name: "Build"}, {Name: "Test"}, {Name: "Ship"}}}
	for _, c := range []struct {
		args []string
		want []int
		err  string
	}{
		{nil, nil, ""},
		{[]string{"2"}, []int{2}, ""},
		{[]string{"ship", "1", "Build"}, []int{1, 3}, ""},
		{[]string{"0"}, nil, `no step "0" to pause before in workflow w: its steps are 1 "Build", 2 "Test", 3 "Ship"`},
		{[]string{"4"}, nil, `no step "4"`},
		{[]string{"Deploy"}, nil, `no step "Deploy"`},
	} {
		got, err := breakpoints(wf, c.args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: %v, want an error with %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%v: %v %v, want %v", c.args, got, err, c.want)
		}
	}
}

// TestRerunBuild: an ended build's rerun is a new build of its commit,
// workflow and spec (without breakpoints), linked both ways.
func TestRerunBuild(t *testing.T) {
	ctx := context.Background()
	st, srv := apiServer(t, "ann")
	c := api.New(srv.URL, "secret", nil)
	spec := build.Spec{Repo: "/r", Vars: []string{"A=1"}, Scripts: []build.SpecScript{{Name: "Test", File: "01-test.sh", Script: "exit 3"}}, BreakBefore: []int{1}}
	data, _ := json.Marshal(spec)
	create := func(status build.Status, spec []byte) *build.Build {
		b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c0ffee",
			Status: status, Trigger: build.Webhook, MaxDuration: 60, Steps: build.NewSteps([]build.SpecScript{{Name: "Test"}})}
		if err := st.CreateBuild(ctx, b, spec); err != nil {
			t.Fatal(err)
		}
		return b
	}
	failed := create(build.Failed, data)
	nb, err := c.RerunBuild(ctx, failed.ID, api.RerunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if nb.RerunOf == nil || *nb.RerunOf != failed.ID || nb.Commit != "c0ffee" || nb.Workflow != "w" || nb.Status != build.Queued ||
		nb.Trigger != build.Manual || nb.StartedBy != "ann" || nb.SSH.Enabled || len(nb.Steps) != 3 {
		t.Errorf("rerun: %+v", nb)
	}
	got, _ := st.BuildSpec(ctx, nb.ID)
	var rs build.Spec
	if err := json.Unmarshal(got, &rs); err != nil || len(rs.Scripts) != 1 || rs.Scripts[0].Script != "exit 3" || len(rs.Vars) != 1 || rs.BreakBefore != nil {
		t.Errorf("rerun's spec: %s", got)
	}
	if ob, _ := c.Build(ctx, failed.ID); len(ob.Reruns) != 1 || ob.Reruns[0] != nb.ID {
		t.Errorf("the original does not link to its rerun: %v", ob.Reruns)
	}
	// A build with SSH on failure is rerun with it, and says so.
	spec.SSHOnFailure = true
	data, _ = json.Marshal(spec)
	if of, err := c.RerunBuild(ctx, create(build.Failed, data).ID, api.RerunRequest{}); err != nil || of.SSH.Mode != build.SSHOnFailure || of.SSH.Enabled {
		t.Errorf("rerun of an on-failure build: %+v, %v", of, err)
	}
	for _, tc := range []struct {
		id   int64
		req  api.RerunRequest
		code int
		msg  string
	}{
		{nb.ID, api.RerunRequest{}, http.StatusConflict, "has not ended"},
		{create(build.Failed, []byte("{}")).ID, api.RerunRequest{}, http.StatusConflict, "never ran"},
		{failed.ID, api.RerunRequest{SSH: true}, http.StatusUnprocessableEntity, "SSH access is not enabled"},
		{9999, api.RerunRequest{}, http.StatusNotFound, "9999"},
	} {
		_, err := c.RerunBuild(ctx, tc.id, tc.req)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != tc.code || !strings.Contains(ae.Message, tc.msg) {
			t.Errorf("rerun %d %+v: %v, want %d %q", tc.id, tc.req, err, tc.code, tc.msg)
		}
	}
}

// apiServer is an API server on a new store with app "demo" and an admin
// token named tokenName whose secret is "secret".
func apiServer(t *testing.T, tokenName string) (*store.Store, *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddToken(ctx, HashToken("secret"), store.Token{Name: tokenName, Admin: true}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(srv.Close)
	return st, srv
}
