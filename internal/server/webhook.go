package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// pushEvent is the part of GitHub's push payload Hangar reads.
type pushEvent struct {
	Ref     string `json:"ref"`
	After   string `json:"after"`
	Deleted bool   `json:"deleted"`
}

// webhook takes GitHub's push event for an app, verified with the app's
// webhook secret, and starts each workflow whose triggering matches.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	app, err := s.cfg.Store.App(ctx, r.PathValue("app"))
	if err != nil {
		// Unknown apps and bad signatures look the same to the caller.
		writeError(w, http.StatusUnauthorized, "webhook signature does not match: check the app name and the webhook secret")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxHook))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("webhook body is larger than %d bytes", s.cfg.MaxHook))
		return
	}
	if !validSignature(app.WebhookSecret, r.Header.Get("X-Hub-Signature-256"), body) {
		s.log.Warn("webhook refused: bad signature", "app", app.Name, "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "webhook signature does not match: set the webhook's secret to the app's webhook secret (header X-Hub-Signature-256, sha256=HMAC of the body)")
		return
	}
	switch ev := r.Header.Get("X-GitHub-Event"); ev {
	case "ping":
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
		return
	case "push", "":
	default:
		writeJSON(w, http.StatusAccepted, api.WebhookResult{Builds: []*build.Build{}, Message: fmt.Sprintf("event %q is not handled", ev)})
		return
	}
	var push pushEvent
	if err := json.Unmarshal(body, &push); err != nil || push.Ref == "" {
		writeError(w, http.StatusBadRequest, "webhook body is not a GitHub push event (needs \"ref\")")
		return
	}
	started := []*build.Build{}
	if push.Deleted {
		writeJSON(w, http.StatusAccepted, api.WebhookResult{Builds: started, Message: "ref deleted: nothing to build"})
		return
	}
	event, name := "push", strings.TrimPrefix(push.Ref, "refs/heads/")
	if tag, ok := strings.CutPrefix(push.Ref, "refs/tags/"); ok {
		event, name = "tag", tag
	}
	mirror, err := s.cfg.Mirrors.Fetch(ctx, app.Name, app.Repo)
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("app %s: %v", app.Name, err))
		return
	}
	commit := push.After
	if commit == "" || strings.Trim(commit, "0") == "" {
		if commit, err = gitrepo.Resolve(ctx, mirror, name); err != nil {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("app %s has no branch %q", app.Name, name))
			return
		}
	}
	fname, data, err := gitrepo.ReadFile(ctx, mirror, commit, workflow.FileNames)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	f, err := workflow.Parse(fname, data)
	if err != nil {
		b, cerr := s.createBuild(ctx, app, mirror, name, commit, "", build.Webhook, "webhook", sshMode{})
		if cerr != nil {
			s.internal(w, "create build", cerr)
			return
		}
		writeJSON(w, http.StatusAccepted, api.WebhookResult{Builds: []*build.Build{b}, Message: err.Error()})
		return
	}
	for _, wf := range f.Workflows {
		if !wf.Matches(event, name) {
			continue
		}
		b := &build.Build{App: app.Name, Branch: name, Commit: commit, Status: build.Queued, Trigger: build.Webhook, StartedBy: "webhook"}
		b, err := s.queue(ctx, b, app, wf, sshMode{})
		if err != nil {
			s.internal(w, "create build", err)
			return
		}
		started = append(started, b)
	}
	writeJSON(w, http.StatusAccepted, api.WebhookResult{Builds: started})
}

// validSignature checks GitHub's "sha256=<hex hmac>" header.
func validSignature(secret, header string, body []byte) bool {
	sig, ok := strings.CutPrefix(header, "sha256=")
	if !ok || secret == "" {
		return false
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}
