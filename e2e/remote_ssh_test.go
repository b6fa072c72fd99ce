package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway/gatewaytest"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

// TestRemoteRunnerSSH: PostgreSQL, an API-only server (--no-runner) with
// separate gateways (--gateway-addr), two `hangar gateway` processes
// behind one address, and a `hangar runner` (host driver) that reaches
// the server only through the runner API. The runner claims an SSH build
// (runner list: SSH yes) paused at a breakpoint; the server issued its
// credential (the runner's data dir holds no CA and no private key). The
// builder's tunnel lands on gateway a; OpenSSH, pinning the gateways by
// the host CA, runs a command in the build through gateway b, and the
// runner hears of the connection. `hangar build ssh-extend` and `hangar
// build continue` reach the runner through the runner API. The build's
// end closes access on the gateways.
func TestRemoteRunnerSSH(t *testing.T) {
	harness.Need(t, "ssh", "bash")
	url := pgtest.DB(t)
	ctx := context.Background()
	lb := gatewaytest.NewLB(t)
	s := harness.StartServer(t, harness.Options{Driver: "host", Args: []string{
		"--database", url, "--no-runner", "--gateway-addr", lb.Addr, "--ssh-public-host", "127.0.0.1",
	}})
	a := startGateway(t, "a", url, s.Data)
	b := startGateway(t, "b", url, s.Data)
	lb.SetBackends(a.addr) // the builder's tunnel lands on a

	r := s.Hangar("runner", "token", "create", "r1")
	if r.Code != 0 {
		t.Fatalf("runner token create: %s", r.Stderr)
	}
	runner := harness.StartRunner(t, s.URL, strings.TrimSpace(r.Stdout), "", "--capacity", "2", "--ssh-after-steps", "10m")
	waitRunners(t, s, map[string]bool{"r1": true})
	if r := s.Hangar("runner", "list"); r.Code != 0 || !strings.Contains(strings.Join(strings.Fields(r.Stdout), " "), "2 0 yes") {
		t.Fatalf("runner list: %s %s; want r1 with SSH yes", r.Stdout, r.Stderr)
	}

	sf := hostSSHApp(t, s)
	f := sf.fixture
	bl := f.start("--workflow hold --ssh-break-before Hold")
	id, alias := bl.ID, build.Alias(bl.ID)
	t.Cleanup(func() { f.hangar(fmt.Sprintf("build cancel %d", id)) })
	waitLog(t, f, id, "paused before step 2 (Hold)")
	sf.waitSSH(id)
	if got := buildRunners(t, url)[id]; got != "r1" {
		t.Fatalf("build %d run by %q, want the hangar runner r1", id, got)
	}
	script := sf.script(id)

	// The user's hop goes to b, which forwards it to a, holding the
	// tunnel.
	lb.SetBackends(b.addr)
	want := "remote-runner-" + f.run
	if r := sf.run("bash", script, "echo", want); r.Code != 0 || r.Stdout != want+"\n" {
		t.Fatalf("through gateway b: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	cfgDir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, cfgDir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	if r := sf.run("ssh", "-F", filepath.Join(cfgDir, "config"), alias, "echo $FCI_BUILD_ID"); r.Code != 0 || r.Stdout != fmt.Sprint(id)+"\n" {
		t.Fatalf("through the ssh_config: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// The runner heard of the connection from the gateways, through the
	// runner API.
	waitGatewayEvent(t, s, id, "ssh_connect")

	// The server issued the credential: the build's private key (in the
	// script) is nowhere in the runner's data dir or log.
	body, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	// The first line of the PEM block is the same for every key of its
	// type; the second holds the private key.
	_, pem, _ := strings.Cut(string(body), "-----BEGIN OPENSSH PRIVATE KEY-----\n")
	keyLine := ""
	if lines := strings.SplitN(pem, "\n", 3); len(lines) == 3 {
		keyLine = lines[1]
	}
	if len(keyLine) < 40 {
		t.Fatalf("no private key in the script:\n%s", body)
	}
	_ = filepath.WalkDir(runner.Data, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), keyLine) {
			t.Errorf("the runner's data dir holds the build's private key: %s", p)
		}
		return nil
	})
	if strings.Contains(runner.Log(), keyLine) {
		t.Error("the runner logged the build's private key")
	}

	// Extend and continue reach the runner through the runner API.
	started := time.Now()
	if r := f.hangar(fmt.Sprintf("build ssh-extend %d --by 7m", id)); r.Code != 0 {
		t.Fatalf("ssh-extend: exit %d: %s", r.Code, r.Stderr)
	}
	t.Logf("ssh-extend answered by the hangar runner in %v", time.Since(started).Round(time.Millisecond))
	waitEvent(t, sf, id, "ssh_extended", "7m")
	started = time.Now()
	if _, err := s.Client().ExtendSSH(ctx, id, 3*time.Minute); err != nil {
		t.Fatalf("extend through the API: %v", err)
	}
	t.Logf("an extension through the API answered by the hangar runner in %v", time.Since(started).Round(time.Millisecond))
	started = time.Now()
	if r := f.hangar(fmt.Sprintf("build continue %d", id)); r.Code != 0 {
		t.Fatalf("continue: exit %d: %s", r.Code, r.Stderr)
	}
	t.Logf("continue answered by the hangar runner in %v", time.Since(started).Round(time.Millisecond))
	waitLog(t, f, id, "holding")

	// The build's end closes access on the gateways: refused, told why.
	if r := f.hangar(fmt.Sprintf("build cancel %d", id)); r.Code != 0 {
		t.Fatalf("cancel: %s", r.Stderr)
	}
	f.wait(id, time.Minute)
	r = sf.run("bash", script, "true")
	if want := fmt.Sprintf("hangar: SSH access to build %d ended: the build was canceled", id); r.Code == 0 || !strings.Contains(r.Stderr, want) {
		t.Errorf("after the build ended: exit %d, stderr %q; want %q", r.Code, r.Stderr, want)
	}
	if c, err := s.Client().Build(ctx, id); err != nil || c.Status != build.Canceled {
		t.Errorf("build %d: %v, %v; want canceled", id, c, err)
	}
}
