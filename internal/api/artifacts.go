package api

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/hangar-ci/hangar/internal/build"
)

// ArtifactTicketRequest is the body of POST
// /api/v1/builds/{id}/artifact-tickets.
type ArtifactTicketRequest struct {
	Name string `json:"name"`
}

// ArtifactTicket is a single-use download URL (a path of the server),
// valid for 30 seconds, that needs no Authorization header.
type ArtifactTicket struct {
	URL string `json:"url"`
}

// CachesCleared answers DELETE /api/v1/apps/{name}/caches.
type CachesCleared struct {
	Deleted int `json:"deleted"`
}

// Artifacts lists build id's artifacts.
func (c *Client) Artifacts(ctx context.Context, id int64) ([]build.Artifact, error) {
	var out []build.Artifact
	err := c.do(ctx, "GET", fmt.Sprintf("/api/v1/builds/%d/artifacts", id), nil, &out)
	return out, err
}

// DownloadArtifact opens build id's artifact name; the caller closes it.
func (c *Client) DownloadArtifact(ctx context.Context, id int64, name string) (io.ReadCloser, error) {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	resp, err := c.send(ctx, "GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", id, strings.Join(parts, "/")), nil, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Caches lists the caches of app ("": of every app the token may use).
func (c *Client) Caches(ctx context.Context, app string) ([]build.Cache, error) {
	var out []build.Cache
	path := "/api/v1/caches"
	if app != "" {
		path += "?app=" + url.QueryEscape(app)
	}
	err := c.do(ctx, "GET", path, nil, &out)
	return out, err
}

// ClearCaches deletes app's cache of workflow ("": all of app's caches).
func (c *Client) ClearCaches(ctx context.Context, app, workflow string) (int, error) {
	var out CachesCleared
	path := "/api/v1/apps/" + url.PathEscape(app) + "/caches"
	if workflow != "" {
		path += "?workflow=" + url.QueryEscape(workflow)
	}
	err := c.do(ctx, "DELETE", path, nil, &out)
	return out.Deleted, err
}
