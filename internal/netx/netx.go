// Package netx is the server lifecycle that Hangar's network servers (the
// builder link, the public SSH gateway, the builder's SSH server) share:
// an accept loop, the set of listeners and connections, Close and
// Shutdown(ctx) with net/http's semantics, an idle timeout for any
// net.Conn, a bound on connections by source address, and the defences of
// a public server: unauthenticated connections bounded by evicting the
// oldest (PreAuth), and failed authentications slowed by source
// (AuthDelay).
package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrServerClosed is returned by Serve and Track once Close, CloseListeners
// or Shutdown was called. Servers built on Tracker return their own
// ErrServerClosed instead (see Serve's closedErr).
var ErrServerClosed = errors.New("netx: server closed")

// ErrTooManyConns is returned by Track when the server holds its limit of
// connections.
var ErrTooManyConns = errors.New("netx: too many connections")

// Tracker tracks a server's listeners and connections and shuts them down.
// Its zero value is ready to use; a server holds one and must not copy it.
//
// A connection is tracked from Track (or Go) until its release func is
// called: that is when the goroutine serving it has finished, so Shutdown
// waits for the connection and for its goroutines.
type Tracker struct {
	mu        sync.Mutex
	closed    bool                      // guarded by mu: no new listeners or connections
	listeners map[net.Listener]struct{} // guarded by mu
	conns     map[*tracked]struct{}     // guarded by mu
	idle      chan struct{}             // guarded by mu: closed when closed and conns is empty
}

// tracked is one tracked connection (a pointer, so that one net.Conn
// tracked twice counts twice).
type tracked struct{ nc net.Conn }

// Serve accepts connections on l and passes each to handle, in the accept
// loop's goroutine (handle usually calls Go), until l fails or the
// tracker is closed. It backs off on temporary errors. It closes l when it
// returns. After Close, CloseListeners or Shutdown it returns closedErr
// (netx.ErrServerClosed if nil), as net/http's Serve does.
func (t *Tracker) Serve(l net.Listener, closedErr error, handle func(net.Conn)) error {
	if closedErr == nil {
		closedErr = ErrServerClosed
	}
	defer l.Close()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return closedErr
	}
	if t.listeners == nil {
		t.listeners = make(map[net.Listener]struct{})
	}
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.listeners, l)
		t.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if t.Closed() {
				return closedErr
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		delay = 0
		handle(nc)
	}
}

// Closed reports whether Close, CloseListeners or Shutdown was called.
func (t *Tracker) Closed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Track registers nc as a connection of the server. It refuses nc with
// ErrServerClosed once the tracker is closed, and with ErrTooManyConns when
// limit (if > 0) connections are tracked already. On success the caller
// must call release (once; later calls do nothing) when it is done with nc
// and every goroutine serving it has finished. Track does not close a
// refused nc.
func (t *Tracker) Track(nc net.Conn, limit int) (release func(), err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrServerClosed
	}
	if limit > 0 && len(t.conns) >= limit {
		return nil, ErrTooManyConns
	}
	if t.conns == nil {
		t.conns = make(map[*tracked]struct{})
	}
	c := &tracked{nc: nc}
	t.conns[c] = struct{}{}
	var once sync.Once
	return func() { once.Do(func() { t.untrack(c) }) }, nil
}

func (t *Tracker) untrack(c *tracked) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if t.closed && len(t.conns) == 0 && t.idle != nil {
		select {
		case <-t.idle:
		default:
			close(t.idle)
		}
	}
}

// Go tracks nc (see Track) and runs handle(nc) in a new goroutine, which
// releases nc when handle returns. handle owns nc: it closes it, or hands
// it over, before it returns. A refused nc is closed and the error returned.
func (t *Tracker) Go(nc net.Conn, limit int, handle func(net.Conn)) error {
	release, err := t.Track(nc, limit)
	if err != nil {
		nc.Close()
		return err
	}
	go func() {
		defer release()
		handle(nc)
	}()
	return nil
}

// Len is the number of tracked connections.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// CloseListeners marks the tracker closed and closes its listeners: Serve
// returns and Track refuses new connections, while tracked connections go
// on. It returns the listeners' close errors.
func (t *Tracker) CloseListeners() error {
	t.mu.Lock()
	t.closed = true
	ls := make([]net.Listener, 0, len(t.listeners))
	for l := range t.listeners {
		ls = append(ls, l)
	}
	t.mu.Unlock()
	var errs []error
	for _, l := range ls {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close listener %s: %w", l.Addr(), err))
		}
	}
	return errors.Join(errs...)
}

// closeConns closes every tracked connection (they stay tracked until
// their goroutines release them).
func (t *Tracker) closeConns() {
	t.mu.Lock()
	ncs := make([]net.Conn, 0, len(t.conns))
	for c := range t.conns {
		ncs = append(ncs, c.nc)
	}
	t.mu.Unlock()
	for _, nc := range ncs {
		nc.Close()
	}
}

// Close closes the listeners and every tracked connection now, without
// waiting for the connections' goroutines (as net/http's Close).
func (t *Tracker) Close() error {
	err := t.CloseListeners()
	t.closeConns()
	return err
}

// Shutdown stops accepting (CloseListeners), then waits until every
// tracked connection is released, or ctx ends: then it closes the
// connections left and returns ctx's error. It may be called more than
// once and together with Close.
func (t *Tracker) Shutdown(ctx context.Context) error {
	err := t.CloseListeners()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = make(chan struct{})
		if len(t.conns) == 0 {
			close(t.idle)
		}
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return err
	case <-ctx.Done():
		n := t.Len()
		t.closeConns()
		return errors.Join(err, fmt.Errorf("%d connections still open, closed: %w", n, ctx.Err()))
	}
}
