package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/store"
)

// RequestTimeout bounds how long a server waits for the server whose
// runner runs a build to answer a Continue or Extend it passed on.
const RequestTimeout = 15 * time.Second

// continueBuild resumes build id at its breakpoint: through this server's
// runner if it runs the build, else through the store, to the server
// whose runner does, or to the `hangar runner` that does, through the
// runner API (store.BuildRequest).
func (a *App) continueBuild(id int64, who string) error {
	if mine, err := a.ownBuild(id, func() error { return a.run.Continue(id, who) }); mine {
		return err
	}
	return askThroughStore(a.store, store.BuildRequest{BuildID: id, Kind: store.RequestContinue, Who: who})
}

// extendBuild gives build id's SSH access more time, like continueBuild.
func (a *App) extendBuild(id int64, by time.Duration, who string) error {
	if mine, err := a.ownBuild(id, func() error { return a.run.Extend(id, by, who) }); mine {
		return err
	}
	return askThroughStore(a.store, store.BuildRequest{BuildID: id, Kind: store.RequestExtend, By: by, Who: who})
}

// ownBuild runs fn if this server's runner runs build id, and says
// whether it answered: also when no runner, or this server's, claimed the
// build last (then ErrNotRunning); not when another runner did.
func (a *App) ownBuild(id int64, fn func() error) (bool, error) {
	if a.run != nil {
		if err := fn(); !errors.Is(err, runner.ErrNotRunning) {
			return true, err
		}
	}
	owner, err := a.store.BuildRunner(context.Background(), id)
	if err != nil || owner == 0 || (a.run != nil && owner == a.runnerID) {
		return true, runner.ErrNotRunning
	}
	return false, nil
}

// askThroughStore records r and waits for the build's runner (its server's
// serveRequests, or a hangar runner through the runner API) to answer.
func askThroughStore(st *store.Store, r store.BuildRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), RequestTimeout)
	defer cancel()
	wake, unsub := st.Subscribe(store.BuildRequestChanges)
	defer unsub()
	id, err := st.AddBuildRequest(ctx, r)
	if err != nil {
		return err
	}
	for {
		q, err := st.BuildRequestOf(ctx, id)
		if err == nil && q.Done {
			if q.Err != "" {
				return errors.New(q.Err)
			}
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			// Answered now, so that a late runner does not do it.
			_ = st.AnswerBuildRequest(context.Background(), id, "no answer in time")
			return fmt.Errorf("the build's runner did not answer within %v: try again", RequestTimeout)
		}
	}
}

// requestSource gives a runner the requests to its builds and takes its
// answers: the store (a server's own runner) or the runner API (a runner
// on another host).
type requestSource interface {
	PendingRequests(ctx context.Context) ([]store.BuildRequest, error)
	AnswerRequest(ctx context.Context, id int64, errText string) error
	// Subscribe(store.BuildRequestChanges) wakes at new requests.
	Subscribe(id int64) (<-chan struct{}, func())
}

// storeRequests are the requests to runner's builds in the store.
type storeRequests struct {
	*store.Store
	runner int64
}

func (s storeRequests) PendingRequests(ctx context.Context) ([]store.BuildRequest, error) {
	return s.PendingBuildRequests(ctx, s.runner)
}

func (s storeRequests) AnswerRequest(ctx context.Context, id int64, errText string) error {
	return s.AnswerBuildRequest(ctx, id, errText)
}

// serveRequests does the Continue and Extend requests that other servers
// passed on for the builds of this server's runner, until ctx ends.
func (a *App) serveRequests(ctx context.Context) {
	prune := func(ctx context.Context) {
		if err := a.store.PruneBuildRequests(ctx, time.Now().Add(-time.Hour)); err != nil && ctx.Err() == nil {
			a.log.Warn("prune build requests", "err", err)
		}
	}
	serveRequests(ctx, storeRequests{a.store, a.runnerID}, a.run, a.log, prune)
}

// serveRequests does the requests of src to run's builds until ctx ends;
// each minute it calls prune, if set.
func serveRequests(ctx context.Context, src requestSource, run *runner.Runner, log *slog.Logger, prune func(context.Context)) {
	wake, unsub := src.Subscribe(store.BuildRequestChanges)
	defer unsub()
	tick := time.NewTicker(time.Minute) // a missed wake-up; pruning
	defer tick.Stop()
	for {
		reqs, err := src.PendingRequests(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("read the requests to this runner's builds", "err", err)
		}
		for _, q := range reqs {
			var err error
			switch q.Kind {
			case store.RequestContinue:
				err = run.Continue(q.BuildID, q.Who)
			case store.RequestExtend:
				err = run.Extend(q.BuildID, q.By, q.Who)
			default:
				err = fmt.Errorf("unknown request %q", q.Kind)
			}
			text := ""
			if err != nil {
				text = err.Error()
			}
			if err := src.AnswerRequest(ctx, q.ID, text); err != nil && ctx.Err() == nil {
				log.Warn("answer a request to a build", "build", q.BuildID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
			if prune != nil {
				prune(ctx)
			}
		}
	}
}
