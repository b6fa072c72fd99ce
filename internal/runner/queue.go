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
	for _, id := range ids {
		if j := r.running[id]; j != nil {
			j.cancel(errCanceled)
		}
	}
	running := make([]int64, 0, len(r.running))
	for id := range r.running {
		running = append(running, id)
	}
	r.mu.Unlock()
	r.stopEnded(ctx, running)
}

// stopEnded stops those of the running builds that have ended without
// this runner (see EndedStore).
func (r *Runner) stopEnded(ctx context.Context, running []int64) {
	es, ok := r.cfg.Store.(EndedStore)
	if !ok || len(running) == 0 {
		return
	}
	ended, err := es.EndedBuilds(ctx, running)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("read ended builds", "err", err)
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ended {
		// (A build that ended here a moment ago is past its context's
		// use: cancelling it changes nothing.)
		if j := r.running[id]; j != nil {
			j.cancel(errEndedElsewhere)
		}
	}
}

// ErrNotRunning is the error of what is asked of a build this runner
// does not run (or no longer).
var ErrNotRunning = errors.New("the build is not running")

// askTimeout bounds how long a request waits for a build busy elsewhere
// (making its machine, say).
const askTimeout = 10 * time.Second

// ask runs fn on build id's own goroutine and returns its error.
func (r *Runner) ask(id int64, fn func(*job) error) error {
	r.mu.Lock()
	j := r.running[id]
	r.mu.Unlock()
	if j == nil {
		return ErrNotRunning
	}
	reply := make(chan error, 1)
	timeout := time.NewTimer(askTimeout)
	defer timeout.Stop()
	select {
	case j.asks <- func() { reply <- fn(j) }:
	case <-j.ctx.Done():
		return ErrNotRunning
	case <-timeout.C:
		return errors.New("the build is busy (its machine is being made or removed): try again in a moment")
	}
	return <-reply
}

// Continue resumes build id if it is paused at a breakpoint; who asked is
// written in its log.
func (r *Runner) Continue(id int64, who string) error {
	return r.ask(id, func(j *job) error { return j.cont(who) })
}

// Extend gives build id's SSH access more time (by), bounded by its
// max_build_duration; who asked is written in its log and events.
func (r *Runner) Extend(id int64, by time.Duration, who string) error {
	return r.ask(id, func(j *job) error { return j.extend(by, who) })
}
