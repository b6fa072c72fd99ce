package runner

import (
	"context"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

// Credentials issues a build's SSH credential when its access opens, and
// destroys it at the build's end. Whoever implements it holds the user
// CA, the sealer and the build's private key; the runner gets only what
// the builder needs. LocalCredentials does it in this process (the
// server's own runner); a runner on another host asks the servers
// (runnerapi.Client).
type Credentials interface {
	// Issue makes build id's user key and its certificate for principal
	// alias, valid until expires, and keeps them (the private key sealed,
	// for the user's script) with hostKey, the builder's SSH host key.
	Issue(ctx context.Context, id int64, alias string, expires time.Time, hostKey ssh.PublicKey) (*Issued, error)
	// Destroy erases build id's private key: no script or one-line URL
	// of the build works from then on.
	Destroy(ctx context.Context, id int64) error
}

// Issued is what the builder needs of a build's credential.
type Issued struct {
	UserCA  ssh.PublicKey // the user CA, which the builder trusts
	UserKey ssh.PublicKey // the build's user public key
}

// CredentialStore keeps builds' SSH credentials.
type CredentialStore interface {
	PutBuildSSH(ctx context.Context, id int64, c *store.BuildSSH) error
	DestroySSHKey(ctx context.Context, id int64) error
}

// LocalCredentials issues credentials with the user CA and the sealer at
// hand, and keeps them in Store.
type LocalCredentials struct {
	CA     *sshca.CA
	Sealer *sshca.Sealer
	Store  CredentialStore
}

// Issue implements Credentials.
func (c *LocalCredentials) Issue(ctx context.Context, id int64, alias string, expires time.Time, hostKey ssh.PublicKey) (*Issued, error) {
	cred, err := c.CA.Issue(alias, expires)
	if err != nil {
		return nil, err
	}
	err = c.Store.PutBuildSSH(ctx, id, &store.BuildSSH{
		PrivateKey:  c.Sealer.Seal(cred.PrivateKey, alias),
		Certificate: string(ssh.MarshalAuthorizedKey(cred.Certificate)),
		PublicKey:   string(ssh.MarshalAuthorizedKey(cred.PublicKey)),
		HostKey:     string(ssh.MarshalAuthorizedKey(hostKey)),
	})
	if err != nil {
		return nil, err
	}
	return &Issued{UserCA: c.CA.PublicKey(), UserKey: cred.PublicKey}, nil
}

// Destroy implements Credentials.
func (c *LocalCredentials) Destroy(ctx context.Context, id int64) error {
	return c.Store.DestroySSHKey(ctx, id)
}
