package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/tlstest"
)

// TestOneLinerHTTPS: a host-driver server with --tls-cert/--tls-key (a CA
// made by the test). The CLI reaches it through SSL_CERT_FILE; the build's
// one-line command is an https URL that curl, trusting the CA, fetches and
// whose script gives the real ssh a session on the machine; curl without
// the CA refuses the server; the fetch is a build event; the build's end
// revokes the URL. Then the server
// restarts on a new database in the same data dir (same keys): its build
// has the old build's id, and the old URL is refused.
func TestOneLinerHTTPS(t *testing.T) {
	harness.Need(t, "ssh", "bash", "curl")
	certs := tlstest.New(t, "127.0.0.1")
	data := t.TempDir()
	start := func() *sshFixture {
		s := harness.StartServer(t, harness.Options{Driver: "host", Data: data, CAFile: certs.CAFile, Args: []string{
			"--ssh", "127.0.0.1:0", "--ssh-after-steps", "10m", "--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile,
		}})
		f := &fixture{t: t, s: s, run: marker(), driver: "host"}
		f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": hostSSHWorkflows})
		if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
			t.Fatalf("app add over https: %s", r.Stderr)
		}
		return &sshFixture{fixture: f, home: t.TempDir()}
	}
	// sh runs a shell command line as the user would, with curl trusting
	// the CA if trust.
	sh := func(f *sshFixture, trust bool, line string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", "set -o pipefail; "+line)
		cmd.Env = f.clientEnv("")
		if trust {
			cmd.Env = append(cmd.Env, "CURL_CA_BUNDLE="+certs.CAFile)
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), errb.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), 0
	}

	f := start()
	id, _ := startHostSSH(t, f)
	b := f.show(id)
	url, ok := strings.CutPrefix(b.SSH.Command, "curl -fsSL '")
	url, _, _ = strings.Cut(url, "'")
	if !ok || !strings.HasPrefix(url, f.s.URL+"/ssh/") || !strings.HasPrefix(f.s.URL, "https://") {
		t.Fatalf("one-line command %q, want an https URL of %s", b.SSH.Command, f.s.URL)
	}
	// The one-liner as shown, with a command for the script.
	withCommand := strings.TrimSuffix(b.SSH.Command, "| bash") + "| bash -s -- printenv FCI_BUILD_ID"
	if out, errs, code := sh(f, true, withCommand); code != 0 || strings.TrimSpace(out) != strconv.FormatInt(id, 10) {
		t.Fatalf("the one-liner over https: exit %d, stdout %q, stderr %s", code, out, errs)
	}
	if _, errs, code := sh(f, false, withCommand); code == 0 || !strings.Contains(errs, "certificate") {
		t.Errorf("the one-liner without the CA: exit %d, stderr %s", code, errs)
	}
	evs, err := f.s.Client().Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	fetched := false
	for _, ev := range evs {
		if ev.Kind == "ssh_script" && ev.Data["via"] == "url" && ev.Data["issued_to"] == "admin" &&
			strings.HasPrefix(ev.Data["remote"], "127.0.0.1:") && strings.HasPrefix(ev.Data["user_agent"], "curl/") {
			fetched = true
		}
	}
	if !fetched {
		t.Errorf("no event of the one-liner's fetch: %+v", evs)
	}

	// The build's end revokes the URL at once (the runner erases the nonce
	// with the key; until then the ended build refuses it).
	if r := f.hangar(fmt.Sprintf("build cancel %d", id)); r.Code != 0 {
		t.Fatalf("cancel: %s", r.Stderr)
	}
	if out, errs, code := sh(f, true, withCommand); code == 0 || out != "" || !strings.Contains(errs, "404") && !strings.Contains(errs, "410") {
		t.Errorf("the one-liner after the build ended: exit %d, stdout %q, stderr %s", code, out, errs)
	}

	// A new database in the same data dir: the keys (and the URL key) stay.
	path := strings.TrimPrefix(url, f.s.URL)
	f.s.Stop()
	for _, name := range []string{"hangar.db", "hangar.db-wal", "hangar.db-shm"} {
		if err := os.Remove(filepath.Join(data, name)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	f2 := start()
	id2, _ := startHostSSH(t, f2)
	if id2 != id {
		t.Fatalf("the new database's build is %d, want the old one's id %d", id2, id)
	}
	old := "curl -fsS '" + f2.s.URL + path + "' | bash -s -- printenv FCI_BUILD_ID"
	if out, errs, code := sh(f2, true, old); code == 0 || out != "" || !strings.Contains(errs, "404") {
		t.Errorf("the old URL on the new database: exit %d, stdout %q, stderr %s", code, out, errs)
	}
	fresh := strings.TrimSuffix(f2.show(id2).SSH.Command, "| bash") + "| bash -s -- printenv FCI_BUILD_ID"
	if out, errs, code := sh(f2, true, fresh); code != 0 || strings.TrimSpace(out) != strconv.FormatInt(id2, 10) {
		t.Errorf("the new build's one-liner: exit %d, stdout %q, stderr %s", code, out, errs)
	}
}
