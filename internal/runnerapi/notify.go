package runnerapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

// Notifier sends a build's publishing.email as it ends (package notify);
// what it returns goes to the build's log.
type Notifier func(ctx context.Context, b build.Build, spec *build.Spec, artifacts []build.Artifact) []string

// EmailEvent is the kind of the build event that records that the
// servers sent a runner's build's publishing.email (once per build).
const EmailEvent = "email"

// NotifyRequest is the end of a build that a runner is about to write:
// the servers send its publishing.email.
type NotifyRequest struct {
	Status  build.Status `json:"status"`
	Message string       `json:"message,omitempty"`
}

// NotifyResponse is what to log of it.
type NotifyResponse struct {
	Lines []string `json:"lines"`
}

// notify serves POST /api/runner/v1/builds/{id}/notify: the server sends
// the email of the runner's build that is ending, to the recipients of
// the build's own spec, with the artifacts the store keeps of it (not
// what the runner says), through the servers' SMTP server; once per build
// (409 after, EmailEvent records it).
func (h *handler) notify(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	b, spec, ok := h.running(w, r, rn)
	if !ok {
		return
	}
	var req NotifyRequest
	if !h.decode(w, r, &req) {
		return
	}
	if !textWithin(w, "message", req.Message, maxText) {
		return
	}
	if !req.Status.Done() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("status %q: want the build's final status (finished, failed, canceled, timeout)", req.Status))
		return
	}
	if h.cfg.Notify == nil || spec.Email == nil {
		writeJSON(w, http.StatusOK, NotifyResponse{})
		return
	}
	// Once per build: the runner cannot mail the recipients again and
	// again (bar requests at the same moment).
	evs, err := h.cfg.Store.Events(r.Context(), b.ID)
	if err != nil {
		h.internal(w, "read the build's events", err)
		return
	}
	for _, ev := range evs {
		if ev.Kind == EmailEvent {
			writeError(w, http.StatusConflict, fmt.Sprintf("build %d's publishing.email was sent already", b.ID))
			return
		}
	}
	if err := h.cfg.Store.AddEvent(r.Context(), b.ID, build.Event{Kind: EmailEvent, Data: map[string]string{"status": string(req.Status)}}); err != nil {
		h.internal(w, "record the build's email", err)
		return
	}
	arts, err := h.cfg.Store.Artifacts(r.Context(), b.ID)
	if err != nil {
		h.internal(w, "read the build's artifacts", err)
		return
	}
	base := ""
	if h.cfg.PublicURL != nil {
		base = strings.TrimRight(h.cfg.PublicURL(), "/")
	}
	for i := range arts {
		arts[i].URL = base + build.ArtifactPath(b.ID, arts[i].Name)
	}
	final := *b
	now := time.Now()
	final.Status, final.Message, final.FinishedAt = req.Status, req.Message, &now
	writeJSON(w, http.StatusOK, NotifyResponse{Lines: h.cfg.Notify(r.Context(), final, spec, arts)})
}

// Notify asks the servers to send build b's publishing.email as it ends
// (a runner.Config.Notify); it returns what to log, also when the
// servers could not be asked.
func (c *Client) Notify(ctx context.Context, b build.Build, spec *build.Spec, _ []build.Artifact) []string {
	if spec.Email == nil {
		return nil
	}
	var out NotifyResponse
	if err := c.call(ctx, http.MethodPost, buildPath(b.ID, "/notify"), NotifyRequest{Status: b.Status, Message: truncate(b.Message, maxText)}, &out); err != nil {
		return []string{fmt.Sprintf("Email: NOT sent: the servers could not be asked to send it: %v", err)}
	}
	return out.Lines
}

// truncate shortens s to at most max bytes, on a rune boundary, marking
// the cut.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const more = "…"
	cut := max - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}
