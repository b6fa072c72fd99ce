package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// ErrUnreachable is wrapped by the errors of requests that got no answer
// from the server.
var ErrUnreachable = errors.New("cannot reach the Hangar server")

// Client is a client of a Hangar server's API. Every method takes a context
// that bounds the whole call. An error answer of the server is an *Error
// with its status and message.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client of the server at base (e.g. "http://127.0.0.1:8080")
// that authenticates with token (none if empty). httpClient nil means
// http.DefaultClient; a client timeout would also end live log streams.
func New(base, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: httpClient}
}

// BaseURL is the server's URL as given to New, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// StatusOf is the HTTP status of err's error answer, or 0 if err is not
// one.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// send makes a request of path (which may carry a query) with in, if not
// nil, as its JSON body. The caller closes the answer's body, which has a
// 2xx status.
func (c *Client) send(ctx context.Context, method, path string, in any, header http.Header) (*http.Response, error) {
	var body io.Reader
	size := int64(-1)
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body, size = bytes.NewReader(data), int64(len(data))
		header = header.Clone()
		if header == nil {
			header = http.Header{}
		}
		header.Set("Content-Type", "application/json")
	}
	return c.SendBody(ctx, method, path, body, size, header)
}

// SendBody makes a request of path (which may carry a query) with body
// (nil: none) of size bytes (-1: unknown, sent chunked) and header. The
// caller closes the answer's body, which has a 2xx status; an error
// answer is an *Error.
func (c *Client) SendBody(ctx context.Context, method, path string, body io.Reader, size int64, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return nil, fmt.Errorf("%w at %s: %w (if the server's certificate is from your own CA, set SSL_CERT_FILE to a PEM file of that CA's certificate)", ErrUnreachable, c.base, err)
		}
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, errorFrom(resp)
	}
	return resp, nil
}

// errorFrom reads the error of an error answer.
func errorFrom(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(data, e) != nil || e.Message == "" {
		e.Message = "server answered " + resp.Status
	}
	return e
}

// do makes a request and decodes its JSON answer into out (unless nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	return nil
}

func buildPath(id int64, rest string) string {
	return "/api/v1/builds/" + strconv.FormatInt(id, 10) + rest
}

// Health checks GET /healthz.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Info is what the server offers.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	var out Info
	if err := c.do(ctx, http.MethodGet, "/api/v1/info", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AddApp registers an app (admin). The answer holds the webhook secret.
func (c *Client) AddApp(ctx context.Context, req AppRequest) (*App, error) {
	var out App
	if err := c.do(ctx, http.MethodPost, "/api/v1/apps", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Apps lists the apps the token may use.
func (c *Client) Apps(ctx context.Context) ([]App, error) {
	var out []App
	if err := c.do(ctx, http.MethodGet, "/api/v1/apps", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// App is one app.
func (c *Client) App(ctx context.Context, name string) (*App, error) {
	var out App
	if err := c.do(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetAppSettings changes an app's settings (admin, or a token for the
// app) and returns the app as it now is.
func (c *Client) SetAppSettings(ctx context.Context, name string, req AppSettings) (*App, error) {
	var out App
	if err := c.do(ctx, http.MethodPatch, "/api/v1/apps/"+url.PathEscape(name), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteApp deletes an app and its builds (admin).
func (c *Client) DeleteApp(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/apps/"+url.PathEscape(name), nil, nil)
}

// Workflows are the workflows of an app's branch (empty: the default
// branch).
func (c *Client) Workflows(ctx context.Context, app, branch string) (*Workflows, error) {
	path := "/api/v1/apps/" + url.PathEscape(app) + "/workflows"
	if branch != "" {
		path += "?branch=" + url.QueryEscape(branch)
	}
	var out Workflows
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// StartBuild queues a build and returns it.
func (c *Client) StartBuild(ctx context.Context, req StartRequest) (*build.Build, error) {
	var out build.Build
	if err := c.do(ctx, http.MethodPost, "/api/v1/builds", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Build is one build.
func (c *Client) Build(ctx context.Context, id int64) (*build.Build, error) {
	var out build.Build
	if err := c.do(ctx, http.MethodGet, buildPath(id, ""), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Builds lists the newest builds, newest first: of app (empty: of every
// app the token may use), at most limit (0: the server's default, 50).
func (c *Client) Builds(ctx context.Context, app string, limit int) ([]build.Build, error) {
	q := url.Values{"app": {app}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []build.Build
	if err := c.do(ctx, http.MethodGet, "/api/v1/builds?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// CancelBuild cancels a build and returns it: ended, or still ending if it
// did not end within the server's wait. A build that had already ended is
// an error with status 409.
func (c *Client) CancelBuild(ctx context.Context, id int64) (*build.Build, error) {
	var out build.Build
	if err := c.do(ctx, http.MethodPost, buildPath(id, "/cancel"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ContinueBuild resumes build id, paused at a breakpoint.
func (c *Client) ContinueBuild(ctx context.Context, id int64) (*build.Build, error) {
	var out build.Build
	if err := c.do(ctx, http.MethodPost, buildPath(id, "/continue"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RerunBuild starts a new build of the same commit, workflow and inputs
// as ended build id.
func (c *Client) RerunBuild(ctx context.Context, id int64, req RerunRequest) (*build.Build, error) {
	var out build.Build
	if err := c.do(ctx, http.MethodPost, buildPath(id, "/rerun"), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ExtendSSH gives build id's SSH access by more time (never past its
// max_build_duration).
func (c *Client) ExtendSSH(ctx context.Context, id int64, by time.Duration) (*build.Build, error) {
	var out build.Build
	if err := c.do(ctx, http.MethodPost, buildPath(id, "/ssh/extend"), ExtendRequest{By: by.String()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// MaxLogPage is the most lines Logs returns at once.
const MaxLogPage = 100000

// Logs is one page of a build's log: at most limit lines (0: the server's
// default, 10000; at most MaxLogPage) after line after (0: from the start).
// Page by passing the last line's Seq.
func (c *Client) Logs(ctx context.Context, id, after int64, limit int) ([]build.LogLine, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []build.LogLine
	if err := c.do(ctx, http.MethodGet, buildPath(id, "/logs?"+q.Encode()), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Events are a build's events (SSH script fetches, connections, logins).
func (c *Client) Events(ctx context.Context, id int64) ([]build.Event, error) {
	var out []build.Event
	if err := c.do(ctx, http.MethodGet, buildPath(id, "/events"), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// SSHAccess is what connects to a build's machine with OpenSSH. The server
// waits a little for a starting machine (then 425), and answers 409 for a
// build without SSH and 410 once access has closed.
func (c *Client) SSHAccess(ctx context.Context, id int64) (*SSHAccess, error) {
	var out SSHAccess
	if err := c.do(ctx, http.MethodGet, buildPath(id, "/ssh/access"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SSHScript is the script that connects to a build's machine, for shell
// "bash" or "powershell" (empty: bash). Its errors are those of SSHAccess.
func (c *Client) SSHScript(ctx context.Context, id int64, shell string) (string, error) {
	path := buildPath(id, "/ssh/script")
	if shell != "" {
		path += "?shell=" + url.QueryEscape(shell)
	}
	resp, err := c.send(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: read the answer: %w", path, err)
	}
	return string(body), nil
}

// TerminalTicket is a single-use, short-lived URL for a browser terminal
// on a build's machine.
func (c *Client) TerminalTicket(ctx context.Context, id int64) (*TerminalTicket, error) {
	var out TerminalTicket
	if err := c.do(ctx, http.MethodPost, buildPath(id, "/terminal"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateToken makes an API token (admin); the answer holds its secret.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (*Token, error) {
	var out Token
	if err := c.do(ctx, http.MethodPost, "/api/v1/tokens", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
