package sshalgo

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestListsAreImplemented: x/crypto implements every algorithm listed,
// and drops none of them (it silently ignores the names it does not know).
func TestListsAreImplemented(t *testing.T) {
	supported := ssh.SupportedAlgorithms()
	for _, l := range []struct {
		what       string
		have, impl []string
	}{
		{"key exchange", KeyExchanges, append(supported.KeyExchanges, "curve25519-sha256@libssh.org")},
		{"cipher", Ciphers, supported.Ciphers},
		{"MAC", MACs, supported.MACs},
		{"host key", HostKeyAlgorithms, supported.HostKeys},
		{"user key", PublicKeyAuthAlgorithms, supported.PublicKeyAuths},
	} {
		for _, a := range l.have {
			if !slices.Contains(l.impl, a) {
				t.Errorf("%s %s is not implemented by x/crypto/ssh", l.what, a)
			}
		}
	}
}

func TestCheckHostKey(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ed, _ := ssh.NewSignerFromKey(edPriv)
	if err := CheckHostKey(ed); err != nil {
		t.Errorf("ed25519: %v", err)
	}
	cert := &ssh.Certificate{Key: ed.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"build-1"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ed); err != nil {
		t.Fatal(err)
	}
	certSigner, _ := ssh.NewCertSigner(cert, ed)
	if err := CheckHostKey(certSigner); err != nil {
		t.Errorf("ed25519 host certificate: %v", err)
	}
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec, _ := ssh.NewSignerFromKey(ecPriv)
	if err := CheckHostKey(ec); err == nil || !strings.Contains(err.Error(), "ecdsa-sha2-nistp256") {
		t.Errorf("ECDSA: %v, want refused, naming its type", err)
	}
	if err := CheckHostKey(nil); err == nil {
		t.Error("nil accepted")
	}
}
