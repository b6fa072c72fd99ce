package sshd

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestLocalForward(t *testing.T) {
	h := newHarness(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, "echo:"+line)
			}()
		}
	}()
	_, tport, _ := net.SplitHostPort(target.Addr().String())

	// ssh -W uses the same direct-tcpip channel, on stdin/stdout.
	res := h.ssh("ping\n", "-W", "127.0.0.1:"+tport, "builder@127.0.0.1")
	if res.stdout != "echo:ping\n" {
		t.Errorf("ssh -W: %+v", res)
	}

	// ssh -L on a free local port.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lport := free.Addr().(*net.TCPAddr).Port
	free.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := h.command(ctx, "ssh", "-N", "-o", "ExitOnForwardFailure=yes",
		"-L", strconv.Itoa(lport)+":127.0.0.1:"+tport, "builder@127.0.0.1")
	h.background(cmd)
	var reply string
	ok := waitFor(10*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(lport))
		if err != nil {
			return false
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello\n")
		b, _ := io.ReadAll(c)
		reply = string(b)
		return reply != ""
	})
	if !ok || reply != "echo:hello\n" {
		t.Errorf("through ssh -L: %q", reply)
	}
	h.waitEvent(EventChannel, "direct-tcpip 127.0.0.1:"+tport)

	// A port nobody listens on: the channel is refused, the client says so.
	res = h.ssh("", "-W", "127.0.0.1:1", "builder@127.0.0.1")
	if res.code == 0 || !strings.Contains(res.stderr, "forwarding failed") {
		t.Errorf("ssh -W to a closed port: %+v", res)
	}
}

func TestRemoteForwardAndX11Refused(t *testing.T) {
	h := newHarness(t)
	res := h.ssh("", sshTo("true", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22")...)
	if res.code == 0 || !strings.Contains(res.stderr, "forwarding failed") {
		t.Errorf("ssh -R: %+v, want refused", res)
	}
	c := h.goClient()
	if _, _, err := c.OpenChannel("x11", nil); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("x11 channel: %v, want refused with a reason", err)
	}
	if _, _, err := c.OpenChannel("hangar-unknown", nil); err == nil {
		t.Errorf("unknown channel type accepted")
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, req := range []string{"x11-req", "hangar-unknown", "subsystem"} {
		if ok, err := sess.SendRequest(req, true, ssh.Marshal(struct{ S string }{"nope"})); ok || err != nil {
			t.Errorf("%s: ok %v err %v, want refused", req, ok, err)
		}
	}
}

func TestAgentForwarding(t *testing.T) {
	h := newHarness(t)
	sock, fingerprint := h.startAgent()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := h.command(ctx, "ssh", sshTo(`echo "$SSH_AUTH_SOCK"; stat -c %a "$(dirname "$SSH_AUTH_SOCK")"; ssh-add -l`, "-A")...)
	cmd.Env = h.clientEnv("SSH_AUTH_SOCK=" + sock)
	res := h.runCmd(cmd, "")
	if res.code != 0 || !strings.Contains(res.stdout, fingerprint) {
		t.Fatalf("ssh -A ... ssh-add -l: %+v, want %s listed", res, fingerprint)
	}
	lines := strings.Split(res.stdout, "\n")
	if lines[1] != "700" {
		t.Errorf("agent socket directory mode %s, want 700", lines[1])
	}
	// The socket is gone once the session is over.
	remoteSock := lines[0]
	if !waitFor(5*time.Second, func() bool { _, err := os.Stat(filepath.Dir(remoteSock)); return os.IsNotExist(err) }) {
		t.Errorf("%s still exists after the session", remoteSock)
	}
	// Without -A there is no agent.
	if res := h.ssh("", sshTo("ssh-add -l")...); res.code != 2 {
		t.Errorf("ssh-add -l without forwarding: %+v, want exit 2 (no agent)", res)
	}
}

// startAgent starts an ssh-agent of the test's own holding a new key; it
// returns the agent's socket and the key's fingerprint.
func (h *harness) startAgent() (sock, fingerprint string) {
	t := h.t
	t.Helper()
	agentDir, err := os.MkdirTemp("", "hangar-test-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(agentDir) })
	sock = filepath.Join(agentDir, "agent.sock")
	agentCmd := exec.Command("ssh-agent", "-D", "-a", sock)
	agentCmd.Env = h.clientEnv()
	h.background(agentCmd)
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Fatal("ssh-agent did not create its socket")
	}
	fwdKey, _ := writeUserKey(t, filepath.Join(agentDir, "forwarded"))
	add := exec.Command("ssh-add", fwdKey)
	add.Env = h.clientEnv("SSH_AUTH_SOCK=" + sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
	fp, err := exec.Command("ssh-keygen", "-l", "-f", fwdKey).Output()
	if err != nil {
		t.Fatal(err)
	}
	return sock, strings.Fields(string(fp))[1]
}
