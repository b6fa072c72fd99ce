package runner

import (
	"context"
	"io"

	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/secrets"
)

// VaultSecrets opens builds' secrets from the server's own vault (the
// server's runner).
type VaultSecrets struct{ Vault *secrets.Vault }

// Resolve implements Secrets.
func (v VaultSecrets) Resolve(ctx context.Context, _ int64, app string, groups, keystores []string) (*secrets.Resolved, error) {
	return v.Vault.Resolve(ctx, app, groups, keystores)
}

// KeeperFiles keeps builds' files with the server's own keeper (the
// server's runner).
type KeeperFiles struct{ *artifact.Keeper }

// OpenCache implements Files.
func (k KeeperFiles) OpenCache(ctx context.Context, _ int64, app, workflow string) (io.ReadCloser, build.Cache, error) {
	return k.Keeper.OpenCache(ctx, app, workflow)
}
