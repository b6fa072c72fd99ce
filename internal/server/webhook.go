package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// pushEvent is the part of GitHub's push payload Hangar reads.
type pushEvent struct {
	Ref     string `json:"ref"`
	After   string `json:"after"`
	Deleted bool   `json:"deleted"`
}

// pullRequestEvent is the part of GitHub's pull_request payload Hangar reads.
type pullRequestEvent struct {
	Action      string `json:"action"`
	Number      int64  `json:"number"`
	PullRequest *struct {
		Head struct {
			Ref  string  `json:"ref"`
			SHA  string  `json:"sha"`
			Repo *prRepo `json:"repo"`
		} `json:"head"`
		Base struct {
			Ref  string  `json:"ref"`
			Repo *prRepo `json:"repo"`
		} `json:"base"`
	} `json:"pull_request"`
}

// prRepo is a repository of a pull request's head or base.
type prRepo struct {
	FullName string `json:"full_name"`
}

// fork names the repository a pull request comes from when it is not the
// one it goes into ("a fork" when GitHub does not say: a deleted fork's
// head.repo is null); "" for a pull request between branches of one
// repository.
func (e *pullRequestEvent) fork() string {
	head, base := e.PullRequest.Head.Repo, e.PullRequest.Base.Repo
	switch {
	case head == nil || head.FullName == "":
		return "a fork"
	case base == nil || !strings.EqualFold(head.FullName, base.FullName):
		return head.FullName
	}
	return ""
}

// pullRequestActions are the pull request actions that start builds:
// opened, new commits pushed, reopened (Codemagic's "opened or updated").
var pullRequestActions = []string{"opened", "synchronize", "reopened"}

const (
	// defaultHookReads is how many webhook bodies are read at once before
	// their signature is checked.
	defaultHookReads = 4
	// hookMemory is how much of one webhook body is kept in memory while
	// it is read (most deliveries are smaller); the rest goes to a
	// temporary file until the signature holds.
	hookMemory = 64 << 10
	// hookWait is how long a delivery waits for a reading slot.
	hookWait = 10 * time.Second
	// hookRead bounds the reading of one body (25 MiB at 420 KiB/s), so
	// that a slow sender cannot hold a reading slot for long.
	hookRead = time.Minute
)

// webhook takes GitHub's push and pull_request events for an app, verified
// with the app's webhook secret, and starts each workflow whose triggering
// matches. A delivery whose X-GitHub-Delivery id was seen before is ignored.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	app, err := s.cfg.Store.App(ctx, r.PathValue("app"))
	if err != nil {
		// Unknown apps and bad signatures look the same to the caller.
		writeError(w, http.StatusUnauthorized, "webhook signature does not match: check the app name and the webhook secret")
		return
	}
	if r.ContentLength > s.cfg.MaxHook {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("webhook body is larger than %d bytes", s.cfg.MaxHook))
		return
	}
	body, code, msg := s.readSigned(w, r, app.WebhookSecret)
	if code != 0 {
		if code == http.StatusUnauthorized {
			s.log.Warn("webhook refused: bad signature", "app", app.Name, "remote", r.RemoteAddr)
		}
		writeError(w, code, msg)
		return
	}
	ev := r.Header.Get("X-GitHub-Event")
	if ev == "ping" {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
		return
	}
	delivery := r.Header.Get("X-GitHub-Delivery")
	if delivery != "" {
		if len(delivery) > 200 {
			writeError(w, http.StatusBadRequest, "X-GitHub-Delivery is longer than 200 characters")
			return
		}
		fresh, err := s.cfg.Store.AddDelivery(ctx, app.Name, delivery, ev)
		if err != nil {
			s.internal(w, "record delivery", err)
			return
		}
		if !fresh {
			writeJSON(w, http.StatusOK, api.WebhookResult{Builds: []*build.Build{}, Message: fmt.Sprintf("delivery %s was received before: ignored", delivery)})
			return
		}
	}
	code, res := s.hook(ctx, app, ev, body)
	if res.Builds == nil {
		res.Builds = []*build.Build{}
	}
	if delivery != "" {
		// A delivery that failed on our side may come again (GitHub's
		// redeliver): forget it. Any other is remembered with what it did.
		var err error
		if code >= 500 {
			err = s.cfg.Store.ForgetDelivery(context.WithoutCancel(ctx), app.Name, delivery)
		} else {
			err = s.cfg.Store.SetDeliveryResult(context.WithoutCancel(ctx), app.Name, delivery, res.summary(code))
		}
		if err != nil {
			s.log.Error("record delivery result", "app", app.Name, "err", err)
		}
	}
	if code >= 400 {
		writeError(w, code, res.Message)
		return
	}
	writeJSON(w, code, res.WebhookResult)
}

// hookResult is what a delivery did.
type hookResult struct{ api.WebhookResult }

func (r *hookResult) summary(code int) string {
	var parts []string
	if r.Message != "" {
		parts = append(parts, r.Message)
	}
	for _, b := range r.Builds {
		parts = append(parts, fmt.Sprintf("build #%d of %s (%s)", b.Number, b.Workflow, b.Status))
	}
	for _, sk := range r.Skipped {
		parts = append(parts, fmt.Sprintf("%s skipped: %s", sk.Workflow, sk.Reason))
	}
	if len(parts) == 0 {
		parts = append(parts, "no workflow is triggered by this event")
	}
	return strconv.Itoa(code) + ": " + strings.Join(parts, "; ")
}

// hook acts on a verified delivery of event ev.
func (s *Server) hook(ctx context.Context, app *store.App, ev string, body []byte) (int, *hookResult) {
	res := &hookResult{}
	fail := func(code int, msg string) (int, *hookResult) {
		res.Message = msg
		return code, res
	}
	var payload any
	var decoded bool
	st := &start{trigger: build.Webhook, starter: "webhook", payload: func() any {
		if !decoded {
			decoded = true
			_ = json.Unmarshal(body, &payload)
		}
		return payload
	}}
	var event, branch, rev, target string
	switch ev {
	case "push", "":
		var push pushEvent
		if err := json.Unmarshal(body, &push); err != nil || push.Ref == "" {
			return fail(http.StatusBadRequest, "webhook body is not a GitHub push event (needs \"ref\")")
		}
		if push.Deleted {
			return fail(http.StatusAccepted, "ref deleted: nothing to build")
		}
		event, branch, rev = workflow.EventPush, strings.TrimPrefix(push.Ref, "refs/heads/"), push.After
		st.env = []string{"CM_PULL_REQUEST=false"}
		if tag, ok := strings.CutPrefix(push.Ref, "refs/tags/"); ok {
			event, branch = workflow.EventTag, tag
			st.env = append(st.env, "CM_TAG="+tag)
		}
	case "pull_request":
		var pr pullRequestEvent
		if err := json.Unmarshal(body, &pr); err != nil || pr.PullRequest == nil || pr.PullRequest.Head.Ref == "" || pr.PullRequest.Head.SHA == "" {
			return fail(http.StatusBadRequest, "webhook body is not a GitHub pull_request event (needs pull_request.head.ref and .sha)")
		}
		if !slices.Contains(pullRequestActions, pr.Action) {
			return fail(http.StatusAccepted, fmt.Sprintf("pull request action %q does not start builds (only opened, synchronize and reopened do)", pr.Action))
		}
		event, branch, rev, target = workflow.EventPullRequest, pr.PullRequest.Head.Ref, pr.PullRequest.Head.SHA, pr.PullRequest.Base.Ref
		st.env = []string{"CM_PULL_REQUEST=true", "CM_PULL_REQUEST_NUMBER=" + strconv.FormatInt(pr.Number, 10), "CM_PULL_REQUEST_DEST=" + target}
		st.fork = pr.fork()
	default:
		return fail(http.StatusAccepted, fmt.Sprintf("event %q is not handled (Hangar builds push, tag and pull_request events)", ev))
	}
	mirror, err := s.cfg.Mirrors.Fetch(ctx, app.Name, app.Repo)
	if err != nil {
		return fail(http.StatusBadGateway, fmt.Sprintf("app %s: %v", app.Name, err))
	}
	var commit string
	switch {
	case rev != "" && strings.Trim(rev, "0") != "":
		if commit, err = gitrepo.ResolveCommit(ctx, mirror, rev); err != nil {
			return fail(http.StatusUnprocessableEntity, fmt.Sprintf("app %s: %v", app.Name, err))
		}
	case event == workflow.EventTag:
		if commit, err = gitrepo.ResolveCommit(ctx, mirror, "refs/tags/"+branch); err != nil {
			return fail(http.StatusUnprocessableEntity, fmt.Sprintf("app %s has no tag %q", app.Name, branch))
		}
	default:
		if commit, err = gitrepo.Resolve(ctx, mirror, branch); err != nil {
			return fail(http.StatusUnprocessableEntity, fmt.Sprintf("app %s has no branch %q", app.Name, branch))
		}
	}
	// As on Codemagic, "[skip ci]" or "[ci skip]" in the commit's message
	// keeps webhooks from building it.
	if msg, err := gitrepo.CommitMessage(ctx, mirror, commit); err == nil && (strings.Contains(msg, "[skip ci]") || strings.Contains(msg, "[ci skip]")) {
		return fail(http.StatusAccepted, fmt.Sprintf("commit %.10s has [skip ci] in its message: nothing is built", commit))
	}
	fname, data, err := gitrepo.ReadFile(ctx, mirror, commit, workflow.FileNames)
	if err != nil {
		return fail(http.StatusUnprocessableEntity, err.Error())
	}
	f, err := workflow.Parse(fname, data)
	if err != nil {
		b, cerr := s.failAtOnce(ctx, newBuild(app, branch, commit, "", st), err.Error())
		if cerr != nil {
			s.log.Error("create build", "err", cerr)
			return fail(http.StatusInternalServerError, "internal error: create build failed; see the server log")
		}
		res.Builds, res.Message = []*build.Build{b}, err.Error()
		return http.StatusAccepted, res
	}
	for _, wf := range f.Workflows {
		match := wf.Matches(event, branch)
		if event == workflow.EventPullRequest {
			match = wf.MatchesPullRequest(branch, target)
		}
		if !match {
			continue
		}
		b, err := s.queue(ctx, newBuild(app, branch, commit, wf.ID, st), app, mirror, wf, st)
		var skip *skippedError
		if errors.As(err, &skip) {
			res.Skipped = append(res.Skipped, api.SkippedWorkflow{Workflow: wf.ID, Reason: skip.reason})
			continue
		}
		if err != nil {
			s.log.Error("create build", "err", err)
			return fail(http.StatusInternalServerError, "internal error: create build failed; see the server log")
		}
		res.Builds = append(res.Builds, b)
		if wf.Triggering.CancelPrevious && event != workflow.EventTag {
			s.cancelPrevious(ctx, b)
		}
	}
	if len(res.Builds) == 0 && len(res.Skipped) == 0 {
		res.Message = fmt.Sprintf("no workflow in %s is triggered by this %s event (%s)", fname, event, describeRef(event, branch, target))
	}
	return http.StatusAccepted, res
}

func describeRef(event, branch, target string) string {
	switch event {
	case workflow.EventTag:
		return "tag " + branch
	case workflow.EventPullRequest:
		return fmt.Sprintf("pull request from %s into %s", branch, target)
	}
	return "branch " + branch
}

// cancelPrevious cancels the webhook builds of b's workflow and branch
// that started before b and have not ended (cancel_previous_builds).
func (s *Server) cancelPrevious(ctx context.Context, b *build.Build) {
	ids, err := s.cfg.Store.ActiveWebhookBuilds(ctx, b.App, b.Workflow, b.Branch)
	if err != nil {
		s.log.Error("cancel previous builds", "err", err)
		return
	}
	for _, id := range ids {
		if id >= b.ID {
			continue
		}
		msg := fmt.Sprintf("canceled by build #%d, a newer webhook build of %s (cancel_previous_builds)", b.Number, b.Branch)
		if _, err := s.cfg.Store.CancelBuild(ctx, id, msg); err != nil {
			s.log.Error("cancel previous build", "build", id, "err", err)
			continue
		}
		s.log.Info("build canceled by a newer one", "build", id, "by", b.ID)
	}
}

// readSigned reads the request's body, at most MaxHook bytes, checking
// GitHub's X-Hub-Signature-256 as it goes, and returns it only if the
// signature holds; otherwise an HTTP status and a message. At most
// MaxHookReads bodies are read at once, and each keeps at most hookMemory
// bytes in memory (the rest waits in a temporary file), so unverified
// deliveries cannot grow the server's memory.
func (s *Server) readSigned(w http.ResponseWriter, r *http.Request, secret string) ([]byte, int, string) {
	badSig := "webhook signature does not match: set the webhook's secret to the app's webhook secret (header X-Hub-Signature-256, sha256=HMAC of the body)"
	want, ok := signature(r.Header.Get("X-Hub-Signature-256"))
	if !ok || secret == "" {
		// Nothing to check the body against: do not read it.
		return nil, http.StatusUnauthorized, badSig
	}
	timer := time.NewTimer(hookWait)
	defer timer.Stop()
	select {
	case s.hookSlots <- struct{}{}:
		defer func() { <-s.hookSlots }()
	case <-timer.C:
		return nil, http.StatusServiceUnavailable, "too many webhook deliveries are being read at once; retry later"
	case <-r.Context().Done():
		return nil, http.StatusServiceUnavailable, "the delivery was abandoned"
	}
	// A connection that cannot take a deadline is read without one.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(hookRead))
	mac := hmac.New(sha256.New, []byte(secret))
	sp := &spool{dir: s.cfg.SpoolDir}
	defer sp.close()
	_, err := io.Copy(io.MultiWriter(mac, sp), http.MaxBytesReader(w, r.Body, s.cfg.MaxHook))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("webhook body is larger than %d bytes", s.cfg.MaxHook)
	case err != nil:
		return nil, http.StatusBadRequest, "could not read the webhook body: " + err.Error()
	}
	if !hmac.Equal(want, mac.Sum(nil)) {
		return nil, http.StatusUnauthorized, badSig
	}
	body, err := sp.bytes()
	if err != nil {
		s.log.Error("webhook spool", "err", err)
		return nil, http.StatusInternalServerError, "internal error: reading the webhook failed; see the server log"
	}
	return body, 0, ""
}

// signature decodes GitHub's "sha256=<hex hmac>" header.
func signature(header string) ([]byte, bool) {
	sig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return nil, false
	}
	b, err := hex.DecodeString(sig)
	return b, err == nil && len(b) == sha256.Size
}

// spoolBuffers are the in-memory parts of spools, reused.
var spoolBuffers = sync.Pool{New: func() any { b := make([]byte, 0, hookMemory); return &b }}

// spool keeps the first hookMemory bytes written to it in memory and the
// rest in a temporary file. close returns its buffer.
type spool struct {
	dir  string // for the file; "": os.TempDir()
	mem  *[]byte
	file *os.File
}

func (sp *spool) Write(p []byte) (int, error) {
	if sp.mem == nil {
		sp.mem = spoolBuffers.Get().(*[]byte)
		*sp.mem = (*sp.mem)[:0]
	}
	if sp.file == nil && len(*sp.mem)+len(p) <= hookMemory {
		*sp.mem = append(*sp.mem, p...)
		return len(p), nil
	}
	if sp.file == nil {
		f, err := os.CreateTemp(sp.dir, "hangar-webhook-*")
		if err != nil {
			return 0, err
		}
		sp.file = f
	}
	return sp.file.Write(p)
}

// bytes returns a copy of everything written.
func (sp *spool) bytes() ([]byte, error) {
	var mem []byte
	if sp.mem != nil {
		mem = *sp.mem
	}
	if sp.file == nil {
		return bytes.Clone(mem), nil
	}
	size, err := sp.file.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(mem), len(mem)+int(size))
	copy(out, mem)
	if _, err := sp.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	rest, err := io.ReadAll(io.LimitReader(sp.file, size))
	return append(out, rest...), err
}

func (sp *spool) close() {
	if sp.mem != nil {
		spoolBuffers.Put(sp.mem)
		sp.mem = nil
	}
	if sp.file != nil {
		sp.file.Close()
		os.Remove(sp.file.Name())
	}
}

// appDeliveries serves an app's newest webhook deliveries and what each did.
func (s *Server) appDeliveries(w http.ResponseWriter, r *http.Request) {
	app, ok := s.lookupApp(w, r, r.PathValue("name"))
	if !ok {
		return
	}
	list, err := s.cfg.Store.Deliveries(r.Context(), app.Name, 50)
	if err != nil {
		s.internal(w, "list deliveries", err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}
