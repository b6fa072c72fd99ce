package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/notify/smtptest"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
	"github.com/hangar-ci/hangar/internal/tlstest"
)

// remoteFilesWorkflow uses a variable group, makes an artifact and
// caches a directory.
const remoteFilesWorkflow = `
workflows:
  remote:
    max_build_duration: 5
    environment:
      groups:
        - deploy
    cache:
      cache_paths:
        - $HOME/.remote-cache
    scripts:
      - name: Use the group
        script: |
          echo "token=$DEPLOY_TOKEN"
          if [ -f "$HOME/.remote-cache/stamp" ]; then echo "cache-hit $(cat "$HOME/.remote-cache/stamp")"; else echo cache-miss; fi
          mkdir -p "$HOME/.remote-cache" out
          echo "$CM_BUILD_ID" > "$HOME/.remote-cache/stamp"
          seq 1 300000 > out/app.bin
    artifacts:
      - out/*.bin
    publishing:
      email:
        recipients: [dev@example.com]
`

// TestRemoteRunnerFiles: two API-only servers on one PostgreSQL and a
// `hangar runner` (host driver) that reaches the first. A build that
// names a variable group gets it through the runner API (its value
// masked in the log, never in a log of the runner or the servers); its
// artifact is kept in the database and downloaded through the OTHER
// server: by the CLI, by a ticket the first server issued, and by a
// range; the cache the first build saved is restored in the second; its
// publishing.email goes through the servers' SMTP server.
func TestRemoteRunnerFiles(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certs := tlstest.New(t, "127.0.0.1")
	mb := smtptest.Start(t, certs.Server, "ci", "mail-pw-remote")
	args := []string{"--database", url, "--secrets-key", keyFile, "--no-runner",
		"--smtp-host", "127.0.0.1", "--smtp-port", strconv.Itoa(mb.Port), "--smtp-from", "Hangar <ci@example.com>",
		"--smtp-user", "ci", "--smtp-starttls", "always"}
	env := []string{"SSL_CERT_FILE=" + certs.CAFile, "HANGAR_SMTP_PASSWORD=mail-pw-remote"}
	a := harness.StartServer(t, harness.Options{Driver: "host", Args: args, Env: env})
	b := harness.StartServer(t, harness.Options{Driver: "host", Args: args, Env: env})
	r := a.Hangar("runner", "token", "create", "remote")
	if r.Code != 0 {
		t.Fatalf("runner token create: %s", r.Stderr)
	}
	runner := harness.StartRunner(t, a.URL, strings.TrimSpace(r.Stdout), "", "--capacity", "1")
	waitRunners(t, a, map[string]bool{"remote": true})

	token := "rt-" + marker()
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": remoteFilesWorkflow})
	for _, args := range [][]string{{"app", "add", "demo", "--repo", repo.Path}, {"group", "set", "demo", "deploy", "DEPLOY_TOKEN=" + token}} {
		if r := a.Hangar(args...); r.Code != 0 {
			t.Fatalf("%s: %s", strings.Join(args, " "), r.Stderr)
		}
	}
	f := &fixture{t: t, s: a, driver: "host"}
	start := func() int64 {
		t.Helper()
		bld, err := b.Client().StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "remote"})
		if err != nil {
			t.Fatal(err)
		}
		return bld.ID
	}

	b1, logs := f.wait(start(), 2*time.Minute)
	if b1.Status != build.Finished {
		t.Fatalf("first build: %s (%s)\n%s\nrunner:\n%s", b1.Status, b1.Message, logs, runner.Log())
	}
	for _, want := range []string{"Environment variable groups: deploy (1 variables", "token=*****", "cache-miss", "Uploaded out/app.bin", "Saved the cache",
		"Email: sent to dev@example.com through 127.0.0.1"} {
		if !strings.Contains(logs, want) {
			t.Errorf("first build's log lacks %q:\n%s", want, logs)
		}
	}
	for what, log := range map[string]string{"build": logs, "runner": runner.Log(), "server a": a.Log(), "server b": b.Log()} {
		if strings.Contains(log, token) {
			t.Errorf("the group's value is in the %s log", what)
		}
	}
	// The email went through the servers' SMTP server, with the artifact
	// the store keeps.
	if msgs := mb.Wait(1, 10*time.Second); len(msgs) != 1 || !strings.Contains(msgs[0].Data, fmt.Sprintf("/api/v1/builds/%d/artifacts/out/app.bin", b1.ID)) {
		t.Errorf("emails: %+v; want one with the artifact's link", msgs)
	}
	if list, err := b.Client().Runners(ctx); err != nil || len(list) != 1 || list[0].Name != "remote" {
		t.Fatalf("runners: %+v, %v", list, err)
	}

	// The artifact through the other server: the CLI,
	want := appBinOf(300000)
	dir := t.TempDir()
	id := strconv.FormatInt(b1.ID, 10)
	if r := b.Hangar("build", "artifacts", id, "--download", dir); r.Code != 0 {
		t.Fatalf("build artifacts --download through b: %s %s", r.Stdout, r.Stderr)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "out/app.bin")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("downloaded out/app.bin: %d bytes, %v; want %d identical bytes", len(got), err, len(want))
	}
	// a ticket that a issued, taken by b (once),
	var tk api.ArtifactTicket
	if err := a.Client().Do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/builds/%d/artifact-tickets", b1.ID), api.ArtifactTicketRequest{Name: "out/app.bin"}, &tk); err != nil {
		t.Fatal(err)
	}
	for i, wantStatus := range []int{http.StatusOK, http.StatusUnauthorized} {
		resp, err := b.HTTPClient().Get(b.URL + tk.URL)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus || (i == 0 && !bytes.Equal(got, want)) {
			t.Errorf("ticket download %d through b: %s, %d bytes; want %d", i+1, resp.Status, len(got), wantStatus)
		}
	}
	// and a range.
	req, _ := http.NewRequest(http.MethodGet, b.URL+fmt.Sprintf("/api/v1/builds/%d/artifacts/out/app.bin", b1.ID), nil)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	req.Header.Set("Range", "bytes=1048570-1048589")
	resp, err := b.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, want[1048570:1048590]) {
		t.Errorf("range across a chunk boundary: %s %q; want 206 %q", resp.Status, got, want[1048570:1048590])
	}

	// The second build restores the first one's cache.
	b2, logs := f.wait(start(), 2*time.Minute)
	if b2.Status != build.Finished {
		t.Fatalf("second build: %s (%s)\n%s", b2.Status, b2.Message, logs)
	}
	for _, want := range []string{fmt.Sprintf("Restoring the cache saved by build %d", b1.ID), fmt.Sprintf("cache-hit %d", b1.ID)} {
		if !strings.Contains(logs, want) {
			t.Errorf("second build's log lacks %q:\n%s", want, logs)
		}
	}
	// Nothing was kept on either server's disk.
	for _, s := range []*harness.Server{a, b} {
		for _, kind := range []string{"artifacts", "caches"} {
			if entries, err := os.ReadDir(filepath.Join(s.Data, kind)); err == nil && len(entries) > 0 {
				t.Errorf("%s/%s holds %d entries; want the database to keep them", s.Data, kind, len(entries))
			}
		}
	}
}

// appBinOf is what `seq 1 n` writes.
func appBinOf(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}
