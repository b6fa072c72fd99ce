// Package sshkeys holds the SSH keys of one Hangar installation: the user
// CA (builds' certificates), the host CA (gateways' certificates), the
// sealer of builds' private keys and the one-line URL key. One server
// keeps them in files of its data directory; several servers and gateways
// of one PostgreSQL share them through the database, sealed with the
// secrets key they share (docs/deploy.md).
package sshkeys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

// Keys are an installation's SSH keys.
type Keys struct {
	UserCA *sshca.CA
	HostCA *sshca.HostCA
	// Sealer seals builds' private keys in the store.
	Sealer *sshca.Sealer
	// URLKey signs the one-line SSH URLs.
	URLKey []byte

	hostCAPEM []byte // HostCA's private key, OpenSSH PEM
}

// WriteGatewayFiles writes, in dir (<data>/ssh), the files a separate
// gateway is given (hangar gateway --host-ca, --user-ca): host_ca, the
// host CA's private key (0600), and user_ca.pub, the user CA's public
// key. Files already right are left alone.
func (k *Keys) WriteGatewayFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{hostCAName, k.hostCAPEM, 0o600},
		{userCAName + ".pub", ssh.MarshalAuthorizedKey(k.UserCA.PublicKey()), 0o644},
	} {
		path := filepath.Join(dir, f.name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.data) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	return nil
}

// The keys' names: their files in <data>/ssh and their rows in the store.
const (
	userCAName = "user_ca"
	hostCAName = "host_ca"
	sealName   = "seal.key"
	urlName    = "url.key"
)

// FromFiles reads the keys from dir (<data>/ssh), making each missing one:
// a single server's keys.
func FromFiles(dir string) (*Keys, error) {
	ca, err := sshca.LoadOrCreateCA(filepath.Join(dir, userCAName))
	if err != nil {
		return nil, err
	}
	hostCA, err := sshca.LoadOrCreateHostCA(filepath.Join(dir, hostCAName))
	if err != nil {
		return nil, err
	}
	hostPEM, err := os.ReadFile(filepath.Join(dir, hostCAName))
	if err != nil {
		return nil, err
	}
	sealer, err := sshca.LoadOrCreateSealer(filepath.Join(dir, sealName))
	if err != nil {
		return nil, err
	}
	urlKey, err := sshca.LoadOrCreateSecret(filepath.Join(dir, urlName))
	if err != nil {
		return nil, err
	}
	return &Keys{UserCA: ca, HostCA: hostCA, Sealer: sealer, URLKey: urlKey, hostCAPEM: hostPEM}, nil
}

// ErrOtherSecretsKey says the database's keys do not open with this
// process's secrets key.
var ErrOtherSecretsKey = errors.New("the SSH keys in the database were sealed with another secrets key: every server and gateway of one database must be given the same --secrets-key (compare the fingerprints they log)")

// Shared returns the keys of st's database, opened with secrets (the
// secrets key). If create, a key the database does not have yet is made
// and stored, race-safely (of servers starting together, the first
// insert wins and all use it): the file of seedDir (<data>/ssh) if there
// is one, so that a server's existing keys become the shared ones, else
// a new key. Without create a missing key is an error (a gateway waits
// for a server to make them).
func Shared(ctx context.Context, st *store.Store, secrets *sshca.Sealer, create bool, seedDir string) (*Keys, error) {
	get := func(name string, fresh func() ([]byte, error)) ([]byte, error) {
		return shared(ctx, st, secrets, name, create, seedDir, fresh)
	}
	newKey := func(comment string) func() ([]byte, error) {
		return func() ([]byte, error) {
			_, pem, err := sshca.NewKey(comment)
			return pem, err
		}
	}
	newSecret := func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	}
	signer := func(name, comment string) (ssh.Signer, []byte, error) {
		pem, err := get(name, newKey(comment))
		if err != nil {
			return nil, nil, err
		}
		s, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			return nil, nil, fmt.Errorf("the shared SSH key %s is not a private key", name)
		}
		return s, pem, nil
	}
	ca, _, err := signer(userCAName, "hangar user CA")
	if err != nil {
		return nil, err
	}
	// Its public half too, for gateways (GatewayCAs): they never open the
	// private key. Every candidate is the same, made from the agreed key.
	if create {
		pub := ssh.MarshalAuthorizedKey(ca.PublicKey())
		// (Not seeded from a file: <data>/ssh/user_ca.pub may be older.)
		got, err := shared(ctx, st, secrets, userCAName+".pub", true, "", func() ([]byte, error) { return pub, nil })
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(got, pub) {
			return nil, fmt.Errorf("the shared SSH key %s.pub is not the public half of %s", userCAName, userCAName)
		}
	}
	hostCA, hostPEM, err := signer(hostCAName, "hangar host CA")
	if err != nil {
		return nil, err
	}
	seal, err := get(sealName, newSecret)
	if err != nil {
		return nil, err
	}
	sealer, err := sshca.NewSealer(seal)
	if err != nil {
		return nil, fmt.Errorf("the shared SSH key %s: %w", sealName, err)
	}
	urlKey, err := get(urlName, newSecret)
	if err != nil {
		return nil, err
	}
	if len(urlKey) != 32 {
		return nil, fmt.Errorf("the shared SSH key %s has %d bytes, not 32", urlName, len(urlKey))
	}
	return &Keys{UserCA: sshca.NewCA(ca), HostCA: sshca.NewHostCA(hostCA), Sealer: sealer, URLKey: urlKey, hostCAPEM: hostPEM}, nil
}

// shared returns the shared key name, opened with secrets; with create it
// first stores (unless there is one) the seed file's or fresh's key.
func shared(ctx context.Context, st *store.Store, secrets *sshca.Sealer, name string, create bool, seedDir string, fresh func() ([]byte, error)) ([]byte, error) {
	var sealed []byte
	if create {
		var plain []byte
		if seedDir != "" {
			b, err := os.ReadFile(filepath.Join(seedDir, name))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			plain = b
		}
		if plain == nil {
			b, err := fresh()
			if err != nil {
				return nil, err
			}
			plain = b
		}
		sealed = secrets.Seal(plain, label(name))
	}
	got, err := st.SharedKey(ctx, name, sealed)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("the database has no shared SSH key %s yet: start a hangar server on it first", name)
	}
	if err != nil {
		return nil, err
	}
	plain, err := secrets.Open(got, label(name))
	if err != nil {
		return nil, ErrOtherSecretsKey
	}
	return plain, nil
}

// GatewayCAs returns what a gateway needs of the shared keys, which a
// server made: the host CA and the user CA's public key (not its private
// key, which the database keeps apart).
func GatewayCAs(ctx context.Context, st *store.Store, secrets *sshca.Sealer) (*sshca.HostCA, ssh.PublicKey, error) {
	pem, err := shared(ctx, st, secrets, hostCAName, false, "", nil)
	if err != nil {
		return nil, nil, err
	}
	hostCA, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return nil, nil, fmt.Errorf("the shared SSH key %s is not a private key", hostCAName)
	}
	pub, err := shared(ctx, st, secrets, userCAName+".pub", false, "", nil)
	if err != nil {
		return nil, nil, err
	}
	userCA, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("the shared SSH key %s.pub is not a public key", userCAName)
	}
	return sshca.NewHostCA(hostCA), userCA, nil
}

func label(name string) string { return "hangar shared key " + name }
