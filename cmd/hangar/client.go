package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/hangar-ci/hangar/internal/api"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	server string
	token  string
}

// client makes the API client of the flags, the environment or the
// defaults.
func (f *clientFlags) client() (*api.Client, error) {
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
	return api.New(server, token, nil), nil
}

// build parses a build id argument and makes a client.
func (f *clientFlags) build(arg string) (int64, *api.Client, error) {
	id, err := parseID(arg)
	if err != nil {
		return 0, nil, err
	}
	c, err := f.client()
	return id, c, err
}
