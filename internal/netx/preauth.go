package netx

import (
	"container/list"
	"net"
	"sync"
)

// PreAuth bounds a server's connections that have not authenticated yet,
// per source address and in total, by evicting the oldest: a new
// connection always gets in, and when its source, or the server, holds its
// bound of unauthenticated connections already, the oldest of that source,
// or of all, is closed to make room. Someone who holds idle connections
// from many addresses thus delays a real user by at most the user's own
// handshake, instead of shutting them out; a source that floods evicts its
// own connections first. Authenticated connections are not counted, and
// never evicted. Its zero value is ready to use.
type PreAuth struct {
	mu       sync.Mutex
	all      list.List             // guarded by mu; of *Pending, oldest first
	bySource map[string]*list.List // guarded by mu; of *Pending, oldest first
	evicted  uint64                // guarded by mu
}

// Pending is one unauthenticated connection counted by a PreAuth.
type Pending struct {
	p       *PreAuth
	nc      net.Conn
	src     string
	evict   chan struct{} // closed when evicted
	all     *list.Element // guarded by p.mu; nil once done or evicted
	own     *list.Element // guarded by p.mu
	evicted bool          // guarded by p.mu
}

// Admit counts nc, from now, as unauthenticated. If nc's source then holds
// more than perSource, or the server more than total (a bound <= 0: none),
// the oldest such connections are evicted: closed (their Pending's Done
// reports it). The caller calls Done once nc has authenticated or failed.
func (p *PreAuth) Admit(nc net.Conn, perSource, total int) *Pending {
	pc := &Pending{p: p, nc: nc, src: Source(nc.RemoteAddr()), evict: make(chan struct{})}
	var out []*Pending
	p.mu.Lock()
	if p.bySource == nil {
		p.bySource = make(map[string]*list.List)
	}
	own := p.bySource[pc.src]
	if own == nil {
		own = list.New()
		p.bySource[pc.src] = own
	}
	for perSource > 0 && own.Len() >= perSource {
		out = append(out, p.evictLocked(own.Front().Value.(*Pending)))
	}
	for total > 0 && p.all.Len() >= total {
		out = append(out, p.evictLocked(p.all.Front().Value.(*Pending)))
	}
	// own may have been emptied and dropped by an eviction above.
	if own = p.bySource[pc.src]; own == nil {
		own = list.New()
		p.bySource[pc.src] = own
	}
	pc.all = p.all.PushBack(pc)
	pc.own = own.PushBack(pc)
	p.mu.Unlock()
	for _, e := range out {
		close(e.evict)
		e.nc.Close()
	}
	return pc
}

// evictLocked takes pc out of the counts and marks it evicted; the caller
// closes it once p.mu is released.
func (p *PreAuth) evictLocked(pc *Pending) *Pending {
	p.removeLocked(pc)
	pc.evicted = true
	p.evicted++
	return pc
}

func (p *PreAuth) removeLocked(pc *Pending) {
	if pc.all == nil {
		return
	}
	p.all.Remove(pc.all)
	own := p.bySource[pc.src]
	own.Remove(pc.own)
	if own.Len() == 0 {
		delete(p.bySource, pc.src)
	}
	pc.all, pc.own = nil, nil
}

// Done ends pc's count as unauthenticated (its handshake succeeded or
// failed). It reports whether pc was evicted before, in which case its
// conn is closed: a connection that authenticated just as it was evicted
// must be dropped. Later calls return the same.
func (pc *Pending) Done() (evicted bool) {
	pc.p.mu.Lock()
	defer pc.p.mu.Unlock()
	pc.p.removeLocked(pc)
	return pc.evicted
}

// Evicted is closed when pc is evicted, to cut short what waits for it.
func (pc *Pending) Evicted() <-chan struct{} { return pc.evict }

// Len is the number of unauthenticated connections.
func (p *PreAuth) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all.Len()
}

// Held is the number of unauthenticated connections from a's source.
func (p *PreAuth) Held(a net.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if own := p.bySource[Source(a)]; own != nil {
		return own.Len()
	}
	return 0
}

// Evictions is the number of connections evicted so far.
func (p *PreAuth) Evictions() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.evicted
}
