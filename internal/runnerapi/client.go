package runnerapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

// callTimeout bounds a request whose context has no deadline (the runner
// writes builds with context.Background()).
const callTimeout = 30 * time.Second

// Client is a runner's side of the runner API: a runner.Store backed by
// the servers. Given several server URLs (replicas), it sends each request
// to the one that answered last and moves to the next when it gets no
// answer. Create it with NewClient; run Watch for Subscribe to wake.
type Client struct {
	servers []*api.Client
	session string
	log     *slog.Logger

	mu   sync.Mutex
	cur  int                     // guarded by mu; the server that answered last
	subs map[chan struct{}]int64 // guarded by mu; each subscriber's key (see Subscribe)
}

// NewClient returns a client of the servers at urls that authenticates
// with a runner token, as a new process (its own session).
func NewClient(urls []string, token string, log *slog.Logger) *Client {
	var b [16]byte
	_, _ = rand.Read(b[:])
	header := &sessionTransport{session: hex.EncodeToString(b[:]), base: http.DefaultTransport}
	hc := &http.Client{Transport: header}
	c := &Client{session: header.session, log: log, subs: map[chan struct{}]int64{}}
	if c.log == nil {
		c.log = slog.Default()
	}
	for _, u := range urls {
		c.servers = append(c.servers, api.New(u, token, hc))
	}
	return c
}

// sessionTransport adds the session header to every request.
type sessionTransport struct {
	session string
	base    http.RoundTripper
}

func (t *sessionTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(SessionHeader, t.session)
	return t.base.RoundTrip(r)
}

// call makes a request of the server that answered last, then of the
// others in turn while none answers.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	c.mu.Lock()
	first := c.cur
	c.mu.Unlock()
	var err error
	for i := range c.servers {
		n := (first + i) % len(c.servers)
		err = c.servers[n].Do(ctx, method, path, in, out)
		if !errors.Is(err, api.ErrUnreachable) {
			if n != first {
				c.log.Warn("runner API: moved to another server", "server", c.servers[n].BaseURL())
				c.mu.Lock()
				c.cur = n
				c.mu.Unlock()
			}
			return err
		}
	}
	return err
}

// Start tells the servers that this runner process starts; they fail the
// builds that its earlier run left running.
func (c *Client) Start(ctx context.Context, req StartRequest) (*StartResponse, error) {
	var out StartResponse
	if err := c.call(ctx, http.MethodPost, "/api/runner/v1/start", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Heartbeat tells the servers that the runner is alive. It returns
// store.ErrReplaced (wrapped) when the runner must stop: another process
// took over, or its token was revoked.
func (c *Client) Heartbeat(ctx context.Context) error {
	err := c.call(ctx, http.MethodPost, "/api/runner/v1/heartbeat", struct{}{}, nil)
	switch api.StatusOf(err) {
	case http.StatusConflict, http.StatusUnauthorized:
		return fmt.Errorf("%w: %w", store.ErrReplaced, err)
	}
	return err
}

// ClaimBuild implements runner.Store: store.ErrNotFound when no build of
// the runner's labels is queued.
func (c *Client) ClaimBuild(ctx context.Context) (*build.Build, []byte, error) {
	var out ClaimResponse
	if err := c.call(ctx, http.MethodPost, "/api/runner/v1/claim", struct{}{}, &out); err != nil {
		return nil, nil, fmt.Errorf("claim build: %w", err)
	}
	if out.Build == nil {
		return nil, nil, store.ErrNotFound
	}
	return out.Build, []byte(out.Spec), nil
}

// CancelRequests implements runner.Store.
func (c *Client) CancelRequests(ctx context.Context) ([]int64, error) {
	var ids []int64
	err := c.call(ctx, http.MethodGet, "/api/runner/v1/cancels", nil, &ids)
	return ids, err
}

// EndedBuilds implements runner.EndedStore.
func (c *Client) EndedBuilds(ctx context.Context, ids []int64) ([]int64, error) {
	var ended []int64
	err := c.call(ctx, http.MethodPost, "/api/runner/v1/ended", ids, &ended)
	return ended, err
}

func buildPath(id int64, rest string) string {
	return "/api/runner/v1/builds/" + strconv.FormatInt(id, 10) + rest
}

// UpdateBuild implements runner.Store.
func (c *Client) UpdateBuild(ctx context.Context, b *build.Build) (bool, error) {
	var out UpdateResponse
	if err := c.call(ctx, http.MethodPut, buildPath(b.ID, ""), b, &out); err != nil {
		return false, fmt.Errorf("update build %d: %w", b.ID, err)
	}
	if b.Status.Done() {
		// A slot is free: the long poll does not wake for the runner's
		// own writes.
		c.wake(0)
	}
	return out.Written, nil
}

// maxLogBatch bounds the log bytes of one request (a runner that could
// not reach the servers for a while sends what piled up in several, each
// well below the server's body limit).
const maxLogBatch = 8 << 20

// AppendLog implements runner.Store.
func (c *Client) AppendLog(ctx context.Context, id int64, chunks []build.LogChunk) error {
	for len(chunks) > 0 {
		n, size := 0, 0
		for n < len(chunks) && (n == 0 || size+len(chunks[n].Data) <= maxLogBatch) {
			size += len(chunks[n].Data)
			n++
		}
		if err := c.call(ctx, http.MethodPost, buildPath(id, "/logs"), chunks[:n], nil); err != nil {
			return fmt.Errorf("append log of build %d: %w", id, err)
		}
		chunks = chunks[n:]
	}
	return nil
}

// AddEvent records an event of build id.
func (c *Client) AddEvent(ctx context.Context, id int64, ev build.Event) error {
	if err := c.call(ctx, http.MethodPost, buildPath(id, "/events"), ev, nil); err != nil {
		return fmt.Errorf("add event of build %d: %w", id, err)
	}
	return nil
}

// Subscribe implements runner.Store: the channel receives a value, as far
// as Watch learns of it, when a build changes that concerns the runner
// (id 0 or a build's id: any of them), when a gateway's event of its
// builds is recorded (store.GatewayEventChanges), or when a request to
// one of its builds is (store.BuildRequestChanges).
func (c *Client) Subscribe(id int64) (<-chan struct{}, func()) {
	if id != store.GatewayEventChanges && id != store.BuildRequestChanges {
		id = 0
	}
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = id
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// minWatch spaces the long polls: the runner's work on a wake (a claim, the
// cancel requests) covers every change of the moment.
const minWatch = 200 * time.Millisecond

// Watch long-polls the servers for changes and wakes the subscribers,
// until ctx ends. Without an answer it tries again, waiting up to 5 s,
// and wakes every subscriber when one comes (what changed meanwhile went
// unseen).
func (c *Client) Watch(ctx context.Context) {
	wait := minWatch
	for {
		var out WaitResponse
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := c.call(wctx, http.MethodGet, "/api/runner/v1/wait", nil, &out)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			wait = min(2*wait, 5*time.Second)
		} else {
			if wait != minWatch {
				out = WaitResponse{Changed: true, Gateway: true, Requests: true}
			}
			wait = minWatch
			var keys []int64
			if out.Changed {
				keys = append(keys, 0)
			}
			if out.Gateway {
				keys = append(keys, store.GatewayEventChanges)
			}
			if out.Requests {
				keys = append(keys, store.BuildRequestChanges)
			}
			c.wake(keys...)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// wake wakes the subscribers of keys.
func (c *Client) wake(keys ...int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, key := range c.subs {
		if !slices.Contains(keys, key) {
			continue
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
