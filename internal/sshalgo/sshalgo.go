// Package sshalgo is the one list of SSH algorithms that Hangar's SSH
// servers (the public gateway, the builder's SSH server, the builder link)
// offer and that its own SSH client (the builder's link to the server)
// asks for: hybrid post-quantum and curve25519 key exchange,
// ed25519 host and user keys and certificates, AEAD ciphers, and SHA-2
// encrypt-then-MAC MACs. Strict key exchange (the Terrapin fix,
// kex-strict-*-v00@openssh.com) is on in x/crypto/ssh for every
// connection; nothing here can turn it off.
//
// OpenSSH 9.2 (Debian 12) has no mlkem768x25519-sha256 and negotiates
// curve25519-sha256; OpenSSH 9.9 and later negotiate mlkem768x25519-sha256.
package sshalgo

import (
	"fmt"
	"slices"

	"golang.org/x/crypto/ssh"
)

// KeyExchanges are the key exchanges offered, best first.
// curve25519-sha256@libssh.org is the same key exchange as
// curve25519-sha256 under its older name (OpenSSH before 7.4).
var KeyExchanges = []string{
	ssh.KeyExchangeMLKEM768X25519,
	ssh.KeyExchangeCurve25519,
	"curve25519-sha256@libssh.org",
}

// Ciphers are the ciphers offered, all AEAD. A server's order does not
// matter (the client's first choice that the server offers wins); for
// Hangar's Go clients AES-GCM comes first because it uses AES-NI, where
// x/crypto's ChaCha20 has no assembly on amd64. OpenSSH prefers
// chacha20-poly1305, so the generated ssh_config puts AES-GCM first
// (see internal/connect).
var Ciphers = []string{
	ssh.CipherAES128GCM,
	ssh.CipherAES256GCM,
	ssh.CipherChaCha20Poly1305,
}

// MACs are the MACs offered. With AEAD ciphers only, no MAC is ever
// negotiated; the list must not be empty, and holds only SHA-2
// encrypt-then-MAC.
var MACs = []string{
	ssh.HMACSHA256ETM,
	ssh.HMACSHA512ETM,
}

// HostKeyAlgorithms are the host key algorithms Hangar's clients accept
// and its servers' host keys may have: ed25519 keys and certificates.
var HostKeyAlgorithms = []string{
	ssh.CertAlgoED25519v01,
	ssh.KeyAlgoED25519,
}

// PublicKeyAuthAlgorithms are the user key algorithms the servers accept:
// ed25519, plain or as a certificate's key (x/crypto matches a
// certificate by its key's algorithm). Hangar issues only ed25519 keys
// (internal/sshca).
var PublicKeyAuthAlgorithms = []string{
	ssh.KeyAlgoED25519,
}

// apply sets c's algorithm lists, each to a copy (x/crypto keeps the slice).
func apply(c *ssh.Config) {
	c.KeyExchanges = slices.Clone(KeyExchanges)
	c.Ciphers = slices.Clone(Ciphers)
	c.MACs = slices.Clone(MACs)
}

// Server sets cfg's algorithms (key exchange, ciphers, MACs, user key
// algorithms) to Hangar's, replacing what cfg had. Add host keys with
// AddHostKey.
func Server(cfg *ssh.ServerConfig) {
	apply(&cfg.Config)
	cfg.PublicKeyAuthAlgorithms = slices.Clone(PublicKeyAuthAlgorithms)
}

// Client sets cfg's algorithms (key exchange, ciphers, MACs, host key
// algorithms) to Hangar's, replacing what cfg had.
func Client(cfg *ssh.ClientConfig) {
	apply(&cfg.Config)
	cfg.HostKeyAlgorithms = slices.Clone(HostKeyAlgorithms)
}

// CheckHostKey refuses a host key that is not ed25519 (a plain key or a
// host certificate of an ed25519 key).
func CheckHostKey(s ssh.Signer) error {
	if s == nil {
		return fmt.Errorf("no host key")
	}
	if t := s.PublicKey().Type(); !slices.Contains(HostKeyAlgorithms, t) {
		return fmt.Errorf("the host key is %s: Hangar's SSH servers use ed25519 host keys only (ssh-keygen -t ed25519)", t)
	}
	return nil
}

// AddHostKey checks s (CheckHostKey) and adds it to cfg.
func AddHostKey(cfg *ssh.ServerConfig, s ssh.Signer) error {
	if err := CheckHostKey(s); err != nil {
		return err
	}
	cfg.AddHostKey(s)
	return nil
}
