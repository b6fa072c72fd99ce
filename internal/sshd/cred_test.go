package sshd

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the unprivileged account of the Credential test.
const nobody = 65534

// TestCredential runs sessions as an unprivileged user (root only).
func TestCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	if _, err := user.LookupId("65534"); err != nil {
		t.Skip("no user 65534 (nobody)")
	}
	// Everything the user touches must be reachable by it: t.TempDir's
	// parents are private to root.
	base, err := os.MkdirTemp("", "hangar-sshd-cred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	home, work := filepath.Join(base, "home"), filepath.Join(base, "work")
	for _, d := range []string{home, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarness(t, func(h *harness) {
		h.home, h.dir = home, work
		h.srv.Home = home
		h.srv.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
		// As the builder does: the binary itself, from a path the user
		// could not reach (go test's private work directory).
		h.srv.SFTPCommand = []string{"/proc/self/exe", sftpArg}
	})

	if out := h.mustSSH("", "id -u; id -g; id -G; pwd; touch made-by-exec; stat -c %u made-by-exec"); out != "65534\n65534\n65534\n"+work+"\n65534\n" {
		t.Errorf("exec as nobody: %q", out)
	}

	// Files written through SFTP belong to the user.
	local := filepath.Join(t.TempDir(), "up.txt")
	if err := os.WriteFile(local, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	if res := h.runCmd(h.command(ctx, "scp", local, "builder@127.0.0.1:up.txt"), ""); res.code != 0 {
		t.Fatalf("scp: %+v", res)
	}
	st, err := os.Stat(filepath.Join(work, "up.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != nobody {
		t.Errorf("file written by sftp owned by %d, want %d", uid, nobody)
	}
	// And the user cannot write where it may not.
	if res := h.runCmd(h.command(ctx, "scp", local, "builder@127.0.0.1:/root/hangar-sshd-test"), ""); res.code == 0 {
		t.Errorf("scp to /root as nobody succeeded")
		os.Remove("/root/hangar-sshd-test")
	}

	// A login shell on a pty the user owns.
	res := h.ssh("id -u; stat -c tty-owner=%u $(tty); exit\n", "-tt", "builder@127.0.0.1")
	if out := strings.ReplaceAll(res.stdout, "\r\n", "\n"); res.code != 0 || !strings.Contains(out, "\n65534\n") || !strings.Contains(out, "tty-owner=65534") {
		t.Errorf("pty shell as nobody: %+v", res)
	}

	// Agent forwarding: the user can reach the socket.
	sock, fingerprint := h.startAgent()
	cmd := h.command(ctx, "ssh", sshTo(`ssh-add -l; stat -c %u "$SSH_AUTH_SOCK"`, "-A")...)
	cmd.Env = h.clientEnv("SSH_AUTH_SOCK=" + sock)
	if res := h.runCmd(cmd, ""); res.code != 0 || !strings.Contains(res.stdout, fingerprint) || !strings.HasSuffix(res.stdout, "\n65534\n") {
		t.Errorf("agent forwarding as nobody: %+v", res)
	}
}
