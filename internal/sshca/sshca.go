// Package sshca holds Hangar's SSH credentials: the user certificate
// authority, host keys, and the fresh key and certificate each SSH build
// gets. It also seals private keys for storage at rest.
package sshca

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

// LoadOrCreateKey reads an OpenSSH ed25519 private key file, creating it
// (mode 0600) on first use.
func LoadOrCreateKey(path, comment string) (ssh.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s is not a valid private key: move it away to make a new one", path)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	signer, pemBytes, err := NewKey(comment)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		return nil, err
	}
	return signer, nil
}

// NewKey makes an ed25519 key and returns it with its OpenSSH PEM encoding.
func NewKey(comment string) (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return signer, pem.EncodeToMemory(block), nil
}

// CA is the user certificate authority.
type CA struct {
	signer ssh.Signer
}

// LoadOrCreateCA reads the CA key at path, creating it on first use.
func LoadOrCreateCA(path string) (*CA, error) {
	s, err := LoadOrCreateKey(path, "hangar user CA")
	if err != nil {
		return nil, err
	}
	return &CA{signer: s}, nil
}

// PublicKey is the CA's public key.
func (c *CA) PublicKey() ssh.PublicKey { return c.signer.PublicKey() }

// Credential is one build's user credential.
type Credential struct {
	// PrivateKey is the OpenSSH PEM private key: a secret.
	PrivateKey []byte
	// PublicKey is its public half.
	PublicKey ssh.PublicKey
	// Certificate is signed by the CA for the build's principal.
	Certificate *ssh.Certificate
}

// Issue makes a fresh key and a user certificate for principal, valid from
// now (less a minute for clock skew) until validBefore.
func (c *CA) Issue(principal string, validBefore time.Time) (*Credential, error) {
	signer, pemBytes, err := NewKey(principal)
	if err != nil {
		return nil, err
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, err
	}
	cert := &ssh.Certificate{
		Key:             signer.PublicKey(),
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           "hangar " + principal,
		ValidPrincipals: []string{principal},
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(validBefore.Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty":              "",
			"permit-port-forwarding":  "",
			"permit-agent-forwarding": "",
		}},
	}
	if err := cert.SignCert(rand.Reader, c.signer); err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return &Credential{PrivateKey: pemBytes, PublicKey: signer.PublicKey(), Certificate: cert}, nil
}

// Checker verifies a user key for one principal: either a certificate of
// the CA naming the principal, valid now, for exactly the build's key, or
// exactly the plain key.
type Checker struct {
	CA        ssh.PublicKey
	Principal string
	Key       ssh.PublicKey // the build's plain public key
}

// Check reports whether key is an accepted credential of c.Principal.
func (c *Checker) Check(key ssh.PublicKey) error {
	if cert, ok := key.(*ssh.Certificate); ok {
		checker := ssh.CertChecker{
			IsUserAuthority: func(auth ssh.PublicKey) bool { return c.CA != nil && keysEqual(auth, c.CA) },
		}
		if cert.CertType != ssh.UserCert {
			return errors.New("not a user certificate")
		}
		if !checker.IsUserAuthority(cert.SignatureKey) {
			return errors.New("certificate signed by an unknown authority")
		}
		if c.Key == nil || !keysEqual(cert.Key, c.Key) {
			return errors.New("certificate of another key")
		}
		return checker.CheckCert(c.Principal, cert)
	}
	if c.Key != nil && keysEqual(key, c.Key) {
		return nil
	}
	return errors.New("unknown key")
}

func keysEqual(a, b ssh.PublicKey) bool {
	return a.Type() == b.Type() && string(a.Marshal()) == string(b.Marshal())
}

// Sealer encrypts secrets at rest with AES-256-GCM under a key file.
type Sealer struct {
	aead cipher.AEAD
}

// LoadOrCreateSealer reads the 32-byte key at path, creating it on first use.
func LoadOrCreateSealer(path string) (*Sealer, error) {
	key, err := LoadOrCreateSecret(path)
	if err != nil {
		return nil, err
	}
	return NewSealer(key)
}

// NewSealer returns a Sealer with a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("a sealing key has 32 bytes, not %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain; label binds the result to its use (e.g. "build-12").
func (s *Sealer) Seal(plain []byte, label string) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plain, []byte(label))
}

// Open decrypts what Seal made with the same label.
func (s *Sealer) Open(sealed []byte, label string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed secret is too short")
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(label))
	if err != nil {
		return nil, errors.New("sealed secret does not open: wrong key or label")
	}
	return plain, nil
}

// LoadOrCreateSecret reads a 32-byte secret key file, creating it (mode
// 0600) on first use.
func LoadOrCreateSecret(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		return key, os.WriteFile(path, key, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("%s must hold 32 bytes: move it away to make a new one", path)
	}
	return key, nil
}

// GatewayPrincipal is the host name every gateway's host certificate
// names: the generated ssh_config reaches the gateway under it
// (HostKeyAlias), and gateways check it on each other's certificates
// (the peer link).
const GatewayPrincipal = "hangar-gateway"

// HostCA is the host certificate authority: every gateway presents a
// host certificate it signed, and the generated known_hosts trusts it
// (@cert-authority), so that whichever gateway answers is trusted.
type HostCA struct {
	signer ssh.Signer
}

// LoadOrCreateHostCA reads the host CA key at path, creating it on first
// use. Gateways of one installation must share it (copy the file).
func LoadOrCreateHostCA(path string) (*HostCA, error) {
	s, err := LoadOrCreateKey(path, "hangar host CA")
	if err != nil {
		return nil, err
	}
	return &HostCA{signer: s}, nil
}

// LoadHostCA reads the host CA key at path; it must exist.
func LoadHostCA(path string) (*HostCA, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("host CA: %w (copy the server's <data>/ssh/host_ca here)", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("host CA %s is not a valid private key", path)
	}
	return &HostCA{signer: s}, nil
}

// PublicKey is the CA's public key.
func (c *HostCA) PublicKey() ssh.PublicKey { return c.signer.PublicKey() }

// HostCertValidity is how long a gateway's host certificate is valid;
// a gateway signs a new one before it runs out.
const HostCertValidity = 7 * 24 * time.Hour

// SignHost signs a host certificate for key, naming principals, valid
// from now (less a minute for clock skew) for validity.
func (c *HostCA) SignHost(key ssh.PublicKey, principals []string, validity time.Duration) (*ssh.Certificate, error) {
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, err
	}
	cert := &ssh.Certificate{
		Key:             key,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.HostCert,
		KeyId:           "hangar gateway",
		ValidPrincipals: principals,
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(time.Now().Add(validity).Unix()),
	}
	if err := cert.SignCert(rand.Reader, c.signer); err != nil {
		return nil, fmt.Errorf("sign host certificate: %w", err)
	}
	return cert, nil
}

// HostSigner signs a host certificate for signer's key (principal
// GatewayPrincipal and extra) and returns a signer presenting it.
func (c *HostCA) HostSigner(signer ssh.Signer, extra ...string) (ssh.Signer, *ssh.Certificate, error) {
	cert, err := c.SignHost(signer.PublicKey(), append([]string{GatewayPrincipal}, extra...), HostCertValidity)
	if err != nil {
		return nil, nil, err
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, nil, err
	}
	return cs, cert, nil
}

// CheckHostCert verifies that key is a host certificate of ca, valid
// now, naming principal.
func CheckHostCert(ca ssh.PublicKey, principal string, key ssh.PublicKey) error {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return errors.New("not a host certificate")
	}
	if cert.CertType != ssh.HostCert {
		return errors.New("not a host certificate")
	}
	if ca == nil || !keysEqual(cert.SignatureKey, ca) {
		return errors.New("host certificate signed by an unknown authority")
	}
	checker := ssh.CertChecker{}
	return checker.CheckCert(principal, cert)
}

// HostKeyCallback accepts a server whose host certificate ca signed for
// GatewayPrincipal.
func HostKeyCallback(ca ssh.PublicKey) ssh.HostKeyCallback {
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		return CheckHostCert(ca, GatewayPrincipal, key)
	}
}

// NewCA is the user CA of signer (a key read from elsewhere than a file,
// such as the database's shared keys).
func NewCA(signer ssh.Signer) *CA { return &CA{signer: signer} }

// NewHostCA is the host CA of signer.
func NewHostCA(signer ssh.Signer) *HostCA { return &HostCA{signer: signer} }
