package gateway_test

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/sshca"
)

// TestHostCertificate: a gateway with a host certificate is trusted by a
// client that knows only the host CA, and still by one that pins its
// plain key (scripts made before the CA); a certificate of another CA,
// or for another name, is not.
func TestHostCertificate(t *testing.T) {
	dir := t.TempDir()
	hostCA, err := sshca.LoadOrCreateHostCA(filepath.Join(dir, "host_ca"))
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := sshca.LoadOrCreateHostCA(filepath.Join(dir, "other_ca"))
	if err != nil {
		t.Fatal(err)
	}
	var gwKey ssh.Signer
	_, _, _, addr, _, _ := setup(t, func(g *gateway.Gateway) {
		cert, _, err := hostCA.HostSigner(g.HostKey)
		if err != nil {
			t.Fatal(err)
		}
		g.HostCert, gwKey = cert, g.HostKey
	})
	// The handshake ends at authentication (no build is open): what
	// matters is whether the host key was accepted.
	dial := func(algos []string, cb ssh.HostKeyCallback) error {
		c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "build-1", HostKeyAlgorithms: algos, HostKeyCallback: cb,
			Auth: []ssh.AuthMethod{ssh.Password("x")}, Timeout: 10 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}
	var hostKeyErr = errors.New("host key refused")
	wrap := func(cb ssh.HostKeyCallback) ssh.HostKeyCallback {
		return func(h string, a net.Addr, k ssh.PublicKey) error {
			if err := cb(h, a, k); err != nil {
				return hostKeyErr
			}
			return nil
		}
	}
	for _, c := range []struct {
		name  string
		algos []string
		cb    ssh.HostKeyCallback
		ok    bool
	}{
		{"the host CA", []string{ssh.CertAlgoED25519v01}, sshca.HostKeyCallback(hostCA.PublicKey()), true},
		{"the plain key", []string{ssh.KeyAlgoED25519}, ssh.FixedHostKey(gwKey.PublicKey()), true},
		{"another CA", []string{ssh.CertAlgoED25519v01}, sshca.HostKeyCallback(otherCA.PublicKey()), false},
		{"the CA for another name", []string{ssh.CertAlgoED25519v01}, func(_ string, _ net.Addr, k ssh.PublicKey) error {
			return sshca.CheckHostCert(hostCA.PublicKey(), "other-host", k)
		}, false},
	} {
		err := dial(c.algos, wrap(c.cb))
		if refused := errors.Is(err, hostKeyErr); refused == c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
