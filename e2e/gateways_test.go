package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/gateway/gatewaytest"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

// gatewayProc is a running `hangar gateway`.
type gatewayProc struct {
	id     string
	addr   string // SSH
	cmd    *exec.Cmd
	exited chan struct{}
}

// startGateway starts `hangar gateway` id on url, with the server's CAs
// from data, and waits until it listens. It is killed at cleanup.
func startGateway(t *testing.T, id, url, data string) *gatewayProc {
	t.Helper()
	return startGatewayWith(t, id, url,
		"--host-ca", filepath.Join(data, "ssh", "host_ca"), "--user-ca", filepath.Join(data, "ssh", "user_ca.pub"))
}

// startGatewayWith is startGateway with the key flags keyArgs.
func startGatewayWith(t *testing.T, id, url string, keyArgs ...string) *gatewayProc {
	t.Helper()
	addr, peer := loopbackAddr(t), loopbackAddr(t)
	args := append([]string{"gateway", "--database", url, "--id", id,
		"--listen", addr, "--peer-listen", peer, "--advertise", peer, "--data", t.TempDir(),
		"--handshake-timeout", "5s", "--log-level", "debug"}, keyArgs...)
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{id: id, addr: addr, cmd: cmd, exited: make(chan struct{})}
	started := make(chan struct{})
	logs := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "hangar gateway started") {
				once = true
				close(started)
			}
		}
		_ = cmd.Wait()
		logs <- b.String()
		close(g.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-g.exited: // killed by the test
		default:
			// A stop signal ends a gateway cleanly, in its drain time.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-g.exited:
				if code := cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("hangar gateway %s exited with status %d after SIGTERM", id, code)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("hangar gateway %s still runs 30 s after SIGTERM", id)
				_ = cmd.Process.Kill()
				<-g.exited
			}
		}
		if t.Failed() {
			t.Logf("gateway %s:\n%s", id, <-logs)
		}
	})
	select {
	case <-started:
	case <-g.exited:
		t.Fatalf("hangar gateway %s exited at start:\n%s", id, <-logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("hangar gateway %s did not start within 30 s", id)
	}
	return g
}

// loopbackAddr is a free loopback address.
func loopbackAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestGateways: PostgreSQL, one server and two `hangar gateway`
// processes behind one address (a TCP load balancer). The build's
// tunnel is held by gateway a; OpenSSH reaches the build through gateway
// b, which forwards the hop to a over the peer link, and trusts b by the
// host CA alone (@cert-authority, StrictHostKeyChecking=yes). Gateway a
// is killed: the builder's tunnel comes back through b, the login shell
// whose connection went with a is re-attached by the next connection,
// and new connections and the browser terminal get in. The runner hears the gateways' events, and the end
// of the build closes access on the gateways.
func TestGateways(t *testing.T) {
	harness.Need(t, "ssh", "bash")
	url := pgtest.DB(t)
	lb := gatewaytest.NewLB(t)
	s := harness.StartServer(t, harness.Options{Driver: "host", Args: []string{
		"--database", url, "--gateway-addr", lb.Addr, "--ssh-public-host", "127.0.0.1", "--ssh-after-steps", "10m",
	}})
	sf := hostSSHApp(t, s)
	f := sf.fixture
	a := startGateway(t, "a", url, s.Data)
	b := startGateway(t, "b", url, s.Data)
	lb.SetBackends(a.addr) // the builder's tunnel lands on a

	ctx := context.Background()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)

	id, script := startHostSSH(t, sf)
	alias := fmt.Sprintf("build-%d", id)
	waitRouteHolder(t, url, alias, "a")
	// Only the host CA pins the gateways.
	if body, _ := os.ReadFile(script); !bytes.Contains(body, []byte("@cert-authority hangar-gateway ssh-ed25519 ")) || !bytes.Contains(body, []byte("StrictHostKeyChecking yes")) {
		t.Fatalf("the script does not pin the gateways' host CA:\n%s", body)
	} else if bytes.Contains(body, []byte("\nhangar-gateway ssh-ed25519 ")) {
		t.Fatalf("the script pins one gateway's key besides the host CA:\n%s", body)
	}

	// The user's hop goes to b, which does not hold the tunnel.
	lb.SetBackends(b.addr)
	if r := sf.run("bash", script, "echo", "via-b-"+f.run); r.Code != 0 || r.Stdout != "via-b-"+f.run+"\n" {
		t.Fatalf("through gateway b: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	var fromB int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM gateway_events WHERE alias = $1 AND gateway_id = 'b' AND kind = 'connect'`, alias).Scan(&fromB); err != nil || fromB == 0 {
		t.Fatalf("no connect event from gateway b (%d, %v)", fromB, err)
	}
	// The runner heard it: the build's events have the connection.
	waitGatewayEvent(t, s, id, "ssh_connect")

	// A login shell through b, over the tunnel that a holds.
	cfgDir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, cfgDir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	conf := filepath.Join(cfgDir, "config")
	live := startLive(t, sf, "ssh", "-F", conf, "-tt", alias)
	live.typeLine(`export KEPT=v$((40+2)); echo "before-$((1+1))-kill"`)
	live.waitOut("before-2-kill")

	// a dies: the builder's tunnel comes back through the one address,
	// on b, and a new connection gets in.
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	killed := time.Now()
	waitRouteHolder(t, url, alias, "b")
	t.Logf("the builder's tunnel was back, through b, %v after gateway a was killed", time.Since(killed).Round(time.Millisecond))
	// The shell's connection went with a, the shell stayed: the next
	// connection gets it back.
	if code := live.waitExit(); code == 0 {
		t.Errorf("the session through the killed gateway's tunnel ended with status 0")
	}
	waitEvent(t, sf, id, "ssh_login_detach", "shell 1")
	again := startLive(t, sf, "ssh", "-F", conf, "-tt", alias)
	again.typeLine(`echo "kept=$KEPT"`)
	again.waitOut("kept=v42")
	if r := sf.run("bash", script, "echo", "after-failover-"+f.run); r.Code != 0 || r.Stdout != "after-failover-"+f.run+"\n" {
		t.Fatalf("after gateway a died: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	// The browser terminal: the server dials the gateways' address too,
	// and trusts the gateway by the host CA.
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	term := openTerminal(t, tctx, sf, id)
	term.send(map[string]any{"type": "input", "data": "echo term-$((6*7))\r"})
	term.waitFor("term-42")
	term.close()

	// The build's end closes access on the gateways: refused, told why.
	if r := f.hangar(fmt.Sprintf("build cancel %d", id)); r.Code != 0 {
		t.Fatalf("cancel: %s", r.Stderr)
	}
	f.wait(id, time.Minute)
	r := sf.run("bash", script, "true")
	if want := fmt.Sprintf("hangar: SSH access to build %d ended: the build was canceled", id); r.Code == 0 || !strings.Contains(r.Stderr, want) {
		t.Errorf("after the build ended: exit %d, stderr %q; want %q", r.Code, r.Stderr, want)
	}
}

// waitGatewayEvent waits until build id has an event of kind from the
// gateways.
func waitGatewayEvent(t *testing.T, s *harness.Server, id int64, kind string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		evs, err := s.Client().Events(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Kind == kind && ev.Data["via"] == "gateway" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %d: no %s event from the gateways within a minute: %+v", id, kind, evs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostSSHApp adds app demo (hostSSHWorkflows, in a new repository) to s
// and returns an SSH fixture for its builds.
func hostSSHApp(t *testing.T, s *harness.Server) *sshFixture {
	t.Helper()
	f := &fixture{t: t, s: s, run: marker(), driver: "host"}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": hostSSHWorkflows})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	return &sshFixture{fixture: f, home: t.TempDir()}
}
