package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// RunnerRequest asks for a runner and its token (admin).
type RunnerRequest struct {
	Name string `json:"name"`
}

// RunnerToken is a new runner's token, shown once.
type RunnerToken struct {
	Name  string `json:"name"`
	Token string `json:"token"`
}

// Runner is a runner as listed: its identity and what it last reported.
type Runner struct {
	Name string `json:"name"`
	// Server: a server's own runner (no token).
	Server bool     `json:"server"`
	Host   string   `json:"host"`
	Labels []string `json:"labels"` // the instance types it runs; none: every one
	// Capacity is how many builds it runs at once.
	Capacity  int        `json:"capacity"`
	Driver    string     `json:"driver"`
	SSH       bool       `json:"ssh"` // it runs SSH builds
	StartedAt *time.Time `json:"started_at"`
	LastSeen  *time.Time `json:"last_seen"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Running is how many of its builds have not ended.
	Running int `json:"running"`
	// Answering: it was heard from within the stale bound.
	Answering bool `json:"answering"`
}

// Do makes a request of path with in (if not nil) as its JSON body and
// decodes the JSON answer into out (unless nil). An error answer is an
// *Error; no answer wraps ErrUnreachable.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out)
}

// CreateRunner makes a runner called name and returns its token (admin).
func (c *Client) CreateRunner(ctx context.Context, name string) (*RunnerToken, error) {
	var out RunnerToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/runners", RunnerRequest{Name: name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Runners lists the runners (admin).
func (c *Client) Runners(ctx context.Context) ([]Runner, error) {
	var out []Runner
	if err := c.do(ctx, http.MethodGet, "/api/v1/runners", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeRunner revokes runner name's token; its running builds fail
// (admin).
func (c *Client) RevokeRunner(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/runners/"+url.PathEscape(name), nil, nil)
}
