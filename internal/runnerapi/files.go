package runnerapi

// What a runner on another host needs besides the store: the secrets its
// builds name, and where their artifacts and caches are kept (the
// servers, which keep them where every replica reads them).
//
//	GET  /api/runner/v1/files                     the servers' limits on
//	                                              artifacts and caches, and
//	                                              the API's public URL.
//	POST /api/runner/v1/builds/ID/secrets         opens the variable groups
//	                                              and keystores of its build
//	                                              ({"groups", "keystores"}, each
//	                                              named by the build's spec).
//	PUT  /api/runner/v1/builds/ID/artifacts/NAME  keeps an artifact: the body
//	                                              streamed (chunked), its size
//	                                              in Hangar-Size.
//	GET  /api/runner/v1/builds/ID/cache           the cache its build
//	                                              restores (Hangar-Cache: its
//	                                              JSON; 404: none yet).
//	PUT  /api/runner/v1/builds/ID/cache           keeps its build's cache.
//
// Each is scoped to a build the runner claimed and that has not ended
// (403, 409); what a build gets is what the server reads in the build's
// spec, never what the runner asks beyond it. A body that ends without
// its final chunk (the runner found the upload incomplete) is not kept.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/store"
)

// Headers of the file endpoints.
const (
	// SizeHeader is an artifact upload's size in bytes.
	SizeHeader = "Hangar-Size"
	// CacheHeader is a restored cache's build.Cache as JSON.
	CacheHeader = "Hangar-Cache"
)

// Messages of the file endpoints.
type (
	// FilesInfo are the servers' limits and their public URL.
	FilesInfo struct {
		ArtifactFile  int64  `json:"artifact_file"`
		ArtifactBuild int64  `json:"artifact_build"`
		Cache         int64  `json:"cache"`
		PublicURL     string `json:"public_url,omitempty"`
	}
	// SecretsRequest names what a build's runner opens.
	SecretsRequest struct {
		Groups    []string `json:"groups"`
		Keystores []string `json:"keystores"`
	}
)

// Secrets opens environment variable groups and keystores (secrets.Vault).
type Secrets interface {
	Resolve(ctx context.Context, app string, groups, keystores []string) (*secrets.Resolved, error)
}

// Files keeps artifacts and caches (artifact.Keeper).
type Files interface {
	Limits() artifact.Limits
	Artifacts(ctx context.Context, id int64) ([]build.Artifact, error)
	PutArtifact(ctx context.Context, id int64, name string, r io.Reader, limit int64, done func(n int64) error) (build.Artifact, error)
	OpenCache(ctx context.Context, app, workflow string) (io.ReadCloser, build.Cache, error)
	PutCache(ctx context.Context, app, workflow string, id int64, r io.Reader, done func(n int64) error) (build.Cache, error)
}

func (h *handler) fileRoutes() {
	for pattern, f := range map[string]func(http.ResponseWriter, *http.Request, *store.Runner){
		"GET /api/runner/v1/files":                           h.filesInfo,
		"POST /api/runner/v1/builds/{id}/secrets":            h.secrets,
		"PUT /api/runner/v1/builds/{id}/artifacts/{name...}": h.putArtifact,
		"GET /api/runner/v1/builds/{id}/cache":               h.getCache,
		"PUT /api/runner/v1/builds/{id}/cache":               h.putCache,
		"POST /api/runner/v1/builds/{id}/notify":             h.notify,
	} {
		h.mux.Handle(pattern, h.auth(f))
	}
}

func (h *handler) filesInfo(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	if h.cfg.Files == nil {
		writeError(w, http.StatusNotFound, "this server keeps no artifacts or caches")
		return
	}
	l := h.cfg.Files.Limits()
	info := FilesInfo{ArtifactFile: l.ArtifactFile, ArtifactBuild: l.ArtifactBuild, Cache: l.Cache}
	if h.cfg.PublicURL != nil {
		info.PublicURL = h.cfg.PublicURL()
	}
	writeJSON(w, http.StatusOK, info)
}

// running reads the path's build, the runner's own (see own), with its
// spec; it refuses one that has ended.
func (h *handler) running(w http.ResponseWriter, r *http.Request, rn *store.Runner) (*build.Build, *build.Spec, bool) {
	id, ok := h.own(w, r, rn)
	if !ok {
		return nil, nil, false
	}
	b, err := h.cfg.Store.Build(r.Context(), id)
	if err != nil {
		h.internal(w, "read the build", err)
		return nil, nil, false
	}
	if b.Status.Done() {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d has ended (%s)", id, b.Status))
		return nil, nil, false
	}
	data, err := h.cfg.Store.BuildSpec(r.Context(), id)
	if err != nil {
		h.internal(w, "read the build's spec", err)
		return nil, nil, false
	}
	var spec build.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		h.internal(w, "read the build's spec", err)
		return nil, nil, false
	}
	return b, &spec, true
}

// secrets opens what the build's spec names, as the runner asks: a
// name the spec does not have is refused (403). A fork's pull request
// names none: the server refuses to queue such a build (server.queue).
func (h *handler) secrets(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	b, spec, ok := h.running(w, r, rn)
	if !ok {
		return
	}
	var req SecretsRequest
	if !h.decode(w, r, &req) {
		return
	}
	for _, g := range req.Groups {
		if !slices.Contains(spec.Groups, g) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("build %d's workflow does not name group %q", b.ID, g))
			return
		}
	}
	for _, k := range req.Keystores {
		if !slices.Contains(spec.Keystores, k) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("build %d's workflow does not name keystore %q", b.ID, k))
			return
		}
	}
	if h.cfg.Secrets == nil {
		writeError(w, http.StatusNotFound, "this server opens no environment variable groups or keystores")
		return
	}
	res, err := h.cfg.Secrets.Resolve(r.Context(), b.App, req.Groups, req.Keystores)
	var missing *secrets.MissingError
	switch {
	case errors.As(err, &missing):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	case err != nil:
		// The vault's errors name what did not open, never a value.
		h.log.Warn("open a build's secrets for its runner", "build", b.ID, "runner", rn.Name, "err", err)
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	h.log.Info("build's secrets opened for its runner", "build", b.ID, "runner", rn.Name,
		"groups", strings.Join(req.Groups, ","), "keystores", strings.Join(req.Keystores, ","))
	writeJSON(w, http.StatusOK, res)
}

// files is the server's Files, or a 404.
func (h *handler) files(w http.ResponseWriter) (Files, bool) {
	if h.cfg.Files == nil {
		writeError(w, http.StatusNotFound, "this server keeps no artifacts or caches")
		return nil, false
	}
	return h.cfg.Files, true
}

// errReader remembers the error of reading a request's body: a body cut
// short (the runner gave up on the upload) is not the keeper's fault.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// putError answers an upload the keeper did not keep.
func (h *handler) putError(w http.ResponseWriter, body *errReader, what string, limit int64, err error) {
	switch {
	case body.err != nil:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: the upload did not complete", what))
	case errors.Is(err, artifact.ErrBuildFull):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s would take the build's artifacts past the server's limit of %s per build", what, build.HumanBytes(h.cfg.Files.Limits().ArtifactBuild)))
	case errors.Is(err, artifact.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s is over the server's bound of %s", what, build.HumanBytes(limit)))
	case errors.Is(err, store.ErrExists), errors.Is(err, errSize):
		writeError(w, http.StatusConflict, err.Error())
	default:
		h.internal(w, "keep "+what, err)
	}
}

var errSize = errors.New("the upload's size is not the one announced")

func (h *handler) putArtifact(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	b, _, ok := h.running(w, r, rn)
	if !ok {
		return
	}
	files, ok := h.files(w)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := artifact.CheckName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	lim := files.Limits()
	size, err := strconv.ParseInt(r.Header.Get(SizeHeader), 10, 64)
	if err != nil || size < 0 {
		writeError(w, http.StatusBadRequest, "an artifact upload says its size in bytes in the "+SizeHeader+" header")
		return
	}
	if size > lim.ArtifactFile {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s is %s, over the server's limit of %s per artifact", name, build.HumanBytes(size), build.HumanBytes(lim.ArtifactFile)))
		return
	}
	kept, err := files.Artifacts(r.Context(), b.ID)
	if err != nil {
		h.internal(w, "list the build's artifacts", err)
		return
	}
	var total int64
	for _, a := range kept {
		total += a.Size
	}
	if total+size > lim.ArtifactBuild {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s (%s) would take the build's artifacts past the server's limit of %s per build", name, build.HumanBytes(size), build.HumanBytes(lim.ArtifactBuild)))
		return
	}
	body := &errReader{r: r.Body}
	a, err := files.PutArtifact(r.Context(), b.ID, name, body, size, func(n int64) error {
		if n != size {
			return fmt.Errorf("%w: %d bytes, not %d", errSize, n, size)
		}
		return nil
	})
	if err != nil {
		h.putError(w, body, name, size, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// cacheOf reads the build the runner's request is about and refuses one
// whose workflow caches nothing (a fork's pull request, whose cache paths
// the server dropped).
func (h *handler) cacheOf(w http.ResponseWriter, r *http.Request, rn *store.Runner) (*build.Build, Files, bool) {
	b, spec, ok := h.running(w, r, rn)
	if !ok {
		return nil, nil, false
	}
	files, ok := h.files(w)
	if !ok {
		return nil, nil, false
	}
	if len(spec.CachePaths) == 0 {
		writeError(w, http.StatusForbidden, fmt.Sprintf("build %d's workflow has no cache.cache_paths", b.ID))
		return nil, nil, false
	}
	return b, files, true
}

func (h *handler) getCache(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	b, files, ok := h.cacheOf(w, r, rn)
	if !ok {
		return
	}
	rc, c, err := files.OpenCache(r.Context(), b.App, b.Workflow)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no cache of workflow %s yet", b.Workflow))
		return
	}
	if err != nil {
		h.internal(w, "open the cache", err)
		return
	}
	defer rc.Close()
	info, _ := json.Marshal(c)
	w.Header().Set(CacheHeader, string(info))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(c.Size, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		h.log.Warn("send a cache to a runner", "build", b.ID, "runner", rn.Name, "err", err)
	}
}

func (h *handler) putCache(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	b, files, ok := h.cacheOf(w, r, rn)
	if !ok {
		return
	}
	body := &errReader{r: r.Body}
	c, err := files.PutCache(r.Context(), b.App, b.Workflow, b.ID, body, func(int64) error { return nil })
	if err != nil {
		h.putError(w, body, "the cache", files.Limits().Cache, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// The runner's side.

// Resolve implements runner.Secrets: the servers open what build id's
// spec names.
func (c *Client) Resolve(ctx context.Context, id int64, _ string, groups, keystores []string) (*secrets.Resolved, error) {
	var out secrets.Resolved
	err := c.call(ctx, http.MethodPost, buildPath(id, "/secrets"), SecretsRequest{Groups: groups, Keystores: keystores}, &out)
	if err != nil {
		if api.StatusOf(err) != 0 {
			return nil, err // the server's message, for the build's user
		}
		return nil, fmt.Errorf("open the build's groups and keystores: %w", err)
	}
	return &out, nil
}

// Files asks the servers for their limits and public URL and returns a
// runner.Files that keeps artifacts and caches with them.
func (c *Client) Files(ctx context.Context) (*RemoteFiles, error) {
	var info FilesInfo
	if err := c.call(ctx, http.MethodGet, "/api/runner/v1/files", nil, &info); err != nil {
		return nil, fmt.Errorf("ask the servers for their artifact and cache limits: %w", err)
	}
	return &RemoteFiles{c: c, info: info}, nil
}

// RemoteFiles is a runner.Files whose artifacts and caches the servers
// keep. Create it with Client.Files.
type RemoteFiles struct {
	c    *Client
	info FilesInfo
}

// PublicURL is the API's URL as users reach it ("" if the servers did not
// say).
func (f *RemoteFiles) PublicURL() string { return f.info.PublicURL }

// Limits implements runner.Files.
func (f *RemoteFiles) Limits() artifact.Limits {
	return artifact.Limits{ArtifactFile: f.info.ArtifactFile, ArtifactBuild: f.info.ArtifactBuild, Cache: f.info.Cache}
}

// doneReader calls done with the byte count once r ends; if done refuses
// it, the request fails without its last chunk, and the server keeps
// nothing.
type doneReader struct {
	r    io.Reader
	n    int64
	done func(n int64) error
	err  error // done's refusal
}

func (d *doneReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.n += int64(n)
	if err == io.EOF {
		if d.err = d.done(d.n); d.err != nil {
			return n, d.err
		}
	}
	return n, err
}

// upload streams r to path (chunked) and decodes the answer into out.
func (f *RemoteFiles) upload(ctx context.Context, path string, r io.Reader, header http.Header, done func(n int64) error, out any) error {
	body := &doneReader{r: r, done: done}
	resp, err := f.c.server().SendBody(ctx, http.MethodPut, path, body, -1, header)
	if body.err != nil {
		return body.err
	}
	if api.StatusOf(err) == http.StatusRequestEntityTooLarge {
		return fmt.Errorf("%w: %w", artifact.ErrTooLarge, err)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read the server's answer: %w", err)
	}
	return nil
}

// PutArtifact implements runner.Files: limit is the artifact's size.
func (f *RemoteFiles) PutArtifact(ctx context.Context, id int64, name string, r io.Reader, limit int64, done func(n int64) error) (build.Artifact, error) {
	var a build.Artifact
	if err := artifact.CheckName(name); err != nil {
		return a, err
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	h := http.Header{SizeHeader: {strconv.FormatInt(limit, 10)}}
	err := f.upload(ctx, buildPath(id, "/artifacts/"+strings.Join(parts, "/")), r, h, done, &a)
	return a, err
}

// OpenCache implements runner.Files: store.ErrNotFound when build id's
// workflow has no cache yet.
func (f *RemoteFiles) OpenCache(ctx context.Context, id int64, _, _ string) (io.ReadCloser, build.Cache, error) {
	var c build.Cache
	resp, err := f.c.server().SendBody(ctx, http.MethodGet, buildPath(id, "/cache"), nil, 0, nil)
	if api.StatusOf(err) == http.StatusNotFound {
		return nil, c, store.ErrNotFound
	}
	if err != nil {
		return nil, c, err
	}
	if err := json.Unmarshal([]byte(resp.Header.Get(CacheHeader)), &c); err != nil {
		resp.Body.Close()
		return nil, c, fmt.Errorf("the server's answer has no valid %s header", CacheHeader)
	}
	return resp.Body, c, nil
}

// PutCache implements runner.Files.
func (f *RemoteFiles) PutCache(ctx context.Context, _, _ string, id int64, r io.Reader, done func(n int64) error) (build.Cache, error) {
	var c build.Cache
	err := f.upload(ctx, buildPath(id, "/cache"), r, nil, done, &c)
	return c, err
}

// server is the server that answered last: streamed uploads go to it
// alone (a body read once cannot be sent again).
func (c *Client) server() *api.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[c.cur]
}
