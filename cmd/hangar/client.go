package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// client talks to a Hangar server's API.
type client struct {
	server string
	token  string
	http   *http.Client
}

// clientFlags are the flags every client command takes.
type clientFlags struct {
	server string
	token  string
}

func (f *clientFlags) client() (*client, error) {
	server := f.server
	if server == "" {
		server = os.Getenv("HANGAR_SERVER")
	}
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	if _, err := url.Parse(server); err != nil {
		return nil, fmt.Errorf("--server %q is not a URL", server)
	}
	token := f.token
	if token == "" {
		token = os.Getenv("HANGAR_TOKEN")
	}
	if token == "" {
		// Convenience on the server's own machine: the admin token of a
		// server started in this directory.
		data := os.Getenv("HANGAR_DATA")
		if data == "" {
			data = "hangar-data"
		}
		if b, err := os.ReadFile(filepath.Join(data, "admin-token")); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	return &client{server: strings.TrimRight(server, "/"), token: token, http: &http.Client{}}, nil
}

// build parses a build id argument and makes a client.
func (f *clientFlags) build(arg string) (int64, *client, error) {
	id, err := parseID(arg)
	if err != nil {
		return 0, nil, err
	}
	c, err := f.client()
	return id, c, err
}

// apiError is an error answer of the API.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return e.Msg }

func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the Hangar server at %s: %w (is `hangar server` running? set --server or HANGAR_SERVER)", c.server, unwrapURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiErrorFrom(resp, data)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// apiErrorFrom makes the error of an error answer.
func apiErrorFrom(resp *http.Response, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("server answered %s", resp.Status)
	}
	return &apiError{Status: resp.StatusCode, Msg: e.Error}
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	Event string
	Data  string
}

// stream follows a Server-Sent Events endpoint, calling fn for each event
// until fn returns false, the stream ends or ctx ends. It reconnects with
// Last-Event-ID if the connection drops.
func (c *client) stream(ctx context.Context, path string, fn func(sseEvent) bool) error {
	lastID := ""
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "text/event-stream")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil || attempt >= 5 {
				return fmt.Errorf("cannot reach the Hangar server at %s: %w", c.server, unwrapURL(err))
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
			continue
		}
		if resp.StatusCode >= 300 {
			var e struct {
				Error string `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if e.Error == "" {
				e.Error = "server answered " + resp.Status
			}
			return &apiError{Status: resp.StatusCode, Msg: e.Error}
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Event != "" || ev.Data != "" {
					if !fn(ev) {
						resp.Body.Close()
						return nil
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.Event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.Data = line[len("data: "):]
			case strings.HasPrefix(line, "id: "):
				lastID = line[len("id: "):]
			}
		}
		resp.Body.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		attempt = 0
	}
}
