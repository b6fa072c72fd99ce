package sshd

import (
	"context"
	"os"
	"testing"

	"github.com/hangar-ci/hangar/internal/syncbuf"
)

const gib = 1 << 30

// BenchmarkExecThroughput sends 1 GiB from the server to the real OpenSSH
// client: ssh host 'head -c 1073741824 /dev/zero' > /dev/null.
func BenchmarkExecThroughput(b *testing.B) {
	h := newHarness(b)
	// The cipher is the client's choice: OpenSSH prefers chacha20-poly1305,
	// which x/crypto implements in pure Go on amd64; AES-GCM uses AES-NI.
	for _, cipher := range []string{"default", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"} {
		b.Run(cipher, func(b *testing.B) {
			var flags []string
			if cipher != "default" {
				flags = []string{"-c", cipher}
			}
			b.SetBytes(gib)
			for b.Loop() {
				// Stdout stays nil: the client writes to /dev/null itself.
				cmd := h.command(context.Background(), "ssh", sshTo("head -c 1073741824 /dev/zero", flags...)...)
				var stderr syncbuf.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Run(); err != nil {
					b.Fatalf("ssh: %v: %s", err, stderr.String())
				}
			}
		})
	}
}

// BenchmarkStdinThroughput sends 1 GiB from the client to a command's
// stdin: ssh host 'head -c 1073741824 > /dev/null' < /dev/zero.
func BenchmarkStdinThroughput(b *testing.B) {
	h := newHarness(b)
	b.SetBytes(gib)
	for b.Loop() {
		zero, err := os.Open("/dev/zero")
		if err != nil {
			b.Fatal(err)
		}
		cmd := h.command(context.Background(), "ssh", sshTo("head -c 1073741824 > /dev/null")...)
		cmd.Stdin = zero
		var stderr syncbuf.Buffer
		cmd.Stderr = &stderr
		err = cmd.Run()
		zero.Close()
		if err != nil {
			b.Fatalf("ssh: %v: %s", err, stderr.String())
		}
	}
}
