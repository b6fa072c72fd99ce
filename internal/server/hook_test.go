package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/store"
)

// hookEnv is a server with a real store, real mirrors and a real git
// repository for app "demo" (webhook secret "s3cret"); no runner, so
// builds stay queued and their specs can be read.
type hookEnv struct {
	t     *testing.T
	spool string // the server's SpoolDir
	st    *store.Store
	srv   *httptest.Server
	repo  string // bare repository
	work  string
}

func newHookEnv(t *testing.T, yaml string) *hookEnv {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &hookEnv{t: t, st: st, repo: filepath.Join(dir, "repo.git"), work: filepath.Join(dir, "work"), spool: filepath.Join(dir, "spool")}
	if err := os.Mkdir(e.spool, 0o700); err != nil {
		t.Fatal(err)
	}
	e.git("", "init", "--quiet", "--bare", "--initial-branch", "main", e.repo)
	e.git("", "clone", "--quiet", e.repo, e.work)
	e.git(e.work, "checkout", "--quiet", "-b", "main")
	e.commit("main", map[string]string{"codemagic.yaml": yaml})
	ctx := context.Background()
	if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: e.repo, WebhookSecret: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddToken(ctx, HashToken("secret"), store.Token{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(New(Config{Store: st, Mirrors: &gitrepo.Mirrors{Dir: filepath.Join(dir, "mirrors")}, SpoolDir: e.spool,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *hookEnv) git(dir string, args ...string) string {
	e.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// commit writes files on branch (created from the current one if new),
// pushes it and returns the commit.
func (e *hookEnv) commit(branch string, files map[string]string) string {
	e.t.Helper()
	return e.commitMsg(branch, "on "+branch, files)
}

// commitMsg is commit with a commit message.
func (e *hookEnv) commitMsg(branch, msg string, files map[string]string) string {
	e.t.Helper()
	e.git(e.work, "checkout", "--quiet", "-B", branch)
	for name, content := range files {
		p := filepath.Join(e.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	e.git(e.work, "add", "-A")
	e.git(e.work, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet", "--allow-empty", "-m", msg)
	e.git(e.work, "push", "--quiet", "--force", "origin", branch)
	return strings.TrimSpace(e.git(e.work, "rev-parse", "HEAD"))
}

// do sends an API request and decodes the answer into out.
func (e *hookEnv) do(method, path string, body any, out any) int {
	e.t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode
}

func sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// hook posts a signed delivery.
func (e *hookEnv) hook(event, delivery string, payload any) (int, api.WebhookResult, string) {
	e.t.Helper()
	body, _ := json.Marshal(payload)
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/webhooks/demo", bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", event)
	if delivery != "" {
		req.Header.Set("X-GitHub-Delivery", delivery)
	}
	req.Header.Set("X-Hub-Signature-256", sign("s3cret", body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var res api.WebhookResult
	_ = json.Unmarshal(raw, &res)
	return resp.StatusCode, res, string(raw)
}

func (e *hookEnv) spec(id int64) build.Spec {
	e.t.Helper()
	data, err := e.st.BuildSpec(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var s build.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

// finish marks build id as finished, as a runner would.
func (e *hookEnv) finish(id int64) {
	e.t.Helper()
	ctx := context.Background()
	b, _, err := e.st.ClaimBuild(ctx)
	if err != nil || b.ID != id {
		e.t.Fatalf("claim %d: %v", id, err)
	}
	now := time.Now()
	b.Status, b.FinishedAt = build.Finished, &now
	if _, err := e.st.UpdateBuild(ctx, b); err != nil {
		e.t.Fatal(err)
	}
}

func pushPayload(ref, after string) map[string]any {
	return map[string]any{"ref": ref, "after": after}
}

func prPayload(action string, number int, head, sha, base string, draft bool) map[string]any {
	return forkPayload(action, number, "octo/demo", head, sha, base, draft)
}

// forkPayload is a pull request from repository from (prPayload's are
// from octo/demo, into octo/demo).
func forkPayload(action string, number int, from, head, sha, base string, draft bool) map[string]any {
	repo := func(name string) any {
		if name == "" {
			return nil // a deleted fork
		}
		return map[string]any{"full_name": name}
	}
	return map[string]any{"action": action, "number": number, "pull_request": map[string]any{
		"draft": draft, "head": map[string]any{"ref": head, "sha": sha, "repo": repo(from)},
		"base": map[string]any{"ref": base, "repo": repo("octo/demo")}}}
}

const forkFile = `
workflows:
  with-secrets:
    triggering:
      events: [pull_request]
    environment:
      groups: [deploy]
    scripts:
      - echo "$DEPLOY_TOKEN"
  plain:
    triggering:
      events: [pull_request]
    cache:
      cache_paths: [~/.gradle/caches]
    publishing:
      email:
        recipients: [team@example.com]
    scripts:
      - ./gradlew test
`

// TestWebhookPullRequestFromFork: a pull request from a fork (or a
// deleted one) gets no groups or keystores (its build of a workflow
// naming some fails at once, saying why), no cache and no email; one
// between branches of the repository gets them.
func TestWebhookPullRequestFromFork(t *testing.T) {
	e := newHookEnv(t, forkFile)
	head := e.commit("feature/x", map[string]string{"x.txt": "x"})
	for i, from := range []string{"mallory/demo", ""} {
		code, res, raw := e.hook("pull_request", fmt.Sprintf("f-%d", i), forkPayload("opened", 7+i, from, "feature/x", head, "main", false))
		if code != http.StatusAccepted || len(res.Builds) != 2 {
			t.Fatalf("pull request from %q: %d %s", from, code, raw)
		}
		for _, b := range res.Builds {
			spec := e.spec(b.ID)
			switch b.Workflow {
			case "with-secrets":
				if b.Status != build.Failed || !strings.Contains(b.Message, "gets no environment variable groups or keystores") {
					t.Errorf("from %q, with-secrets: %s %q", from, b.Status, b.Message)
				}
			case "plain":
				if b.Status != build.Queued || spec.CachePaths != nil || spec.Email != nil {
					t.Errorf("from %q, plain: %s, cache %q, email %+v", from, b.Status, spec.CachePaths, spec.Email)
				}
			}
		}
	}
	// From a branch of the repository: the cache and email are kept (and
	// the group is looked for: this server keeps none).
	code, res, raw := e.hook("pull_request", "same", prPayload("opened", 9, "feature/x", head, "main", false))
	if code != http.StatusAccepted || len(res.Builds) != 2 {
		t.Fatalf("pull request from a branch: %d %s", code, raw)
	}
	for _, b := range res.Builds {
		spec := e.spec(b.ID)
		if b.Workflow == "plain" && (len(spec.CachePaths) != 1 || spec.Email == nil) {
			t.Errorf("from a branch, plain: cache %q, email %+v", spec.CachePaths, spec.Email)
		}
		if b.Workflow == "with-secrets" && strings.Contains(b.Message, "pull request from") {
			t.Errorf("from a branch, with-secrets: %q", b.Message)
		}
	}
}

const triggerFile = `
workflows:
  pr-into-main:
    triggering:
      events:
        - pull_request
      branch_patterns:
        - pattern: 'main'
          include: true
          source: false
    when:
      condition: not event.pull_request.draft
    scripts:
      - name: Run unit tests
        script: echo "PR $CM_PULL_REQUEST_NUMBER into $CM_PULL_REQUEST_DEST"
        when:
          condition: event.pull_request.draft == false and env.RUN_TEST == "true"
  release-tags:
    triggering:
      events:
        - tag
      tag_patterns:
        - pattern: 'v+([0-9]).+([0-9]).+([0-9])'
    scripts:
      - echo "tag $CM_TAG"
  pushes:
    triggering:
      events: [push]
      branch_patterns:
        - pattern: 'feature/*'
      cancel_previous_builds: true
    scripts:
      - echo push
`

func TestWebhookPullRequestAndTag(t *testing.T) {
	e := newHookEnv(t, triggerFile)
	head := e.commit("feature/login", map[string]string{"login.txt": "x"})

	// A pull request from feature/login into main starts pr-into-main.
	code, res, raw := e.hook("pull_request", "d-1", prPayload("opened", 42, "feature/login", head, "main", false))
	if code != http.StatusAccepted || len(res.Builds) != 1 || res.Builds[0].Workflow != "pr-into-main" {
		t.Fatalf("pull request: %d %s", code, raw)
	}
	b := res.Builds[0]
	if b.Branch != "feature/login" || b.Commit != head || b.Trigger != build.Webhook {
		t.Errorf("pull request build: %+v", b)
	}
	spec := e.spec(b.ID)
	if strings.Join(spec.Env, " ") != "CM_PULL_REQUEST=true CM_PULL_REQUEST_NUMBER=42 CM_PULL_REQUEST_DEST=main" {
		t.Errorf("pull request env: %q", spec.Env)
	}
	if spec.Scripts[0].Condition != `event.pull_request.draft == false and env.RUN_TEST == "true"` || string(spec.Event) != `{"pull_request":{"draft":false}}` {
		t.Errorf("spec keeps the condition and the payload's fields: %q %s", spec.Scripts[0].Condition, spec.Event)
	}
	// The same delivery again is ignored.
	code, res, raw = e.hook("pull_request", "d-1", prPayload("opened", 42, "feature/login", head, "main", false))
	if code != http.StatusOK || len(res.Builds) != 0 || !strings.Contains(res.Message, "delivery d-1 was received before: ignored") {
		t.Errorf("repeated delivery: %d %s", code, raw)
	}
	// A draft pull request is skipped by the workflow's when, with why.
	code, res, raw = e.hook("pull_request", "d-2", prPayload("synchronize", 42, "feature/login", head, "main", true))
	if code != http.StatusAccepted || len(res.Builds) != 0 || len(res.Skipped) != 1 ||
		res.Skipped[0].Reason != "when.condition is false: not event.pull_request.draft" {
		t.Errorf("draft pull request: %d %s", code, raw)
	}
	// A pull request into another branch, and a closed one, start nothing.
	if code, res, raw = e.hook("pull_request", "d-3", prPayload("opened", 43, "feature/login", head, "develop", false)); code != http.StatusAccepted || len(res.Builds) != 0 ||
		!strings.Contains(res.Message, "pull request from feature/login into develop") {
		t.Errorf("pull request into develop: %d %s", code, raw)
	}
	if code, res, raw = e.hook("pull_request", "d-4", prPayload("closed", 42, "feature/login", head, "main", false)); code != http.StatusAccepted || len(res.Builds) != 0 ||
		!strings.Contains(res.Message, `action "closed" does not start builds`) {
		t.Errorf("closed pull request: %d %s", code, raw)
	}
	if code, _, raw = e.hook("pull_request", "d-5", map[string]any{"action": "opened"}); code != http.StatusBadRequest || !strings.Contains(raw, "not a GitHub pull_request event") {
		t.Errorf("bad payload: %d %s", code, raw)
	}

	// A tag push starts release-tags with CM_TAG; an annotated tag's
	// object id resolves to its commit.
	e.git(e.work, "tag", "-a", "-m", "release", "v1.2.3", head)
	e.git(e.work, "push", "--quiet", "origin", "v1.2.3")
	tagObject := strings.TrimSpace(e.git(e.work, "rev-parse", "v1.2.3"))
	code, res, raw = e.hook("push", "d-6", pushPayload("refs/tags/v1.2.3", tagObject))
	if code != http.StatusAccepted || len(res.Builds) != 1 || res.Builds[0].Workflow != "release-tags" || res.Builds[0].Commit != head {
		t.Fatalf("tag: %d %s", code, raw)
	}
	if env := e.spec(res.Builds[0].ID).Env; strings.Join(env, " ") != "CM_PULL_REQUEST=false CM_TAG=v1.2.3" {
		t.Errorf("tag env: %q", env)
	}
	e.git(e.work, "tag", "v1.2", head)
	e.git(e.work, "push", "--quiet", "origin", "v1.2")
	if code, res, raw = e.hook("push", "d-7", pushPayload("refs/tags/v1.2", head)); code != http.StatusAccepted || len(res.Builds) != 0 {
		t.Errorf("unmatched tag: %d %s", code, raw)
	}

	// The deliveries are kept with what they did.
	ds, err := e.st.Deliveries(context.Background(), "demo", 10)
	if err != nil || len(ds) != 7 {
		t.Fatalf("deliveries: %v %+v", err, ds)
	}
	if d := ds[len(ds)-1]; d.ID != "d-1" || !strings.Contains(d.Result, "build #1 of pr-into-main (queued)") {
		t.Errorf("first delivery: %+v", d)
	}
}

func TestWebhookCancelPrevious(t *testing.T) {
	e := newHookEnv(t, triggerFile)
	first := e.commit("feature/a", map[string]string{"a": "1"})
	_, res, raw := e.hook("push", "p-1", pushPayload("refs/heads/feature/a", first))
	if len(res.Builds) != 1 {
		t.Fatalf("first push: %s", raw)
	}
	old := res.Builds[0]
	// A manual build of the same branch is not a webhook build: kept.
	var manual build.Build
	if code := e.do("POST", "/api/v1/builds", api.StartRequest{App: "demo", Workflow: "pushes", Branch: "feature/a"}, &manual); code != http.StatusCreated {
		t.Fatalf("manual start: %d", code)
	}
	second := e.commit("feature/a", map[string]string{"a": "2"})
	_, res, raw = e.hook("push", "p-2", pushPayload("refs/heads/feature/a", second))
	if len(res.Builds) != 1 {
		t.Fatalf("second push: %s", raw)
	}
	ob, _ := e.st.Build(context.Background(), old.ID)
	if ob.Status != build.Canceled || !strings.Contains(ob.Message, "cancel_previous_builds") {
		t.Errorf("older webhook build: %s %q", ob.Status, ob.Message)
	}
	for _, id := range []int64{manual.ID, res.Builds[0].ID} {
		if b, _ := e.st.Build(context.Background(), id); b.Status != build.Queued {
			t.Errorf("build %d: %s, want queued", id, b.Status)
		}
	}
}

func TestWebhookBodies(t *testing.T) {
	e := newHookEnv(t, triggerFile)
	post := func(body io.Reader, size int64, sig string) (int, string) {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/webhooks/demo", body)
		req.ContentLength = size
		req.Header.Set("X-GitHub-Event", "push")
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	// Declared too large: refused before anything is read.
	if code, msg := post(io.LimitReader(zeros{}, 26<<20), 26<<20, "sha256="+strings.Repeat("0", 64)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("26 MiB declared: %d %s", code, msg)
	}
	// Too large while read (no length given): refused.
	if code, msg := post(io.LimitReader(zeros{}, 26<<20), -1, "sha256="+strings.Repeat("0", 64)); code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "larger than") {
		t.Errorf("26 MiB streamed: %d %s", code, msg)
	}
	// A large signed body goes through the spool (memory, then a file).
	pad := strings.Repeat("x", 2<<20)
	head := e.commit("feature/big", nil)
	body, _ := json.Marshal(map[string]any{"ref": "refs/heads/feature/big", "after": head, "pad": pad})
	if code, msg := post(bytes.NewReader(body), int64(len(body)), sign("s3cret", body)); code != http.StatusAccepted || !strings.Contains(msg, `"workflow": "pushes"`) {
		t.Errorf("2 MiB signed push: %d %.300s", code, msg)
	}
	// Without a signature header the body is not needed: 401.
	if code, _ := post(bytes.NewReader(body), int64(len(body)), ""); code != http.StatusUnauthorized {
		t.Errorf("unsigned: %d", code)
	}
	if code, _ := post(bytes.NewReader(body), int64(len(body)), sign("wrong", body)); code != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d", code)
	}
	e.spoolEmpty()
}

// spoolEmpty checks that no spooled body is left.
func (e *hookEnv) spoolEmpty() {
	e.t.Helper()
	if left, _ := os.ReadDir(e.spool); len(left) != 0 {
		e.t.Errorf("%d spooled webhook bodies left in %s", len(left), e.spool)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

const startFile = `
workflows:
  inputs:
    inputs:
      name:
        description: Who is greeted?
        default: Codemagic
      count:
        type: number
      runTests:
        type: boolean
        default: true
      flavor:
        type: choice
        options: [dev, prod]
        default: dev
      machine:
        type: choice
        options: [linux, linux_x2]
        default: linux
    max_build_duration: ${{ inputs.count }}
    instance_type: ${{ inputs.machine }}
    environment:
      vars:
        OUT: $CM_BUILD_DIR/out
        GREETING: Hello ${{ inputs.name }}
    scripts:
      - name: Greet ${{ inputs.name }}
        script: echo "Hello, ${{ inputs.name }} x${{ inputs.count }}"
      - name: Tests
        script: make test
        when:
          condition: ${{ inputs.runTests }}
  docs:
    when:
      changeset:
        includes: [docs/]
    scripts:
      - echo docs
      - name: Android only
        script: echo android
        when:
          changeset:
            includes: [android/]
  flavor:
    when:
      condition: env.FLAVOR == "prod"
    environment:
      vars:
        FLAVOR: prod
    scripts:
      - echo prod
  minimal:
    name: Codemagic Sample Workflow
    max_build_duration: 120
`

func TestStartWithInputs(t *testing.T) {
	e := newHookEnv(t, startFile)
	start := func(inputs map[string]any) (int, build.Build, string) {
		var b build.Build
		var apiErr api.Error
		code := e.do("POST", "/api/v1/builds", api.StartRequest{App: "demo", Workflow: "inputs", Inputs: inputs}, &b)
		if code != http.StatusCreated {
			e.do("POST", "/api/v1/builds", api.StartRequest{App: "demo", Workflow: "inputs", Inputs: inputs}, &apiErr)
		}
		return code, b, apiErr.Message
	}
	for _, tt := range []struct {
		inputs map[string]any
		want   string
	}{
		{nil, "input count of workflow inputs has no default: give it a value (--input count=VALUE"},
		{map[string]any{"count": 2, "colour": "red"}, "workflow inputs has no input colour; its inputs are name, count, runTests, flavor, machine"},
		{map[string]any{"count": "two"}, `input count of workflow inputs: is a number, got "two"`},
		{map[string]any{"count": 2, "runTests": "maybe"}, `input runTests of workflow inputs: is a boolean (true or false), got "maybe"`},
		{map[string]any{"count": 2, "flavor": "staging"}, `input flavor of workflow inputs: must be one of dev, prod, got "staging"`},
		// Checked once substituted, naming the key and the input.
		{map[string]any{"count": 500}, "max_build_duration must be 1-120 minutes, got 500 (the value of input count)"},
	} {
		if code, _, msg := start(tt.inputs); code != http.StatusBadRequest || !strings.Contains(msg, tt.want) {
			t.Errorf("inputs %v: %d %q, want 400 %q", tt.inputs, code, msg, tt.want)
		}
	}
	code, b, msg := start(map[string]any{"count": "3", "runTests": "false", "name": "Hangar", "machine": "linux_x2"})
	if code != http.StatusCreated {
		t.Fatalf("start: %d %s", code, msg)
	}
	spec := e.spec(b.ID)
	if b.MaxDuration != 3*60 || spec.InstanceType != "linux_x2" {
		t.Errorf("max_build_duration %ds, instance_type %q; want the inputs' 180s and linux_x2", b.MaxDuration, spec.InstanceType)
	}
	if got := strings.Join(spec.Vars, "|"); got != "OUT=$CM_BUILD_DIR/out|GREETING=Hello Hangar" {
		t.Errorf("vars: %s (expansion is the builder's: it knows CM_BUILD_DIR)", got)
	}
	if s := spec.Scripts[0]; s.Name != "Greet Hangar" || s.Script != `echo "Hello, Hangar x3"` {
		t.Errorf("script 0: %+v", s)
	}
	if s := spec.Scripts[1]; s.Condition != "${{ inputs.runTests }}" {
		t.Errorf("script 1: %+v", s)
	}
	want := map[string]any{"name": "Hangar", "count": 3.0, "runTests": false, "flavor": "dev", "machine": "linux_x2"}
	if fmt.Sprint(spec.Inputs) != fmt.Sprint(want) {
		t.Errorf("inputs %v, want %v", spec.Inputs, want)
	}
	if b.Steps[2].Name != "Greet Hangar" {
		t.Errorf("steps: %+v", b.Steps)
	}

	// The workflows endpoint shows the inputs and the check report.
	var wfs api.Workflows
	e.do("GET", "/api/v1/apps/demo/workflows", nil, &wfs)
	if len(wfs.Workflows) != 4 || len(wfs.Workflows[0].Inputs) != 5 || wfs.Workflows[0].Inputs[2].Default != true ||
		wfs.Workflows[0].Check.ID != "inputs" || len(wfs.Workflows[3].Check.Steps) != 3 {
		t.Errorf("workflows: %+v", wfs)
	}
}

func TestStartWhen(t *testing.T) {
	e := newHookEnv(t, startFile)
	start := func(wf string) (int, build.Build, string) {
		var b build.Build
		var apiErr api.Error
		req := api.StartRequest{App: "demo", Workflow: wf}
		code := e.do("POST", "/api/v1/builds", req, &b)
		if code != http.StatusCreated {
			e.do("POST", "/api/v1/builds", req, &apiErr)
		}
		return code, b, apiErr.Message
	}
	// No earlier build: everything counts as changed.
	code, first, msg := start("docs")
	if code != http.StatusCreated || e.spec(first.ID).Scripts[1].Skip != "" {
		t.Fatalf("first docs build: %d %s", code, msg)
	}
	e.finish(first.ID)
	// Nothing changed since: the workflow is skipped, with why.
	code, _, msg = start("docs")
	if code != http.StatusUnprocessableEntity || !strings.Contains(msg, "workflow docs was not built: when.changeset: no change to includes docs/ since the last successful build, build #1") {
		t.Errorf("unchanged docs: %d %s", code, msg)
	}
	// A change under docs/ builds it; the android step is skipped.
	e.commit("main", map[string]string{"docs/guide.md": "x"})
	code, second, msg := start("docs")
	if code != http.StatusCreated {
		t.Fatalf("changed docs: %d %s", code, msg)
	}
	if skip := e.spec(second.ID).Scripts[1].Skip; !strings.Contains(skip, "when.changeset: no change to includes android/ since the last successful build, build #1") {
		t.Errorf("android step: %q", skip)
	}
	// A change to codemagic.yaml always counts.
	e.finish(second.ID)
	e.commit("main", map[string]string{"codemagic.yaml": startFile + "\n# changed\n"})
	if code, _, msg = start("docs"); code != http.StatusCreated {
		t.Errorf("changed workflow file: %d %s", code, msg)
	}
	// The workflow's condition sees its own variables.
	if code, _, msg = start("flavor"); code != http.StatusCreated {
		t.Errorf("flavor: %d %s", code, msg)
	}
	// Codemagic's minimal file: no scripts.
	code, min, msg := start("minimal")
	if code != http.StatusCreated || len(min.Steps) != 2 || len(e.spec(min.ID).Scripts) != 0 {
		t.Errorf("minimal: %d %s %+v", code, msg, min.Steps)
	}
}

// TestWebhookBadSignatureMemory: parallel large deliveries with a bad (but
// well-formed) signature are read without keeping their bodies in memory:
// what the process allocates meanwhile is a small fraction of what they
// carry (reading them whole allocated at least their size). The server's
// resident memory under 40 x 24 MiB is measured by `go run ./bench -mode
// webhook` (docs/benchmarks.md).
func TestWebhookBadSignatureMemory(t *testing.T) {
	e := newHookEnv(t, triggerFile)
	const posts, size = 40, 8 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	codes := make(chan int, posts)
	for range posts {
		go func() {
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/webhooks/demo", io.LimitReader(zeros{}, size))
			req.ContentLength = size
			req.Header.Set("X-GitHub-Event", "push")
			req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("ab", 32))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("post: %v", err)
				codes <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for range posts {
		if c := <-codes; c != http.StatusUnauthorized && c != http.StatusServiceUnavailable {
			t.Errorf("bad signature: %d, want 401 (or 503)", c)
		}
	}
	runtime.ReadMemStats(&after)
	e.spoolEmpty()
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d posts of %d MiB: %.1f MiB allocated", posts, size>>20, float64(allocated)/(1<<20))
	if limit := uint64(posts * size / 5); allocated > limit {
		t.Errorf("%d posts of %d MiB allocated %d MiB: bodies are kept in memory (limit %d MiB)", posts, size>>20, allocated>>20, limit>>20)
	}
}

// TestWebhookRedeliveryAfterFailure: a delivery that failed on the
// server's side (the repository could not be fetched) is forgotten, so
// GitHub's redelivery of it is acted on; one that was handled is not.
func TestWebhookRedeliveryAfterFailure(t *testing.T) {
	e := newHookEnv(t, triggerFile)
	head := e.commit("feature/r", nil)
	payload := pushPayload("refs/heads/feature/r", head)
	if code, res, raw := e.hook("push", "r-0", payload); code != http.StatusAccepted || len(res.Builds) != 1 {
		t.Fatalf("first delivery: %d %s", code, raw)
	}
	moved := e.repo + ".away"
	if err := os.Rename(e.repo, moved); err != nil {
		t.Fatal(err)
	}
	if code, _, raw := e.hook("push", "r-1", payload); code != http.StatusBadGateway {
		t.Fatalf("with the repository gone: %d %s", code, raw)
	}
	if err := os.Rename(moved, e.repo); err != nil {
		t.Fatal(err)
	}
	if code, res, raw := e.hook("push", "r-1", payload); code != http.StatusAccepted || len(res.Builds) != 1 {
		t.Errorf("redelivery after a failure: %d %s", code, raw)
	}
	if code, res, _ := e.hook("push", "r-1", payload); code != http.StatusOK || len(res.Builds) != 0 {
		t.Errorf("third delivery: %d", code)
	}
	var list []store.Delivery
	if code := e.do("GET", "/api/v1/apps/demo/deliveries", nil, &list); code != http.StatusOK || len(list) != 2 ||
		list[0].ID != "r-1" || list[0].Event != "push" || !strings.HasPrefix(list[0].Result, "202: build #2 of pushes (queued)") {
		t.Errorf("deliveries: %d %+v", code, list)
	}
}

// TestWebhookTestdataTriggering: the representative triggering file
// (Codemagic's documented example) with a pull request and tag pushes.
func TestWebhookTestdataTriggering(t *testing.T) {
	data, err := os.ReadFile("../workflow/testdata/codemagic/triggering.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newHookEnv(t, string(data))
	workflows := func(res api.WebhookResult) string {
		var ids []string
		for _, b := range res.Builds {
			ids = append(ids, b.Workflow)
		}
		return strings.Join(ids, ",")
	}
	head := e.commit("feature/x", map[string]string{"x": "1"})
	if _, res, raw := e.hook("pull_request", "t-1", prPayload("opened", 1, "feature/x", head, "main", false)); workflows(res) != "all-events,pr-into-main" {
		t.Errorf("pull request into main: %s", raw)
	}
	// all-events excludes the target excluded-target; pr-into-main wants main.
	if _, res, raw := e.hook("pull_request", "t-2", prPayload("opened", 2, "feature/x", head, "excluded-target", false)); workflows(res) != "" {
		t.Errorf("pull request into excluded-target: %s", raw)
	}
	if _, res, raw := e.hook("push", "t-3", pushPayload("refs/heads/feature/x", head)); workflows(res) != "all-events" {
		t.Errorf("push: %s", raw)
	}
	for tag, want := range map[string]string{"v1.2.3": "all-events,release-tags", "excluded-tag": "", "v1.2": "all-events"} {
		e.git(e.work, "tag", tag, head)
		e.git(e.work, "push", "--quiet", "origin", tag)
		if _, res, raw := e.hook("push", "t-tag-"+tag, pushPayload("refs/tags/"+tag, head)); workflows(res) != want {
			t.Errorf("tag %s: got %q, want %q: %s", tag, workflows(res), want, raw)
		}
	}
}

// TestWebhookSkipCI: a pushed commit with [skip ci] (or [ci skip]) in its
// message is not built by webhooks; a build started by hand builds it.
func TestWebhookSkipCI(t *testing.T) {
	e := newHookEnv(t, triggerFile)
	for i, msg := range []string{"docs: typo [skip ci]", "wip\n\n[ci skip]"} {
		head := e.commitMsg("feature/s", msg, map[string]string{"s": msg})
		code, res, raw := e.hook("push", fmt.Sprintf("s-%d", i), pushPayload("refs/heads/feature/s", head))
		if code != http.StatusAccepted || len(res.Builds) != 0 || !strings.Contains(res.Message, "has [skip ci] in its message: nothing is built") {
			t.Errorf("%q: %d %s", msg, code, raw)
		}
	}
	var b build.Build
	if code := e.do("POST", "/api/v1/builds", api.StartRequest{App: "demo", Workflow: "pushes", Branch: "feature/s"}, &b); code != http.StatusCreated {
		t.Errorf("manual start of a [skip ci] commit: %d", code)
	}
	head := e.commitMsg("feature/s", "a real change", nil)
	if _, res, raw := e.hook("push", "s-9", pushPayload("refs/heads/feature/s", head)); len(res.Builds) != 1 {
		t.Errorf("an ordinary commit: %s", raw)
	}
}
