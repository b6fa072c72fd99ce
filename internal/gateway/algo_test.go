package gateway_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/sshalgo/sshalgotest"
)

// TestAlgorithms reads what the gateway and the builder link offer on the
// wire: exactly Hangar's algorithms (package sshalgo) and strict key
// exchange; a client offering only other ones is refused; ssh-audit finds
// nothing to fault.
func TestAlgorithms(t *testing.T) {
	_, _, _, gwAddr, linkAddr, _ := setup(t)
	for _, addr := range []string{gwAddr, linkAddr} {
		sshalgotest.CheckServer(t, addr, ssh.KeyAlgoED25519)
		sshalgotest.CheckRefuses(t, addr)
		sshalgotest.Audit(t, addr)
	}
}

// TestRefusesOtherHostKeys: a gateway with a host key that is not ed25519
// does not serve.
func TestRefusesOtherHostKeys(t *testing.T) {
	key := filepath.Join(t.TempDir(), "ecdsa")
	runOK(t, "ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", key)
	signer := loadSigner(t, key)
	gw := &gateway.Gateway{HostKey: signer}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = gw.Serve(l)
	if err == nil || !strings.Contains(err.Error(), "ed25519") {
		t.Fatalf("Serve with an ECDSA host key: %v, want an error naming ed25519", err)
	}
	if _, aerr := l.Accept(); aerr == nil {
		t.Error("Serve left its listener open")
	}
}
