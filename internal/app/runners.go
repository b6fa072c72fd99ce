package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/store"
)

// Runner liveness. Every runner (a server's own, `hangar runner`) beats
// every HeartbeatInterval; every server sweeps every SweepInterval and
// fails the builds of runners silent for longer than StaleAfter. A runner
// that stops answering has its builds failed within StaleAfter +
// SweepInterval of its last heartbeat (25 s).
const (
	HeartbeatInterval = 5 * time.Second
	StaleAfter        = 20 * time.Second
	SweepInterval     = 5 * time.Second
)

// serverIDFile is the data dir's file naming its server (and the server's
// own runner) among the processes that share a database.
const serverIDFile = "server-id"

var serverNameRE = regexp.MustCompile(`^server-[0-9a-f]{8,32}$`)

// serverName returns the name of the data dir's server, made on first use:
// "server-" and random hex digits.
func serverName(data string) (string, error) {
	p := filepath.Join(data, serverIDFile)
	if b, err := os.ReadFile(p); err == nil {
		name := strings.TrimSpace(string(b))
		if !serverNameRE.MatchString(name) {
			return "", fmt.Errorf("%s: want a name such as server-0123abcd; remove it to make a new one", p)
		}
		return name, nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	name := "server-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(p, []byte(name+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return name, nil
}

// newSession is a runner process's random session value (see
// store.StartRunner).
func newSession() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hostName is this host's name, for runner records.
func hostName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

// beat calls heartbeat every HeartbeatInterval until ctx ends. It returns
// an error only when the runner must stop (store.ErrReplaced); other
// failures are logged and tried again.
func beat(ctx context.Context, heartbeat func(context.Context) error, log *slog.Logger) error {
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, HeartbeatInterval)
		err := heartbeat(hctx)
		cancel()
		switch {
		case errors.Is(err, store.ErrReplaced):
			return fmt.Errorf("runner heartbeat: %w: stopping", err)
		case err != nil && ctx.Err() == nil:
			log.Warn("runner heartbeat failed; other servers fail this runner's builds if it stays silent", "err", err, "stale_after", StaleAfter)
		}
	}
}

// ReasonRunnerStale is why SSH access to a build ended when the build
// failed because its runner stopped answering: users see it.
const ReasonRunnerStale = "SSH access ended: the build failed because its runner stopped answering"

// sweep fails the builds of stale runners every SweepInterval until ctx
// ends.
func sweep(ctx context.Context, st *store.Store, log *slog.Logger) {
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stale, err := st.FailStaleRunners(ctx, StaleAfter)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("sweep stale runners", "err", err)
			}
			continue
		}
		for _, r := range stale {
			log.Warn("runner stopped answering: its builds failed", "runner", r.Name, "host", r.Host,
				"last_seen", r.LastSeen.Format(time.RFC3339), "builds", fmt.Sprint(r.Builds))
		}
		if len(stale) > 0 {
			// The dead runner cannot close its builds' access on separate
			// gateways, and a machine it left may still hold a tunnel:
			// close it now, not at a gateway control's next minute.
			if _, err := st.CloseEndedGatewayAccess(ctx, ReasonRunnerStale); err != nil && ctx.Err() == nil {
				log.Error("close the gateway access of the stale runners' builds", "err", err)
			}
		}
	}
}
