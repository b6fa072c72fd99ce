package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/sshalgo/sshalgotest"
)

// TestAlgorithms reads what the server offers on the wire: exactly
// Hangar's algorithms (package sshalgo) and strict key exchange, though its
// Config names none; a client offering only other ones is refused;
// ssh-audit finds nothing to fault.
func TestAlgorithms(t *testing.T) {
	h := newHarness(t)
	sshalgotest.CheckServer(t, h.addr, ssh.KeyAlgoED25519)
	sshalgotest.CheckRefuses(t, h.addr)
	sshalgotest.Audit(t, h.addr)
}

// TestAlgorithmsOpenSSH: Debian's OpenSSH client (9.2, no ML-KEM)
// negotiates curve25519, an AEAD cipher and strict key exchange (Terrapin)
// with the server, with its own defaults.
func TestAlgorithmsOpenSSH(t *testing.T) {
	h := newHarness(t)
	res := h.ssh("", sshTo("true", "-vvv")...)
	if res.code != 0 {
		t.Fatalf("ssh: exit %d: %s", res.code, res.stderr)
	}
	for _, want := range []string{
		"kex: algorithm: curve25519-sha256",
		"kex: server->client cipher: chacha20-poly1305@openssh.com",
		"kex: client->server cipher: chacha20-poly1305@openssh.com",
		"host key algorithm: ssh-ed25519",
		"will use strict KEX ordering",
		"server-sig-algs=<ssh-ed25519>",
	} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("ssh -vvv does not say %q", want)
		}
	}
	if t.Failed() {
		t.Logf("ssh -vvv: %s", res.stderr)
	}
}

// TestHostCertificate: with an ed25519 host certificate the server offers
// it as its host key algorithm.
func TestHostCertificate(t *testing.T) {
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caPriv)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	host, _ := ssh.NewSignerFromKey(hostPriv)
	cert := &ssh.Certificate{Key: host.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"build-1"},
		ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, host)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
		return nil, errors.New("refused")
	}}
	cfg.AddHostKey(certSigner)
	srv := &Server{Config: cfg}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	sshalgotest.CheckServer(t, l.Addr().String(), ssh.CertAlgoED25519v01)
}
