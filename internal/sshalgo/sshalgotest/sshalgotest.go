// Package sshalgotest checks on the wire which SSH algorithms a server
// offers: it reads the server's first KEXINIT over a plain TCP connection,
// tries handshakes that offer only algorithms Hangar refuses, and runs
// ssh-audit.
package sshalgotest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/sshalgo"
)

// KexInit is a server's SSH_MSG_KEXINIT (RFC 4253, section 7.1).
type KexInit struct {
	KeyExchanges            []string
	HostKeyAlgorithms       []string
	CiphersClientServer     []string
	CiphersServerClient     []string
	MACsClientServer        []string
	MACsServerClient        []string
	CompressionClientServer []string
	CompressionServerClient []string
	LanguagesClientServer   []string
	LanguagesServerClient   []string
	FirstKexFollows         bool
}

// ReadKexInit connects to addr, sends a version line and returns the
// server's version line and its first KEXINIT, which is sent in clear.
func ReadKexInit(addr string) (version string, ki *KexInit, err error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", nil, err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, "SSH-2.0-sshalgotest\r\n"); err != nil {
		return "", nil, err
	}
	br := bufio.NewReader(nc)
	for { // RFC 4253 4.2: lines before the version line are allowed
		line, err := br.ReadString('\n')
		if err != nil {
			return "", nil, fmt.Errorf("read the version line: %w", err)
		}
		if strings.HasPrefix(line, "SSH-") {
			version = strings.TrimRight(line, "\r\n")
			break
		}
	}
	var head [5]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return "", nil, fmt.Errorf("read the first packet: %w", err)
	}
	n, pad := binary.BigEndian.Uint32(head[:4]), uint32(head[4])
	if n > 256<<10 || pad+1 > n {
		return "", nil, fmt.Errorf("implausible packet length %d (padding %d)", n, pad)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(br, body); err != nil {
		return "", nil, fmt.Errorf("read the first packet: %w", err)
	}
	payload := body[:len(body)-int(pad)]
	ki, err = parseKexInit(payload)
	return version, ki, err
}

const msgKexInit = 20

func parseKexInit(p []byte) (*KexInit, error) {
	if len(p) < 17 || p[0] != msgKexInit {
		return nil, errors.New("the first packet is not a KEXINIT")
	}
	p = p[17:] // message number and cookie
	ki := &KexInit{}
	for _, dst := range []*[]string{
		&ki.KeyExchanges, &ki.HostKeyAlgorithms,
		&ki.CiphersClientServer, &ki.CiphersServerClient,
		&ki.MACsClientServer, &ki.MACsServerClient,
		&ki.CompressionClientServer, &ki.CompressionServerClient,
		&ki.LanguagesClientServer, &ki.LanguagesServerClient,
	} {
		if len(p) < 4 {
			return nil, errors.New("KEXINIT is truncated")
		}
		n := binary.BigEndian.Uint32(p)
		if uint32(len(p)-4) < n {
			return nil, errors.New("KEXINIT is truncated")
		}
		if s := string(p[4 : 4+n]); s != "" {
			*dst = strings.Split(s, ",")
		}
		p = p[4+n:]
	}
	if len(p) < 5 {
		return nil, errors.New("KEXINIT is truncated")
	}
	ki.FirstKexFollows = p[0] != 0
	return ki, nil
}

// StrictKexServer is the pseudo key exchange by which a server says it
// does strict key exchange (OpenSSH's fix for Terrapin, CVE-2023-48795).
const StrictKexServer = "kex-strict-s-v00@openssh.com"

// CheckServer asserts that the SSH server at addr offers exactly
// Hangar's algorithms (package sshalgo), strict key exchange, no
// compression, and exactly hostKeyAlgos as host key algorithms.
func CheckServer(t testing.TB, addr string, hostKeyAlgos ...string) {
	t.Helper()
	_, ki, err := ReadKexInit(addr)
	if err != nil {
		t.Fatalf("KEXINIT of %s: %v", addr, err)
	}
	want := map[string][2][]string{
		"key exchange":              {ki.KeyExchanges, append(slices.Clone(sshalgo.KeyExchanges), StrictKexServer)},
		"host key":                  {ki.HostKeyAlgorithms, hostKeyAlgos},
		"cipher client to server":   {ki.CiphersClientServer, sshalgo.Ciphers},
		"cipher server to client":   {ki.CiphersServerClient, sshalgo.Ciphers},
		"MAC client to server":      {ki.MACsClientServer, sshalgo.MACs},
		"MAC server to client":      {ki.MACsServerClient, sshalgo.MACs},
		"compression client to srv": {ki.CompressionClientServer, {"none"}},
		"compression srv to client": {ki.CompressionServerClient, {"none"}},
	}
	for what, gw := range want {
		if !slices.Equal(gw[0], gw[1]) {
			t.Errorf("%s offers %s %q, want %q", addr, what, gw[0], gw[1])
		}
	}
	if ki.FirstKexFollows {
		t.Errorf("%s: first_kex_packet_follows is set", addr)
	}
}

// Refused are algorithms x/crypto implements (so a Go client can offer
// them) that Hangar's servers must refuse, by kind.
var Refused = struct{ KeyExchanges, Ciphers, HostKeys []string }{
	KeyExchanges: []string{ssh.KeyExchangeECDHP256, ssh.KeyExchangeECDHP384, ssh.KeyExchangeECDHP521,
		ssh.KeyExchangeDH14SHA256, ssh.KeyExchangeDH16SHA512, ssh.KeyExchangeDHGEXSHA256, ssh.InsecureKeyExchangeDH14SHA1},
	Ciphers:  []string{ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR, ssh.InsecureCipherAES128CBC, ssh.InsecureCipherTripleDESCBC},
	HostKeys: []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSA},
}

// CheckRefuses asserts that a handshake with the server at addr fails
// for want of a common algorithm when the client offers only refused
// ones, one kind at a time (with Hangar's algorithms for the others):
// key exchanges, ciphers and host key algorithms.
func CheckRefuses(t testing.TB, addr string) {
	t.Helper()
	probe := func(what string, set func(*ssh.ClientConfig)) {
		cfg := &ssh.ClientConfig{User: "probe", HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
		sshalgo.Client(cfg)
		set(cfg)
		c, err := ssh.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
			t.Errorf("%s: a client offering only %s got in", addr, what)
			return
		}
		if !strings.Contains(err.Error(), "no common algorithm") {
			t.Errorf("%s: a client offering only %s: %v, want no common algorithm", addr, what, err)
		}
	}
	probe(fmt.Sprintf("key exchanges %q", Refused.KeyExchanges), func(c *ssh.ClientConfig) { c.KeyExchanges = Refused.KeyExchanges })
	probe(fmt.Sprintf("ciphers %q", Refused.Ciphers), func(c *ssh.ClientConfig) { c.Ciphers = Refused.Ciphers })
	// MACs are negotiated only with a non-AEAD cipher, which none of
	// Hangar's is: CheckServer checks the MACs offered.
	probe(fmt.Sprintf("host keys %q", Refused.HostKeys), func(c *ssh.ClientConfig) { c.HostKeyAlgorithms = Refused.HostKeys })
}

// auditUnknown are the algorithms that ssh-audit 2.5.0 (Debian 12) predates
// and warns of as "unknown algorithm".
var auditUnknown = []string{ssh.KeyExchangeMLKEM768X25519, StrictKexServer}

// Audit runs ssh-audit (Debian's package) on the SSH server at addr and
// asserts that it finds no failure and no warning, but for algorithms it
// does not know (auditUnknown).
func Audit(t testing.TB, addr string) {
	t.Helper()
	if _, err := exec.LookPath("ssh-audit"); err != nil {
		t.Fatal("ssh-audit not found: apt-get install ssh-audit (make testdeps installs it)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Its exit status says warnings, which the unknown algorithms are:
	// the output is read instead.
	out, _ := exec.CommandContext(ctx, "ssh-audit", "-n", "-p", port, host).CombinedOutput()
	if !strings.Contains(string(out), "(kex) "+ssh.KeyExchangeCurve25519+" ") {
		t.Fatalf("ssh-audit %s did not audit it:\n%s", addr, out)
	}
	var algo string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "(") {
			if f := strings.Fields(line); len(f) > 1 {
				algo = f[1]
			}
		}
		switch {
		case strings.Contains(line, "[fail]"):
			t.Errorf("ssh-audit %s: %s", addr, strings.TrimSpace(line))
		case strings.Contains(line, "[warn]"):
			if !strings.Contains(line, "[warn] unknown algorithm") || !slices.Contains(auditUnknown, algo) {
				t.Errorf("ssh-audit %s: %s", addr, strings.TrimSpace(line))
			}
		}
	}
	if t.Failed() {
		t.Logf("ssh-audit %s:\n%s", addr, out)
	}
}
