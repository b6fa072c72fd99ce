package runner

import (
	"context"
	"errors"
	"time"

	"github.com/hangar-ci/hangar/internal/store"
)

// pollInterval is how often the runner looks at the queue and at cancel
// requests without being woken (a store in another process does not wake
// it).
const pollInterval = 2 * time.Second

// Run claims and runs builds until ctx ends, then stops every running build
// (marking it failed) and waits for their machines to be destroyed.
func (r *Runner) Run(ctx context.Context) error {
	wake, unsub := r.cfg.Store.Subscribe(0)
	defer unsub()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	slots := make(chan struct{}, r.cfg.MaxBuilds)
	for {
		r.claimAll(ctx, slots)
		r.cancelRequested(ctx)
		select {
		case <-ctx.Done():
			r.mu.Lock()
			for _, j := range r.running {
				j.cancel(errShutdown)
			}
			r.mu.Unlock()
			r.wg.Wait()
			return nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// claimAll starts queued builds while a slot is free. A claimed build is
// registered before its goroutine starts, so that the cancelRequested after
// it sees every build this runner has claimed.
func (r *Runner) claimAll(ctx context.Context, slots chan struct{}) {
	for {
		select {
		case slots <- struct{}{}:
		default:
			return
		}
		b, spec, err := r.cfg.Store.ClaimBuild(ctx)
		if err != nil {
			<-slots
			if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
				r.log.Error("claim build", "err", err)
			}
			return
		}
		j := r.newJob(b, spec)
		r.mu.Lock()
		r.running[b.ID] = j
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-slots }()
			j.execute()
			r.mu.Lock()
			delete(r.running, b.ID)
			r.mu.Unlock()
		}()
	}
}

// cancelRequested cancels the running builds that the server asked to
// cancel (through the store, so the server never writes a running build).
func (r *Runner) cancelRequested(ctx context.Context) {
	ids, err := r.cfg.Store.CancelRequests(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("read cancel requests", "err", err)
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if j := r.running[id]; j != nil {
			j.cancel(errCanceled)
		}
	}
}

// ErrNotRunning is Continue's error for a build this runner does not run.
var ErrNotRunning = errors.New("the build is not running")

// Continue resumes build id if it is paused at a breakpoint; who asked is
// written in its log. A build that is not paused ignores it.
func (r *Runner) Continue(id int64, who string) error {
	r.mu.Lock()
	j := r.running[id]
	r.mu.Unlock()
	if j == nil {
		return ErrNotRunning
	}
	select {
	case j.resume <- who:
	default: // one request is on its way already
	}
	return nil
}
